//! A custom gate plugin, written only against `kasmina-plugin-sdk`: a
//! stricter house policy that halves the latency budget, accepts only
//! `nominal` performance and refuses any gradient cosine above 0.2.
//!
//! Build it (one command, from the workspace root):
//! ```text
//! cargo build --target wasm32-wasip2 --profile plugin -p kasmina-example-custom-gate
//! ```
//! The component lands in
//! `target/wasm32-wasip2/plugin/kasmina_example_custom_gate.wasm`; check it
//! with `kasmina plugin check <that file>` and point the host config at it
//! (with its SHA-256) — the host is not rebuilt.

use std::collections::BTreeSet;

use kasmina_plugin_sdk::gate::{GateInputs, PerformanceStatus};
use kasmina_plugin_sdk::types::{Gate, PluginInfo, PluginKind, Stage, Verdict};
use kasmina_plugin_sdk::{GatePolicy, check_parameters, plugin_info};

/// The house gate policy.
pub struct StrictGates;

/// Largest tolerated host/seed gradient cosine.
const MAX_COSINE: f64 = 0.2;

fn source_stage(gate: Gate) -> Stage {
    match gate {
        Gate::G0Sanity => Stage::Dormant,
        Gate::G1GradientHealth => Stage::Germinated,
        Gate::G2Stability => Stage::Training,
        Gate::G3Interface => Stage::Blending,
        Gate::G4SystemImpact => Stage::Shadowing,
        Gate::G5Reset => Stage::Resetting,
    }
}

fn rules(gate: Gate, i: &GateInputs) -> Option<Verdict> {
    let stages_agree = i.expected_stage == i.reported_stage
        && i.current_stage == i.reported_stage
        && i.current_stage == source_stage(gate);
    if !stages_agree {
        return Some(Verdict::fail("stage_mismatch"));
    }
    let kernel_ok = i.kernel_attached && i.kernel_verified && !i.fallback_used;
    let isolated = i.isolation_violations == 0 && i.max_cosine.is_finite() && i.max_cosine <= MAX_COSINE;
    match gate {
        Gate::G0Sanity if i.blueprint_id.is_empty() || !i.blueprint_known => Some(Verdict::fail("bad_blueprint")),
        Gate::G0Sanity => check_parameters(&i.parameters, &i.parameter_bounds),
        _ if gate != Gate::G5Reset && !kernel_ok => Some(Verdict::fail("kernel_not_trusted")),
        Gate::G1GradientHealth | Gate::G4SystemImpact if !isolated => {
            Some(Verdict::fail("isolation_violations").with("max_cosine", i.max_cosine))
        }
        Gate::G2Stability => {
            let finite = i.outputs_finite && !i.loss_window.is_empty() && i.loss_window.iter().all(|l| l.is_finite());
            let fast = i.kernel_latency_us.is_finite() && i.kernel_latency_us <= i.latency_budget_us / 2.0;
            (!finite || !fast).then(|| Verdict::fail("unstable"))
        }
        Gate::G3Interface => {
            let mesh: BTreeSet<&String> = i.available_layers.iter().collect();
            let covered = !i.required_layers.is_empty() && i.required_layers.iter().all(|l| mesh.contains(l));
            (!i.host_registered || !i.interface_matches || !covered).then(|| Verdict::fail("interface"))
        }
        Gate::G4SystemImpact => {
            let regressed = !i.metric_delta.is_finite() || i.metric_delta < -i.metric_tolerance.abs();
            (i.performance_status != PerformanceStatus::Nominal || regressed).then(|| Verdict::fail("system_impact"))
        }
        Gate::G5Reset => {
            (i.kernel_attached || i.isolation_violations > 0 || !i.reset_clean).then(|| Verdict::fail("slot_not_clean"))
        }
        Gate::G1GradientHealth => None,
    }
}

impl GatePolicy for StrictGates {
    fn info() -> PluginInfo {
        plugin_info("example-strict-gates", env!("CARGO_PKG_VERSION"), PluginKind::GatePolicy)
    }

    fn evaluate(gate: Gate, inputs: GateInputs) -> Verdict {
        rules(gate, &inputs).unwrap_or_else(Verdict::pass)
    }
}

kasmina_plugin_sdk::export_gate_policy!(StrictGates);
