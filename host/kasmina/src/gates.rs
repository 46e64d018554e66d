//! The gate service: builds [`GateInputs`] from real seed state, asks the
//! gate plugin, and records the decision (SPEC.md §2).
//!
//! Defence in depth: the service checks stage order itself before the
//! plugin is called, and re-checks the safety invariants every gate policy
//! must keep (fallback ⇒ fail at G2/G4, non-finite parameters ⇒ fail at G0,
//! isolation violations ⇒ fail at G1) after it answers. A plugin that lies
//! cannot pass a seed through; a plugin that fails (timeout, trap, OOM, bad
//! output) fails the gate.
//!
//! - [`mod@judge`]: the precheck, the invariants, and how a candidate plugin
//!   is judged by its own verdict (`journal replay`, shadow);
//! - `shadow`: shadow evaluation off the step path.
//!
//! Shadow evaluation: with a candidate plugin attached
//! ([`GateService::with_shadow`]), every plugin-decided gate is also handed
//! to the candidate — on a worker thread with its own budget, never on the
//! step path — on the same inputs. A candidate whose own verdict differs,
//! or that passes what a host invariant forbids, emits
//! `kasmina.gate.shadow_disagreement` and is counted. The candidate never
//! affects the decision.

pub mod judge;
mod shadow;

pub(crate) use self::shadow::load_candidate as load_shadow_candidate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kasmina_core::{Clock, TelemetrySink};
use kasmina_plugin_host::gate::{GateInputs, PerformanceStatus};
use kasmina_plugin_host::reload::PluginSlot;
use leyline::prefetch::PrefetchErrorKind;
use leyline::{AttrValue, Dim, GateId, RankAgreement, SeedStage, TelemetryEvent, TelemetryLevel};

pub use self::judge::{CandidateJudgement, decide, judge, violated_invariant};
use self::judge::{enforce_invariants, precheck};
use self::shadow::{ShadowEvaluator, ShadowJob};

use crate::seeds::context::SeedContext;
use crate::settings::GateSettings;

/// Host facts a gate needs beyond the seed's own context.
#[derive(Debug, Clone, PartialEq)]
pub struct GateEnvironment {
    /// Whether a trainer registered its model.
    pub host_registered: bool,
    /// Whether Urza's catalog knows the seed's blueprint.
    pub blueprint_known: bool,
    /// Feature shape of the seed's site, when registered.
    pub site_shape: Option<Vec<Dim>>,
    /// Latest global metric reported by the trainer.
    pub latest_metric: Option<f64>,
    /// Whether the isolation breaker is open.
    pub isolation_breaker_open: bool,
    /// Ranks of the registered trainer job (1 for a single process).
    pub world_size: u32,
}

/// A recorded gate decision.
#[derive(Debug, Clone, PartialEq)]
pub struct GateDecision {
    /// Gate evaluated.
    pub gate: GateId,
    /// Whether it passed.
    pub passed: bool,
    /// Reason (empty when passed).
    pub reason: String,
    /// Explanation attributes, typed (a plugin of API 0.2.0 may return
    /// numbers and flags; host checks and API 0.1.0 plugins give text).
    pub attributes: BTreeMap<String, AttrValue>,
    /// Exactly what the plugin saw (journal, replay).
    pub inputs: GateInputs,
}

/// A verdict computed and finished before the state lock, with the event
/// that reports it ([`GateService::finish_precomputed`]).
#[derive(Debug)]
pub struct FinishedVerdict {
    /// The decision, its cause named.
    pub decision: GateDecision,
    /// Its `kasmina.gate.verdict` event, to emit when it is taken.
    pub event: TelemetryEvent,
}

/// Upper bounds (µs) of the plugin-call latency histogram buckets; the
/// last, implicit bucket is +Inf. Spans the 10 ms default deadline.
pub const PLUGIN_LATENCY_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Gate plugin call counters (cumulative), for `/metrics`.
#[derive(Debug, Default)]
pub struct GateCallStats {
    calls: AtomicU64,
    total_us: AtomicU64,
    /// Counts per bucket of [`PLUGIN_LATENCY_BUCKETS_US`], plus +Inf.
    buckets: [AtomicU64; PLUGIN_LATENCY_BUCKETS_US.len() + 1],
    shadow_agreements: AtomicU64,
    shadow_disagreements: AtomicU64,
    shadow_dropped: AtomicU64,
    /// Plugin calls made while the seed manager held its state lock (no
    /// precomputed verdict matched).
    calls_under_lock: AtomicU64,
}

/// A point-in-time copy of [`GateCallStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCallSnapshot {
    /// Calls into the active gate plugin.
    pub calls: u64,
    /// Sum of their latencies, µs.
    pub total_us: u64,
    /// Non-cumulative counts per bucket of [`PLUGIN_LATENCY_BUCKETS_US`],
    /// the last entry being +Inf.
    pub buckets: Vec<u64>,
    /// Shadow evaluations that agreed with the active plugin.
    pub shadow_agreements: u64,
    /// Shadow evaluations that disagreed (own verdict differs, or an unsafe pass).
    pub shadow_disagreements: u64,
    /// Shadow evaluations dropped because the shadow queue was full.
    pub shadow_dropped: u64,
    /// Plugin calls made under the seed manager's state lock (a verdict
    /// precomputed outside it no longer matched the facts).
    pub calls_under_lock: u64,
}

impl GateCallStats {
    fn record(&self, us: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        let bucket = PLUGIN_LATENCY_BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(PLUGIN_LATENCY_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> GateCallSnapshot {
        GateCallSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            total_us: self.total_us.load(Ordering::Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            shadow_agreements: self.shadow_agreements.load(Ordering::Relaxed),
            shadow_disagreements: self.shadow_disagreements.load(Ordering::Relaxed),
            shadow_dropped: self.shadow_dropped.load(Ordering::Relaxed),
            calls_under_lock: self.calls_under_lock.load(Ordering::Relaxed),
        }
    }
}

/// Evaluates gates through the (hot-reloadable) gate plugin.
pub struct GateService {
    plugin: Arc<PluginSlot<kasmina_plugin_host::gate::GatePlugin>>,
    shadow: Option<ShadowEvaluator>,
    settings: GateSettings,
    sink: Arc<dyn TelemetrySink>,
    clock: Arc<dyn Clock>,
    stats: Arc<GateCallStats>,
}

impl std::fmt::Debug for GateService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateService").field("settings", &self.settings).finish()
    }
}

impl GateService {
    /// A service over `plugin` with thresholds from `settings`.
    pub fn new(
        plugin: Arc<PluginSlot<kasmina_plugin_host::gate::GatePlugin>>,
        settings: GateSettings,
        sink: Arc<dyn TelemetrySink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        GateService { plugin, shadow: None, settings, sink, clock, stats: Arc::default() }
    }

    /// Also evaluates `candidate` on every plugin-decided gate — on its own
    /// worker thread, at most `queue` evaluations waiting — and reports
    /// disagreements; the candidate never changes or delays a decision.
    /// Its budget is the deadline it was loaded with.
    pub fn with_shadow(
        mut self,
        candidate: Arc<kasmina_plugin_host::gate::GatePlugin>,
        queue: usize,
    ) -> std::io::Result<Self> {
        let worker = ShadowEvaluator::start(
            candidate,
            queue,
            Arc::clone(&self.stats),
            Arc::clone(&self.sink),
            Arc::clone(&self.clock),
        )?;
        self.shadow = Some(worker);
        Ok(self)
    }

    /// Waits (at most `timeout`) until every shadow evaluation handed over
    /// so far has finished; `true` if none is left (or there is no shadow).
    pub fn settle_shadow(&self, timeout: Duration) -> bool {
        self.shadow.as_ref().is_none_or(|s| s.settle(timeout))
    }

    /// The plugin API versions of the active gate plugin and of the shadow
    /// candidate, if any (`"0.1.0"` / `"0.2.0"`): either may be an older
    /// plugin served beside the current interface.
    pub fn plugin_api_versions(&self) -> (&'static str, Option<&'static str>) {
        (self.plugin.current().api_version().as_str(), self.shadow.as_ref().map(|s| s.api_version().as_str()))
    }

    /// Whether a shadow candidate is attached.
    pub fn has_shadow(&self) -> bool {
        self.shadow.is_some()
    }

    /// Plugin call latency and shadow agreement counters.
    pub fn call_stats(&self) -> GateCallSnapshot {
        self.stats.snapshot()
    }

    /// The inputs the plugin will see for `seed` at `gate`.
    pub fn inputs(&self, seed: &SeedContext, expected: SeedStage, env: &GateEnvironment) -> GateInputs {
        let interface_matches = interface_matches(seed, env);
        let metric_delta = match (env.latest_metric, seed.metric_baseline) {
            (Some(now), Some(base)) => now - base,
            // No measurement is not "no regression": NaN makes the policy
            // refuse rather than assume.
            _ => f64::NAN,
        };
        let bounds = seed.descriptor.as_ref().map(|d| d.parameter_bounds.clone()).unwrap_or_default();
        GateInputs {
            seed_id: seed.seed_id.clone(),
            site: seed.site.clone(),
            blueprint_id: seed.blueprint_id.clone().unwrap_or_default(),
            blueprint_known: env.blueprint_known,
            current_stage: seed.stage,
            expected_stage: expected,
            reported_stage: seed.reported_stage,
            parameters: seed.parameters.clone(),
            parameter_bounds: bounds,
            kernel_attached: seed.kernel_attached,
            kernel_verified: seed.kernel_verified(),
            fallback_used: seed.fallback_used,
            isolation_violations: seed.isolation_violations,
            max_cosine: seed.max_cosine,
            outputs_finite: seed.outputs_finite,
            loss_window: seed.losses.iter().copied().collect(),
            loss_variance_threshold: self.settings.loss_variance_threshold,
            kernel_latency_us: seed.observed_latency_us(),
            latency_budget_us: self.settings.latency_budget_us as f64,
            host_registered: env.host_registered,
            required_layers: vec![seed.site.clone()],
            available_layers: seed.mesh_layers.clone(),
            interface_matches,
            performance_status: performance_status(seed, env, self.settings.latency_budget_us),
            metric_delta,
            metric_tolerance: self.settings.metric_tolerance,
            reset_clean: seed.is_clean(),
            blend: seed.blend_window.stats(),
            ranks: (env.world_size > 1)
                .then(|| RankAgreement { world_size: env.world_size, agreed: seed.rank_divergence.is_none() }),
        }
    }

    /// Evaluates `gate` for `seed`; emits a telemetry event either way.
    pub fn evaluate(
        &self,
        gate: GateId,
        seed: &SeedContext,
        expected: SeedStage,
        env: &GateEnvironment,
    ) -> GateDecision {
        self.evaluate_with(gate, seed, expected, env, &[])
    }

    /// Asks the plugin about `gate` for a staged copy of `seed`, ahead of
    /// the manager's state lock (the plugin call is the slow part of a
    /// gate). `None` when a host precheck decides without the plugin.
    /// Nothing is emitted: the decision counts once it is applied, through
    /// [`evaluate_with`](Self::evaluate_with).
    pub fn precompute(
        &self,
        gate: GateId,
        seed: &SeedContext,
        expected: SeedStage,
        env: &GateEnvironment,
    ) -> Option<GateDecision> {
        let inputs = self.inputs(seed, expected, env);
        if prechecks(gate, seed, &inputs).is_some() {
            return None;
        }
        Some(self.ask_plugin(gate, seed.stage, inputs))
    }

    /// [`evaluate`](Self::evaluate), taking the plugin's verdict from
    /// `ready` when one was precomputed for exactly these inputs; only when
    /// none matches (the seed or the host facts changed since) is the
    /// plugin called here, which is counted as a call under the lock.
    pub fn evaluate_with(
        &self,
        gate: GateId,
        seed: &SeedContext,
        expected: SeedStage,
        env: &GateEnvironment,
        ready: &[GateDecision],
    ) -> GateDecision {
        let span = tracing::info_span!("kasmina.gate.evaluate", gate = gate.as_str(), seed = %seed.seed_id);
        let _entered = span.enter();
        let inputs = self.inputs(seed, expected, env);
        let decision = match prechecks(gate, seed, &inputs) {
            Some((reason, attributes)) => GateDecision { gate, passed: false, reason, attributes, inputs },
            None => match ready.iter().find(|d| d.gate == gate && d.inputs.same_facts(&inputs)) {
                // The same facts, bit for bit: the fresh inputs stand in for
                // the precomputed ones, so only the verdict is copied.
                Some(precomputed) => GateDecision {
                    gate,
                    passed: precomputed.passed,
                    reason: precomputed.reason.clone(),
                    attributes: precomputed.attributes.clone(),
                    inputs,
                },
                None => {
                    self.stats.calls_under_lock.fetch_add(1, Ordering::Relaxed);
                    self.ask_plugin(gate, seed.stage, inputs)
                }
            },
        };
        let decision = with_cause(seed, decision);
        self.emit(seed, &decision);
        decision
    }

    /// A verdict computed before the lock ([`precompute`](Self::precompute)),
    /// finished on the seed it was computed for — the cause named, its
    /// telemetry event built — also before the lock. The caller emits the
    /// event only if it finds the seed and host facts exactly unchanged
    /// when it applies the command, instead of rebuilding the inputs to
    /// compare them (what [`evaluate_with`](Self::evaluate_with) does when
    /// it cannot know). The event carries the time the verdict was reached.
    pub fn finish_precomputed(&self, seed: &SeedContext, decision: GateDecision) -> FinishedVerdict {
        let decision = with_cause(seed, decision);
        let event = self.event(seed, &decision);
        FinishedVerdict { decision, event }
    }

    /// One call of the active plugin (timed), the host's invariants
    /// enforced on its answer, and the shadow candidate handed the same.
    fn ask_plugin(&self, gate: GateId, stage: SeedStage, inputs: GateInputs) -> GateDecision {
        let started = Instant::now();
        let verdict = self.plugin.current().evaluate(gate, &inputs);
        self.stats.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let decision = enforce_invariants(GateDecision {
            gate,
            passed: verdict.passed,
            reason: verdict.reason,
            attributes: verdict.attributes,
            inputs,
        });
        if let Some(shadow) = &self.shadow {
            shadow.submit(ShadowJob {
                gate,
                inputs: decision.inputs.clone(),
                stage,
                active_passed: decision.passed,
                active_reason: decision.reason.clone(),
            });
        }
        decision
    }

    fn emit(&self, seed: &SeedContext, d: &GateDecision) {
        self.sink.emit(self.event(seed, d));
    }

    fn event(&self, seed: &SeedContext, d: &GateDecision) -> TelemetryEvent {
        let level = verdict_level(d);
        let verdict = if d.passed { "passed" } else { "failed" };
        let mut event = TelemetryEvent::new(
            "kasmina.gate.verdict",
            level,
            format!(
                "{} {verdict} for {}{}",
                d.gate,
                seed.seed_id,
                if d.passed { String::new() } else { format!(": {}", d.reason) }
            ),
            self.clock.now_ms(),
        )
        .seed(seed.seed_id.as_str())
        .attr("gate", d.gate.as_str())
        .attr("passed", d.passed)
        .attr("reason", d.reason.as_str())
        .attr("stage", seed.stage.as_str());
        for (k, v) in &d.attributes {
            event = event.attr(format!("verdict.{k}"), v.clone());
        }
        event
    }
}

/// The host's own checks, which decide before any plugin is asked.
fn prechecks(gate: GateId, seed: &SeedContext, inputs: &GateInputs) -> Option<(String, BTreeMap<String, AttrValue>)> {
    crate::seeds::ranks::precheck(gate, seed).or_else(|| precheck(gate, inputs))
}

/// Whether the seed's declared kernel I/O fits its site: one input and one
/// output, both exactly the site's feature shape.
/// Without a descriptor or a registered site shape there is nothing that
/// fits: false.
fn interface_matches(seed: &SeedContext, env: &GateEnvironment) -> bool {
    let (Some(descriptor), Some(site)) = (&seed.descriptor, &env.site_shape) else {
        return false;
    };
    let iface = &descriptor.interface;
    let fits = |specs: &[leyline::TensorSpec]| specs.len() == 1 && specs[0].shape == *site;
    fits(&iface.inputs) && fits(&iface.outputs)
}

fn performance_status(seed: &SeedContext, env: &GateEnvironment, budget_us: u64) -> PerformanceStatus {
    if seed.fallback_used {
        PerformanceStatus::Fallback
    } else if env.isolation_breaker_open || !seed.outputs_finite {
        PerformanceStatus::Critical
    } else if seed.observed_latency_us() > budget_us as f64 || !seed.output_shape_ok {
        PerformanceStatus::Degraded
    } else {
        PerformanceStatus::Nominal
    }
}

/// Gate reasons (after [`with_cause`]) that mean the seed ran on something
/// other than its verified kernel, never got it, or missed its budget on
/// the seed's path: each pages an operator (SPEC.md §12).
pub const CRITICAL_GATE_REASONS: [&str; 7] = [
    "fallback_used",
    "performance_fallback",
    "latency_over_budget",
    "kernel_not_verified",
    "kernel_digest_mismatch",
    "prefetch_timeout",
    "artifact_truncated",
];

/// The telemetry level of a gate verdict: INFO for a pass, CRITICAL for a
/// failure in [`CRITICAL_GATE_REASONS`] (or a pass the host overrode for
/// running on a fallback), WARNING for any other failure.
pub fn verdict_level(d: &GateDecision) -> TelemetryLevel {
    if d.passed {
        return TelemetryLevel::Info;
    }
    let fallback_override = d
        .attributes
        .get("invariant")
        .is_some_and(|i| matches!(i, AttrValue::Str(s) if s == "fallback_must_fail_g2_g4"));
    if fallback_override || CRITICAL_GATE_REASONS.contains(&d.reason.as_str()) {
        TelemetryLevel::Critical
    } else {
        TelemetryLevel::Warning
    }
}

/// The gate reason for a kernel that could not be supplied, by prefetch
/// failure kind: what an operator acts on (fix the artifact, raise the
/// timeout, close the breaker), not just "no kernel".
pub fn kernel_failure_cause(kind: PrefetchErrorKind) -> &'static str {
    match kind {
        PrefetchErrorKind::InvalidRequest => "prefetch_invalid_request",
        PrefetchErrorKind::UnknownBlueprint => "blueprint_unknown",
        PrefetchErrorKind::ArtifactMissing => "artifact_missing",
        PrefetchErrorKind::DigestMismatch => "kernel_digest_mismatch",
        PrefetchErrorKind::Truncated => "artifact_truncated",
        PrefetchErrorKind::InterfaceMismatch => "kernel_interface_mismatch",
        PrefetchErrorKind::LoadFailed => "kernel_load_failed",
        PrefetchErrorKind::BreakerOpen => "fetch_breaker_open",
        PrefetchErrorKind::TimedOut => "prefetch_timeout",
        PrefetchErrorKind::Cancelled => "prefetch_cancelled",
    }
}

/// Level of `kasmina.kernel.unavailable`: CRITICAL when the artifact was
/// tampered with or cut short or the prefetch missed its deadline, ERROR
/// otherwise.
pub fn kernel_failure_level(kind: PrefetchErrorKind) -> TelemetryLevel {
    match kind {
        PrefetchErrorKind::DigestMismatch | PrefetchErrorKind::Truncated | PrefetchErrorKind::TimedOut => {
            TelemetryLevel::Critical
        }
        _ => TelemetryLevel::Error,
    }
}

/// A failed decision whose reason only says *that* something is wrong
/// (`kernel_not_attached`, `performance_not_nominal`) gets the cause the
/// host knows as its reason; the plugin's own reason stays as the
/// `plugin_reason` attribute.
fn with_cause(seed: &SeedContext, mut d: GateDecision) -> GateDecision {
    if d.passed {
        return d;
    }
    let cause = match d.reason.as_str() {
        "kernel_not_attached" | "kernel_not_verified" => seed.kernel_failure.clone(),
        "performance_not_nominal" => performance_cause(&d.inputs).map(str::to_owned),
        _ => None,
    };
    if let Some(cause) = cause.filter(|c| *c != d.reason) {
        let plugin_reason = std::mem::replace(&mut d.reason, cause);
        d.attributes.insert("plugin_reason".to_owned(), AttrValue::Str(plugin_reason));
    }
    d
}

/// Why G4's performance status is not nominal, from the inputs it saw.
fn performance_cause(inputs: &GateInputs) -> Option<&'static str> {
    if inputs.fallback_used {
        Some("fallback_used")
    } else if inputs.kernel_latency_us > inputs.latency_budget_us {
        Some("latency_over_budget")
    } else {
        None
    }
}
