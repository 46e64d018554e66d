//! The append-only journal: open (with recovery), append, fsync, rotate,
//! compact. Every file-system call goes through the [`Storage`] seam.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Entry, JournalConfig, Seq};
use crate::error::{JournalError, RecoveryReport};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::recovery::{self, ScanOptions, SegmentFile};
use crate::storage::{DataSync, FsStorage, Storage, StorageFile};

/// An open journal of records of type `R`. Not internally synchronised:
/// the owner serialises appends (they must be ordered anyway).
#[derive(Debug)]
pub struct Journal<R> {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: JournalConfig,
    /// Every segment, oldest first; the last one is open for appending.
    segments: Vec<SegmentFile>,
    file: Box<dyn StorageFile>,
    next_seq: u64,
    poisoned: Option<String>,
    scratch: Vec<u8>,
    _record: PhantomData<fn(&R) -> R>,
}

impl<R: Serialize + DeserializeOwned> Journal<R> {
    /// Opens (creating if needed) the journal in directory `dir` of the
    /// real file system: reads every segment, cuts a torn tail of the newest
    /// one, and returns the intact records in order with a report of what
    /// was found.
    pub fn open(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Self, Vec<Entry<R>>, RecoveryReport), JournalError> {
        Self::open_on(Arc::new(FsStorage), dir, config)
    }

    /// [`Journal::open`] on any storage (tests put a simulated disk here).
    pub fn open_on(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Self, Vec<Entry<R>>, RecoveryReport), JournalError> {
        Self::recover(storage, dir.as_ref(), config, None)
    }

    /// Opens like [`Journal::open_on`] and also cuts, durably, every record
    /// after `last`: what the owner wrote but never acknowledged before a
    /// write or fsync failed. Records are counted in
    /// [`RecoveryReport::discarded`]. A journal holding fewer records than
    /// `last` is opened as it is (records that were never synced can be
    /// gone after a power cut).
    pub fn open_through(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        config: JournalConfig,
        last: Seq,
    ) -> Result<(Self, Vec<Entry<R>>, RecoveryReport), JournalError> {
        Self::recover(storage, dir.as_ref(), config, Some(last.0))
    }

    fn recover(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: JournalConfig,
        keep_through: Option<u64>,
    ) -> Result<(Self, Vec<Entry<R>>, RecoveryReport), JournalError> {
        config.validate()?;
        let dir = dir.to_path_buf();
        storage.create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
        let found = recovery::list_segments_in(storage.as_ref(), &dir)?;
        let mut records = Vec::new();
        let mut report = RecoveryReport { segments: found.len(), records: 0, torn_tail: None, discarded: 0 };
        let mut segments = Vec::with_capacity(found.len() + 1);
        let mut next_seq: Option<u64> = None;
        let mut dir_changed = false;
        let count = found.len();
        for (i, mut seg) in found.into_iter().enumerate() {
            if keep_through.is_some_and(|last| next_seq.is_some_and(|next| next > last)) {
                // Everything in it comes after the acknowledged point.
                report.discarded += recovery::count_segment_records(storage.as_ref(), &seg, &config);
                storage.remove(&seg.path).map_err(|e| JournalError::io(&seg.path, e))?;
                dir_changed = true;
                continue;
            }
            let options =
                ScanOptions { is_last: i + 1 == count, expected_first: next_seq, keep_through, config: &config };
            let scan = recovery::scan_segment(storage.as_ref(), &seg, options, &mut records)?;
            next_seq = Some(scan.next_seq);
            report.discarded += scan.discarded;
            if scan.torn_tail.is_some() {
                report.torn_tail = scan.torn_tail;
                dir_changed = true;
            }
            if !scan.removed {
                seg.len = scan.len;
                segments.push(seg);
            }
        }
        if dir_changed {
            sync_dir(storage.as_ref(), &dir)?;
        }
        report.records = records.len() as u64;
        let next_seq = next_seq.unwrap_or(1);
        let file = match segments.last() {
            Some(active) => storage.open_append(&active.path).map_err(|e| JournalError::io(&active.path, e))?,
            None => {
                let (seg, file) = create_segment(storage.as_ref(), &dir, next_seq, config.schema_version)?;
                segments.push(seg);
                file
            }
        };
        let journal = Journal {
            storage,
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
        if let Err(e) = self.file.append(&buf) {
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

    /// Group commit: a handle that fsyncs the active segment without the
    /// journal, so that appends go on while it runs. Every record appended
    /// before this call is durable once [`DetachedSync::run`] returns `Ok`
    /// (older segments were synced when they were rotated out); records
    /// appended meanwhile may or may not be. The handle cannot poison the
    /// journal it does not hold: after a failed run the owner calls
    /// [`Journal::poison`].
    pub fn detached_sync(&self) -> Result<DetachedSync, JournalError> {
        if let Some(why) = &self.poisoned {
            return Err(JournalError::Poisoned(why.clone()));
        }
        Ok(DetachedSync { file: self.file.data_sync(), path: self.active().path.clone() })
    }

    /// Stops every later append and sync with `why` (a [`DetachedSync`]
    /// failed: the kernel may have dropped the dirty pages, as for
    /// [`Journal::sync`]).
    pub fn poison(&mut self, why: String) {
        self.poisoned.get_or_insert(why);
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
        self.compact_with(&[], snapshot)
    }

    /// Like [`Journal::compact`], with `carried` records written into the
    /// fresh segment before the snapshot: records the snapshot does not
    /// hold but state rebuilding still needs (the daemon carries the
    /// accepted GERMINATE of every active seed). They are durable together
    /// with the snapshot, before any old segment is deleted, so no crash
    /// point leaves the snapshot without them.
    pub fn compact_with(&mut self, carried: &[R], snapshot: &R) -> Result<Seq, JournalError> {
        if self.active().len > SEGMENT_HEADER_LEN as u64 {
            self.rotate()?;
        }
        // Carried records and the snapshot may fill more than one segment.
        let first_new = self.segments.len() - 1;
        for record in carried {
            self.append(record)?;
        }
        let seq = self.append_durable(snapshot)?;
        // Oldest first: a crash part-way leaves a contiguous run of old
        // segments before the snapshot, which recovery reads.
        let old: Vec<SegmentFile> = self.segments.drain(..first_new).collect();
        let removed =
            old.iter().try_for_each(|seg| self.storage.remove(&seg.path).map_err(|e| JournalError::io(&seg.path, e)));
        if let Err(e) = removed.and_then(|()| sync_dir(self.storage.as_ref(), &self.dir)) {
            self.poisoned = Some(format!("compaction failed: {e}"));
            return Err(e);
        }
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

    /// The storage the journal writes through.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Why the journal refuses appends, if an earlier failure poisoned it.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
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
        match create_segment(self.storage.as_ref(), &self.dir, self.next_seq, self.config.schema_version) {
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

/// An fsync of the journal's active segment that runs without the journal
/// (see [`Journal::detached_sync`]).
#[derive(Debug)]
pub struct DetachedSync {
    file: Arc<dyn DataSync>,
    path: PathBuf,
}

impl DetachedSync {
    /// Makes the records appended before the handle was taken durable.
    pub fn run(&self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|e| JournalError::io(&self.path, e))
    }
}

/// Creates a segment with its header written and synced, and the directory
/// entry synced, so a crash never leaves a newer segment without a header.
fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    first_seq: u64,
    schema_version: u32,
) -> Result<(SegmentFile, Box<dyn StorageFile>), JournalError> {
    let path = dir.join(recovery::segment_name(first_seq));
    let mut file = storage.create_new(&path).map_err(|e| JournalError::io(&path, e))?;
    let header = SegmentHeader { first_seq, schema_version }.encode();
    file.append(&header).map_err(|e| JournalError::io(&path, e))?;
    file.sync_all().map_err(|e| JournalError::io(&path, e))?;
    sync_dir(storage, dir)?;
    Ok((SegmentFile { path, first_seq, len: SEGMENT_HEADER_LEN as u64 }, file))
}

fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), JournalError> {
    storage.sync_dir(dir).map_err(|e| JournalError::io(dir, e))
}
