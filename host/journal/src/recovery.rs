//! Reading segments back on open: check every header and record, cut a torn
//! tail of the newest segment, refuse any other damage.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::config::{Entry, JournalConfig, Seq};
use crate::error::{JournalError, TailDefect, TornTail};
use crate::format::{self, HeaderDefect, RecordDefect, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::storage::{FsStorage, Storage};

/// File-name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".kjl";

/// One segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Path.
    pub path: PathBuf,
    /// First sequence number, from the file name.
    pub first_seq: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The file name of the segment whose first record is `first_seq`: zero
/// padded so lexical and numeric order agree.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// Segment files in `dir` on the real file system, oldest first. Other
/// files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    list_segments_in(&FsStorage, dir)
}

/// Segment files in `dir` on `storage`, oldest first. Other files are
/// ignored.
pub fn list_segments_in(storage: &dyn Storage, dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let mut out = Vec::new();
    for (name, len) in storage.list(dir).map_err(|e| JournalError::io(dir, e))? {
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else { continue };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(first_seq) = stem.parse::<u64>() else { continue };
        out.push(SegmentFile { path: dir.join(&name), first_seq, len });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// What reading one segment produced.
pub struct SegmentScan {
    /// Sequence number the next record must carry.
    pub next_seq: u64,
    /// Length after any cut.
    pub len: u64,
    /// The cut, if one was made.
    pub torn_tail: Option<TornTail>,
    /// Whether the segment file was removed (torn header).
    pub removed: bool,
    /// Intact records cut because they came after `keep_through`.
    pub discarded: u64,
}

/// How to read one segment.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions<'a> {
    /// Whether this is the newest segment (the only one a torn tail may end).
    pub is_last: bool,
    /// The sequence number the previous segment ended at (`None` for the
    /// oldest segment, which may start anywhere after a compaction).
    pub expected_first: Option<u64>,
    /// Records after this sequence number are cut (durably) instead of
    /// returned: the owner never acknowledged them (see
    /// [`crate::Journal::open_through`]).
    pub keep_through: Option<u64>,
    /// Limits and schema version.
    pub config: &'a JournalConfig,
}

/// Reads one segment, appending its records to `out`.
pub fn scan_segment<R: DeserializeOwned>(
    storage: &dyn Storage,
    seg: &SegmentFile,
    options: ScanOptions<'_>,
    out: &mut Vec<Entry<R>>,
) -> Result<SegmentScan, JournalError> {
    let ScanOptions { is_last, expected_first, keep_through, config } = options;
    // A segment is rotated once it passes segment_bytes, so it can exceed
    // that by at most one record; anything larger is not ours to load.
    let bound = config.segment_bytes + u64::from(config.max_record_bytes) + 64;
    if seg.len > bound {
        return Err(JournalError::corrupt(
            &seg.path,
            0,
            format!("segment is {} bytes, above the bound of {bound}", seg.len),
        ));
    }
    let bytes = storage.read(&seg.path).map_err(|e| JournalError::io(&seg.path, e))?;
    let header = match SegmentHeader::decode(&bytes) {
        Ok(h) => h,
        Err(HeaderDefect::Short | HeaderDefect::Checksum) if is_last && bytes.len() <= SEGMENT_HEADER_LEN => {
            // Crash while the segment was being created: nothing in it was
            // ever acknowledged (rotation syncs the header before any record).
            storage.remove(&seg.path).map_err(|e| JournalError::io(&seg.path, e))?;
            let torn = TornTail {
                segment: seg.path.clone(),
                offset: 0,
                bytes_cut: seg.len,
                defect: TailDefect::SegmentHeader,
            };
            return Ok(SegmentScan {
                next_seq: expected_first.unwrap_or(seg.first_seq),
                len: 0,
                torn_tail: Some(torn),
                removed: true,
                discarded: 0,
            });
        }
        Err(defect) => return Err(JournalError::corrupt(&seg.path, 0, format!("segment header: {defect:?}"))),
    };
    if header.first_seq != seg.first_seq {
        return Err(JournalError::corrupt(
            &seg.path,
            0,
            format!("header says first record {}, file name says {}", header.first_seq, seg.first_seq),
        ));
    }
    if header.schema_version != config.schema_version {
        return Err(JournalError::SchemaMismatch {
            segment: seg.path.clone(),
            found: header.schema_version,
            expected: config.schema_version,
        });
    }
    if let Some(expected) = expected_first
        && expected != header.first_seq
    {
        return Err(JournalError::corrupt(
            &seg.path,
            0,
            format!("segment starts at record {} but the previous segment ended before {expected}", header.first_seq),
        ));
    }
    let mut pos = SEGMENT_HEADER_LEN;
    let mut seq = header.first_seq;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match format::parse_record(rest, seq, config.max_record_bytes) {
            Ok(_) if keep_through.is_some_and(|last| seq > last) => {
                let discarded = count_records(rest, seq, config);
                cut(storage, seg, pos)?;
                tracing::warn!(segment = %seg.path.display(), offset = pos, first = seq, records = discarded, "kasmina.journal.unacknowledged_cut");
                return Ok(SegmentScan { next_seq: seq, len: pos as u64, torn_tail: None, removed: false, discarded });
            }
            Ok(raw) => {
                let record = decode(raw.payload).map_err(|source| match source {
                    Some(source) => JournalError::Undecodable { segment: seg.path.clone(), seq, source },
                    None => JournalError::corrupt(
                        &seg.path,
                        pos as u64,
                        format!("record {seq} has trailing bytes after its payload"),
                    ),
                })?;
                out.push(Entry { seq: Seq(seq), record });
                pos += raw.frame_len;
                seq += 1;
            }
            Err(_) if keep_through.is_some_and(|last| seq > last) => {
                // Damage past the acknowledged point is part of what is
                // discarded, wherever it is.
                cut(storage, seg, pos)?;
                return Ok(SegmentScan {
                    next_seq: seq,
                    len: pos as u64,
                    torn_tail: None,
                    removed: false,
                    discarded: 0,
                });
            }
            Err(defect) => {
                check_cuttable(seg, is_last, pos, rest, seq, defect, config)?;
                let bytes_cut = (bytes.len() - pos) as u64;
                cut(storage, seg, pos)?;
                let torn = TornTail {
                    segment: seg.path.clone(),
                    offset: pos as u64,
                    bytes_cut,
                    defect: TailDefect::Record(defect),
                };
                tracing::warn!(segment = %seg.path.display(), offset = pos, bytes_cut, defect = %defect, "kasmina.journal.torn_tail_cut");
                return Ok(SegmentScan {
                    next_seq: seq,
                    len: pos as u64,
                    torn_tail: Some(torn),
                    removed: false,
                    discarded: 0,
                });
            }
        }
    }
    Ok(SegmentScan { next_seq: seq, len: bytes.len() as u64, torn_tail: None, removed: false, discarded: 0 })
}

/// Cuts `seg` at `pos`, durably.
fn cut(storage: &dyn Storage, seg: &SegmentFile, pos: usize) -> Result<(), JournalError> {
    storage.truncate(&seg.path, pos as u64).map_err(|e| JournalError::io(&seg.path, e))
}

/// Intact records in a whole segment (for reports; 0 when unreadable).
pub fn count_segment_records(storage: &dyn Storage, seg: &SegmentFile, config: &JournalConfig) -> u64 {
    let Ok(bytes) = storage.read(&seg.path) else { return 0 };
    match SegmentHeader::decode(&bytes) {
        Ok(h) => count_records(&bytes[SEGMENT_HEADER_LEN..], h.first_seq, config),
        Err(_) => 0,
    }
}

/// Intact records in `bytes` from sequence number `seq` on (for reports).
fn count_records(mut bytes: &[u8], mut seq: u64, config: &JournalConfig) -> u64 {
    let mut n = 0;
    while let Ok(raw) = format::parse_record(bytes, seq, config.max_record_bytes) {
        n += 1;
        seq += 1;
        bytes = &bytes[raw.frame_len..];
    }
    n
}

/// A defect may be cut only where a torn write can have left it: at the end
/// of the newest segment, with no intact record after it.
fn check_cuttable(
    seg: &SegmentFile,
    is_last: bool,
    pos: usize,
    rest: &[u8],
    seq: u64,
    defect: RecordDefect,
    config: &JournalConfig,
) -> Result<(), JournalError> {
    if !is_last {
        return Err(JournalError::corrupt(
            &seg.path,
            pos as u64,
            format!("record {seq}: {defect} (not the newest segment)"),
        ));
    }
    match defect {
        // Our writer never produces a checksummed record out of sequence.
        RecordDefect::SequenceGap { .. } => Err(JournalError::corrupt(&seg.path, pos as u64, defect.to_string())),
        RecordDefect::Checksum => {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let next = rest.get(format::RECORD_HEADER_LEN + len..).unwrap_or(&[]);
            if format::parse_record(next, seq + 1, config.max_record_bytes).is_ok() {
                Err(JournalError::corrupt(
                    &seg.path,
                    pos as u64,
                    format!("record {seq} is damaged but intact records follow it"),
                ))
            } else {
                Ok(())
            }
        }
        RecordDefect::ShortHeader | RecordDefect::ShortPayload { .. } | RecordDefect::Oversized { .. } => Ok(()),
    }
}

/// Decodes one payload; `Err(None)` means bytes were left over.
fn decode<R: DeserializeOwned>(payload: &[u8]) -> Result<R, Option<postcard::Error>> {
    let (record, rest) = postcard::take_from_bytes::<R>(payload).map_err(Some)?;
    if rest.is_empty() { Ok(record) } else { Err(None) }
}
