//! The world-independent core of a loaded plugin: pre-instantiation, the
//! `info()` check, and the call machinery (deadline, memory cap, fuel,
//! isolation mode, failure classification). The typed wrappers in
//! [`crate::gate`], [`crate::annotation`] and [`crate::blueprint`] add their
//! conversions and output validation on top.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Instance, InstancePre};

use crate::bindings::wit_types;
use crate::error::{FailureKind, PluginError, PluginFailure};
use crate::inspect::interface_name;
use crate::kind::PluginKind;
use crate::limits::{Isolation, PluginLimits};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::version::ApiVersion;

/// What a plugin declares about itself (its `info()` export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// WIT API version it was built against.
    pub api_version: String,
    /// What it implements.
    pub kind: PluginKind,
}

/// Identity of a loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// SHA-256 of that file (hex).
    pub sha256: String,
    /// Its declared info.
    pub info: PluginInfo,
    /// The API version it speaks (from its export names; `info.api_version`
    /// agrees, or it was refused).
    pub api: ApiVersion,
    /// Its component imports.
    pub imports: Vec<String>,
    /// Its component exports.
    pub exports: Vec<String>,
}

/// Binds one plugin world to the generic machinery, for the API version
/// the plugin declared.
pub(crate) trait World: 'static {
    const KIND: PluginKind;
    type Pre: Clone + Send + Sync + 'static;
    type Instance: Send + 'static;
    fn pre(instance_pre: InstancePre<StoreState>, version: ApiVersion) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance>;
    /// The component instance, for the world-level `info` export.
    fn component_instance(instance: &Self::Instance) -> &Instance;
}

/// A world pre-instantiated, with where its one policy function lives
/// (`esper:kasmina/<interface>@<version>#<func>`, looked up once per load)
/// and the API version the plugin speaks. Each world types the function for
/// that version per instance, which also type-checks it against the plugin.
#[derive(Clone)]
pub(crate) struct ExportPre {
    instance_pre: InstancePre<StoreState>,
    func: ComponentExportIndex,
    version: ApiVersion,
}

impl ExportPre {
    pub(crate) fn new(
        instance_pre: InstancePre<StoreState>,
        kind: PluginKind,
        version: ApiVersion,
        func: &str,
    ) -> wasmtime::Result<Self> {
        let interface = interface_name(kind, version);
        let component = instance_pre.component();
        let func = component
            .get_export_index(None, &interface)
            .and_then(|iface| component.get_export_index(Some(&iface), func))
            .ok_or_else(|| wasmtime::format_err!("no export `{interface}#{func}`"))?;
        Ok(ExportPre { instance_pre, func, version })
    }

    /// A fresh instance, the policy function's index and the API version.
    pub(crate) fn instantiate(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<(Instance, ComponentExportIndex, ApiVersion)> {
        Ok((self.instance_pre.instantiate(store)?, self.func, self.version))
    }
}

/// Calls the world-level `info` export. `plugin-info` is the same record in
/// every served version, so one Rust type reads them all.
fn call_info(instance: &Instance, store: &mut Store<StoreState>) -> wasmtime::Result<wit_types::PluginInfo> {
    let info = instance.get_typed_func::<(), (wit_types::PluginInfo,)>(&mut *store, "info")?;
    info.call(store, ()).map(|(info,)| info)
}

/// Idle instances kept for `reuse` isolation: one is taken per call and put
/// back after a successful one, so concurrent callers (several controller
/// threads) each run on their own instance instead of queueing on one.
type Reused<W> = Vec<(Store<StoreState>, <W as World>::Instance)>;

/// Most idle instances a `reuse` plugin keeps; beyond this a finished
/// instance is dropped (its pool slot freed).
const MAX_IDLE_INSTANCES: usize = 8;

pub(crate) struct Core<W: World> {
    runtime: PluginRuntime,
    pre: W::Pre,
    version: ApiVersion,
    identity: Arc<PluginIdentity>,
    label: Arc<str>,
    limits: PluginLimits,
    reused: Mutex<Reused<W>>,
    /// Fuel the last successful call consumed (instantiation included in
    /// `per-call` isolation); `u64::MAX` until one has run on a metering
    /// runtime. The conformance kit's deterministic cost measure.
    last_fuel: AtomicU64,
}

fn validate_limits(runtime: &PluginRuntime, limits: &PluginLimits) -> Result<(), String> {
    if limits.deadline.is_zero() {
        return Err("deadline must be positive".into());
    }
    if limits.memory_bytes == 0 {
        return Err("memory cap must be positive".into());
    }
    match (runtime.inner.config.fuel_metering, limits.fuel) {
        (true, None) => Err("the runtime meters fuel: set a fuel limit".into()),
        (false, Some(_)) => Err("a fuel limit needs a runtime with fuel_metering on".into()),
        (true, Some(0)) => Err("fuel limit must be positive".into()),
        _ => Ok(()),
    }
}

impl<W: World> Core<W> {
    pub(crate) fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        validate_limits(runtime, &spec.limits).map_err(|detail| PluginError::Link {
            path: spec.path.clone(),
            kind: W::KIND,
            detail,
        })?;
        let prepared = runtime.prepare_source(&spec.path, spec.embedded, &spec.pin)?;
        let path = prepared.path.clone();
        if prepared.shape.kind != W::KIND {
            return Err(PluginError::KindMismatch { path, expected: W::KIND, found: prepared.shape.kind });
        }
        let link = |e: wasmtime::Error| PluginError::Link { path: path.clone(), kind: W::KIND, detail: e.to_string() };
        let version = prepared.shape.version;
        let pre = W::pre(prepared.linker.instantiate_pre(&prepared.component).map_err(link)?, version).map_err(link)?;
        let label: Arc<str> = Arc::from(path.display().to_string());
        let mut core = Core {
            runtime: runtime.clone(),
            pre,
            version,
            identity: Arc::new(PluginIdentity {
                path: path.clone(),
                sha256: prepared.sha256,
                info: PluginInfo {
                    name: String::new(),
                    version: String::new(),
                    api_version: String::new(),
                    kind: W::KIND,
                },
                api: version,
                imports: prepared.shape.imports,
                exports: prepared.shape.exports,
            }),
            label,
            limits: spec.limits.clone(),
            reused: Mutex::new(Vec::new()),
            last_fuel: AtomicU64::new(u64::MAX),
        };
        let info = core
            .call_validated(|instance, store| call_info(W::component_instance(instance), store), Ok)
            .map_err(|failure| PluginError::Info { path: path.clone(), failure })?;
        let info = core.check_info(info).map_err(|failure| PluginError::Info { path: path.clone(), failure })?;
        if info.kind != W::KIND {
            return Err(PluginError::KindMismatch { path, expected: W::KIND, found: info.kind });
        }
        if let Some(identity) = Arc::get_mut(&mut core.identity) {
            identity.info = info;
        }
        // `info` ran on the reused instance in `reuse` mode; start clean.
        core.reset();
        Ok(core)
    }

    fn check_info(&self, raw: wit_types::PluginInfo) -> Result<PluginInfo, PluginFailure> {
        let cap = self.runtime.output_caps().name_bytes;
        for (field, value) in [("name", &raw.name), ("version", &raw.version), ("api-version", &raw.api_version)] {
            if value.is_empty() || value.len() > cap {
                return Err(PluginFailure::bad_output(format!(
                    "info {field} is {} bytes (1..={cap} allowed)",
                    value.len()
                )));
            }
        }
        if raw.api_version != self.version.as_str() {
            return Err(PluginFailure::new(
                FailureKind::VersionMismatch,
                format!(
                    "info declares api-version {}, but the plugin exports the {} interface: rebuild it so both agree",
                    raw.api_version, self.version
                ),
            ));
        }
        Ok(PluginInfo {
            name: raw.name,
            version: raw.version,
            api_version: raw.api_version,
            kind: PluginKind::from_wit(raw.kind),
        })
    }

    /// A second handle on the same compiled plugin with other limits
    /// (shares the pre-instantiation; has its own reused instance).
    pub(crate) fn with_limits(&self, limits: PluginLimits) -> Result<Self, PluginError> {
        validate_limits(&self.runtime, &limits).map_err(|detail| PluginError::Link {
            path: self.identity.path.clone(),
            kind: W::KIND,
            detail,
        })?;
        Ok(Core {
            runtime: self.runtime.clone(),
            pre: self.pre.clone(),
            version: self.version,
            identity: Arc::clone(&self.identity),
            label: Arc::clone(&self.label),
            limits,
            reused: Mutex::new(Vec::new()),
            last_fuel: AtomicU64::new(u64::MAX),
        })
    }

    /// Fuel the last successful call consumed, when the runtime meters fuel.
    pub(crate) fn last_call_fuel(&self) -> Option<u64> {
        Some(self.last_fuel.load(Ordering::Relaxed)).filter(|f| *f != u64::MAX)
    }

    /// Records what the call on `store` consumed of the fuel it was armed with.
    fn note_fuel(&self, store: &Store<StoreState>) {
        // Only a metering runtime has fuel to read (asking one that does not
        // builds an error value every call).
        if let Some(armed) = self.limits.fuel
            && let Ok(left) = store.get_fuel()
        {
            self.last_fuel.store(armed.saturating_sub(left), Ordering::Relaxed);
        }
    }

    pub(crate) fn identity(&self) -> &PluginIdentity {
        &self.identity
    }

    /// The API version the plugin declared (and is called through).
    pub(crate) fn api_version(&self) -> ApiVersion {
        self.version
    }

    pub(crate) fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    pub(crate) fn output_caps(&self) -> &crate::limits::OutputCaps {
        self.runtime.output_caps()
    }

    /// Drops the reused instances (the next call instantiates afresh).
    pub(crate) fn reset(&self) {
        self.reused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    fn new_store(&self) -> Store<StoreState> {
        let mut store =
            Store::new(&self.runtime.inner.engine, StoreState::new(Arc::clone(&self.label), self.limits.memory_bytes));
        store.limiter(|state| state.limiter());
        store
    }

    /// Arms the deadline (and fuel) for one call.
    fn arm(&self, store: &mut Store<StoreState>) -> Result<(), PluginFailure> {
        let tick = self.runtime.inner.config.epoch_tick.as_nanos().max(1);
        // +1: the next tick may land right away, so round the deadline up.
        let ticks = self.limits.deadline.as_nanos().div_ceil(tick) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        if let Some(fuel) = self.limits.fuel {
            store.set_fuel(fuel).map_err(|e| PluginFailure::new(FailureKind::Trap, e.to_string()))?;
        }
        store.data_mut().begin_call();
        Ok(())
    }

    /// Calls into the plugin and validates the result, with the isolation
    /// mode's instance handling. Any failure (including bad output) in
    /// `reuse` mode discards the instance.
    pub(crate) fn call_validated<R, T>(
        &self,
        call: impl FnOnce(&W::Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
        validate: impl FnOnce(R) -> Result<T, PluginFailure>,
    ) -> Result<T, PluginFailure> {
        let deadline_ms = self.limits.deadline.as_millis();
        let span = tracing::trace_span!("kasmina.plugin.call", plugin = &*self.label, kind = %W::KIND);
        let _entered = span.enter();
        match self.limits.isolation {
            Isolation::PerCall => {
                let mut store = self.new_store();
                self.arm(&mut store)?;
                let instance =
                    W::instantiate(&self.pre, &mut store).map_err(|e| store.data().classify(&e, deadline_ms))?;
                let raw = call(&instance, &mut store).map_err(|e| store.data().classify(&e, deadline_ms))?;
                self.note_fuel(&store);
                validate(raw)
            }
            Isolation::Reuse => {
                // The lock is held only to take and return an instance, never
                // across the call.
                let idle = self.reused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
                let (store, instance) = match idle {
                    Some(pair) => pair,
                    None => {
                        let mut store = self.new_store();
                        self.arm(&mut store)?;
                        let instance = W::instantiate(&self.pre, &mut store)
                            .map_err(|e| store.data().classify(&e, deadline_ms))?;
                        (store, instance)
                    }
                };
                let mut store = store;
                self.arm(&mut store)?;
                let raw = call(&instance, &mut store).map_err(|e| store.data().classify(&e, deadline_ms))?;
                self.note_fuel(&store);
                let result = validate(raw)?;
                // Only a fully successful call puts the instance back.
                let mut idle = self.reused.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if idle.len() < MAX_IDLE_INSTANCES {
                    idle.push((store, instance));
                }
                Ok(result)
            }
        }
    }
}
