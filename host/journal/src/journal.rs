//! The append-only journal: open (with recovery), append, fsync, rotate,
//! compact.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Entry, JournalConfig, Seq};
use crate::error::{JournalError, RecoveryReport};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::recovery::{self, SegmentFile};

/// An open journal of records of type `R`. Not internally synchronised:
/// the owner serialises appends (they must be ordered anyway).
#[derive(Debug)]
pub struct Journal<R> {
    dir: PathBuf,
    config: JournalConfig,
    /// Every segment, oldest first; the last one is open for appending.
    segments: Vec<SegmentFile>,
    file: File,
    next_seq: u64,
    poisoned: Option<String>,
    scratch: Vec<u8>,
    _record: PhantomData<fn(&R) -> R>,
}

impl<R: Serialize + DeserializeOwned> Journal<R> {
    /// Opens (creating if needed) the journal in directory `dir`: reads every
    /// segment, cuts a torn tail of the newest one, and returns the intact
    /// records in order with a report of what was found.
    pub fn open(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Self, Vec<Entry<R>>, RecoveryReport), JournalError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
        let found = recovery::list_segments(&dir)?;
        let mut records = Vec::new();
        let mut report = RecoveryReport { segments: found.len(), records: 0, torn_tail: None };
        let mut segments = Vec::with_capacity(found.len() + 1);
        let mut next_seq: Option<u64> = None;
        let count = found.len();
        for (i, mut seg) in found.into_iter().enumerate() {
            let scan = recovery::scan_segment(&seg, i + 1 == count, next_seq, &config, &mut records)?;
            next_seq = Some(scan.next_seq);
            if scan.torn_tail.is_some() {
                report.torn_tail = scan.torn_tail;
            }
            if !scan.removed {
                seg.len = scan.len;
                segments.push(seg);
            }
        }
        if report.torn_tail.is_some() {
            sync_dir(&dir)?;
        }
        report.records = records.len() as u64;
        let next_seq = next_seq.unwrap_or(1);
        let file = match segments.last() {
            Some(active) => {
                OpenOptions::new().append(true).open(&active.path).map_err(|e| JournalError::io(&active.path, e))?
            }
            None => {
                let (seg, file) = create_segment(&dir, next_seq, config.schema_version)?;
                segments.push(seg);
                file
            }
        };
        let journal = Journal {
            dir,
            config,
            segments,
            file,
            next_seq,
            poisoned: None,
            scratch: Vec::new(),
            _record: PhantomData,
        };
        Ok((journal, records, report))
    }

    /// Appends a record (buffered by the OS, not yet durable) and returns its
    /// sequence number. Call [`Journal::sync`] before acknowledging it.
    pub fn append(&mut self, record: &R) -> Result<Seq, JournalError> {
        if let Some(why) = &self.poisoned {
            return Err(JournalError::Poisoned(why.clone()));
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.resize(RECORD_HEADER_LEN, 0);
        let mut buf = postcard::to_extend(record, buf).map_err(JournalError::Encode)?;
        let payload = buf.len() - RECORD_HEADER_LEN;
        if payload > self.config.max_record_bytes as usize {
            return Err(JournalError::RecordTooLarge { size: payload, max: self.config.max_record_bytes });
        }
        let active_len = self.active().len;
        if active_len > SEGMENT_HEADER_LEN as u64 && active_len + buf.len() as u64 > self.config.segment_bytes {
            self.rotate()?;
        }
        let seq = self.next_seq;
        format::seal_record(&mut buf, seq);
        if let Err(e) = self.file.write_all(&buf) {
            let path = self.active().path.clone();
            self.poisoned = Some(format!("write to {} failed: {e}", path.display()));
            return Err(JournalError::io(path, e));
        }
        let len = buf.len() as u64;
        self.active_mut().len += len;
        self.next_seq += 1;
        self.scratch = buf;
        Ok(Seq(seq))
    }

    /// Makes every appended record durable (fdatasync). After a failed fsync
    /// the kernel may have dropped the dirty pages, so the journal poisons
    /// itself rather than pretend a retry could succeed.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if let Some(why) = &self.poisoned {
            return Err(JournalError::Poisoned(why.clone()));
        }
        if let Err(e) = self.file.sync_data() {
            let path = self.active().path.clone();
            self.poisoned = Some(format!("fsync of {} failed: {e}", path.display()));
            return Err(JournalError::io(path, e));
        }
        Ok(())
    }

    /// Appends and fsyncs: when this returns `Ok`, the record survives a
    /// crash. The daemon acknowledges a command only after this.
    pub fn append_durable(&mut self, record: &R) -> Result<Seq, JournalError> {
        let seq = self.append(record)?;
        self.sync()?;
        Ok(seq)
    }

    /// Whether the journal has grown past `compact_after_bytes`.
    pub fn needs_compaction(&self) -> bool {
        self.total_bytes() > self.config.compact_after_bytes
    }

    /// Compaction hook: starts a fresh segment whose first record is
    /// `snapshot` (durable), then deletes every older segment. A crash in
    /// between leaves old segments plus the snapshot, which recovery reads
    /// correctly (state rebuilding starts at the last snapshot).
    pub fn compact(&mut self, snapshot: &R) -> Result<Seq, JournalError> {
        if self.active().len > SEGMENT_HEADER_LEN as u64 {
            self.rotate()?;
        }
        let seq = self.append_durable(snapshot)?;
        let keep = self.segments.len() - 1;
        for seg in self.segments.drain(..keep) {
            fs::remove_file(&seg.path).map_err(|e| JournalError::io(&seg.path, e))?;
        }
        sync_dir(&self.dir)?;
        Ok(seq)
    }

    /// Sequence number the next append will get.
    pub fn next_seq(&self) -> Seq {
        Seq(self.next_seq)
    }

    /// Bytes in all segments.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Closes the active segment (durably) and starts the next one.
    fn rotate(&mut self) -> Result<(), JournalError> {
        // The old segment must be complete on disk before a newer one can
        // exist: recovery only forgives damage in the newest segment.
        self.sync()?;
        match create_segment(&self.dir, self.next_seq, self.config.schema_version) {
            Ok((seg, file)) => {
                self.segments.push(seg);
                self.file = file;
                Ok(())
            }
            Err(e) => {
                self.poisoned = Some(format!("segment rotation failed: {e}"));
                Err(e)
            }
        }
    }

    fn active(&self) -> &SegmentFile {
        // `open` always leaves at least one segment and nothing removes the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut SegmentFile {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }
}

/// Creates a segment with its header written and synced, and the directory
/// entry synced, so a crash never leaves a newer segment without a header.
fn create_segment(dir: &Path, first_seq: u64, schema_version: u32) -> Result<(SegmentFile, File), JournalError> {
    let path = dir.join(recovery::segment_name(first_seq));
    let mut file =
        OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| JournalError::io(&path, e))?;
    let header = SegmentHeader { first_seq, schema_version }.encode();
    file.write_all(&header).map_err(|e| JournalError::io(&path, e))?;
    file.sync_all().map_err(|e| JournalError::io(&path, e))?;
    sync_dir(dir)?;
    Ok((SegmentFile { path, first_seq, len: SEGMENT_HEADER_LEN as u64 }, file))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| JournalError::io(dir, e))
}
