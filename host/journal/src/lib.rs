//! Kasmina's decision journal: an append-only, checksummed, crash-safe log.
//!
//! Module map, in the order a record meets them:
//! - [`journal`]: [`Journal::append`] frames a record and writes it to the
//!   newest segment, [`Journal::sync`] fsyncs, [`Journal::append_durable`]
//!   does both; [`Journal::detached_sync`] fsyncs without holding the
//!   journal, so appends go on meanwhile (the daemon's group commit); segments
//!   rotate by size and [`Journal::compact`] replaces history by a snapshot;
//! - [`format`](mod@format): the byte layout (segment header, length-prefixed CRC32
//!   record frames carrying a sequence number) and why CRC32;
//! - [`recovery`]: [`Journal::open`] reads every segment back, cuts a torn
//!   tail of the newest one and reports it, and refuses (never misreads) any
//!   other damage; [`Journal::open_through`] also cuts records after a given
//!   one (what an owner wrote but never acknowledged before a failure);
//! - [`config`]: what writing and recovery share — [`JournalConfig`],
//!   [`Seq`], [`Entry`];
//! - [`error`]: [`JournalError`], [`RecoveryReport`], [`TornTail`];
//! - [`storage`]: the seam every file-system call goes through —
//!   [`FsStorage`] (real files) and [`storage::sim::SimStorage`], a
//!   simulated disk that loses unsynced bytes at a power cut, fills up
//!   and fails writes or fsyncs, for durability tests;
//!   [`storage::wrap::WrapFiles`] changes what a storage's files do (a test
//!   holds, fails or skips their syncs) and delegates everything else.
//!
//! The journal is generic over its record type; the daemon uses
//! [`DecisionJournal`] with [`leyline::journal::JournalRecord`].

pub mod config;
pub mod error;
pub mod format;
pub mod journal;
pub mod recovery;
pub mod storage;

pub use config::{
    DEFAULT_COMPACT_AFTER_BYTES, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES, Entry, JournalConfig, Seq,
};
pub use error::{JournalError, RecoveryReport, TailDefect, TornTail};
pub use journal::{DetachedSync, Journal};
pub use storage::{DataSync, FsStorage, Storage, StorageFile};

/// The daemon's journal of accepted commands, transitions, gate verdicts and
/// snapshots.
pub type DecisionJournal = Journal<leyline::journal::JournalRecord>;

/// Default configuration of a [`DecisionJournal`].
pub const fn decision_journal_config() -> JournalConfig {
    JournalConfig::new(leyline::journal::JOURNAL_RECORD_VERSION)
}
