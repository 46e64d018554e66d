//! What the journal and its recovery share: limits ([`JournalConfig`]),
//! sequence numbers ([`Seq`]) and recovered entries ([`Entry`]). Kept apart
//! so `journal` (writing) and `recovery` (reading) both depend on it and
//! not on each other.

use crate::error::JournalError;
use crate::format::SEGMENT_HEADER_LEN;

/// Default cap on one record's payload: commands carry at most 16 KiB of
/// annotations and snapshots a few hundred bytes per seed, so 1 MiB leaves
/// two orders of magnitude of headroom while bounding what recovery loads.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1 << 20;
/// Default segment size before rotation.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Default total size above which [`Journal::needs_compaction`](crate::Journal::needs_compaction) says yes.
pub const DEFAULT_COMPACT_AFTER_BYTES: u64 = 64 << 20;

/// Limits and identity of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Largest payload accepted on append and believed on recovery.
    pub max_record_bytes: u32,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Total size above which the owner should compact.
    pub compact_after_bytes: u64,
    /// Payload schema version written into (and demanded of) every segment.
    pub schema_version: u32,
}

impl JournalConfig {
    /// Defaults for a payload schema version.
    pub const fn new(schema_version: u32) -> Self {
        JournalConfig {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            compact_after_bytes: DEFAULT_COMPACT_AFTER_BYTES,
            schema_version,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), JournalError> {
        if self.max_record_bytes == 0 {
            return Err(JournalError::Config("max_record_bytes must be > 0".into()));
        }
        if self.segment_bytes <= SEGMENT_HEADER_LEN as u64 {
            return Err(JournalError::Config(format!(
                "segment_bytes must exceed the {SEGMENT_HEADER_LEN}-byte header"
            )));
        }
        if self.compact_after_bytes < self.segment_bytes {
            return Err(JournalError::Config("compact_after_bytes must be >= segment_bytes".into()));
        }
        Ok(())
    }
}

/// A record's sequence number: consecutive from 1 across the journal's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(pub u64);

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One recovered record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<R> {
    /// Sequence number.
    pub seq: Seq,
    /// The record.
    pub record: R,
}
