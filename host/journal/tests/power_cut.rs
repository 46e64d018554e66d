//! Power cuts on a simulated disk ([`SimStorage`]): the journal is crashed
//! at **every** mutating file-system call of a workload that appends,
//! rotates segments and compacts, and the disk keeps only what was synced
//! (or, in the torn mode, a random part of the rest). After each cut the
//! journal must reopen with every acknowledged record, exactly as written,
//! in one consecutive run that starts at record 1 or holds a compaction
//! snapshot — so the state it folds to is the state after some record at
//! or past the last acknowledgement, never a mixture.
//!
//! SIGKILL cannot find a missing fsync (the page cache survives it); this
//! can, and the two negative controls at the end show it: a journal
//! whose file fsyncs, or whose directory fsyncs, do nothing is caught
//! losing acknowledged records.
//!
//! `KASMINA_POWER_CUT_SEEDS=N` runs N workload seeds instead of 2 (each
//! seed: every op index × both cut modes).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use kasmina_journal::storage::sim::{PowerCut, SimStorage};
use kasmina_journal::storage::wrap::WrapFiles;
use kasmina_journal::{DataSync, Journal, JournalConfig, Storage, StorageFile};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The test's record: a key/value write, or the whole state (compaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Op {
    Set { key: u8, value: u64, pad: Vec<u8> },
    Snapshot { state: BTreeMap<u8, u64> },
}

type State = BTreeMap<u8, u64>;

fn fold<'a>(records: impl IntoIterator<Item = &'a Op>) -> State {
    let mut state = State::new();
    for op in records {
        match op {
            Op::Set { key, value, .. } => {
                state.insert(*key, *value);
            }
            Op::Snapshot { state: s } => state = s.clone(),
        }
    }
    state
}

fn config() -> JournalConfig {
    // Small segments: a record of up to ~200 bytes, so rotation every few
    // records and compaction every few segments.
    JournalConfig { segment_bytes: 600, compact_after_bytes: 2_000, ..JournalConfig::new(1) }
}

fn dir() -> PathBuf {
    PathBuf::from("/disk/journal")
}

/// What one workload call was, for counting where cuts landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallKind {
    Append,
    Rotation,
    Compaction,
}

/// The outcome of running a workload until it finishes or the disk dies.
struct Run {
    /// Every record handed to the journal, by sequence number (1-based).
    written: BTreeMap<u64, Op>,
    /// Highest sequence number whose call returned Ok.
    acked: u64,
    /// (first op, last op, kind) of each call, for the dry run.
    calls: Vec<(u64, u64, CallKind)>,
}

/// A deterministic workload: groups of appends closed by a sync (the
/// daemon's shape: decisions, then a durable boundary), a compaction
/// whenever the journal asks for one. Stops at the first error.
fn workload(storage: Arc<dyn Storage>, disk: &SimStorage, seed: u64, calls: usize) -> Run {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut run = Run { written: BTreeMap::new(), acked: 0, calls: Vec::new() };
    let Ok((mut journal, entries, _)) = Journal::<Op>::open_on(storage, dir(), config()) else { return run };
    assert!(entries.is_empty());
    let mut state = State::new();
    for _ in 0..calls {
        let first_op = disk.stats().ops + 1;
        let segments = journal.segment_count();
        let (kind, result) = if journal.needs_compaction() {
            let snapshot = Op::Snapshot { state: state.clone() };
            run.written.insert(journal.next_seq().0, snapshot.clone());
            (CallKind::Compaction, journal.compact(&snapshot).map(|_| ()))
        } else {
            let group = rng.gen_range(1..=3);
            let mut result = Ok(());
            for _ in 0..group {
                let op =
                    Op::Set { key: rng.gen_range(0..8), value: rng.r#gen(), pad: vec![0xA5; rng.gen_range(0..160)] };
                run.written.insert(journal.next_seq().0, op.clone());
                if let Op::Set { key, value, .. } = &op {
                    state.insert(*key, *value);
                }
                if let Err(e) = journal.append(&op) {
                    result = Err(e);
                    break;
                }
            }
            let result = result.and_then(|()| journal.sync());
            let kind = if journal.segment_count() > segments { CallKind::Rotation } else { CallKind::Append };
            (kind, result)
        };
        run.calls.push((first_op, disk.stats().ops, kind));
        if result.is_err() {
            return run;
        }
        run.acked = journal.next_seq().0 - 1;
    }
    run
}

/// Reopens after the cut and checks the recovered records against what
/// was written and acknowledged. Returns the number of records recovered.
fn check_recovery(storage: Arc<dyn Storage>, run: &Run, context: &str) -> Result<u64, String> {
    let (mut journal, entries, _report) = Journal::<Op>::open_on(Arc::clone(&storage), dir(), config())
        .map_err(|e| format!("{context}: the journal does not reopen: {e}"))?;
    let last = entries.last().map_or(0, |e| e.seq.0);
    if last < run.acked {
        return Err(format!(
            "{context}: acknowledged records lost: recovered up to {last}, acknowledged {}",
            run.acked
        ));
    }
    for (k, e) in entries.iter().enumerate() {
        if k > 0 && e.seq.0 != entries[k - 1].seq.0 + 1 {
            return Err(format!("{context}: gap before record {}", e.seq));
        }
        match run.written.get(&e.seq.0) {
            Some(op) if *op == e.record => {}
            other => return Err(format!("{context}: record {} is {:?}, written {other:?}", e.seq, e.record)),
        }
    }
    // A run that does not start at record 1 lost its beginning to a
    // compaction, whose snapshot must then be in it (a compaction cut
    // part-way through its deletions leaves a few old segments before it).
    if let Some(first) = entries.first()
        && first.seq.0 > 1
        && !entries.iter().any(|e| matches!(e.record, Op::Snapshot { .. }))
    {
        return Err(format!("{context}: history starts at record {} and holds no snapshot", first.seq));
    }
    let expected = fold(run.written.range(..=last).map(|(_, op)| op));
    let recovered = fold(entries.iter().map(|e| &e.record));
    if recovered != expected {
        return Err(format!("{context}: state {recovered:?} is not the state after record {last}: {expected:?}"));
    }
    // The recovered journal keeps working where it ended.
    let next = journal.next_seq().0;
    if !entries.is_empty() && next != last + 1 {
        return Err(format!("{context}: next sequence number {next} after {last}"));
    }
    let probe = Op::Set { key: 99, value: next, pad: Vec::new() };
    journal.append_durable(&probe).map_err(|e| format!("{context}: append after recovery: {e}"))?;
    drop(journal);
    let (_, again, report) =
        Journal::<Op>::open_on(storage, dir(), config()).map_err(|e| format!("{context}: second reopen: {e}"))?;
    if again.last().map(|e| &e.record) != Some(&probe) || report.torn_tail.is_some() {
        return Err(format!("{context}: the record appended after recovery did not read back cleanly"));
    }
    Ok(entries.len() as u64)
}

/// Every op index of one workload seed, in both cut modes, against a
/// storage built by `wrap` over the simulated disk.
fn campaign(seed: u64, calls: usize, wrap: impl Fn(&SimStorage) -> Arc<dyn Storage>) -> Result<Tally, String> {
    let dry_disk = SimStorage::new();
    let dry = workload(wrap(&dry_disk), &dry_disk, seed, calls);
    let total_ops = dry_disk.stats().ops;
    let mut tally = Tally::default();
    for at in 1..=total_ops {
        let kind = dry.calls.iter().find(|(a, b, _)| (*a..=*b).contains(&at)).map(|c| c.2);
        for how in [PowerCut::DropUnsynced, PowerCut::Torn { seed: seed ^ at }] {
            let disk = SimStorage::new();
            disk.cut_at_op(at, how);
            let run = workload(wrap(&disk), &disk, seed, calls);
            assert!(disk.is_down(), "the cut at op {at} fired");
            disk.restart();
            let context = format!("seed {seed}, cut at op {at}/{total_ops} ({how:?}, during {kind:?})");
            check_recovery(wrap(&disk), &run, &context)?;
            tally.cuts += 1;
            tally.dropped_bytes += disk.stats().bytes_dropped;
            *tally.by_kind.entry(kind).or_default() += 1;
        }
    }
    Ok(tally)
}

#[derive(Debug, Default)]
struct Tally {
    cuts: u64,
    dropped_bytes: u64,
    by_kind: BTreeMap<Option<CallKind>, u64>,
}

fn seeds() -> u64 {
    std::env::var("KASMINA_POWER_CUT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2)
}

#[test]
fn a_power_cut_at_every_op_loses_no_acknowledged_record() {
    let started = std::time::Instant::now();
    let mut total = Tally::default();
    for seed in 0..seeds() {
        let tally = campaign(seed, 60, SimStorage::shared).unwrap_or_else(|e| panic!("{e}"));
        total.cuts += tally.cuts;
        total.dropped_bytes += tally.dropped_bytes;
        for (k, n) in tally.by_kind {
            *total.by_kind.entry(k).or_default() += n;
        }
    }
    println!(
        "{} power cuts ({:?}), {} unsynced bytes dropped, 0 acknowledged records lost, {:?}",
        total.cuts,
        total.by_kind,
        total.dropped_bytes,
        started.elapsed()
    );
    for kind in [CallKind::Append, CallKind::Rotation, CallKind::Compaction] {
        assert!(
            total.by_kind.get(&Some(kind)).copied().unwrap_or(0) >= 10,
            "cuts during {kind:?}: {:?}",
            total.by_kind
        );
    }
}

/// A file whose syncs do nothing: the journal bug the simulated disk must
/// be able to see (the directory-sync twin is `WrapFiles::skipping_dir_syncs`).
#[derive(Debug)]
struct ForgetfulFile {
    inner: Box<dyn StorageFile>,
}

impl StorageFile for ForgetfulFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.append(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn data_sync(&self) -> Arc<dyn DataSync> {
        Arc::new(NoSync)
    }
}

#[derive(Debug)]
struct NoSync;

impl DataSync for NoSync {
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn negative_control_a_journal_without_file_fsync_is_caught() {
    let err = campaign(7, 30, |disk| {
        Arc::new(WrapFiles::new(disk.shared(), |inner| Box::new(ForgetfulFile { inner }))) as Arc<dyn Storage>
    })
    .expect_err("skipping fsync must lose an acknowledged record at some cut");
    assert!(err.contains("acknowledged records lost") || err.contains("does not reopen"), "{err}");
}

#[test]
fn negative_control_a_journal_without_directory_fsync_is_caught() {
    let err = campaign(7, 30, |disk| {
        Arc::new(WrapFiles::new(disk.shared(), |file| file).skipping_dir_syncs()) as Arc<dyn Storage>
    })
    .expect_err("skipping the directory fsync must lose a segment at some cut");
    assert!(err.contains("acknowledged records lost") || err.contains("does not reopen"), "{err}");
}

#[test]
fn unacknowledged_records_are_cut_by_open_through() {
    let disk = SimStorage::new();
    let (mut journal, _, _) = Journal::<Op>::open_on(disk.shared(), dir(), config()).unwrap();
    let set = |v: u64| Op::Set { key: 1, value: v, pad: vec![1; 100] };
    for v in 1..=6 {
        journal.append_durable(&set(v)).unwrap();
    }
    let acked = journal.next_seq().0 - 1;
    // A failed call's records, over a rotation: synced, but never acknowledged.
    for v in 7..=16 {
        journal.append(&set(v)).unwrap();
    }
    journal.sync().unwrap();
    assert!(journal.segment_count() >= 3);
    drop(journal);
    let (mut journal, entries, report) =
        Journal::<Op>::open_through(disk.shared(), dir(), config(), kasmina_journal::Seq(acked)).unwrap();
    assert_eq!(entries.last().map(|e| e.seq.0), Some(acked));
    assert_eq!(report.discarded, 10);
    assert_eq!(fold(entries.iter().map(|e| &e.record)), BTreeMap::from([(1, 6)]));
    assert_eq!(journal.append_durable(&set(70)).unwrap().0, acked + 1);
    drop(journal);
    disk.power_cut(PowerCut::DropUnsynced);
    let (_, entries, report) = Journal::<Op>::open_on(disk.shared(), dir(), config()).unwrap();
    assert_eq!(entries.len() as u64, acked + 1, "the cut is durable: the discarded records stay gone");
    assert_eq!(report.torn_tail, None);
}

#[test]
fn a_detached_sync_makes_earlier_appends_durable_while_the_journal_goes_on() {
    let disk = SimStorage::new();
    let (mut journal, _, _) = Journal::<Op>::open_on(disk.shared(), dir(), config()).unwrap();
    let set = |v: u64| Op::Set { key: 1, value: v, pad: vec![1; 20] };
    journal.append(&set(1)).unwrap();
    journal.append(&set(2)).unwrap();
    let sync = journal.detached_sync().unwrap();
    // The group commit's leader runs it on another thread, without the journal.
    std::thread::scope(|s| s.spawn(|| sync.run()).join().unwrap()).unwrap();
    journal.append(&set(3)).unwrap();
    drop(journal);
    disk.power_cut(PowerCut::DropUnsynced);
    let (_, entries, _) = Journal::<Op>::open_on(disk.shared(), dir(), config()).unwrap();
    // Negative control: the record appended after the sync is gone.
    assert_eq!(fold(entries.iter().map(|e| &e.record)), BTreeMap::from([(1, 2)]), "{entries:?}");
    assert_eq!(entries.len(), 2);
}

#[test]
fn a_failed_detached_sync_poisons_the_journal_through_its_owner() {
    let disk = SimStorage::new();
    let (mut journal, _, _) = Journal::<Op>::open_on(disk.shared(), dir(), config()).unwrap();
    journal.append(&Op::Set { key: 1, value: 1, pad: Vec::new() }).unwrap();
    let sync = journal.detached_sync().unwrap();
    disk.set_faults(kasmina_journal::storage::sim::Faults { fail_syncs: true, ..disk.faults() });
    let err = sync.run().unwrap_err().to_string();
    assert!(err.contains("journal") || err.contains("fsync"), "{err}");
    journal.poison(format!("fsync failed: {err}"));
    assert!(journal.append(&Op::Set { key: 1, value: 2, pad: Vec::new() }).is_err());
    assert!(journal.detached_sync().is_err());
}
