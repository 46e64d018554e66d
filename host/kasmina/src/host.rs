//! The embedded host: one builder assembles settings, plugins, Urza, the
//! kernel load manager and the seed manager in-process, and serves
//! [`KasminaApi`] — the same trait the daemon serves over a socket.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kasmina_core::{CircuitBreaker, Clock, SystemClock, TelemetrySink};
use kasmina_kernels::{KernelLoadManager, UrzaLibrary};
use kasmina_plugin_host::annotation::AnnotationPlugin;
use kasmina_plugin_host::blueprint::BlueprintPlugin;
use kasmina_plugin_host::gate::GatePlugin;
use kasmina_plugin_host::reload::{PluginSlot, Reloadable};
use kasmina_plugin_host::runtime::{PluginRuntime, RuntimeConfig};
use kasmina_plugin_host::{Isolation, PluginLimits};
use leyline::api::{
    ApiError, ApiErrorCode, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport,
    TelemetryListener, TrainerSettings,
};
use leyline::{AdaptationCommand, Outcome, SeedState, TelemetryEvent, TelemetryLevel};

use crate::gates::GateService;
use crate::isolation::IsolationBreakers;
use crate::rollback::RollbackLedger;
use crate::security::{CommandVerifier, HmacKey, KeyFromSettings, NoncePurger};
use crate::seeds::{
    DecisionRecorder, Policies, PreparedCommand, PreparedStep, SeedManager, SeedManagerParts, with_step_attempts,
};
use crate::settings::Settings;
use crate::telemetry::{HeldEvents, TelemetryHub};
use crate::validator::CommandValidator;

mod plugin_load;
mod plugin_reload;
use self::plugin_load::{load_slot, pinned};
pub use self::plugin_reload::{PluginReloadRefused, PluginReloadReport, PolicySlot, SlotReload};
use self::plugin_reload::{PluginReloader, PolicySlots};

/// Telemetry events an embedded host keeps for `drain_telemetry`; beyond
/// this the oldest are dropped (and counted) so an undrained host cannot
/// grow without bound.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// Rollback points kept in memory.
pub const ROLLBACK_CAPACITY: usize = 4_096;

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The settings are invalid.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// No HMAC key could be loaded.
    #[error("HMAC key: {0}")]
    Key(#[from] crate::security::KeyError),
    /// No Urza directory was configured.
    #[error("no Urza library configured: set kernels.urza_dir in the settings (kasmina serve: --urza DIR)")]
    NoUrza,
    /// The Urza library could not be opened.
    #[error("Urza library: {0}")]
    Urza(#[from] kasmina_kernels::UrzaError),
    /// The kernel load manager could not start.
    #[error("kernel load manager: {0}")]
    Kernels(#[from] kasmina_kernels::KernelError),
    /// A plugin could not be loaded or failed its canary.
    #[error("{which} plugin: {detail}")]
    Plugin {
        /// Which plugin.
        which: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The command verifier refused its configuration.
    #[error("command verifier: {0}")]
    Verifier(#[from] crate::security::VerifierError),
    /// The nonce purger could not start.
    #[error("nonce purger: {0}")]
    Purger(#[from] crate::security::PurgerError),
}

/// Builds an [`EmbeddedHost`].
pub struct HostBuilder {
    settings: Settings,
    clock: Arc<dyn Clock>,
    key: Option<HmacKey>,
    urza_dir: Option<PathBuf>,
    recorder: Option<Arc<dyn DecisionRecorder>>,
    device: tch::Device,
    outbox: bool,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder").field("urza_dir", &self.urza_dir).finish_non_exhaustive()
    }
}

impl HostBuilder {
    /// A builder over validated `settings`.
    pub fn new(settings: Settings) -> Self {
        HostBuilder {
            settings,
            clock: Arc::new(SystemClock),
            key: None,
            urza_dir: None,
            recorder: None,
            device: tch::Device::Cpu,
            outbox: true,
        }
    }

    /// Uses `clock` instead of the system clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this HMAC key instead of loading one from the settings.
    pub fn hmac_key(mut self, key: HmacKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Serves kernels from this Urza library (overrides `kernels.urza_dir`).
    pub fn urza_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.urza_dir = Some(dir.into());
        self
    }

    /// Telemetry only through listeners
    /// ([`subscribe_telemetry`](KasminaApi::subscribe_telemetry)): no
    /// outbox and no CRITICAL channel for
    /// [`drain_telemetry`](KasminaApi::drain_telemetry), which is then
    /// refused. For a caller that never drains — the daemon, whose
    /// connections have their own bounded queues — an outbox would only
    /// fill to its cap (65 536 events, ~70 MiB) and count every later
    /// event as dropped.
    pub fn without_outbox(mut self) -> Self {
        self.outbox = false;
        self
    }

    /// Records every decision (the daemon's journal).
    pub fn recorder(mut self, recorder: Arc<dyn DecisionRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Loads and prewarms kernels on `device`.
    pub fn device(mut self, device: tch::Device) -> Self {
        self.device = device;
        self
    }

    /// Assembles everything; any missing or invalid part is an error.
    pub fn build(self) -> Result<EmbeddedHost, HostError> {
        let settings = Arc::new(self.settings);
        settings.validate()?;
        let clock = self.clock;
        let hub = Arc::new(TelemetryHub::from_settings(&settings.telemetry, Arc::clone(&clock)));
        // Listening before anything can emit, so no event is missed.
        let outbox = self.outbox.then(|| {
            let outbox = Arc::new(Outbox::default());
            hub.add_listener(Arc::clone(&outbox) as Arc<dyn TelemetryListener>);
            outbox
        });
        // Every part emits through one HeldEvents, so what the seed
        // manager's state lock covers does not include delivering events.
        let held = Arc::new(HeldEvents::new(hub.clone()));
        let sink: Arc<dyn TelemetrySink> = held.clone();
        let key = match self.key {
            Some(key) => key,
            None => HmacKey::from_settings(&settings.security)?,
        };
        let verifier = CommandVerifier::from_settings(&settings.security, key, Arc::clone(&clock), Arc::clone(&sink))?;
        let purger = NoncePurger::spawn(
            Arc::clone(verifier.ledger()),
            Arc::clone(&clock),
            Arc::clone(&sink),
            Duration::from_secs(settings.security.nonce_purge_interval_s),
        )?;
        let validator = CommandValidator::new(&settings.annotations, Arc::clone(&clock), Arc::clone(&sink));

        let runtime = plugin_runtime(&settings)?;
        let limits = plugin_limits(&settings)?;
        let gates: Arc<PluginSlot<GatePlugin>> =
            Arc::new(load_slot(&runtime, "gate", pinned(&settings.plugins.gates, PolicySlot::Gates), &limits)?);
        let annotations: Arc<PluginSlot<AnnotationPlugin>> = Arc::new(load_slot(
            &runtime,
            "annotation",
            pinned(&settings.plugins.annotations, PolicySlot::Annotations),
            &limits,
        )?);
        let blueprints: Arc<PluginSlot<BlueprintPlugin>> = Arc::new(load_slot(
            &runtime,
            "blueprint-policy",
            pinned(&settings.plugins.blueprint_policy, PolicySlot::BlueprintPolicy),
            &limits,
        )?);
        // Triggered by the caller (the daemon: SIGHUP); holds the settings in force.
        let reloader = PluginReloader::new(
            PolicySlots {
                gates: Arc::clone(&gates),
                annotations: Arc::clone(&annotations),
                blueprints: Arc::clone(&blueprints),
            },
            limits.clone(),
            Settings::clone(&settings),
            Arc::clone(&sink),
            Arc::clone(&clock),
        );

        let plugins_at_start = vec![
            LoadedPlugin::of("gates", &*gates.current()),
            LoadedPlugin::of("annotations", &*annotations.current()),
            LoadedPlugin::of("blueprint-policy", &*blueprints.current()),
        ];

        let fetch_breaker =
            Arc::new(CircuitBreaker::new("fetch", settings.breaker_config(), Arc::clone(&clock), Arc::clone(&sink)));
        let isolation =
            Arc::new(IsolationBreakers::new(settings.isolation_config(), Arc::clone(&clock), Arc::clone(&sink)));

        let urza_dir = self.urza_dir.or_else(|| settings.kernels.urza_dir.clone()).ok_or(HostError::NoUrza)?;
        let urza = Arc::new(UrzaLibrary::open_with_clock(&urza_dir, Arc::clone(&clock))?);
        let (kernels, prefetch_events) = KernelLoadManager::new(
            urza,
            settings.kernel_manager_config(self.device),
            Arc::clone(&fetch_breaker),
            Arc::clone(&sink),
            Arc::clone(&clock),
        )?;
        let rollback = Arc::new(RollbackLedger::new(
            crate::rollback::RollbackSla::from_settings(&settings.rollback),
            ROLLBACK_CAPACITY,
            Arc::clone(&clock),
            Arc::clone(&sink),
        ));
        let mut gate_service = GateService::new(gates, settings.gates.clone(), Arc::clone(&sink), Arc::clone(&clock));
        if let Some(candidate) = &settings.plugins.shadow_gates {
            // A pinned candidate only: there is no default shadow plugin. It
            // runs off the step path with its own deadline.
            let shadow_limits =
                PluginLimits { deadline: Duration::from_millis(settings.plugins.shadow_deadline_ms), ..limits.clone() };
            let shadow = crate::gates::load_shadow_candidate(
                &runtime,
                &candidate.path,
                &candidate.sha256,
                &shadow_limits,
                sink.as_ref(),
                clock.now_ms(),
            )
            .map_err(|detail| HostError::Plugin { which: "shadow gate", detail })?;
            gate_service = gate_service
                .with_shadow(shadow, settings.plugins.shadow_queue)
                .map_err(|e| HostError::Plugin { which: "shadow gate", detail: format!("worker thread: {e}") })?;
        }
        let manager = SeedManager::new(SeedManagerParts {
            settings: Arc::clone(&settings),
            clock: Arc::clone(&clock),
            sink: held,
            verifier,
            validator,
            policies: Policies { annotations, blueprints },
            gates: gate_service,
            kernels: Arc::new(kernels),
            prefetch_events,
            rollback,
            fetch_breaker,
            isolation,
            recorder: self.recorder,
        });
        // Subscribed before anything can emit, so no CRITICAL event is missed.
        let critical = outbox.is_some().then(|| Mutex::new(hub.subscribe_critical()));
        Ok(EmbeddedHost {
            manager: Arc::new(manager),
            hub,
            critical,
            outbox,
            purger: Mutex::new(Some(purger)),
            shutdown_timeout: Duration::from_millis(settings.kernels.shutdown_timeout_ms),
            trainer_settings: settings.trainer_settings(),
            plugins_at_start,
            reloader,
        })
    }
}

fn plugin_runtime(settings: &Settings) -> Result<PluginRuntime, HostError> {
    let dir = match &settings.plugins.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_root().join("plugin-cache"),
    };
    let mut config = RuntimeConfig::new(dir);
    config.fuel_metering = settings.plugins.fuel > 0;
    PluginRuntime::new(config).map_err(|e| HostError::Plugin { which: "runtime", detail: e.to_string() })
}

/// `$KASMINA_CACHE`, else `~/.cache/kasmina`, else a folder in the temp dir.
pub fn default_cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KASMINA_CACHE") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/kasmina"),
        None => std::env::temp_dir().join("kasmina-cache"),
    }
}

fn plugin_limits(settings: &Settings) -> Result<PluginLimits, HostError> {
    let p = &settings.plugins;
    let isolation = match p.isolation.as_str() {
        "per-call" => Isolation::PerCall,
        "reuse" => Isolation::Reuse,
        other => return Err(HostError::Plugin { which: "settings", detail: format!("unknown isolation {other:?}") }),
    };
    Ok(PluginLimits {
        deadline: Duration::from_millis(p.deadline_ms),
        memory_bytes: usize::try_from(p.memory_bytes).unwrap_or(usize::MAX),
        fuel: (p.fuel > 0).then_some(p.fuel),
        isolation,
    })
}

/// The embedded caller's receiver: every non-CRITICAL event as it is
/// emitted (CRITICAL ones arrive on their own channel and are drained
/// first), bounded — the oldest are dropped and counted.
#[derive(Debug, Default)]
struct Outbox(Mutex<OutboxInner>);

#[derive(Debug, Default)]
struct OutboxInner {
    events: VecDeque<TelemetryEvent>,
    dropped: u64,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TelemetryListener for Outbox {
    fn event(&self, event: &TelemetryEvent) {
        if event.level == TelemetryLevel::Critical {
            return;
        }
        let mut outbox = self.lock();
        if outbox.events.len() == OUTBOX_CAPACITY {
            outbox.events.pop_front();
            outbox.dropped += 1;
        }
        outbox.events.push_back(event.clone());
    }
}

/// The control plane in-process.
pub struct EmbeddedHost {
    manager: Arc<SeedManager>,
    hub: Arc<TelemetryHub>,
    /// Both `None` when built [`without_outbox`](HostBuilder::without_outbox).
    critical: Option<Mutex<crate::telemetry::CriticalReceiver>>,
    outbox: Option<Arc<Outbox>>,
    purger: Mutex<Option<NoncePurger>>,
    shutdown_timeout: Duration,
    /// What registration answers: the trainer-side settings of this host.
    trainer_settings: TrainerSettings,
    plugins_at_start: Vec<LoadedPlugin>,
    reloader: PluginReloader,
}

/// One policy plugin as the host loaded it at start (for start reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPlugin {
    /// Which slot: `gates`, `annotations` or `blueprint-policy`.
    pub slot: &'static str,
    /// The file, or `<embedded NAME>` for a default compiled into the binary.
    pub source: PathBuf,
    /// SHA-256 of the component that was verified and loaded.
    pub sha256: String,
}

impl LoadedPlugin {
    fn of<P: Reloadable>(slot: &'static str, plugin: &P) -> Self {
        let identity = plugin.identity();
        LoadedPlugin { slot, source: identity.path.clone(), sha256: identity.sha256.clone() }
    }
}

impl std::fmt::Display for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(f, "{} {} sha256:{short}", self.slot, self.source.display())
    }
}

impl std::fmt::Debug for EmbeddedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedHost").field("manager", &self.manager).finish_non_exhaustive()
    }
}

impl EmbeddedHost {
    /// A step report's work that needs no lock: kernel waits and gate
    /// verdicts. A caller that serialises its calls (the daemon) runs this
    /// first, outside its serialisation, then [`apply_step`](Self::apply_step).
    pub fn prepare_step(&self, report: &StepReport) -> PreparedStep {
        self.manager.prepare_step(report)
    }

    /// Applies a prepared step report and closes the step's telemetry;
    /// `Ok(None)` (only when not `last_try`) asks for another
    /// [`prepare_step`](Self::prepare_step): a seed germinated meanwhile
    /// still waits for its kernel (see [`SeedManager::apply_step`]).
    pub fn apply_step(
        &self,
        report: &StepReport,
        prepared: PreparedStep,
        last_try: bool,
    ) -> Result<Option<Vec<GraftDirective>>, ApiError> {
        let Some(directives) = self.manager.apply_step(report, prepared, last_try).map_err(bad)? else {
            return Ok(None);
        };
        // The step's events already went out as they were emitted; the
        // packets close the step's health window.
        if let Err(err) = self.hub.finalize_step(report.step) {
            tracing::warn!(%err, "kasmina.telemetry.finalize_failed");
        }
        Ok(Some(directives))
    }

    /// A command's work that needs no lock (envelope, fields, plugin
    /// verdicts); see [`prepare_step`](Self::prepare_step) for why.
    pub fn prepare_command(&self, command: AdaptationCommand) -> PreparedCommand {
        self.manager.prepare_command(command)
    }

    /// Applies a prepared command.
    pub fn apply_command(&self, prepared: PreparedCommand) -> Outcome {
        self.manager.apply_command(prepared)
    }

    /// The seed manager.
    pub fn manager(&self) -> &Arc<SeedManager> {
        &self.manager
    }

    /// The telemetry hub (subscribe to CRITICAL events, read stats).
    pub fn telemetry(&self) -> &Arc<TelemetryHub> {
        &self.hub
    }

    /// Stops background work (nonce purger, prefetch) within the bound.
    pub fn shutdown(&self) {
        if let Some(purger) = self.purger.lock().unwrap_or_else(PoisonError::into_inner).take()
            && let Err(err) = purger.stop(self.shutdown_timeout)
        {
            tracing::error!(%err, "kasmina.host.purger_stop_failed");
        }
        let report = self.manager.kernels().shutdown();
        tracing::info!(?report, "kasmina.host.shutdown");
    }

    /// The policy plugins loaded at start (file or embedded default, digest).
    pub fn plugins_at_start(&self) -> &[LoadedPlugin] {
        &self.plugins_at_start
    }

    /// Re-reads `settings_file` and hot-reloads each policy plugin whose
    /// pinned ref under `[plugins]` changed, each behind its conformance
    /// canary (a refused one keeps the previous plugin serving); `origin`
    /// names the trigger in telemetry. Nothing else of the file is applied
    /// (the report and a telemetry event name what needs a restart). A
    /// file that does not parse, or no file, is refused and changes nothing.
    /// Reloads run one at a time; every outcome is a `kasmina.plugin.*`
    /// telemetry event (`reload_started`, `reloaded`, `reload_refused`,
    /// `reload_restart_required`, `reload_settings_refused`, `reload_finished`).
    pub fn reload_plugins(
        &self,
        settings_file: Option<&std::path::Path>,
        origin: &str,
    ) -> Result<PluginReloadReport, PluginReloadRefused> {
        self.reloader.reload(settings_file, origin)
    }

    /// Telemetry events lost since start: dropped by the hub's bounded
    /// per-step queue or pushed out of the undrained outbox.
    pub fn telemetry_dropped(&self) -> u64 {
        self.outbox.as_ref().map_or(0, |o| o.lock().dropped) + self.hub.stats().dropped
    }
}

impl Drop for EmbeddedHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ApiErrorCode::BadRequest, message)
}

impl KasminaApi for EmbeddedHost {
    fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError> {
        Ok(self.manager.submit_command(command))
    }

    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.manager.register_host(registration).map_err(bad)?;
        Ok(self.trainer_settings.clone())
    }

    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        let kernel = self
            .manager
            .kernels()
            .get(blueprint_id, None)
            .map_err(|e| ApiError::new(ApiErrorCode::KernelUnavailable, e.to_string()))?;
        Ok(KernelArtifact {
            blueprint_id: blueprint_id.to_owned(),
            sha256: kernel.sha256().to_owned(),
            bytes: kernel.artifact_bytes().to_vec(),
            descriptor: kernel.descriptor().clone(),
        })
    }

    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        with_step_attempts(|last_try| self.apply_step(&report, self.prepare_step(&report), last_try))
    }

    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        Ok(self.manager.export_seed_states())
    }

    fn status(&self) -> Result<HostStatus, ApiError> {
        let (accepted, rejected) = self.manager.command_counts();
        let (run, step) = self.manager.run_and_step();
        Ok(HostStatus {
            contract_version: leyline::CONTRACT_VERSION,
            training_run_id: run,
            seeds: self.manager.export_seed_states().len() as u64,
            commands_accepted: accepted,
            commands_rejected: rejected,
            last_step: step,
        })
    }

    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        let (Some(critical), Some(outbox)) = (&self.critical, &self.outbox) else {
            return Err(ApiError::new(
                ApiErrorCode::BadRequest,
                "this host was built without an outbox (HostBuilder::without_outbox): its telemetry is pushed to \
                 listeners; subscribe with subscribe_telemetry instead of draining",
            ));
        };
        let mut events = Vec::new();
        {
            // CRITICAL first: they bypassed the per-step queue.
            let mut critical = critical.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(event) = critical.try_recv() {
                events.push(event);
            }
        }
        events.extend(outbox.lock().events.drain(..));
        Ok(events)
    }

    fn subscribe_telemetry(&self, listener: Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        self.hub.add_listener(listener);
        Ok(())
    }
}
