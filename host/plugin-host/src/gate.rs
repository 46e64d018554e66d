//! Gate plugins: conversion of the contract's [`GateInputs`] (which the
//! control plane fills from real seed state) to the WIT record, and
//! [`GatePlugin`].

use std::collections::BTreeMap;

use leyline::{GateId, ParameterBounds, SeedStage};
// The inputs are contract types (the journal stores them too); re-exported
// so `kasmina_plugin_host::gate::GateInputs` keeps naming them.
pub use leyline::gate::{GateInputs, PerformanceStatus};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Instance, InstancePre};

use crate::bindings::gate::{GatePlugin as GateWorldBindings, GatePluginPre};
use crate::bindings::wit_types;
use crate::error::{PluginError, PluginFailure};
use crate::inspect::{API_PACKAGE, API_VERSION};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::{Core, PluginIdentity, World};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::verdict::{self, Verdict};

/// The `gate-inputs` record lowered by reference (no per-call clones).
mod args;

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

pub(crate) struct GateWorld;

/// The gate world pre-instantiated: the generated bindings (which type-check
/// every export against the world at load) plus where `evaluate` lives.
#[derive(Clone)]
pub(crate) struct GatePre {
    world: GatePluginPre<StoreState>,
    evaluate: ComponentExportIndex,
}

/// One instance: only `evaluate` is looked up (and type-checked) per
/// instance; `info` is reached through the generated bindings at load.
pub(crate) struct GateInstance {
    instance: Instance,
    evaluate: args::EvaluateFunc,
}

impl World for GateWorld {
    const KIND: PluginKind = PluginKind::GatePolicy;
    type Pre = GatePre;
    type Instance = GateInstance;

    fn pre(instance_pre: InstancePre<StoreState>) -> wasmtime::Result<Self::Pre> {
        let interface = format!("{API_PACKAGE}/{}@{API_VERSION}", PluginKind::GatePolicy.interface());
        let component = instance_pre.component();
        let evaluate = component
            .get_export_index(None, &interface)
            .and_then(|iface| component.get_export_index(Some(&iface), "evaluate"))
            .ok_or_else(|| wasmtime::format_err!("no export `{interface}#evaluate`"))?;
        Ok(GatePre { world: GatePluginPre::new(instance_pre)?, evaluate })
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance> {
        let instance = pre.world.instance_pre().instantiate(&mut *store)?;
        let evaluate = instance.get_typed_func(&mut *store, pre.evaluate)?;
        Ok(GateInstance { instance, evaluate })
    }
    fn info(instance: &Self::Instance, store: &mut Store<StoreState>) -> wasmtime::Result<wit_types::PluginInfo> {
        GateWorldBindings::new(&mut *store, &instance.instance)?.call_info(store)
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
        let args = args::evaluate_args(gate, inputs);
        let caps = self.core.output_caps();
        self.core.call_validated(
            |instance, store| instance.evaluate.call(store, args).map(|(verdict,)| verdict),
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

    /// Fuel (wasm instructions, roughly) the last successful call consumed;
    /// `None` unless the runtime meters fuel (`RuntimeConfig::fuel_metering`).
    pub fn last_call_fuel(&self) -> Option<u64> {
        self.core.last_call_fuel()
    }
}
