//! Gate plugins: the host-side [`GateInputs`] the control plane fills from
//! real seed state, conversion to the WIT record, and [`GatePlugin`].

use std::collections::BTreeMap;

use leyline::{GateId, ParameterBounds, SeedStage};
use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::bindings::gate::exports::esper::kasmina::gate_policy as wit;
use crate::bindings::gate::{GatePlugin as GateWorldInstance, GatePluginPre};
use crate::bindings::wit_types;
use crate::error::{PluginError, PluginFailure};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::{Core, PluginIdentity, World};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::verdict::{self, Verdict};

/// Performance status of a seed's kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PerformanceStatus {
    /// Own verified kernel at expected speed.
    Nominal,
    /// Own verified kernel within tolerances.
    Healthy,
    /// Outside tolerances.
    Degraded,
    /// Something other than the seed's own kernel ran.
    Fallback,
    /// Failing.
    Critical,
}

/// Everything a gate needs (SPEC.md §2), for one seed. See
/// `wit/gate-policy.wit` for each field's meaning.
#[derive(Debug, Clone, PartialEq)]
pub struct GateInputs {
    /// Seed id.
    pub seed_id: String,
    /// Seed site.
    pub site: String,
    /// Blueprint id (empty if none).
    pub blueprint_id: String,
    /// Whether Urza knows the blueprint.
    pub blueprint_known: bool,
    /// Stage the host holds now.
    pub current_stage: SeedStage,
    /// Stage the controller expects.
    pub expected_stage: SeedStage,
    /// Stage the host last reported.
    pub reported_stage: SeedStage,
    /// Requested parameters.
    pub parameters: BTreeMap<String, f64>,
    /// Declared parameter bounds.
    pub parameter_bounds: BTreeMap<String, ParameterBounds>,
    /// Kernel attached to the slot.
    pub kernel_attached: bool,
    /// Kernel fetched from Urza and SHA-256 verified.
    pub kernel_verified: bool,
    /// Anything other than the seed's own verified kernel ran.
    pub fallback_used: bool,
    /// Gradient-isolation violations in the current window.
    pub isolation_violations: u32,
    /// Largest host/seed gradient cosine observed.
    pub max_cosine: f64,
    /// Recent seed outputs all finite.
    pub outputs_finite: bool,
    /// Recent losses, oldest first.
    pub loss_window: Vec<f64>,
    /// Largest allowed loss variance.
    pub loss_variance_threshold: f64,
    /// Measured kernel latency (µs).
    pub kernel_latency_us: f64,
    /// Kernel latency budget (µs).
    pub latency_budget_us: f64,
    /// Host model registered.
    pub host_registered: bool,
    /// Layers this seed's site requires.
    pub required_layers: Vec<String>,
    /// Layers the mesh covers.
    pub available_layers: Vec<String>,
    /// Kernel I/O shapes match the site.
    pub interface_matches: bool,
    /// Kernel path status.
    pub performance_status: PerformanceStatus,
    /// Global metric change (positive is better).
    pub metric_delta: f64,
    /// Largest tolerated regression.
    pub metric_tolerance: f64,
    /// Slot clean (no cache/registry entries left).
    pub reset_clean: bool,
}

pub(crate) fn stage_to_wit(stage: SeedStage) -> wit_types::Stage {
    use wit_types::Stage as W;
    match stage {
        SeedStage::Unknown => W::Unknown,
        SeedStage::Dormant => W::Dormant,
        SeedStage::Germinated => W::Germinated,
        SeedStage::Training => W::Training,
        SeedStage::Blending => W::Blending,
        SeedStage::Shadowing => W::Shadowing,
        SeedStage::Probationary => W::Probationary,
        SeedStage::Fossilized => W::Fossilized,
        SeedStage::Culled => W::Culled,
        SeedStage::Embargoed => W::Embargoed,
        SeedStage::Resetting => W::Resetting,
        SeedStage::Terminated => W::Terminated,
    }
}

pub(crate) fn gate_to_wit(gate: GateId) -> wit_types::Gate {
    use wit_types::Gate as W;
    match gate {
        GateId::G0Sanity => W::G0Sanity,
        GateId::G1GradientHealth => W::G1GradientHealth,
        GateId::G2Stability => W::G2Stability,
        GateId::G3Interface => W::G3Interface,
        GateId::G4SystemImpact => W::G4SystemImpact,
        GateId::G5Reset => W::G5Reset,
    }
}

pub(crate) fn parameters_to_wit(parameters: &BTreeMap<String, f64>) -> Vec<wit_types::Parameter> {
    parameters.iter().map(|(name, value)| wit_types::Parameter { name: name.clone(), value: *value }).collect()
}

pub(crate) fn bounds_to_wit(bounds: &BTreeMap<String, ParameterBounds>) -> Vec<wit_types::ParameterBound> {
    bounds.iter().map(|(name, b)| wit_types::ParameterBound { name: name.clone(), min: b.min, max: b.max }).collect()
}

impl GateInputs {
    fn to_wit(&self) -> wit::GateInputs {
        wit::GateInputs {
            seed_id: self.seed_id.clone(),
            site: self.site.clone(),
            blueprint_id: self.blueprint_id.clone(),
            blueprint_known: self.blueprint_known,
            current_stage: stage_to_wit(self.current_stage),
            expected_stage: stage_to_wit(self.expected_stage),
            reported_stage: stage_to_wit(self.reported_stage),
            parameters: parameters_to_wit(&self.parameters),
            parameter_bounds: bounds_to_wit(&self.parameter_bounds),
            kernel_attached: self.kernel_attached,
            kernel_verified: self.kernel_verified,
            fallback_used: self.fallback_used,
            isolation_violations: self.isolation_violations,
            max_cosine: self.max_cosine,
            outputs_finite: self.outputs_finite,
            loss_window: self.loss_window.clone(),
            loss_variance_threshold: self.loss_variance_threshold,
            kernel_latency_us: self.kernel_latency_us,
            latency_budget_us: self.latency_budget_us,
            host_registered: self.host_registered,
            required_layers: self.required_layers.clone(),
            available_layers: self.available_layers.clone(),
            interface_matches: self.interface_matches,
            performance_status: match self.performance_status {
                PerformanceStatus::Nominal => wit::PerformanceStatus::Nominal,
                PerformanceStatus::Healthy => wit::PerformanceStatus::Healthy,
                PerformanceStatus::Degraded => wit::PerformanceStatus::Degraded,
                PerformanceStatus::Fallback => wit::PerformanceStatus::Fallback,
                PerformanceStatus::Critical => wit::PerformanceStatus::Critical,
            },
            metric_delta: self.metric_delta,
            metric_tolerance: self.metric_tolerance,
            reset_clean: self.reset_clean,
        }
    }
}

pub(crate) struct GateWorld;

impl World for GateWorld {
    const KIND: PluginKind = PluginKind::GatePolicy;
    type Pre = GatePluginPre<StoreState>;
    type Instance = GateWorldInstance;

    fn pre(instance_pre: InstancePre<StoreState>) -> wasmtime::Result<Self::Pre> {
        GatePluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance> {
        pre.instantiate(store)
    }
    fn info(instance: &Self::Instance, store: &mut Store<StoreState>) -> wasmtime::Result<wit_types::PluginInfo> {
        instance.call_info(store)
    }
}

/// A loaded gate plugin. Share it behind an `Arc`; calls take `&self`.
pub struct GatePlugin {
    core: Core<GateWorld>,
}

impl std::fmt::Debug for GatePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatePlugin").field("identity", self.identity()).field("limits", self.limits()).finish()
    }
}

impl GatePlugin {
    /// Loads, pins, checks and pre-instantiates a gate plugin.
    pub fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        Ok(GatePlugin { core: Core::load(runtime, spec)? })
    }

    /// Evaluates `gate`; any plugin failure is returned as such.
    pub fn try_evaluate(&self, gate: GateId, inputs: &GateInputs) -> Result<Verdict, PluginFailure> {
        let wit_gate = gate_to_wit(gate);
        let wit_inputs = inputs.to_wit();
        let caps = self.core.output_caps();
        self.core.call_validated(
            |instance, store| instance.esper_kasmina_gate_policy().call_evaluate(store, wit_gate, &wit_inputs),
            |raw| verdict::validate(raw, caps),
        )
    }

    /// Evaluates `gate`, failing closed: a plugin failure becomes a failing
    /// verdict with its `plugin_*` reason.
    pub fn evaluate(&self, gate: GateId, inputs: &GateInputs) -> Verdict {
        let span = tracing::debug_span!("kasmina.gate.evaluate", seed = %inputs.seed_id, ?gate);
        let _entered = span.enter();
        self.try_evaluate(gate, inputs).unwrap_or_else(|failure| {
            tracing::warn!(%failure, plugin = %self.identity().info.name, "kasmina.plugin.failure");
            Verdict::from_failure(&failure, &self.identity().info.name)
        })
    }

    /// The same compiled plugin with other limits (e.g. `reuse` isolation).
    pub fn with_limits(&self, limits: PluginLimits) -> Result<Self, PluginError> {
        Ok(GatePlugin { core: self.core.with_limits(limits)? })
    }

    /// File, digest and declared info.
    pub fn identity(&self) -> &PluginIdentity {
        self.core.identity()
    }

    /// Limits in force.
    pub fn limits(&self) -> &PluginLimits {
        self.core.limits()
    }
}
