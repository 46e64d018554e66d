//! The seed manager: executes verified commands and drives every seed
//! through its lifecycle from the trainer's step reports (SPEC.md §2, §3).
//!
//! - [`context`]: per-seed state ([`SeedContext`]);
//! - [`schedule`]: the α ramp during BLENDING;
//! - [`ops`]: commands, one module per operation — prepared outside the
//!   lock (verify → validate → parse, admit and gate verdicts from the
//!   plugins), applied under it, concluded in one place;
//! - `blend`: blend admission — the GERMINATE's blend spec rebuilt from the
//!   parsed annotations and checked with the contract's rules;
//! - `progress`: step reports → stage progression through gates G1–G5;
//! - [`checkpoints`]: rollback points (the control plane's half captured
//!   here, the trainer's weights by directive), the trainer's checkpoint
//!   reports, and ROLLBACK, which restores both halves together;
//! - `resync`: a (re-)registering trainer is resynchronised — seeds it
//!   still holds are adopted after their digests are checked, the rest are
//!   attached afresh — instead of being culled;
//! - [`restore`]: rebuilding state from the decision journal after a restart.
//!
//! All state sits behind one mutex: a command or a step report is applied
//! whole or not at all, and a rejection changes nothing. The mutex is held
//! only to decide and apply: plugin verdicts are computed before it is
//! taken, on a staged copy (`prepare`), kernel waits happen before it too,
//! and the journal is written after it is released (`decisions`).

pub mod checkpoints;
pub mod context;
pub mod ranks;
pub mod schedule;

mod attach;
mod blend;
pub mod blend_window;
mod breakers;
mod decisions;
pub mod ops;
mod progress;
pub mod restore;
mod resync;
mod step_prepare;
mod transitions;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use kasmina_core::{CircuitBreaker, Clock};
use kasmina_kernels::{KernelLoadManager, PrefetchEvent, PrefetchEvents};
use kasmina_plugin_host::annotation::AnnotationPlugin;
use kasmina_plugin_host::blueprint::BlueprintPlugin;
use kasmina_plugin_host::reload::PluginSlot;
use leyline::api::{CheckpointAction, GraftDirective, HostRegistration};
use leyline::journal::ProgressState;
use leyline::{AdaptationCommand, Outcome, SeedStage, SeedState, TelemetryEvent, TelemetryLevel};

pub use self::checkpoints::RollbackCapture;
use self::checkpoints::{InFlightRollback, PointCtx};
pub use self::context::SeedContext;
use self::decisions::{DecisionQueue, StateGuard};
pub use self::ops::PreparedCommand;
pub use self::progress::{STEP_ATTEMPTS, with_step_attempts};
pub use self::step_prepare::PreparedStep;
use crate::gates::{GateDecision, GateEnvironment, GateService};
use crate::isolation::IsolationBreakers;
use crate::rollback::{RollbackLedger, RollbackReason};
use crate::security::CommandVerifier;
use crate::settings::Settings;
use crate::telemetry::HeldEvents;
use crate::validator::CommandValidator;

/// Receives every decision the manager makes, in order (the daemon's
/// journal implements it; the embedded host may leave it out).
pub trait DecisionRecorder: Send + Sync {
    /// A command was accepted and executed with `outcome`.
    fn command_accepted(&self, command: &AdaptationCommand, outcome: &Outcome);
    /// A seed changed stage.
    fn transition(&self, seed_id: &str, from: SeedStage, to: SeedStage, step: Option<u64>, reason: &str);
    /// A gate was evaluated.
    fn gate(&self, seed_id: &str, decision: &GateDecision);
    /// Seed state was replaced outside the transition table (a rollback
    /// restored a point): the call must end with a full snapshot.
    fn state_replaced(&self, why: &str);
}

/// The policy plugins the manager calls, each hot-reloadable.
pub struct Policies {
    /// Annotation parser.
    pub annotations: Arc<PluginSlot<AnnotationPlugin>>,
    /// Blueprint admission.
    pub blueprints: Arc<PluginSlot<BlueprintPlugin>>,
}

/// Everything the manager is assembled from (see `crate::host::HostBuilder`).
pub struct SeedManagerParts {
    /// Resolved settings.
    pub settings: Arc<Settings>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Telemetry: the sink every part emits through, so events emitted
    /// under the state lock are delivered after it (see
    /// [`HeldEvents`](crate::telemetry::HeldEvents)).
    pub sink: Arc<HeldEvents>,
    /// Envelope verification.
    pub verifier: CommandVerifier,
    /// Structural validation.
    pub validator: CommandValidator,
    /// Annotation and admission plugins.
    pub policies: Policies,
    /// Gate evaluation.
    pub gates: GateService,
    /// Kernel supply.
    pub kernels: Arc<KernelLoadManager>,
    /// Prefetch results of `kernels`.
    pub prefetch_events: PrefetchEvents,
    /// Rollback points.
    pub rollback: Arc<RollbackLedger<RollbackCapture>>,
    /// The "fetch" breaker (shared with `kernels`).
    pub fetch_breaker: Arc<CircuitBreaker>,
    /// Every seed's isolation breaker.
    pub isolation: Arc<IsolationBreakers>,
    /// Optional decision recorder (journal).
    pub recorder: Option<Arc<dyn DecisionRecorder>>,
}

/// Mutable state, one lock.
#[derive(Debug, Default)]
struct State {
    registration: Option<HostRegistration>,
    seeds: BTreeMap<String, SeedContext>,
    directives: Vec<GraftDirective>,
    last_step: Option<u64>,
    latest_metric: Option<f64>,
    /// Knowledge distillation as the trainer last reported it.
    latest_distillation: Option<leyline::api::DistillationReport>,
    /// Prefetch results that arrived for seeds not yet looked at.
    prefetch_results: HashMap<String, PrefetchEvent>,
    optimizer: BTreeMap<String, BTreeMap<String, f64>>,
    /// Checkpoint directives delivered with the last step's answer: the
    /// next step report must carry their results.
    awaiting: Vec<(String, CheckpointAction)>,
    /// A ROLLBACK waiting for the trainer to restore its weights; seeds are
    /// frozen until it confirms or fails.
    rollback_in_flight: Option<InFlightRollback>,
    /// Plugin verdicts computed outside the lock for the call being
    /// applied; a gate whose inputs match one takes it (see `gate`).
    gate_memo: Vec<GateDecision>,
}

/// The seed manager. Share it in an `Arc`; every method takes `&self`.
pub struct SeedManager {
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    sink: Arc<HeldEvents>,
    verifier: CommandVerifier,
    validator: CommandValidator,
    policies: Policies,
    gates: GateService,
    kernels: Arc<KernelLoadManager>,
    prefetch_events: Mutex<PrefetchEvents>,
    rollback: Arc<RollbackLedger<RollbackCapture>>,
    fetch_breaker: Arc<CircuitBreaker>,
    isolation: Arc<IsolationBreakers>,
    recorder: Option<Arc<dyn DecisionRecorder>>,
    decisions: DecisionQueue,
    /// Commands accepted and rejected since start: counters, so that
    /// concluding a command does not take the state lock again.
    accepted: AtomicU64,
    rejected: AtomicU64,
    state: RwLock<State>,
}

impl std::fmt::Debug for SeedManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedManager").field("seeds", &self.read().seeds.len()).finish()
    }
}

impl SeedManager {
    /// Assembles a manager.
    pub fn new(parts: SeedManagerParts) -> Self {
        SeedManager {
            settings: parts.settings,
            clock: parts.clock,
            sink: parts.sink,
            verifier: parts.verifier,
            validator: parts.validator,
            policies: parts.policies,
            gates: parts.gates,
            kernels: parts.kernels,
            prefetch_events: Mutex::new(parts.prefetch_events),
            rollback: parts.rollback,
            fetch_breaker: parts.fetch_breaker,
            isolation: parts.isolation,
            recorder: parts.recorder,
            decisions: DecisionQueue::default(),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            state: RwLock::new(State::default()),
        }
    }

    /// Registers the trainer's model: its sites and seed slots. Slots must
    /// name registered sites; each seed id appears once. Re-registering the
    /// same run keeps existing seeds and resynchronises them with what the
    /// trainer says it holds (see `resync`); a different run is refused
    /// while seeds are active.
    pub fn register_host(&self, registration: HostRegistration) -> Result<(), String> {
        validate_registration(&registration)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(existing) = &st.registration
            && existing.training_run_id != registration.training_run_id
            && st.seeds.values().any(|s| s.stage.is_active())
        {
            return Err(format!(
                "training run {} has active seeds; cannot re-register as {}",
                existing.training_run_id, registration.training_run_id
            ));
        }
        for slot in &registration.slots {
            if !st.seeds.contains_key(&slot.seed_id) {
                let mut seed = SeedContext::new(&slot.seed_id, &slot.site);
                self.transition(&mut seed, SeedStage::Dormant, None, "slot registered");
                st.seeds.insert(slot.seed_id.clone(), seed);
            }
        }
        self.resynchronise(st, &registration);
        self.sink.emit(
            TelemetryEvent::new(
                "kasmina.host.registered",
                TelemetryLevel::Info,
                "trainer registered",
                self.clock.now_ms(),
            )
            .attr("training_run_id", registration.training_run_id.as_str())
            .attr("sites", registration.sites.len() as u64)
            .attr("slots", registration.slots.len() as u64),
        );
        st.registration = Some(registration);
        Ok(())
    }

    /// What a restart must not forget beyond stages: every active or paused
    /// seed's in-stage progress, the breakers and the latest metric.
    pub fn progress_state(&self) -> ProgressState {
        let st = self.read();
        ProgressState {
            seeds: st
                .seeds
                .values()
                .filter(|s| s.stage.is_active() || s.paused)
                .map(SeedContext::to_progress)
                .collect(),
            breakers: self.breaker_snapshots(),
            latest_metric: st.latest_metric,
        }
    }

    /// Every seed's exported state, in seed-id order.
    pub fn export_seed_states(&self) -> Vec<SeedState> {
        let seeds: Vec<SeedContext> = self.read().seeds.values().cloned().collect();
        seeds.iter().map(|s| s.to_state(self.isolation.is_tripped(&s.seed_id))).collect()
    }

    /// Commands accepted and rejected since start.
    pub fn command_counts(&self) -> (u64, u64) {
        (self.accepted.load(Ordering::Relaxed), self.rejected.load(Ordering::Relaxed))
    }

    /// Knowledge distillation as the trainer last reported it (None
    /// while no teacher runs).
    pub fn latest_distillation(&self) -> Option<leyline::api::DistillationReport> {
        self.read().latest_distillation.clone()
    }

    /// Registered training run and last reported step.
    pub fn run_and_step(&self) -> (Option<String>, Option<u64>) {
        let st = self.read();
        (st.registration.as_ref().map(|r| r.training_run_id.clone()), st.last_step)
    }

    /// The kernel load manager (to serve verified artifacts to trainers).
    pub fn kernels(&self) -> &Arc<KernelLoadManager> {
        &self.kernels
    }

    /// The nonce ledger's live entries, for a journal snapshot.
    pub fn live_nonces(&self) -> Vec<leyline::journal::LiveNonce> {
        let now = self.clock.now_ms();
        self.verifier
            .ledger()
            .live(now)
            .into_iter()
            .map(|(command_id, expires_at_ms)| leyline::journal::LiveNonce { command_id, expires_at_ms })
            .collect()
    }

    /// The gate service (shadow counters and plugin latency for metrics).
    pub fn gate_service(&self) -> &GateService {
        &self.gates
    }

    /// The command verifier (freshness window is adjustable at run time).
    pub fn verifier(&self) -> &CommandVerifier {
        &self.verifier
    }

    /// Rollback points.
    pub fn rollback(&self) -> &Arc<RollbackLedger<RollbackCapture>> {
        &self.rollback
    }

    /// The state lock for a call that may change state; its decisions are
    /// written to the recorder when it is released.
    fn lock(&self) -> StateGuard<'_> {
        // Every mutation is checked before it is applied; a panic cannot
        // leave a seed half-transitioned.
        StateGuard::new(self.state.write().unwrap_or_else(PoisonError::into_inner), self)
    }

    /// The state for reading only: shared with other readers (prepare's
    /// brief read, `status`, `seed_states`), exclusive of `lock`. Also what
    /// the journal's snapshot callbacks use: they must never write
    /// decisions themselves.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the queued decisions (no state lock held).
    fn flush_decisions(&self) {
        if let Some(rec) = &self.recorder {
            self.decisions.flush(rec);
        }
    }

    /// The annotation caps from the settings, as the parser plugin takes them.
    fn annotation_limits(&self) -> kasmina_plugin_host::AnnotationLimits {
        let a = &self.settings.annotations;
        kasmina_plugin_host::AnnotationLimits {
            alpha_vec_cap: a.alpha_vec_cap,
            mesh_layers_cap: a.mesh_layers_cap,
            annotation_bytes_cap: a.total_bytes_cap,
        }
    }

    fn environment(&self, st: &State, seed: &SeedContext) -> GateEnvironment {
        self.environment_of(st, &seed.seed_id, &seed.site, seed.blueprint_id.as_deref())
    }

    /// The host facts for a seed with this id, site and blueprint (what
    /// [`environment`](Self::environment) reads from the seed).
    fn environment_of(&self, st: &State, seed_id: &str, site: &str, blueprint_id: Option<&str>) -> GateEnvironment {
        let site_shape = st
            .registration
            .as_ref()
            .and_then(|r| r.sites.iter().find(|s| s.name == site))
            .map(|s| s.feature_shape.clone());
        let blueprint_known = blueprint_id.is_some_and(|id| !id.is_empty() && self.kernels.urza().contains(id));
        GateEnvironment {
            host_registered: st.registration.is_some(),
            blueprint_known,
            site_shape,
            latest_metric: st.latest_metric,
            isolation_breaker_open: self.isolation.is_tripped(seed_id),
            world_size: st.registration.as_ref().map_or(1, |r| r.world_size),
        }
    }

    /// CULLED → EMBARGOED: records a rollback point (see [`checkpoints`]),
    /// stops the kernel supply for the seed and tells the trainer to detach it.
    #[allow(clippy::too_many_arguments)]
    fn cull(
        &self,
        at: &PointCtx<'_>,
        directives: &mut Vec<GraftDirective>,
        seed: &mut SeedContext,
        reason: RollbackReason,
        detail: &str,
        step: Option<u64>,
    ) {
        self.record_point(at, &[&*seed], reason, directives);
        self.cull_seed(directives, seed, reason, detail, step);
    }

    /// The cull itself, without a rollback point (the caller recorded one).
    fn cull_seed(
        &self,
        directives: &mut Vec<GraftDirective>,
        seed: &mut SeedContext,
        reason: RollbackReason,
        detail: &str,
        step: Option<u64>,
    ) {
        if !self.transition(seed, SeedStage::Culled, step, detail) {
            return;
        }
        seed.last_failure = Some(detail.to_owned());
        seed.resync_pending = false;
        seed.resume_pending = false;
        self.kernels.cancel_seed(&seed.seed_id);
        seed.prefetch_request = None;
        directives.push(GraftDirective::Detach { seed_id: seed.seed_id.clone(), reason: detail.to_owned() });
        seed.alpha = 0.0;
        let level = if matches!(reason, RollbackReason::Emergency) {
            TelemetryLevel::Critical
        } else {
            TelemetryLevel::Warning
        };
        self.sink.emit(
            TelemetryEvent::new(
                "kasmina.seed.culled",
                level,
                format!("{} culled: {detail}", seed.seed_id),
                self.clock.now_ms(),
            )
            .seed(seed.seed_id.as_str())
            .attr("reason", detail)
            .attr("rollback", reason.to_string()),
        );
        if self.transition(seed, SeedStage::Embargoed, step, "embargo started") {
            seed.embargo_until_ms =
                Some(self.clock.now_ms().saturating_add(self.settings.lifecycle.embargo_s.saturating_mul(1_000)));
        }
    }
}

fn validate_registration(r: &HostRegistration) -> Result<(), String> {
    const MAX_SITES: usize = 1_024;
    const MAX_SLOTS: usize = 4_096;
    if r.training_run_id.is_empty() {
        return Err("training_run_id is empty".to_owned());
    }
    if r.sites.is_empty() || r.sites.len() > MAX_SITES {
        return Err(format!("{} sites; between 1 and {MAX_SITES} required", r.sites.len()));
    }
    if r.slots.len() > MAX_SLOTS {
        return Err(format!("{} slots; at most {MAX_SLOTS}", r.slots.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for site in &r.sites {
        if site.name.is_empty() || !seen.insert(site.name.as_str()) {
            return Err(format!("site name {:?} is empty or repeated", site.name));
        }
        if site.feature_shape.first() != Some(&leyline::Dim::Batch) {
            return Err(format!("site {} must have the batch dimension first", site.name));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for slot in &r.slots {
        if slot.seed_id.is_empty() || !ids.insert(slot.seed_id.as_str()) {
            return Err(format!("seed id {:?} is empty or repeated", slot.seed_id));
        }
        if !seen.contains(slot.site.as_str()) {
            return Err(format!("slot {} names unknown site {}", slot.seed_id, slot.site));
        }
    }
    let mut held = std::collections::BTreeSet::new();
    for h in &r.held {
        if !ids.contains(h.seed_id.as_str()) || !held.insert(h.seed_id.as_str()) {
            return Err(format!("held seed {:?} is not one of the registered slots, or is listed twice", h.seed_id));
        }
        if !(h.alpha.is_finite() && (0.0..=1.0).contains(&h.alpha)) {
            return Err(format!("held seed {} has alpha {} outside [0, 1]", h.seed_id, h.alpha));
        }
    }
    ranks::validate_world_size(r.world_size)?;
    if r.checkpoints.len() > MAX_SLOTS {
        return Err(format!("{} checkpoints listed; at most {MAX_SLOTS}", r.checkpoints.len()));
    }
    Ok(())
}
