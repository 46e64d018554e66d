//! Gate plugins: conversion of the contract's [`GateInputs`] (which the
//! control plane fills from real seed state) to the WIT record, and
//! [`GatePlugin`].

use leyline::{GateId, SeedStage};
// The inputs are contract types (the journal stores them too); re-exported
// so `kasmina_plugin_host::gate::GateInputs` keeps naming them.
pub use leyline::gate::{GateInputs, PerformanceStatus};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use crate::bindings::wit_types;
use crate::error::{PluginError, PluginFailure};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::{Core, ExportPre, PluginIdentity, World};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::verdict::{self, RawVerdict, Verdict};
use crate::version::ApiVersion;

/// The `gate-inputs` record lowered by reference (no per-call clones), in
/// the shape of each served API version.
mod args;

pub(crate) use args::{ParameterArg, ParameterBoundArg, bounds_arg, parameters_arg};

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

pub(crate) struct GateWorld;

/// One instance: `evaluate` typed for the plugin's own API version (and
/// type-checked against the component when looked up).
pub(crate) struct GateInstance {
    instance: Instance,
    evaluate: args::Evaluate,
}

impl World for GateWorld {
    const KIND: PluginKind = PluginKind::GatePolicy;
    type Pre = ExportPre;
    type Instance = GateInstance;

    fn pre(instance_pre: InstancePre<StoreState>, version: ApiVersion) -> wasmtime::Result<Self::Pre> {
        ExportPre::new(instance_pre, Self::KIND, version, "evaluate")
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance> {
        let (instance, index, version) = pre.instantiate(store)?;
        let evaluate = args::Evaluate::lookup(&instance, store, index, version)?;
        Ok(GateInstance { instance, evaluate })
    }
    fn component_instance(instance: &Self::Instance) -> &Instance {
        &instance.instance
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
        let caps = self.core.output_caps();
        self.core.call_validated(
            |instance, store| instance.evaluate.call(store, gate, inputs),
            |raw: RawVerdict| verdict::validate(raw, caps),
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

    /// The API version the plugin was built against (and is called through).
    pub fn api_version(&self) -> ApiVersion {
        self.core.api_version()
    }

    /// Limits in force.
    pub fn limits(&self) -> &PluginLimits {
        self.core.limits()
    }

    /// Fuel (wasm instructions, roughly) the last successful call consumed;
    /// `None` unless the runtime meters fuel (`RuntimeConfig::fuel_metering`).
    pub fn last_call_fuel(&self) -> Option<u64> {
        self.core.last_call_fuel()
    }
}
