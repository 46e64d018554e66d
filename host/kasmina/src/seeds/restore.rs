//! Rebuilding seed state from the decision journal after a restart.
//!
//! The journal writer (the daemon's recorder) keeps one rule: every call
//! that changes state ends with a **boundary record** — the accepted
//! command (`CommandAccepted`, written last by the manager), a full
//! `Snapshot`, or a `Progress` record. Records after the last boundary belong to a call the daemon
//! never finished (it was killed mid-call, nothing of it was acknowledged),
//! so they are ignored and counted, never half-applied.
//!
//! State = the last snapshot (or nothing) + every transition, accepted
//! command and progress record after it. In-stage progress (α, steps in
//! the stage, the loss and isolation windows, hold, a deferred resume) and
//! the circuit breakers come from snapshots and `Progress` records, which
//! end every step-report call, so a SIGKILL during BLENDING loses neither α
//! nor the epoch. What the journal does not carry is re-derived strictly:
//! the blend spec and mesh from re-parsing the germinating command's
//! annotations with the annotation plugin, kernel facts by a fresh verified
//! fetch, and the nonce ledger from the snapshot and the accepted commands
//! still inside their TTL.
//!
//! A restored seed the trainer runs (TRAINING … FOSSILIZED) waits for the
//! trainer to resynchronise (`resync_pending`): nothing about what the
//! trainer holds is known until it re-registers and reports, so no gate
//! judges it and a RESUME defers its gate re-check until then.

use std::collections::BTreeMap;

use kasmina_plugin_host::annotation::ParsedAnnotations;
use leyline::api::BlendSpec;
use leyline::journal::{JournalRecord, ProgressState, replay_start};
use leyline::prefetch::PrefetchRequest;
use leyline::{
    AdaptationCommand, BlendMode, CommandPayload, HealthStatus, Outcome, SeedOperation, SeedStage, SeedState,
};

use super::context::KernelFacts;
use super::{SeedContext, SeedManager, State};

/// Why the journal could not be replayed. Each names the record (index in
/// the slice handed to [`SeedManager::restore`]) so an operator can look
/// at it with `kasmina journal inspect`.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Restore runs once, on an empty manager, before any registration.
    #[error("restore needs an empty seed manager; {0} seeds already exist")]
    NotEmpty(usize),
    /// A transition or command names a seed no earlier record created.
    #[error("journal record {index}: seed {seed_id:?} does not exist at this point of the journal")]
    UnknownSeed {
        /// Record index.
        index: usize,
        /// Seed id.
        seed_id: String,
    },
    /// A transition starts from a stage the seed is not in, or is not in
    /// the transition table: the journal and this build disagree.
    #[error("journal record {index}: seed {seed_id:?}: {detail}")]
    BadTransition {
        /// Record index.
        index: usize,
        /// Seed id.
        seed_id: String,
        /// What does not fit.
        detail: String,
    },
    /// A progress record names a seed that does not exist or is in another
    /// stage at this point of the journal.
    #[error("journal record {index}: progress of seed {seed_id:?}: {detail}")]
    BadProgress {
        /// Record index.
        index: usize,
        /// Seed id.
        seed_id: String,
        /// What does not fit.
        detail: String,
    },
    /// An accepted GERMINATE no longer parses with the annotation plugin
    /// (the plugin was changed since): the blend spec cannot be rebuilt.
    #[error("journal record {index}: germinate command {command_id:?} cannot be re-parsed: {detail}")]
    Germinate {
        /// Record index.
        index: usize,
        /// Command id.
        command_id: String,
        /// Parser refusal.
        detail: String,
    },
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Seeds rebuilt.
    pub seeds: usize,
    /// Whether a snapshot was the starting point.
    pub from_snapshot: bool,
    /// Records applied after the starting point.
    pub records_applied: usize,
    /// Trailing records of an unfinished call, ignored.
    pub uncommitted_ignored: usize,
    /// Command ids put back into the nonce ledger (still inside their TTL).
    pub nonces_restored: usize,
    /// Prefetches re-issued for germinated seeds.
    pub prefetches_reissued: usize,
    /// Active seeds whose kernel was fetched and verified again.
    pub kernels_reverified: usize,
    /// Seeds whose in-stage progress (α, epoch, windows) was restored.
    pub progress_restored: usize,
    /// Circuit breakers put back into their journaled state.
    pub breakers_restored: usize,
    /// Seeds waiting for the trainer to resynchronise.
    pub awaiting_resync: usize,
    /// Problems that left a seed weaker but the restore valid (a kernel
    /// that no longer verifies, a blend spec that could not be rebuilt):
    /// `(seed id, what)`. Gates fail such seeds at their next evaluation.
    pub warnings: Vec<(String, String)>,
}

/// The germinating command of a seed, as far as restore needs it.
struct Germination {
    command_id: String,
    blueprint_id: String,
    parameters: BTreeMap<String, f64>,
    parsed: ParsedAnnotations,
}

impl SeedManager {
    /// Rebuilds seed state from journal records (oldest first); call once,
    /// before the trainer registers. After it, `export_seed_states()` equals
    /// the state at the last boundary record (see the module docs).
    pub fn restore(&self, records: &[JournalRecord]) -> Result<RestoreReport, RestoreError> {
        let mut st = self.lock();
        if !st.seeds.is_empty() {
            return Err(RestoreError::NotEmpty(st.seeds.len()));
        }
        self.restore_into(&mut st, records)
    }

    /// Replaces every seed with what `records` say, as [`restore`](Self::restore)
    /// builds them, and drops queued directives and a rollback in flight.
    /// The daemon calls it after a journal failure, with the records it
    /// acknowledged, so nothing a refused call changed outlives the refusal.
    /// The trainer's registration is kept: running seeds wait for its next
    /// report to resynchronise, as after a restart.
    pub fn rewind(&self, records: &[JournalRecord]) -> Result<RestoreReport, RestoreError> {
        let mut st = self.lock();
        st.directives.clear();
        st.awaiting.clear();
        st.rollback_in_flight = None;
        st.gate_memo.clear();
        st.prefetch_results.clear();
        self.restore_into(&mut st, records)
    }

    fn restore_into(&self, st: &mut State, records: &[JournalRecord]) -> Result<RestoreReport, RestoreError> {
        let boundary = records
            .iter()
            .rposition(|r| {
                matches!(
                    r,
                    JournalRecord::CommandAccepted { .. }
                        | JournalRecord::Snapshot { .. }
                        | JournalRecord::Progress { .. }
                )
            })
            .map_or(0, |i| i + 1);
        let committed = &records[..boundary];
        let start = replay_start(committed);
        let mut report = RestoreReport { uncommitted_ignored: records.len() - boundary, ..RestoreReport::default() };
        let mut seeds: BTreeMap<String, SeedContext> = BTreeMap::new();
        let mut germinations: BTreeMap<String, Germination> = BTreeMap::new();
        // Germinations before the snapshot still describe seeds it holds.
        for (index, record) in committed[..start].iter().enumerate() {
            if let JournalRecord::CommandAccepted { command, .. } = record
                && let Some(g) = self.germination(index, command)?
            {
                germinations.insert(command.target_seed_id.clone(), g);
            }
        }
        let mut replay_from = start;
        let now = self.clock.now_ms();
        let mut progress_at: Option<(usize, &ProgressState)> = None;
        if let Some(JournalRecord::Snapshot { seeds: snapshot, progress, nonces, recorded_at_ms }) =
            committed.get(start)
        {
            report.from_snapshot = true;
            replay_from = start + 1;
            // Replay protection across the restart: every id the ledger
            // refused when the snapshot was taken, with its own expiry.
            for nonce in nonces {
                if self.verifier.ledger().restore(&nonce.command_id, nonce.expires_at_ms, now) {
                    report.nonces_restored += 1;
                }
            }
            for state in snapshot {
                let seed =
                    self.seed_from_snapshot(state, *recorded_at_ms, germinations.get(&state.seed_id), &mut report);
                seeds.insert(state.seed_id.clone(), seed);
            }
            apply_progress(start, &mut seeds, progress, self.settings.gates.loss_window)?;
            progress_at = Some((start, progress));
        }
        let ttl = self.verifier.ledger().ttl_ms();
        for (offset, record) in committed[replay_from..].iter().enumerate() {
            let index = replay_from + offset;
            report.records_applied += 1;
            match record {
                JournalRecord::Transition { seed_id, from, to, reason, recorded_at_ms, .. } => {
                    let seed = seeds
                        .get_mut(seed_id)
                        .ok_or_else(|| RestoreError::UnknownSeed { index, seed_id: seed_id.clone() })?;
                    self.replay_transition(index, seed, *from, *to, reason, *recorded_at_ms)?;
                }
                JournalRecord::CommandAccepted { command, outcome, recorded_at_ms } => {
                    if recorded_at_ms.saturating_add(ttl) > now
                        && self.verifier.ledger().check_and_insert(&command.command_id, *recorded_at_ms).is_ok()
                    {
                        report.nonces_restored += 1;
                    }
                    if let Some(g) = self.germination(index, command)? {
                        let seed = seeds.get_mut(&command.target_seed_id).ok_or_else(|| RestoreError::UnknownSeed {
                            index,
                            seed_id: command.target_seed_id.clone(),
                        })?;
                        apply_germination(seed, &g, self);
                        germinations.insert(command.target_seed_id.clone(), g);
                    } else {
                        replay_command(&mut seeds, command, outcome);
                    }
                }
                JournalRecord::Progress { progress, .. } => {
                    apply_progress(index, &mut seeds, progress, self.settings.gates.loss_window)?;
                    progress_at = Some((index, progress));
                }
                JournalRecord::GateVerdict { .. } | JournalRecord::Snapshot { .. } => {}
            }
        }
        if let Some((_, progress)) = progress_at {
            report.progress_restored = progress.seeds.len();
            for snapshot in &progress.breakers {
                if self.restore_breaker(snapshot) {
                    report.breakers_restored += 1;
                }
            }
            st.latest_metric = progress.latest_metric;
        }
        for seed in seeds.values_mut() {
            seed.reported_stage = seed.stage;
            self.resupply(seed, germinations.get(&seed.seed_id), &mut report);
            if seed.runs_kernel() {
                seed.resync_pending = true;
                report.awaiting_resync += 1;
            }
        }
        report.seeds = seeds.len();
        st.seeds = seeds;
        tracing::info!(?report, "kasmina.seeds.restored");
        Ok(report)
    }

    /// Re-parses an accepted GERMINATE; `None` for any other command.
    fn germination(&self, index: usize, command: &AdaptationCommand) -> Result<Option<Germination>, RestoreError> {
        let CommandPayload::Seed(sc) = &command.payload else { return Ok(None) };
        if sc.operation != SeedOperation::Germinate {
            return Ok(None);
        }
        let parsed =
            self.policies.annotations.current().parse(&command.annotations, &self.annotation_limits()).map_err(
                |e| RestoreError::Germinate { index, command_id: command.command_id.clone(), detail: format!("{e:?}") },
            )?;
        Ok(Some(Germination {
            command_id: command.command_id.clone(),
            blueprint_id: sc.blueprint_id.clone(),
            parameters: sc.parameters.clone(),
            parsed,
        }))
    }

    fn seed_from_snapshot(
        &self,
        s: &SeedState,
        taken_at_ms: u64,
        germ: Option<&Germination>,
        report: &mut RestoreReport,
    ) -> SeedContext {
        let mut seed = SeedContext::new(&s.seed_id, &s.site);
        seed.stage = s.stage;
        seed.blueprint_id = s.blueprint_id.clone();
        seed.alpha = s.alpha;
        seed.steps_in_stage = s.epoch;
        seed.paused = s.paused;
        match germ.filter(|g| s.stage.is_active() && s.blueprint_id.as_deref() == Some(g.blueprint_id.as_str())) {
            Some(g) => apply_germination(&mut seed, g, self),
            None => {
                seed.descriptor =
                    s.blueprint_id.as_deref().and_then(|id| self.kernels.urza().entry(id)).map(|e| e.descriptor);
                seed.blend = s.blend_mode.and_then(plain_blend);
                if s.blend_mode.is_some() && seed.blend.is_none() {
                    report.warnings.push((
                        s.seed_id.clone(),
                        "blend spec lost with its germinate record; the seed fails its next attach".to_owned(),
                    ));
                }
            }
        }
        // Health is derived; keep the flags that made it worse than the
        // stage alone explains (the safe direction: gates see them too).
        match s.health {
            HealthStatus::Critical => seed.fallback_used = true,
            HealthStatus::Unhealthy if !matches!(s.stage, SeedStage::Culled | SeedStage::Embargoed) => {
                seed.outputs_finite = false
            }
            HealthStatus::Degraded if !s.paused => seed.output_shape_ok = false,
            _ => {}
        }
        if s.stage == SeedStage::Embargoed {
            // Counted from the snapshot: never shorter than the real embargo.
            seed.embargo_until_ms =
                Some(taken_at_ms.saturating_add(self.settings.lifecycle.embargo_s.saturating_mul(1_000)));
        }
        seed
    }

    fn replay_transition(
        &self,
        index: usize,
        seed: &mut SeedContext,
        from: SeedStage,
        to: SeedStage,
        reason: &str,
        at_ms: u64,
    ) -> Result<(), RestoreError> {
        let bad = |detail: String| RestoreError::BadTransition { index, seed_id: seed.seed_id.clone(), detail };
        if seed.stage != from {
            return Err(bad(format!("record moves it from {from} but it is {}", seed.stage)));
        }
        from.check_transition(to).map_err(|e| bad(e.to_string()))?;
        if from == SeedStage::Resetting && to == SeedStage::Dormant {
            seed.clear_for_reset();
        }
        seed.enter(to);
        // α as the live transition sets it at stage entry.
        seed.alpha = match to {
            SeedStage::Shadowing | SeedStage::Probationary | SeedStage::Fossilized => 1.0,
            _ => 0.0,
        };
        match to {
            SeedStage::Culled => {
                seed.last_failure = Some(reason.to_owned());
                seed.prefetch_request = None;
            }
            SeedStage::Embargoed => {
                seed.embargo_until_ms =
                    Some(at_ms.saturating_add(self.settings.lifecycle.embargo_s.saturating_mul(1_000)));
            }
            SeedStage::Resetting => {
                seed.kernel = None;
                seed.prefetch_request = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Re-establishes kernel supply for active seeds: a prefetch for a
    /// germinated seed, a verified fetch for one already running.
    fn resupply(&self, seed: &mut SeedContext, germ: Option<&Germination>, report: &mut RestoreReport) {
        let Some(blueprint) = seed.blueprint_id.clone() else { return };
        match seed.stage {
            SeedStage::Germinated => {
                let Some(run) = germ.and_then(|g| g.parsed.training_run_id.clone()) else {
                    report.warnings.push((
                        seed.seed_id.clone(),
                        "no training_run_id to re-issue the prefetch; G1 fails the seed".to_owned(),
                    ));
                    return;
                };
                let request_id = germ.map_or_else(|| format!("restore-{}", seed.seed_id), |g| g.command_id.clone());
                let request = PrefetchRequest {
                    request_id: request_id.clone(),
                    seed_id: seed.seed_id.clone(),
                    blueprint_id: blueprint,
                    training_run_id: run,
                    issued_at_ms: self.clock.now_ms(),
                    timeout_ms: self.settings.kernels.prefetch_timeout_ms,
                };
                match self.kernels.prefetch(request) {
                    Ok(()) => {
                        seed.prefetch_request = Some(request_id);
                        report.prefetches_reissued += 1;
                    }
                    Err(err) => report.warnings.push((seed.seed_id.clone(), format!("prefetch refused: {err}"))),
                }
            }
            SeedStage::Training
            | SeedStage::Blending
            | SeedStage::Shadowing
            | SeedStage::Probationary
            | SeedStage::Fossilized => match self.kernels.get(&blueprint, Some(&seed.seed_id)) {
                Ok(kernel) => {
                    seed.kernel = Some(KernelFacts {
                        sha256: kernel.sha256().to_owned(),
                        prewarm_p95_us: kernel.prewarm().p95_us,
                    });
                    seed.attach_sent = true;
                    report.kernels_reverified += 1;
                }
                Err(err) => report.warnings.push((seed.seed_id.clone(), format!("kernel no longer verifies: {err}"))),
            },
            _ => {}
        }
    }
}

/// What an accepted GERMINATE set on the seed (the stage comes from its
/// transition record).
fn apply_germination(seed: &mut SeedContext, g: &Germination, manager: &SeedManager) {
    seed.blueprint_id = Some(g.blueprint_id.clone());
    seed.parameters = g.parameters.clone();
    seed.mesh_layers = g.parsed.mesh_layers.clone();
    // The same mapping the command path applied when it accepted the command.
    seed.blend = super::blend::blend_spec(&g.parsed).ok();
    seed.descriptor = manager.kernels.urza().entry(&g.blueprint_id).map(|e| e.descriptor);
}

/// Puts a progress record's in-stage progress back on its seeds.
fn apply_progress(
    index: usize,
    seeds: &mut BTreeMap<String, SeedContext>,
    progress: &ProgressState,
    loss_window: usize,
) -> Result<(), RestoreError> {
    for p in &progress.seeds {
        let bad = |detail: String| RestoreError::BadProgress { index, seed_id: p.seed_id.clone(), detail };
        let seed = seeds.get_mut(&p.seed_id).ok_or_else(|| bad("no such seed".to_owned()))?;
        if seed.stage != p.stage {
            return Err(bad(format!("recorded in {} but the seed is {}", p.stage, seed.stage)));
        }
        seed.apply_progress(p, loss_window);
    }
    Ok(())
}

/// State a non-GERMINATE accepted command set outside transition records.
fn replay_command(seeds: &mut BTreeMap<String, SeedContext>, command: &AdaptationCommand, outcome: &Outcome) {
    let Some(seed) = seeds.get_mut(&command.target_seed_id) else { return };
    match &command.payload {
        // A resume deferred until the trainer resynchronised leaves the seed
        // paused with the re-check pending; PAUSE cancels a pending resume.
        CommandPayload::Pause(p) if p.resume && outcome.attributes.get("resume").is_some_and(|v| v == "deferred") => {
            seed.resume_pending = true;
        }
        CommandPayload::Pause(p) if !p.resume && seed.resume_pending => seed.resume_pending = false,
        CommandPayload::Pause(p) => seed.paused = !p.resume,
        CommandPayload::Seed(sc) => match sc.operation {
            SeedOperation::Stabilize => seed.hold = true,
            SeedOperation::FineTune => {
                seed.hold = false;
                seed.parameters.extend(sc.parameters.iter().map(|(k, v)| (k.clone(), *v)));
            }
            _ => {}
        },
        // Breaker forcing and optimizer settings live outside seed state.
        _ => {}
    }
}

/// Modes whose spec has no parameters, so the mode alone rebuilds it
/// exactly; CHANNEL and CONFIDENCE carry data a snapshot does not hold.
fn plain_blend(mode: BlendMode) -> Option<BlendSpec> {
    match mode {
        BlendMode::Convex => Some(BlendSpec::convex()),
        BlendMode::Residual => Some(BlendSpec::residual()),
        BlendMode::Channel | BlendMode::Confidence => None,
    }
}
