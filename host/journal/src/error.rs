//! Journal errors: one variant per thing an operator or caller can act on.

use std::path::PathBuf;

use crate::format::RecordDefect;

/// Everything that can go wrong opening or writing a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file-system call failed.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A record to append encodes to more bytes than the cap allows.
    #[error("journal record of {size} bytes exceeds the cap of {max} bytes")]
    RecordTooLarge {
        /// Encoded size.
        size: usize,
        /// Cap.
        max: u32,
    },
    /// A record could not be encoded.
    #[error("journal record could not be encoded: {0}")]
    Encode(postcard::Error),
    /// A record passed its checksum but does not decode as the record type:
    /// the journal was written by other software, never a torn write.
    #[error("journal record {seq} in {segment} is intact but does not decode: {source}")]
    Undecodable {
        /// Segment file.
        segment: PathBuf,
        /// Sequence number.
        seq: u64,
        /// Decoder error.
        source: postcard::Error,
    },
    /// Damage that is not a torn tail: inside a segment that is not the
    /// last, in a segment header, or followed by intact records. Cutting it
    /// would drop acknowledged records, so the journal refuses to open.
    #[error("journal segment {segment} is corrupt at offset {offset}: {detail}")]
    Corrupt {
        /// Segment file.
        segment: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A segment was written with another payload schema version.
    #[error(
        "journal segment {segment} has schema version {found}; this build reads version {expected}: move the journal directory aside (read it with the build that wrote it) and start with an empty one"
    )]
    SchemaMismatch {
        /// Segment file.
        segment: PathBuf,
        /// Version in the segment header.
        found: u32,
        /// Version this build writes and reads.
        expected: u32,
    },
    /// An earlier write or fsync failed, so what is on disk is unknown; the
    /// journal accepts nothing more until it is reopened (which recovers).
    #[error("journal is poisoned by an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// The configuration is unusable.
    #[error("journal configuration invalid: {0}")]
    Config(String),
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JournalError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(segment: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        JournalError::Corrupt { segment: segment.into(), offset, detail: detail.into() }
    }
}

/// A torn or corrupt tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Segment that was truncated (or removed, when its header was torn).
    pub segment: PathBuf,
    /// Offset the segment was cut at.
    pub offset: u64,
    /// Bytes removed.
    pub bytes_cut: u64,
    /// What was wrong with the first bad byte range.
    pub defect: TailDefect,
}

/// Why a tail was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailDefect {
    /// A record was torn or damaged.
    Record(RecordDefect),
    /// The newest segment's header was torn while the segment was created.
    SegmentHeader,
}

impl std::fmt::Display for TailDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailDefect::Record(d) => d.fmt(f),
            TailDefect::SegmentHeader => f.write_str("segment header torn"),
        }
    }
}

/// What [`crate::Journal::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Intact records returned.
    pub records: u64,
    /// The tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Intact records cut because they came after the point the owner
    /// acknowledged ([`crate::Journal::open_through`]); 0 otherwise.
    pub discarded: u64,
}
