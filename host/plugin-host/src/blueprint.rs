//! Blueprint admission plugins: [`AdmissionContext`], conversion of the
//! catalog's [`BlueprintDescriptor`], and [`BlueprintPlugin`].

use std::collections::BTreeMap;

use leyline::{BlueprintDescriptor, BlueprintTier};
use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::bindings::blueprint::exports::esper::kasmina::blueprint_policy as wit;
use crate::bindings::blueprint::{BlueprintPlugin as BlueprintWorldInstance, BlueprintPluginPre};
use crate::bindings::wit_types;
use crate::error::{PluginError, PluginFailure};
use crate::gate::{bounds_to_wit, parameters_to_wit};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::{Core, PluginIdentity, World};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::verdict::{self, Verdict};

/// The situation a blueprint would be admitted into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionContext {
    /// Training run of the seed.
    pub training_run_id: String,
    /// Whether the run is a quarantine context.
    pub quarantine: bool,
    /// Whether an operator approved this blueprint for this run.
    pub approved: bool,
}

fn descriptor_to_wit(d: &BlueprintDescriptor) -> wit::BlueprintDescriptor {
    wit::BlueprintDescriptor {
        blueprint_id: d.blueprint_id.clone(),
        name: d.name.clone(),
        tier: match d.tier {
            BlueprintTier::Safe => wit::BlueprintTier::Safe,
            BlueprintTier::Experimental => wit::BlueprintTier::Experimental,
            BlueprintTier::HighRisk => wit::BlueprintTier::HighRisk,
        },
        parameter_bounds: bounds_to_wit(&d.parameter_bounds),
        risk: d.risk,
        quarantine_only: d.quarantine_only,
        approval_required: d.approval_required,
    }
}

pub(crate) struct BlueprintWorld;

impl World for BlueprintWorld {
    const KIND: PluginKind = PluginKind::BlueprintPolicy;
    type Pre = BlueprintPluginPre<StoreState>;
    type Instance = BlueprintWorldInstance;

    fn pre(instance_pre: InstancePre<StoreState>) -> wasmtime::Result<Self::Pre> {
        BlueprintPluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance> {
        pre.instantiate(store)
    }
    fn info(instance: &Self::Instance, store: &mut Store<StoreState>) -> wasmtime::Result<wit_types::PluginInfo> {
        instance.call_info(store)
    }
}

/// A loaded blueprint admission plugin.
pub struct BlueprintPlugin {
    core: Core<BlueprintWorld>,
}

impl std::fmt::Debug for BlueprintPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlueprintPlugin").field("identity", self.identity()).finish()
    }
}

impl BlueprintPlugin {
    /// Loads, pins, checks and pre-instantiates a blueprint plugin.
    pub fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        Ok(BlueprintPlugin { core: Core::load(runtime, spec)? })
    }

    /// Decides admission; any plugin failure is returned as such.
    pub fn try_admit(
        &self,
        descriptor: &BlueprintDescriptor,
        requested: &BTreeMap<String, f64>,
        context: &AdmissionContext,
    ) -> Result<Verdict, PluginFailure> {
        let wit_descriptor = descriptor_to_wit(descriptor);
        let wit_requested = parameters_to_wit(requested);
        let wit_context = wit::AdmissionContext {
            training_run_id: context.training_run_id.clone(),
            quarantine: context.quarantine,
            approved: context.approved,
        };
        let caps = self.core.output_caps();
        self.core.call_validated(
            |instance, store| {
                instance.esper_kasmina_blueprint_policy().call_admit(
                    store,
                    &wit_descriptor,
                    &wit_requested,
                    &wit_context,
                )
            },
            |raw| verdict::validate(raw, caps),
        )
    }

    /// Decides admission, failing closed on plugin failure.
    pub fn admit(
        &self,
        descriptor: &BlueprintDescriptor,
        requested: &BTreeMap<String, f64>,
        context: &AdmissionContext,
    ) -> Verdict {
        let span = tracing::debug_span!("kasmina.blueprint.admit", blueprint = %descriptor.blueprint_id);
        let _entered = span.enter();
        self.try_admit(descriptor, requested, context).unwrap_or_else(|failure| {
            tracing::warn!(%failure, plugin = %self.identity().info.name, "kasmina.plugin.failure");
            Verdict::from_failure(&failure, &self.identity().info.name)
        })
    }

    /// The same compiled plugin with other limits.
    pub fn with_limits(&self, limits: PluginLimits) -> Result<Self, PluginError> {
        Ok(BlueprintPlugin { core: self.core.with_limits(limits)? })
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
