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
//! Shadow evaluation: with a candidate plugin attached
//! ([`GateService::with_shadow`]), every plugin-decided gate is also run
//! through the candidate on the same inputs (and the same host invariants);
//! a different verdict emits `kasmina.gate.shadow_disagreement` and is
//! counted. The candidate never affects the decision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kasmina_core::{Clock, TelemetrySink};
use kasmina_plugin_host::gate::{GateInputs, PerformanceStatus};
use kasmina_plugin_host::reload::PluginSlot;
use leyline::{Dim, GateId, SeedStage, TelemetryEvent, TelemetryLevel};

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
    /// Explanation attributes.
    pub attributes: BTreeMap<String, String>,
    /// Exactly what the plugin saw (journal, replay).
    pub inputs: GateInputs,
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
    /// Shadow evaluations that disagreed.
    pub shadow_disagreements: u64,
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
        }
    }
}

/// Evaluates gates through the (hot-reloadable) gate plugin.
pub struct GateService {
    plugin: Arc<PluginSlot<kasmina_plugin_host::gate::GatePlugin>>,
    shadow: Option<Arc<PluginSlot<kasmina_plugin_host::gate::GatePlugin>>>,
    settings: GateSettings,
    sink: Arc<dyn TelemetrySink>,
    clock: Arc<dyn Clock>,
    stats: GateCallStats,
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
        GateService { plugin, shadow: None, settings, sink, clock, stats: GateCallStats::default() }
    }

    /// Also evaluates `candidate` on every plugin-decided gate and reports
    /// disagreements; the candidate never changes a decision.
    pub fn with_shadow(mut self, candidate: Arc<PluginSlot<kasmina_plugin_host::gate::GatePlugin>>) -> Self {
        self.shadow = Some(candidate);
        self
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
        let span = tracing::info_span!("kasmina.gate.evaluate", gate = gate.as_str(), seed = %seed.seed_id);
        let _entered = span.enter();
        let inputs = self.inputs(seed, expected, env);
        let decision = match precheck(gate, &inputs) {
            Some((reason, attributes)) => GateDecision { gate, passed: false, reason, attributes, inputs },
            None => {
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
                if let Some(candidate) = &self.shadow {
                    self.shadow_compare(candidate, seed, &decision);
                }
                decision
            }
        };
        self.emit(seed, &decision);
        decision
    }

    /// Runs the candidate on the inputs the active plugin saw, under the
    /// same host invariants, and reports a different verdict.
    fn shadow_compare(
        &self,
        candidate: &PluginSlot<kasmina_plugin_host::gate::GatePlugin>,
        seed: &SeedContext,
        active: &GateDecision,
    ) {
        let plugin = candidate.current();
        let verdict = plugin.evaluate(active.gate, &active.inputs);
        let shadow = enforce_invariants(GateDecision {
            gate: active.gate,
            passed: verdict.passed,
            reason: verdict.reason,
            attributes: verdict.attributes,
            inputs: active.inputs.clone(),
        });
        if shadow.passed == active.passed {
            self.stats.shadow_agreements.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.shadow_disagreements.fetch_add(1, Ordering::Relaxed);
        let verdict_word = |passed: bool| if passed { "passed" } else { "failed" };
        let mut event = TelemetryEvent::new(
            "kasmina.gate.shadow_disagreement",
            TelemetryLevel::Warning,
            format!(
                "{} for {}: active plugin {} ({}), candidate {} ({})",
                active.gate,
                seed.seed_id,
                verdict_word(active.passed),
                active.reason,
                verdict_word(shadow.passed),
                shadow.reason
            ),
            self.clock.now_ms(),
        )
        .seed(seed.seed_id.as_str())
        .attr("gate", active.gate.as_str())
        .attr("stage", seed.stage.as_str())
        .attr("active_passed", active.passed)
        .attr("active_reason", active.reason.as_str())
        .attr("shadow_passed", shadow.passed)
        .attr("shadow_reason", shadow.reason.as_str())
        .attr("shadow_plugin", plugin.identity().info.name.as_str());
        for (k, v) in &shadow.attributes {
            event = event.attr(format!("shadow.{k}"), v.as_str());
        }
        self.sink.emit(event);
    }

    fn emit(&self, seed: &SeedContext, d: &GateDecision) {
        let level = if d.passed { TelemetryLevel::Info } else { TelemetryLevel::Warning };
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
            event = event.attr(format!("verdict.{k}"), v.as_str());
        }
        self.sink.emit(event);
    }
}

/// Stage order, checked by the host before any plugin runs.
fn precheck(gate: GateId, inputs: &GateInputs) -> Option<(String, BTreeMap<String, String>)> {
    let (from, _) = gate.edge();
    let stages = [inputs.current_stage, inputs.expected_stage, inputs.reported_stage];
    if stages.iter().all(|s| *s == from) {
        return None;
    }
    let mut attributes = BTreeMap::new();
    attributes.insert("gate_source_stage".to_owned(), from.as_str().to_owned());
    attributes.insert("current_stage".to_owned(), inputs.current_stage.as_str().to_owned());
    attributes.insert("expected_stage".to_owned(), inputs.expected_stage.as_str().to_owned());
    attributes.insert("reported_stage".to_owned(), inputs.reported_stage.as_str().to_owned());
    attributes.insert("checked_by".to_owned(), "host".to_owned());
    Some(("stage_mismatch".to_owned(), attributes))
}

/// The whole decision for recorded `inputs` — host stage-order check,
/// `plugin`, host invariants — exactly as [`GateService::evaluate`] takes
/// it, without telemetry. `kasmina journal replay` judges candidates so.
pub fn decide(plugin: &kasmina_plugin_host::gate::GatePlugin, gate: GateId, inputs: GateInputs) -> GateDecision {
    match precheck(gate, &inputs) {
        Some((reason, attributes)) => GateDecision { gate, passed: false, reason, attributes, inputs },
        None => {
            let verdict = plugin.evaluate(gate, &inputs);
            enforce_invariants(GateDecision {
                gate,
                passed: verdict.passed,
                reason: verdict.reason,
                attributes: verdict.attributes,
                inputs,
            })
        }
    }
}

/// Overrides a passing plugin verdict that breaks a safety invariant.
fn enforce_invariants(mut decision: GateDecision) -> GateDecision {
    if decision.passed
        && let Some(broken) = violated_invariant(decision.gate, &decision.inputs)
    {
        decision.passed = false;
        decision.reason = "policy_invariant_violated".to_owned();
        decision.attributes.insert("invariant".to_owned(), broken.to_owned());
        decision.attributes.insert("plugin_verdict".to_owned(), "passed".to_owned());
    }
    decision
}

/// The invariants every gate policy must keep, whatever it decides.
fn violated_invariant(gate: GateId, i: &GateInputs) -> Option<&'static str> {
    match gate {
        GateId::G0Sanity if i.parameters.values().any(|v| !v.is_finite()) => Some("non_finite_parameter_must_fail_g0"),
        GateId::G1GradientHealth if i.isolation_violations > 0 => Some("isolation_violations_must_fail_g1"),
        GateId::G2Stability | GateId::G4SystemImpact if i.fallback_used => Some("fallback_must_fail_g2_g4"),
        GateId::G4SystemImpact if i.performance_status == PerformanceStatus::Fallback => {
            Some("fallback_must_fail_g2_g4")
        }
        _ => None,
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn inputs(stage: SeedStage) -> GateInputs {
        GateInputs {
            seed_id: "s".to_owned(),
            site: "hidden".to_owned(),
            blueprint_id: "bp".to_owned(),
            blueprint_known: true,
            current_stage: stage,
            expected_stage: stage,
            reported_stage: stage,
            parameters: BTreeMap::new(),
            parameter_bounds: BTreeMap::new(),
            kernel_attached: true,
            kernel_verified: true,
            fallback_used: false,
            isolation_violations: 0,
            max_cosine: 0.0,
            outputs_finite: true,
            loss_window: vec![0.5, 0.5],
            loss_variance_threshold: 1.0,
            kernel_latency_us: 10.0,
            latency_budget_us: 100.0,
            host_registered: true,
            required_layers: vec!["hidden".to_owned()],
            available_layers: vec!["hidden".to_owned()],
            interface_matches: true,
            performance_status: PerformanceStatus::Nominal,
            metric_delta: 0.0,
            metric_tolerance: 0.02,
            reset_clean: true,
        }
    }

    #[test]
    fn precheck_fails_any_stage_disagreement_before_the_plugin() {
        assert!(precheck(GateId::G2Stability, &inputs(SeedStage::Training)).is_none());
        for (field, stage) in [(0, SeedStage::Blending), (1, SeedStage::Germinated), (2, SeedStage::Dormant)] {
            let mut i = inputs(SeedStage::Training);
            match field {
                0 => i.current_stage = stage,
                1 => i.expected_stage = stage,
                _ => i.reported_stage = stage,
            }
            let (reason, attrs) = precheck(GateId::G2Stability, &i).expect("mismatch caught");
            assert_eq!(reason, "stage_mismatch");
            assert_eq!(attrs.get("checked_by").map(String::as_str), Some("host"));
        }
    }

    #[test]
    fn safety_invariants_hold_whatever_the_plugin_says() {
        let mut i = inputs(SeedStage::Training);
        i.fallback_used = true;
        assert!(violated_invariant(GateId::G2Stability, &i).is_some());
        assert!(violated_invariant(GateId::G4SystemImpact, &i).is_some());
        assert!(violated_invariant(GateId::G3Interface, &i).is_none());
        let mut i = inputs(SeedStage::Dormant);
        i.parameters.insert("lr".to_owned(), f64::NAN);
        assert!(violated_invariant(GateId::G0Sanity, &i).is_some());
        let mut i = inputs(SeedStage::Germinated);
        i.isolation_violations = 2;
        assert!(violated_invariant(GateId::G1GradientHealth, &i).is_some());
        assert!(violated_invariant(GateId::G1GradientHealth, &inputs(SeedStage::Germinated)).is_none());
    }
}
