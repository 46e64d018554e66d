//! The journal recorder: the seed manager's [`DecisionRecorder`] writing
//! every decision to the [`DecisionJournal`].
//!
//! Durability rule: nothing is answered before what it rests on is on
//! disk. An accepted command's record is appended inside
//! `command_accepted`; transitions and gate verdicts are appended as they
//! happen; [`JournalRecorder::finish_call`] closes every state-changing call
//! that did not end with an accepted command (a step report that moved a
//! seed, a gate failure that culled one, a rollback that replaced state)
//! with a snapshot. The call's answer then waits in
//! [`JournalRecorder::wait_durable`] for an fsync covering its records.
//! A call that moved no seed to another stage but changed in-stage progress
//! (α, steps, windows) or a breaker ends with a `Progress` record instead,
//! which needs no fsync of its own (one per training step would cost the
//! trainer an fsync per step): it reaches the kernel before the call
//! returns, so it survives a SIGKILL of the daemon, and the next fsync makes
//! it durable against power loss too. Those three record kinds are the
//! boundaries `SeedManager::restore` trusts.
//!
//! Group commit: the daemon applies calls one at a time (their records
//! must be ordered) but waits for durability outside that turn. The first
//! waiter takes the fsync turn and syncs through the last finished call —
//! without holding the journal, so later calls append meanwhile — and
//! every call finished by then is answered by that one fsync; the others
//! queue for the next. A call whose answer was computed on top of records
//! not yet durable (any call after an accepted command still waiting) waits
//! for the same fsync, even when it wrote nothing itself: it must not be
//! answered from state a failed fsync could still take back.
//!
//! A journal failure cannot be returned through the recorder trait; it is
//! kept, logged, and reported by `finish_call` or `wait_durable`, which the
//! daemon turns into a `journal_unavailable` refusal of that call (and of
//! every call waiting on the same failed fsync). Recovery (driven by the
//! daemon, see `daemon_host`) is bounded and keeps one rule: nothing a
//! refused call wrote may outlive it. [`JournalRecorder::reopen`] reopens
//! the journal through the last record of the last acknowledged call
//! ([`JournalRecorder::acknowledged`]), cutting what came after it;
//! [`JournalRecorder::resume`] compacts into a fresh segment (so a disk
//! that filled up gets the old segments back as free space) and only then
//! takes calls again. Attempts are at least [`JOURNAL_RETRY_INTERVAL_MS`]
//! apart, so a flood of calls against a full disk re-reads the journal at
//! most a few times a second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use kasmina::gates::GateDecision;
use kasmina::seeds::DecisionRecorder;
use kasmina_core::Clock;
use kasmina_journal::{DecisionJournal, JournalError, RecoveryReport, Seq};
use leyline::journal::{JournalRecord, LiveNonce, ProgressState};
use leyline::{AdaptationCommand, CommandPayload, Outcome, SeedOperation, SeedStage, SeedState};

/// Least time between two attempts to recover a failed journal: each
/// attempt re-reads the journal (at most `compact_after_bytes`, 64 MiB by
/// default), and half a second keeps that off a disk that is still full
/// while bringing the daemon back soon after space returns.
pub const JOURNAL_RETRY_INTERVAL_MS: u64 = 500;

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
    /// Journal failures (each refuses the call it happened in).
    pub failures: AtomicU64,
    /// Recoveries: the journal reopened and taking calls again.
    pub recoveries: AtomicU64,
    /// Records of refused calls cut when the journal was reopened.
    pub discarded_records: AtomicU64,
}

struct Inner {
    journal: DecisionJournal,
    /// Transitions appended since the last boundary record.
    dirty: bool,
    /// The first failure since the last recovery; while set nothing more
    /// is written.
    failure: Option<String>,
    /// Sequence number of the last record of the last call that was
    /// answered, or can be (0: none yet). Always a call boundary.
    acknowledged: u64,
    /// The last record of the last call that finished (a call boundary):
    /// what the next group fsync covers.
    finished: u64,
    /// Records up to here were fsynced.
    durable: u64,
    /// The last record a finished call needs durable before it, or any call
    /// after it, is answered (an accepted command, a snapshot).
    needs_sync: u64,
    /// Bumped when a recovery cuts the journal back to `acknowledged`: a
    /// call finished in an older generation was cut, whatever it waited for.
    generation: u64,
    /// Why the last cut happened (for the calls it cut).
    last_cut: String,
    /// No recovery attempt before this time (clock ms).
    retry_at_ms: u64,
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
    /// Held by the waiter running a group fsync (never with `inner`
    /// held): the others queue here for the next one.
    sync_turn: Mutex<()>,
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
        let last = journal.next_seq().0 - 1;
        JournalRecorder {
            inner: Mutex::new(Inner {
                acknowledged: last,
                finished: last,
                durable: last,
                needs_sync: last,
                generation: 0,
                last_cut: String::new(),
                journal,
                dirty: false,
                failure: None,
                retry_at_ms: 0,
                last_progress: None,
                germinations,
            }),
            sync_turn: Mutex::new(()),
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
    /// the journal has grown past its bound. `Ok`: the ticket the call's
    /// answer waits on ([`wait_durable`](Self::wait_durable)); `Err` means
    /// the call's effects are not recorded.
    pub fn finish_call(
        &self,
        progress: impl FnOnce() -> ProgressState,
        state: impl FnOnce() -> SnapshotParts,
    ) -> Result<Ticket, String> {
        let mut inner = self.lock();
        if let Some(why) = &inner.failure {
            return Err(why.clone());
        }
        let result = if inner.journal.needs_compaction() {
            self.compact(&mut inner, state())
        } else if inner.dirty {
            self.write_snapshot(&mut inner, state(), false)
        } else {
            let now = progress();
            if inner.last_progress.as_ref() == Some(&now) { Ok(()) } else { self.write_progress(&mut inner, now) }
        };
        self.conclude(&mut inner, result)
    }

    /// Writes a durable snapshot now (daemon start: the restored state
    /// becomes the base, so records of an unfinished call before it are
    /// never mistaken for committed ones later).
    pub fn checkpoint(&self, state: SnapshotParts) -> Result<(), String> {
        let mut inner = self.lock();
        if let Some(why) = &inner.failure {
            return Err(why.clone());
        }
        let result = self.write_snapshot(&mut inner, state, true);
        self.conclude(&mut inner, result).map(|_| ())
    }

    /// Returns once the records `ticket`'s call rests on are durable: at
    /// once when nothing of it waits for an fsync, else after the group
    /// fsync that covers it — run here when no other waiter runs one (see
    /// the module docs). `Err`: that fsync failed, or a recovery cut the
    /// call; the call must be refused, and recovered from unless the
    /// journal's [`generation`](Self::generation) moved past the ticket's.
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), String> {
        if !ticket.waits {
            return Ok(());
        }
        loop {
            let _turn = self.sync_turn.lock().unwrap_or_else(PoisonError::into_inner);
            let (sync, target) = {
                let mut inner = self.lock();
                if inner.generation != ticket.generation {
                    return Err(inner.last_cut.clone());
                }
                if inner.acknowledged >= ticket.last {
                    return Ok(());
                }
                if let Some(why) = &inner.failure {
                    return Err(why.clone());
                }
                match inner.journal.detached_sync() {
                    Ok(sync) => (sync, inner.finished),
                    Err(err) => return Err(self.fail(&mut inner, err)),
                }
            };
            // The fsync runs without the journal: the calls applied
            // meanwhile append, and wait for the next one.
            let started = Instant::now();
            let result = sync.run();
            let mut inner = self.lock();
            if inner.generation != ticket.generation {
                continue;
            }
            match result {
                Ok(()) => {
                    self.count_sync(started);
                    inner.durable = inner.durable.max(target);
                    inner.acknowledged = inner.acknowledged.max(target);
                }
                // A compaction meanwhile made them durable in a fresh
                // segment; this synced a removed one.
                Err(_) if inner.durable >= target => {}
                Err(err) => {
                    let why = self.fail(&mut inner, err);
                    inner.journal.poison(why);
                }
            }
        }
    }

    /// Bumped by every recovery that cut the journal (see [`Ticket`]).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The last record of the last answered call: what a recovery keeps.
    pub fn acknowledged(&self) -> Seq {
        Seq(self.lock().acknowledged)
    }

    /// Whether the journal failed and a recovery attempt is due (one per
    /// [`JOURNAL_RETRY_INTERVAL_MS`]).
    pub fn retry_due(&self) -> bool {
        let inner = self.lock();
        inner.failure.is_some() && self.clock.now_ms() >= inner.retry_at_ms
    }

    /// First half of a recovery: reopens the journal through
    /// [`acknowledged`](Self::acknowledged), cutting (durably) every record
    /// a refused call left after it, and returns the records kept — the
    /// state the daemon rewinds to. Needs reads and truncation only, which
    /// a full disk still allows. The journal stays failed until
    /// [`resume`](Self::resume).
    pub fn reopen(&self) -> Result<(Vec<JournalRecord>, RecoveryReport), String> {
        let mut inner = self.lock();
        inner.retry_at_ms = self.clock.now_ms().saturating_add(JOURNAL_RETRY_INTERVAL_MS);
        let storage = std::sync::Arc::clone(inner.journal.storage());
        let dir = inner.journal.dir().to_path_buf();
        let config = inner.journal.config().clone();
        let (journal, entries, report) = DecisionJournal::open_through(storage, &dir, config, Seq(inner.acknowledged))
            .map_err(|e| format!("reopening the decision journal failed: {e}"))?;
        let records: Vec<JournalRecord> = entries.into_iter().map(|e| e.record).collect();
        // The refused call may have been a GERMINATE: remember only what was kept.
        inner.germinations.clear();
        for record in &records {
            remember_germination(&mut inner.germinations, record);
        }
        inner.journal = journal;
        inner.dirty = false;
        inner.last_progress = None;
        // The cut is durable; calls still waiting were cut with it.
        let kept = inner.acknowledged;
        (inner.finished, inner.durable, inner.needs_sync) = (kept, kept, kept);
        inner.generation += 1;
        inner.last_cut = format!(
            "{}; the journal was cut back to the last acknowledged call before this call's records were durable",
            inner.failure.as_deref().unwrap_or("decision journal failed")
        );
        self.stats.discarded_records.fetch_add(report.discarded, Ordering::Relaxed);
        tracing::warn!(records = records.len(), discarded = report.discarded, "kasmina.journal.reopened");
        Ok((records, report))
    }

    /// Second half of a recovery: compacts into a fresh segment holding a
    /// snapshot of `state` (the daemon's state, rewound to what the journal
    /// kept) and takes calls again. On failure the journal stays failed and
    /// the next attempt starts again with [`reopen`](Self::reopen).
    pub fn resume(&self, state: SnapshotParts) -> Result<(), String> {
        let mut inner = self.lock();
        let result = self.compact(&mut inner, state);
        if let Err(err) = result {
            let why = format!("decision journal failed: {err}");
            tracing::warn!(%why, "kasmina.journal.recovery_failed");
            inner.failure = Some(why.clone());
            return Err(why);
        }
        inner.failure = None;
        let last = inner.journal.next_seq().0 - 1;
        (inner.acknowledged, inner.finished) = (last, last);
        self.stats.recoveries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(bytes = inner.journal.total_bytes(), "kasmina.journal.recovered");
        Ok(())
    }

    /// Ends a call: on success its records are finished, and acknowledged
    /// at once unless they or what came before wait for an fsync; on
    /// failure the journal stops taking records until a recovery.
    fn conclude(&self, inner: &mut Inner, result: Result<(), JournalError>) -> Result<Ticket, String> {
        match result {
            Ok(()) if inner.failure.is_none() => {
                let last = inner.journal.next_seq().0 - 1;
                inner.finished = last;
                let waits = inner.needs_sync > inner.durable;
                if !waits {
                    inner.acknowledged = last;
                }
                Ok(Ticket { last, generation: inner.generation, waits })
            }
            // A decision appended during the call failed (see `record`).
            Ok(()) => Err(inner.failure.clone().unwrap_or_default()),
            Err(err) => Err(self.fail(inner, err)),
        }
    }

    /// A snapshot: fsynced now (`sync_now`: start-up, shutdown) or by the
    /// group fsync the call's answer waits for.
    fn write_snapshot(&self, inner: &mut Inner, state: SnapshotParts, sync_now: bool) -> Result<(), JournalError> {
        let SnapshotParts { seeds, progress, nonces } = state;
        let record =
            JournalRecord::Snapshot { seeds, progress: progress.clone(), nonces, recorded_at_ms: self.clock.now_ms() };
        let seq = self.append(inner, &record, sync_now)?;
        inner.needs_sync = inner.needs_sync.max(seq);
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

    /// Into a fresh segment: the accepted GERMINATE of every seed still
    /// holding a blueprint, then the snapshot (durable), then the old
    /// segments deleted. The germinations go first so that no crash point
    /// leaves the snapshot without them (the blend spec and mesh of an
    /// active seed are rebuilt from its germinate record).
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
        inner.journal.compact_with(&keep, &record)?;
        self.count_sync(started);
        // Everything before the snapshot is in it or was synced by the rotation.
        inner.durable = inner.journal.next_seq().0 - 1;
        self.stats.appends.fetch_add(keep.len() as u64 + 1, Ordering::Relaxed);
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        inner.dirty = false;
        inner.last_progress = Some(progress);
        tracing::info!(bytes = inner.journal.total_bytes(), germinations = keep.len(), "kasmina.journal.compacted");
        Ok(())
    }

    /// Appends; with `sync_now`, fsyncs too (everything up to it is durable).
    fn append(&self, inner: &mut Inner, record: &JournalRecord, sync_now: bool) -> Result<u64, JournalError> {
        let seq = inner.journal.append(record)?.0;
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        if sync_now {
            let started = Instant::now();
            inner.journal.sync()?;
            self.count_sync(started);
            inner.durable = seq;
        }
        Ok(seq)
    }

    fn count_sync(&self, started: Instant) {
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sync_us
            .fetch_add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Appends unless an earlier failure stopped the journal; an accepted
    /// command must be durable before its call is answered.
    fn record(&self, record: JournalRecord) {
        let mut inner = self.lock();
        if inner.failure.is_some() {
            return;
        }
        let boundary = matches!(record, JournalRecord::CommandAccepted { .. });
        let transition = matches!(record, JournalRecord::Transition { .. });
        match self.append(&mut inner, &record, false) {
            Ok(seq) => {
                if boundary {
                    inner.needs_sync = seq;
                    inner.dirty = false;
                    remember_germination(&mut inner.germinations, &record);
                } else if transition {
                    inner.dirty = true;
                }
            }
            Err(err) => {
                self.fail(&mut inner, err);
            }
        }
    }

    /// Records the first failure since the last recovery.
    fn fail(&self, inner: &mut Inner, err: JournalError) -> String {
        let why = format!("decision journal failed: {err}");
        tracing::error!(%why, "kasmina.journal.failed");
        if inner.failure.is_none() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        inner.failure.get_or_insert(why).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Appends are whole or poison the journal itself; the guard's data
        // stays coherent across a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a finished call's answer waits on (see
/// [`JournalRecorder::wait_durable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the call may be answered only once its ticket is durable"]
pub struct Ticket {
    /// The call's last record.
    pub last: u64,
    /// The journal's generation when the call finished.
    pub generation: u64,
    /// Whether anything the answer rests on still waits for an fsync.
    pub waits: bool,
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
        self.record(record);
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
        self.record(record);
    }

    fn gate(&self, seed_id: &str, decision: &GateDecision) {
        let counter = if decision.passed { &self.stats.gates_passed } else { &self.stats.gates_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let record = JournalRecord::GateVerdict {
            seed_id: seed_id.to_owned(),
            gate: decision.gate,
            passed: decision.passed,
            reason: decision.reason.clone(),
            attributes: decision.attributes.clone(),
            inputs: decision.inputs.clone(),
            step: self.step.load(Ordering::Relaxed),
            recorded_at_ms: self.clock.now_ms(),
        };
        self.record(record);
    }

    fn state_replaced(&self, why: &str) {
        tracing::info!(why, "kasmina.journal.state_replaced");
        // Not a transition the table can replay: the call ends with a snapshot.
        self.lock().dirty = true;
    }
}
