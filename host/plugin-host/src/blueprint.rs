//! Blueprint admission plugins: [`AdmissionContext`], conversion of the
//! catalog's [`BlueprintDescriptor`], and [`BlueprintPlugin`].

use std::collections::BTreeMap;

use leyline::{BlueprintDescriptor, BlueprintTier};
use wasmtime::Store;
use wasmtime::component::{ComponentType, Instance, InstancePre, Lower, TypedFunc};

use crate::bindings::v0_2::blueprint::exports::esper::kasmina::blueprint_policy as wit;
use crate::bindings::{wit_types, wit_types_v0_1};
use crate::error::{PluginError, PluginFailure};
use crate::gate::{ParameterArg, ParameterBoundArg, bounds_arg, parameters_arg};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::{Core, ExportPre, PluginIdentity, World};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::verdict::{self, RawVerdict, Verdict};
use crate::version::ApiVersion;

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

/// WIT `blueprint-descriptor`, borrowed from the catalog's descriptor: the
/// only copy of its strings is the one into guest memory (the same
/// component type as the `bindgen!` record, which wasmtime checks by
/// structure when `admit` is looked up).
#[derive(ComponentType, Lower)]
#[component(record)]
struct DescriptorArg<'a> {
    #[component(name = "blueprint-id")]
    blueprint_id: &'a str,
    name: &'a str,
    tier: wit::BlueprintTier,
    #[component(name = "parameter-bounds")]
    parameter_bounds: Vec<ParameterBoundArg<'a>>,
    risk: f64,
    #[component(name = "quarantine-only")]
    quarantine_only: bool,
    #[component(name = "approval-required")]
    approval_required: bool,
}

/// WIT `admission-context`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
struct ContextArg<'a> {
    #[component(name = "training-run-id")]
    training_run_id: &'a str,
    quarantine: bool,
    approved: bool,
}

fn descriptor_arg(d: &BlueprintDescriptor) -> DescriptorArg<'_> {
    DescriptorArg {
        blueprint_id: &d.blueprint_id,
        name: &d.name,
        tier: match d.tier {
            BlueprintTier::Safe => wit::BlueprintTier::Safe,
            BlueprintTier::Experimental => wit::BlueprintTier::Experimental,
            BlueprintTier::HighRisk => wit::BlueprintTier::HighRisk,
        },
        parameter_bounds: bounds_arg(&d.parameter_bounds),
        risk: d.risk,
        quarantine_only: d.quarantine_only,
        approval_required: d.approval_required,
    }
}

pub(crate) struct BlueprintWorld;

/// `admit`'s arguments, borrowed. `TypedFunc` is covariant in its
/// parameters, so the `'static` handle stored per instance accepts
/// arguments of any shorter lifetime.
type AdmitArgs<'a> = (DescriptorArg<'a>, Vec<ParameterArg<'a>>, ContextArg<'a>);

/// `admit` typed for the plugin's API version: the arguments are the same
/// in 0.1.0 and 0.2.0, the verdict's attributes are not.
enum Admit {
    V0_1(TypedFunc<AdmitArgs<'static>, (wit_types_v0_1::Verdict,)>),
    V0_2(TypedFunc<AdmitArgs<'static>, (wit_types::Verdict,)>),
}

pub(crate) struct BlueprintInstance {
    instance: Instance,
    admit: Admit,
}

impl World for BlueprintWorld {
    const KIND: PluginKind = PluginKind::BlueprintPolicy;
    type Pre = ExportPre;
    type Instance = BlueprintInstance;

    fn pre(instance_pre: InstancePre<StoreState>, version: ApiVersion) -> wasmtime::Result<Self::Pre> {
        ExportPre::new(instance_pre, Self::KIND, version, "admit")
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance> {
        let (instance, index, version) = pre.instantiate(store)?;
        let admit = match version {
            ApiVersion::V0_1 => Admit::V0_1(instance.get_typed_func(store, index)?),
            ApiVersion::V0_2 => Admit::V0_2(instance.get_typed_func(store, index)?),
        };
        Ok(BlueprintInstance { instance, admit })
    }
    fn component_instance(instance: &Self::Instance) -> &Instance {
        &instance.instance
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
        let wit_context = ContextArg {
            training_run_id: &context.training_run_id,
            quarantine: context.quarantine,
            approved: context.approved,
        };
        let caps = self.core.output_caps();
        let args = (descriptor_arg(descriptor), parameters_arg(requested), wit_context);
        self.core.call_validated(
            |instance, store| match &instance.admit {
                Admit::V0_1(admit) => admit.call(store, args).map(|(v,)| RawVerdict::V0_1(v)),
                Admit::V0_2(admit) => admit.call(store, args).map(|(v,)| RawVerdict::V0_2(v)),
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
