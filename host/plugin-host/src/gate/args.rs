//! The `gate-inputs` record lowered straight from the host's [`GateInputs`]
//! by reference, in the shape of each served API version.
//!
//! Why not the `bindgen!` record: it owns its strings, so every evaluation
//! cloned every id, parameter name and mesh layer on the host only to copy
//! them again into the guest. These borrowed twins have the same component
//! type (field names and order are type-checked by wasmtime against the
//! plugin when its `evaluate` export is looked up), so the only copy left is
//! the one into guest memory that the canonical ABI requires.
//!
//! Versions: the 0.1.0 record is the 0.2.0 one without its two trailing
//! fields (`blend`, `ranks`), so one macro writes both structs from one
//! field list and the 0.1.0 projection costs nothing beyond leaving them
//! out. Both share the 0.2.0 enum and parameter types: those are the same
//! in both versions, and wasmtime checks types by structure.

use std::collections::BTreeMap;

use leyline::{GateId, ParameterBounds};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, ComponentType, Instance, Lower, TypedFunc};

use crate::bindings::v0_2::gate::exports::esper::kasmina::gate_policy as wit;
use crate::bindings::{wit_types, wit_types_v0_1};
use crate::gate::{GateInputs, PerformanceStatus, gate_to_wit, stage_to_wit};
use crate::store::StoreState;
use crate::verdict::RawVerdict;
use crate::version::ApiVersion;

/// `evaluate: func(gate, gate-inputs) -> verdict` of one API version, typed
/// for borrowed inputs. `TypedFunc` is covariant in its parameters, so the
/// `'static` handle stored per instance accepts inputs of any shorter lifetime.
pub(crate) enum Evaluate {
    /// API 0.1.0: projected inputs, text attributes.
    V0_1(TypedFunc<(wit_types::Gate, GateInputsV0_1<'static>), (wit_types_v0_1::Verdict,)>),
    /// API 0.2.0.
    V0_2(TypedFunc<(wit_types::Gate, GateInputsV0_2<'static>), (wit_types::Verdict,)>),
}

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

/// The host's parameter map as borrowed WIT `parameter`s (one small vector).
pub(crate) fn parameters_arg(parameters: &BTreeMap<String, f64>) -> Vec<ParameterArg<'_>> {
    parameters.iter().map(|(name, &value)| ParameterArg { name, value }).collect()
}

/// The host's bounds map as borrowed WIT `parameter-bound`s.
pub(crate) fn bounds_arg(bounds: &BTreeMap<String, ParameterBounds>) -> Vec<ParameterBoundArg<'_>> {
    bounds.iter().map(|(name, b)| ParameterBoundArg { name, min: b.min, max: b.max }).collect()
}

/// Declares a borrowed `gate-inputs` record: the 0.1.0 fields in WIT
/// order, then `$extra` (the fields a later version appends).
macro_rules! gate_inputs_arg {
    ($(#[$doc:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$doc])*
        #[derive(ComponentType, Lower)]
        #[component(record)]
        pub(crate) struct $name<'a> {
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
            $($extra)*
        }
    };
}

/// Builds a `gate_inputs_arg!` struct borrowing `inputs`, with `$extra`
/// field initialisers for the fields after the 0.1.0 ones. Parameters and
/// bounds live in maps on the host, so they get a small vector of borrowed
/// pairs each.
macro_rules! gate_inputs {
    ($name:ident, $inputs:expr, { $($extra:tt)* }) => {{
        let inputs: &GateInputs = $inputs;
        $name {
            seed_id: &inputs.seed_id,
            site: &inputs.site,
            blueprint_id: &inputs.blueprint_id,
            blueprint_known: inputs.blueprint_known,
            current_stage: stage_to_wit(inputs.current_stage),
            expected_stage: stage_to_wit(inputs.expected_stage),
            reported_stage: stage_to_wit(inputs.reported_stage),
            parameters: parameters_arg(&inputs.parameters),
            parameter_bounds: bounds_arg(&inputs.parameter_bounds),
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
            performance_status: performance_status(inputs.performance_status),
            metric_delta: inputs.metric_delta,
            metric_tolerance: inputs.metric_tolerance,
            reset_clean: inputs.reset_clean,
            $($extra)*
        }
    }};
}
gate_inputs_arg!(
    /// WIT 0.1.0 `gate-inputs`, borrowed.
    GateInputsV0_1 {}
);

gate_inputs_arg!(
    /// WIT 0.2.0 `gate-inputs`, borrowed: 0.1.0's fields plus the blend
    /// statistics and rank agreement.
    GateInputsV0_2 {
        blend: Option<BlendStatsArg>,
        ranks: Option<RankAgreementArg>,
    }
);

/// WIT 0.2.0 `blend-stats`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct BlendStatsArg {
    steps: u32,
    #[component(name = "alpha-mean")]
    alpha_mean: f64,
    #[component(name = "alpha-p95")]
    alpha_p95: f64,
    #[component(name = "clamped-fraction")]
    clamped_fraction: f64,
    #[component(name = "gate-mean")]
    gate_mean: Option<f64>,
    #[component(name = "kernel-latency-p95-us")]
    kernel_latency_p95_us: f64,
}

/// WIT 0.2.0 `rank-agreement`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct RankAgreementArg {
    #[component(name = "world-size")]
    world_size: u32,
    agreed: bool,
}

fn blend_stats(b: &leyline::gate::BlendStats) -> BlendStatsArg {
    BlendStatsArg {
        steps: b.steps,
        alpha_mean: b.alpha_mean,
        alpha_p95: b.alpha_p95,
        clamped_fraction: b.clamped_fraction,
        gate_mean: b.gate_mean,
        kernel_latency_p95_us: b.kernel_latency_p95_us,
    }
}

fn performance_status(status: PerformanceStatus) -> wit::PerformanceStatus {
    match status {
        PerformanceStatus::Nominal => wit::PerformanceStatus::Nominal,
        PerformanceStatus::Healthy => wit::PerformanceStatus::Healthy,
        PerformanceStatus::Degraded => wit::PerformanceStatus::Degraded,
        PerformanceStatus::Fallback => wit::PerformanceStatus::Fallback,
        PerformanceStatus::Critical => wit::PerformanceStatus::Critical,
    }
}

impl Evaluate {
    /// Looks `evaluate` up in `instance`, typed for `version`.
    pub(crate) fn lookup(
        instance: &Instance,
        store: &mut Store<StoreState>,
        index: ComponentExportIndex,
        version: ApiVersion,
    ) -> wasmtime::Result<Evaluate> {
        Ok(match version {
            ApiVersion::V0_1 => Evaluate::V0_1(instance.get_typed_func(store, index)?),
            ApiVersion::V0_2 => Evaluate::V0_2(instance.get_typed_func(store, index)?),
        })
    }

    /// One call, with `inputs` lowered in the plugin's own version's shape.
    pub(crate) fn call(
        &self,
        store: &mut Store<StoreState>,
        gate: GateId,
        inputs: &GateInputs,
    ) -> wasmtime::Result<RawVerdict> {
        let gate = gate_to_wit(gate);
        match self {
            Evaluate::V0_1(func) => {
                let args = gate_inputs!(GateInputsV0_1, inputs, {});
                func.call(store, (gate, args)).map(|(verdict,)| RawVerdict::V0_1(verdict))
            }
            Evaluate::V0_2(func) => {
                let args = gate_inputs!(GateInputsV0_2, inputs, {
                    blend: inputs.blend.as_ref().map(blend_stats),
                    ranks: inputs.ranks.as_ref().map(|r| RankAgreementArg { world_size: r.world_size, agreed: r.agreed }),
                });
                func.call(store, (gate, args)).map(|(verdict,)| RawVerdict::V0_2(verdict))
            }
        }
    }
}
