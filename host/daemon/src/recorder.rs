//! The journal recorder: the seed manager's [`DecisionRecorder`] writing
//! every decision to the [`DecisionJournal`].
//!
//! Durability rule: an accepted command is appended **and fsynced** inside
//! `command_accepted`, which the manager calls before it returns the
//! outcome, so nothing is acknowledged before it is on disk. Transitions
//! and gate verdicts are appended as they happen (ordered, not yet
//! synced); [`JournalRecorder::finish_call`] closes every state-changing
//! call that did not end with an accepted command (a step report that moved
//! a seed, a gate failure that culled one, a rollback that replaced state)
//! with a durable snapshot. A call that moved no seed to another stage but
//! changed in-stage progress (α, steps, windows) or a breaker ends with a
//! `Progress` record instead: appended without an fsync (one per training
//! step would cost the trainer an fsync per step), it reaches the kernel
//! before the call returns, so it survives a SIGKILL of the daemon, and the
//! next fsync makes it durable against power loss too. Those three record
//! kinds are the boundaries `SeedManager::restore` trusts.
//!
//! A journal failure cannot be returned through the recorder trait; it is
//! kept, logged, and reported by `finish_call`, which the daemon turns into
//! an error for that call and a refusal of every later state change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use kasmina::gates::GateDecision;
use kasmina::seeds::DecisionRecorder;
use kasmina_core::Clock;
use kasmina_journal::{DecisionJournal, JournalError};
use leyline::journal::{JournalRecord, LiveNonce, ProgressState};
use leyline::{AdaptationCommand, CommandPayload, Outcome, SeedOperation, SeedStage, SeedState};

/// Journal counters for `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Records appended.
    pub appends: AtomicU64,
    /// fsyncs done.
    pub syncs: AtomicU64,
    /// Total time in fsync, µs.
    pub sync_us: AtomicU64,
    /// Snapshots written (boundaries and compactions).
    pub snapshots: AtomicU64,
    /// Progress records written.
    pub progress_records: AtomicU64,
    /// Compactions done.
    pub compactions: AtomicU64,
    /// Gate verdicts recorded, passed.
    pub gates_passed: AtomicU64,
    /// Gate verdicts recorded, failed.
    pub gates_failed: AtomicU64,
}

struct Inner {
    journal: DecisionJournal,
    /// Transitions appended since the last boundary record.
    dirty: bool,
    /// The first failure; once set nothing more is written.
    failure: Option<String>,
    /// The progress the last boundary recorded (a Progress record is
    /// written only when it changed).
    last_progress: Option<ProgressState>,
    /// The accepted GERMINATE of each seed, re-appended after a compaction
    /// so the blend spec and mesh survive it.
    germinations: BTreeMap<String, JournalRecord>,
}

/// What a snapshot records: every seed, and the nonce ledger's live
/// entries (replay protection survives a restart, SPEC.md §3).
#[derive(Debug, Clone, Default)]
pub struct SnapshotParts {
    /// Every seed's state.
    pub seeds: Vec<SeedState>,
    /// In-stage progress and breakers.
    pub progress: ProgressState,
    /// Command ids still refused, with their expiry.
    pub nonces: Vec<LiveNonce>,
}

/// Writes decisions to the journal; see the module docs for the rules.
pub struct JournalRecorder {
    inner: Mutex<Inner>,
    clock: std::sync::Arc<dyn Clock>,
    stats: JournalStats,
    /// The training step decisions are taken at (set by the daemon from
    /// step reports; 0 before the first).
    step: AtomicU64,
}

impl std::fmt::Debug for JournalRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalRecorder").field("failure", &self.lock().failure).finish_non_exhaustive()
    }
}

impl JournalRecorder {
    /// A recorder over an opened journal. `history` is what `open`
    /// returned: the germinations in it are remembered for compaction.
    pub fn new(journal: DecisionJournal, history: &[JournalRecord], clock: std::sync::Arc<dyn Clock>) -> Self {
        let mut germinations = BTreeMap::new();
        for record in history {
            remember_germination(&mut germinations, record);
        }
        JournalRecorder {
            inner: Mutex::new(Inner { journal, dirty: false, failure: None, last_progress: None, germinations }),
            clock,
            stats: JournalStats::default(),
            step: AtomicU64::new(0),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &JournalStats {
        &self.stats
    }

    /// Sets the training step recorded with the next decisions.
    pub fn set_step(&self, step: u64) {
        self.step.store(step, Ordering::Relaxed);
    }

    /// The first journal failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Ends a host call: if it moved a seed without a durable boundary,
    /// writes a durable snapshot of `state()`; if only in-stage progress or
    /// a breaker changed, a `Progress` record of `progress()`; compacts when
    /// the journal has grown past its bound. `Err` means the call's effects
    /// are not recorded.
    pub fn finish_call(
        &self,
        progress: impl FnOnce() -> ProgressState,
        state: impl FnOnce() -> SnapshotParts,
    ) -> Result<(), String> {
        let mut inner = self.lock();
        if let Some(why) = &inner.failure {
            return Err(why.clone());
        }
        let result = if inner.journal.needs_compaction() {
            self.compact(&mut inner, state())
        } else if inner.dirty {
            self.write_snapshot(&mut inner, state())
        } else {
            let now = progress();
            if inner.last_progress.as_ref() == Some(&now) { Ok(()) } else { self.write_progress(&mut inner, now) }
        };
        match result {
            Ok(()) => Ok(()),
            Err(err) => Err(fail(&mut inner, err)),
        }
    }

    /// Writes a durable snapshot now (daemon start: the restored state
    /// becomes the base, so records of an unfinished call before it are
    /// never mistaken for committed ones later).
    pub fn checkpoint(&self, state: SnapshotParts) -> Result<(), String> {
        let mut inner = self.lock();
        if let Some(why) = &inner.failure {
            return Err(why.clone());
        }
        match self.write_snapshot(&mut inner, state) {
            Ok(()) => Ok(()),
            Err(err) => Err(fail(&mut inner, err)),
        }
    }

    fn write_snapshot(&self, inner: &mut Inner, state: SnapshotParts) -> Result<(), JournalError> {
        let SnapshotParts { seeds, progress, nonces } = state;
        let record =
            JournalRecord::Snapshot { seeds, progress: progress.clone(), nonces, recorded_at_ms: self.clock.now_ms() };
        self.append(inner, &record, true)?;
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        inner.dirty = false;
        inner.last_progress = Some(progress);
        Ok(())
    }

    /// A `Progress` boundary: written through to the kernel, not fsynced
    /// (see the module docs).
    fn write_progress(&self, inner: &mut Inner, progress: ProgressState) -> Result<(), JournalError> {
        let record = JournalRecord::Progress {
            step: self.step.load(Ordering::Relaxed),
            progress: progress.clone(),
            recorded_at_ms: self.clock.now_ms(),
        };
        self.append(inner, &record, false)?;
        self.stats.progress_records.fetch_add(1, Ordering::Relaxed);
        inner.last_progress = Some(progress);
        Ok(())
    }

    /// Snapshot into a fresh segment, old segments deleted, then the
    /// germinations of seeds still holding a blueprint re-appended.
    fn compact(&self, inner: &mut Inner, state: SnapshotParts) -> Result<(), JournalError> {
        let SnapshotParts { seeds, progress, nonces } = state;
        let keep: Vec<JournalRecord> = seeds
            .iter()
            .filter(|s| s.blueprint_id.is_some() && s.stage.is_active())
            .filter_map(|s| inner.germinations.get(&s.seed_id).cloned())
            .collect();
        let record =
            JournalRecord::Snapshot { seeds, progress: progress.clone(), nonces, recorded_at_ms: self.clock.now_ms() };
        let started = Instant::now();
        inner.journal.compact(&record)?;
        self.count_sync(started);
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        inner.dirty = false;
        inner.last_progress = Some(progress);
        let n = keep.len();
        for (i, record) in keep.iter().enumerate() {
            self.append(inner, record, i + 1 == n)?;
        }
        tracing::info!(bytes = inner.journal.total_bytes(), germinations = n, "kasmina.journal.compacted");
        Ok(())
    }

    fn append(&self, inner: &mut Inner, record: &JournalRecord, durable: bool) -> Result<(), JournalError> {
        inner.journal.append(record)?;
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        if durable {
            let started = Instant::now();
            inner.journal.sync()?;
            self.count_sync(started);
        }
        Ok(())
    }

    fn count_sync(&self, started: Instant) {
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sync_us
            .fetch_add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Appends unless an earlier failure stopped the journal.
    fn record(&self, record: JournalRecord, durable: bool) {
        let mut inner = self.lock();
        if inner.failure.is_some() {
            return;
        }
        let boundary = matches!(record, JournalRecord::CommandAccepted { .. });
        let transition = matches!(record, JournalRecord::Transition { .. });
        match self.append(&mut inner, &record, durable) {
            Ok(()) => {
                if boundary {
                    inner.dirty = false;
                    remember_germination(&mut inner.germinations, &record);
                } else if transition {
                    inner.dirty = true;
                }
            }
            Err(err) => {
                fail(&mut inner, err);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Appends are whole or poison the journal itself; the guard's data
        // stays coherent across a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn fail(inner: &mut Inner, err: JournalError) -> String {
    let why = format!("decision journal failed: {err}");
    tracing::error!(%why, "kasmina.journal.failed");
    inner.failure.get_or_insert(why).clone()
}

fn remember_germination(germinations: &mut BTreeMap<String, JournalRecord>, record: &JournalRecord) {
    if let JournalRecord::CommandAccepted { command, .. } = record
        && let CommandPayload::Seed(sc) = &command.payload
        && sc.operation == SeedOperation::Germinate
    {
        germinations.insert(command.target_seed_id.clone(), record.clone());
    }
}

impl DecisionRecorder for JournalRecorder {
    fn command_accepted(&self, command: &AdaptationCommand, outcome: &Outcome) {
        let record = JournalRecord::CommandAccepted {
            command: command.clone(),
            outcome: outcome.clone(),
            recorded_at_ms: self.clock.now_ms(),
        };
        self.record(record, true);
    }

    fn transition(&self, seed_id: &str, from: SeedStage, to: SeedStage, step: Option<u64>, reason: &str) {
        let record = JournalRecord::Transition {
            seed_id: seed_id.to_owned(),
            from,
            to,
            step: step.unwrap_or_else(|| self.step.load(Ordering::Relaxed)),
            reason: reason.to_owned(),
            recorded_at_ms: self.clock.now_ms(),
        };
        self.record(record, false);
    }

    fn gate(&self, seed_id: &str, decision: &GateDecision) {
        let counter = if decision.passed { &self.stats.gates_passed } else { &self.stats.gates_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let record = JournalRecord::GateVerdict {
            seed_id: seed_id.to_owned(),
            gate: decision.gate,
            passed: decision.passed,
            reason: decision.reason.clone(),
            inputs: decision.inputs.clone(),
            step: self.step.load(Ordering::Relaxed),
            recorded_at_ms: self.clock.now_ms(),
        };
        self.record(record, false);
    }

    fn state_replaced(&self, why: &str) {
        tracing::info!(why, "kasmina.journal.state_replaced");
        // Not a transition the table can replay: the call ends with a snapshot.
        self.lock().dirty = true;
    }
}
