//! The gate rules. One function per gate plus the shared stage-order and
//! kernel-integrity checks; each returns the first failure it finds.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

use kasmina_plugin_sdk::check_parameters;
use kasmina_plugin_sdk::gate::{GateInputs, PerformanceStatus};
use kasmina_plugin_sdk::types::{Gate, Stage, Verdict};

/// How many missing layers a G3 failure names (the rest are counted).
const MISSING_LAYERS_SHOWN: usize = 4;

/// Evaluates `gate` for one seed.
pub fn evaluate(gate: Gate, inputs: &GateInputs) -> Verdict {
    if let Some(failure) = check_stage_order(gate, inputs) {
        return failure;
    }
    if let Some(failure) = check_rank_agreement(gate, inputs) {
        return failure;
    }
    let failure = match gate {
        Gate::G0Sanity => g0_sanity(inputs),
        Gate::G1GradientHealth => g1_gradient_health(inputs),
        Gate::G2Stability => g2_stability(inputs),
        Gate::G3Interface => g3_interface(inputs),
        Gate::G4SystemImpact => g4_system_impact(inputs),
        Gate::G5Reset => g5_reset(inputs),
    };
    failure.unwrap_or_else(Verdict::pass)
}

/// The stage a gate's transition starts from.
pub fn source_stage(gate: Gate) -> Stage {
    match gate {
        Gate::G0Sanity => Stage::Dormant,
        Gate::G1GradientHealth => Stage::Germinated,
        Gate::G2Stability => Stage::Training,
        Gate::G3Interface => Stage::Blending,
        Gate::G4SystemImpact => Stage::Shadowing,
        Gate::G5Reset => Stage::Resetting,
    }
}

/// Expected (controller), reported (host) and current stage must agree, and
/// be the stage this gate's transition leaves from: catches out-of-order commands.
fn check_stage_order(gate: Gate, inputs: &GateInputs) -> Option<Verdict> {
    let source = source_stage(gate);
    let consistent = inputs.expected_stage == inputs.reported_stage
        && inputs.current_stage == inputs.reported_stage
        && inputs.current_stage == source;
    (!consistent).then(|| {
        Verdict::fail("stage_mismatch")
            .with("expected_stage", format!("{:?}", inputs.expected_stage))
            .with("reported_stage", format!("{:?}", inputs.reported_stage))
            .with("current_stage", format!("{:?}", inputs.current_stage))
            .with("gate_source_stage", format!("{source:?}"))
    })
}

/// A data-parallel job whose ranks applied different things to this seed
/// (API 0.2.0 `ranks`) must not advance it: replicas would diverge. G5 is
/// exempt: it only cleans the slot for reuse.
fn check_rank_agreement(gate: Gate, inputs: &GateInputs) -> Option<Verdict> {
    let ranks = inputs.ranks.as_ref()?;
    (gate != Gate::G5Reset && !ranks.agreed)
        .then(|| Verdict::fail("rank_divergence").with("world_size", ranks.world_size))
}

/// The seed must be running its own verified kernel and nothing else
/// (SPEC.md §1: no partial degradation).
fn check_kernel_integrity(inputs: &GateInputs) -> Option<Verdict> {
    if !inputs.kernel_attached {
        return Some(Verdict::fail("kernel_not_attached"));
    }
    if !inputs.kernel_verified {
        return Some(Verdict::fail("kernel_not_verified"));
    }
    if inputs.fallback_used {
        return Some(Verdict::fail("fallback_used"));
    }
    None
}

fn check_isolation(inputs: &GateInputs) -> Option<Verdict> {
    (inputs.isolation_violations > 0).then(|| {
        Verdict::fail("isolation_violations")
            .with("violations", inputs.isolation_violations)
            .with("max_cosine", inputs.max_cosine)
    })
}

fn g0_sanity(inputs: &GateInputs) -> Option<Verdict> {
    if inputs.blueprint_id.trim().is_empty() {
        return Some(Verdict::fail("empty_blueprint_id"));
    }
    if !inputs.blueprint_known {
        return Some(Verdict::fail("unknown_blueprint").with("blueprint_id", &inputs.blueprint_id));
    }
    check_parameters(&inputs.parameters, &inputs.parameter_bounds)
}

fn g1_gradient_health(inputs: &GateInputs) -> Option<Verdict> {
    check_kernel_integrity(inputs).or_else(|| check_isolation(inputs)).or_else(|| {
        (!inputs.max_cosine.is_finite())
            .then(|| Verdict::fail("non_finite_cosine").with("max_cosine", inputs.max_cosine))
    })
}

fn g2_stability(inputs: &GateInputs) -> Option<Verdict> {
    if let Some(failure) = check_kernel_integrity(inputs) {
        return Some(failure);
    }
    if !inputs.outputs_finite || inputs.loss_window.iter().any(|l| !l.is_finite()) {
        return Some(Verdict::fail("non_finite_outputs"));
    }
    if inputs.loss_window.is_empty() {
        return Some(Verdict::fail("empty_loss_window"));
    }
    let variance = variance(&inputs.loss_window);
    if !inputs.loss_variance_threshold.is_finite() || variance > inputs.loss_variance_threshold {
        return Some(
            Verdict::fail("loss_variance_exceeded")
                .with("variance", variance)
                .with("threshold", inputs.loss_variance_threshold),
        );
    }
    let latency_ok = inputs.kernel_latency_us.is_finite()
        && inputs.latency_budget_us.is_finite()
        && inputs.kernel_latency_us <= inputs.latency_budget_us;
    (!latency_ok).then(|| {
        Verdict::fail("latency_over_budget")
            .with("latency_us", inputs.kernel_latency_us)
            .with("budget_us", inputs.latency_budget_us)
    })
}

fn g3_interface(inputs: &GateInputs) -> Option<Verdict> {
    if let Some(failure) = check_kernel_integrity(inputs) {
        return Some(failure);
    }
    if !inputs.host_registered {
        return Some(Verdict::fail("host_not_registered"));
    }
    if !inputs.interface_matches {
        return Some(Verdict::fail("interface_mismatch").with("site", &inputs.site));
    }
    // A blend whose effective α is not a number did not blend anything
    // meaningful, whatever the loss says (API 0.2.0 `blend`).
    if let Some(blend) = &inputs.blend
        && !(blend.alpha_mean.is_finite() && blend.alpha_p95.is_finite())
    {
        return Some(
            Verdict::fail("blend_not_finite")
                .with("alpha_mean", blend.alpha_mean)
                .with("alpha_p95", blend.alpha_p95)
                .with("blend_steps", blend.steps),
        );
    }
    // The mesh must cover the layers of *this* seed's site; an empty
    // requirement cannot be checked and is refused rather than passed.
    if inputs.site.is_empty() || inputs.required_layers.is_empty() {
        return Some(Verdict::fail("no_required_layers").with("site", &inputs.site));
    }
    // A hash set: O(n) where a BTreeSet paid O(n log n) string comparisons
    // (byte loops in wasm), ~4x slower over 128 layers. Keyless SipHash
    // (`DefaultHasher::new`), never `RandomState`: that seeds itself from
    // `wasi:random`, which plugins are not given, and would make the plugin
    // nondeterministic.
    let mut available: HashSet<&str, BuildHasherDefault<DefaultHasher>> =
        HashSet::with_capacity_and_hasher(inputs.available_layers.len(), BuildHasherDefault::default());
    available.extend(inputs.available_layers.iter().map(String::as_str));
    let missing: Vec<&str> =
        inputs.required_layers.iter().map(String::as_str).filter(|layer| !available.contains(layer)).collect();
    if missing.is_empty() {
        return None;
    }
    let shown = missing.iter().take(MISSING_LAYERS_SHOWN).copied().collect::<Vec<_>>().join(",");
    Some(
        Verdict::fail("mesh_not_covering")
            .with("site", &inputs.site)
            .with("missing_count", missing.len())
            .with("missing", shown),
    )
}

fn g4_system_impact(inputs: &GateInputs) -> Option<Verdict> {
    if let Some(failure) = check_kernel_integrity(inputs) {
        return Some(failure);
    }
    match inputs.performance_status {
        PerformanceStatus::Nominal | PerformanceStatus::Healthy => {}
        PerformanceStatus::Fallback => return Some(Verdict::fail("performance_fallback")),
        status @ (PerformanceStatus::Degraded | PerformanceStatus::Critical) => {
            return Some(Verdict::fail("performance_not_nominal").with("status", format!("{status:?}")));
        }
    }
    if let Some(failure) = check_isolation(inputs) {
        return Some(failure);
    }
    let valid =
        inputs.metric_delta.is_finite() && inputs.metric_tolerance.is_finite() && inputs.metric_tolerance >= 0.0;
    if !valid {
        return Some(
            Verdict::fail("invalid_metric")
                .with("delta", inputs.metric_delta)
                .with("tolerance", inputs.metric_tolerance),
        );
    }
    (inputs.metric_delta < -inputs.metric_tolerance).then(|| {
        Verdict::fail("metric_regressed").with("delta", inputs.metric_delta).with("tolerance", inputs.metric_tolerance)
    })
}

fn g5_reset(inputs: &GateInputs) -> Option<Verdict> {
    if inputs.kernel_attached {
        return Some(Verdict::fail("kernel_still_attached"));
    }
    if inputs.isolation_violations > 0 {
        return Some(Verdict::fail("violations_outstanding").with("violations", inputs.isolation_violations));
    }
    (!inputs.reset_clean).then(|| Verdict::fail("slot_not_clean"))
}

/// Population variance; the caller guarantees a non-empty, finite window.
fn variance(window: &[f64]) -> f64 {
    let n = window.len() as f64;
    let mean = window.iter().sum::<f64>() / n;
    window.iter().map(|l| (l - mean) * (l - mean)).sum::<f64>() / n
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
