//! The `gate-inputs` record lowered straight from the host's [`GateInputs`]
//! by reference.
//!
//! Why not the `bindgen!` record: it owns its strings, so every evaluation
//! cloned every id, parameter name and mesh layer on the host only to copy
//! them again into the guest. These borrowed twins have the same component
//! type (field names and order are type-checked by wasmtime against the
//! plugin when its `evaluate` export is looked up), so the only copy left is
//! the one into guest memory that the canonical ABI requires.

use wasmtime::component::{ComponentType, Lower, TypedFunc};

use crate::bindings::gate::exports::esper::kasmina::gate_policy as wit;
use crate::bindings::wit_types;
use crate::gate::{GateInputs, PerformanceStatus, gate_to_wit, stage_to_wit};

/// `evaluate: func(gate, gate-inputs) -> verdict`, typed for borrowed inputs.
/// `TypedFunc` is covariant in its parameters, so the `'static` handle
/// stored per instance accepts inputs of any shorter lifetime.
pub(crate) type EvaluateFunc = TypedFunc<(wit_types::Gate, GateInputsArg<'static>), (wit_types::Verdict,)>;

/// WIT `parameter`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ParameterArg<'a> {
    name: &'a str,
    value: f64,
}

/// WIT `parameter-bound`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ParameterBoundArg<'a> {
    name: &'a str,
    min: f64,
    max: f64,
}

/// WIT `gate-inputs`, borrowed; fields in WIT order.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct GateInputsArg<'a> {
    #[component(name = "seed-id")]
    seed_id: &'a str,
    site: &'a str,
    #[component(name = "blueprint-id")]
    blueprint_id: &'a str,
    #[component(name = "blueprint-known")]
    blueprint_known: bool,
    #[component(name = "current-stage")]
    current_stage: wit_types::Stage,
    #[component(name = "expected-stage")]
    expected_stage: wit_types::Stage,
    #[component(name = "reported-stage")]
    reported_stage: wit_types::Stage,
    parameters: Vec<ParameterArg<'a>>,
    #[component(name = "parameter-bounds")]
    parameter_bounds: Vec<ParameterBoundArg<'a>>,
    #[component(name = "kernel-attached")]
    kernel_attached: bool,
    #[component(name = "kernel-verified")]
    kernel_verified: bool,
    #[component(name = "fallback-used")]
    fallback_used: bool,
    #[component(name = "isolation-violations")]
    isolation_violations: u32,
    #[component(name = "max-cosine")]
    max_cosine: f64,
    #[component(name = "outputs-finite")]
    outputs_finite: bool,
    #[component(name = "loss-window")]
    loss_window: &'a [f64],
    #[component(name = "loss-variance-threshold")]
    loss_variance_threshold: f64,
    #[component(name = "kernel-latency-us")]
    kernel_latency_us: f64,
    #[component(name = "latency-budget-us")]
    latency_budget_us: f64,
    #[component(name = "host-registered")]
    host_registered: bool,
    #[component(name = "required-layers")]
    required_layers: &'a [String],
    #[component(name = "available-layers")]
    available_layers: &'a [String],
    #[component(name = "interface-matches")]
    interface_matches: bool,
    #[component(name = "performance-status")]
    performance_status: wit::PerformanceStatus,
    #[component(name = "metric-delta")]
    metric_delta: f64,
    #[component(name = "metric-tolerance")]
    metric_tolerance: f64,
    #[component(name = "reset-clean")]
    reset_clean: bool,
}

/// The call's arguments, borrowing `inputs`. Parameters and bounds live in
/// maps on the host, so they get a small vector of borrowed pairs each.
pub(crate) fn evaluate_args(gate: leyline::GateId, inputs: &GateInputs) -> (wit_types::Gate, GateInputsArg<'_>) {
    let args = GateInputsArg {
        seed_id: &inputs.seed_id,
        site: &inputs.site,
        blueprint_id: &inputs.blueprint_id,
        blueprint_known: inputs.blueprint_known,
        current_stage: stage_to_wit(inputs.current_stage),
        expected_stage: stage_to_wit(inputs.expected_stage),
        reported_stage: stage_to_wit(inputs.reported_stage),
        parameters: inputs.parameters.iter().map(|(name, &value)| ParameterArg { name, value }).collect(),
        parameter_bounds: inputs
            .parameter_bounds
            .iter()
            .map(|(name, b)| ParameterBoundArg { name, min: b.min, max: b.max })
            .collect(),
        kernel_attached: inputs.kernel_attached,
        kernel_verified: inputs.kernel_verified,
        fallback_used: inputs.fallback_used,
        isolation_violations: inputs.isolation_violations,
        max_cosine: inputs.max_cosine,
        outputs_finite: inputs.outputs_finite,
        loss_window: &inputs.loss_window,
        loss_variance_threshold: inputs.loss_variance_threshold,
        kernel_latency_us: inputs.kernel_latency_us,
        latency_budget_us: inputs.latency_budget_us,
        host_registered: inputs.host_registered,
        required_layers: &inputs.required_layers,
        available_layers: &inputs.available_layers,
        interface_matches: inputs.interface_matches,
        performance_status: match inputs.performance_status {
            PerformanceStatus::Nominal => wit::PerformanceStatus::Nominal,
            PerformanceStatus::Healthy => wit::PerformanceStatus::Healthy,
            PerformanceStatus::Degraded => wit::PerformanceStatus::Degraded,
            PerformanceStatus::Fallback => wit::PerformanceStatus::Fallback,
            PerformanceStatus::Critical => wit::PerformanceStatus::Critical,
        },
        metric_delta: inputs.metric_delta,
        metric_tolerance: inputs.metric_tolerance,
        reset_clean: inputs.reset_clean,
    };
    (gate_to_wit(gate), args)
}
