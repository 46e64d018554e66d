//! The embedded host: one builder assembles settings, plugins, Urza, the
//! kernel load manager and the seed manager in-process, and serves
//! [`KasminaApi`] — the same trait the daemon serves over a socket.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kasmina_core::{BreakerConfig, CircuitBreaker, Clock, SystemClock, TelemetrySink};
use kasmina_kernels::{KernelLoadManager, KernelManagerConfig, UrzaLibrary};
use kasmina_plugin_host::annotation::AnnotationPlugin;
use kasmina_plugin_host::blueprint::BlueprintPlugin;
use kasmina_plugin_host::conformance::CheckOptions;
use kasmina_plugin_host::gate::GatePlugin;
use kasmina_plugin_host::reload::{PluginSlot, Reloadable};
use kasmina_plugin_host::runtime::{Pin, PluginRuntime, PluginSpec, RuntimeConfig};
use kasmina_plugin_host::{Isolation, PluginLimits};
use leyline::api::{
    ApiError, ApiErrorCode, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport,
    TrainerSettings,
};
use leyline::{AdaptationCommand, Outcome, SeedState, TelemetryEvent};

use crate::gates::GateService;
use crate::rollback::RollbackLedger;
use crate::security::{CommandVerifier, HmacKey, KeyFromSettings, NoncePurger};
use crate::seeds::{DecisionRecorder, Policies, SeedManager, SeedManagerParts};
use crate::settings::{PluginRef, Settings};
use crate::telemetry::TelemetryHub;
use crate::validator::CommandValidator;

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
    #[error("no Urza library configured: set kernels.urza_dir or call HostBuilder::urza_dir")]
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
        let sink: Arc<dyn TelemetrySink> = hub.clone();
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
        let gates: Arc<PluginSlot<GatePlugin>> = Arc::new(load_slot(
            &runtime,
            "gate",
            pinned(&settings.plugins.gates, kasmina_plugin_artifacts::GATES, kasmina_plugin_artifacts::GATES_SHA256),
            &limits,
        )?);
        let annotations: Arc<PluginSlot<AnnotationPlugin>> = Arc::new(load_slot(
            &runtime,
            "annotation",
            pinned(
                &settings.plugins.annotations,
                kasmina_plugin_artifacts::ANNOTATIONS,
                kasmina_plugin_artifacts::ANNOTATIONS_SHA256,
            ),
            &limits,
        )?);
        let blueprints: Arc<PluginSlot<BlueprintPlugin>> = Arc::new(load_slot(
            &runtime,
            "blueprint-policy",
            pinned(
                &settings.plugins.blueprint_policy,
                kasmina_plugin_artifacts::BLUEPRINT_POLICY,
                kasmina_plugin_artifacts::BLUEPRINT_POLICY_SHA256,
            ),
            &limits,
        )?);

        let b = &settings.breaker;
        let breaker_config = BreakerConfig {
            failure_threshold: b.failure_threshold,
            cooldown_ms: b.cooldown_ms,
            half_open_successes: b.half_open_successes,
        };
        let fetch_breaker =
            Arc::new(CircuitBreaker::new("fetch", breaker_config, Arc::clone(&clock), Arc::clone(&sink)));
        let isolation_config =
            BreakerConfig { failure_threshold: settings.isolation.violations_to_trip, ..breaker_config };
        let isolation_breaker =
            Arc::new(CircuitBreaker::new("isolation", isolation_config, Arc::clone(&clock), Arc::clone(&sink)));

        let urza_dir = self.urza_dir.or_else(|| settings.kernels.urza_dir.clone()).ok_or(HostError::NoUrza)?;
        let urza = Arc::new(UrzaLibrary::open_with_clock(&urza_dir, Arc::clone(&clock))?);
        let k = &settings.kernels;
        let kernel_config = KernelManagerConfig {
            cache_max_entries: k.cache_max_entries,
            cache_max_bytes: k.cache_max_bytes,
            cache_ttl_ms: k.cache_ttl_s.saturating_mul(1_000),
            prefetch_timeout_ms: k.prefetch_timeout_ms,
            prefetch_max_in_flight: 256,
            shutdown_timeout_ms: k.shutdown_timeout_ms,
            prewarm_runs: 5,
            device: self.device,
        };
        let (kernels, prefetch_events) = KernelLoadManager::new(
            urza,
            kernel_config,
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
            // A pinned candidate only: there is no default shadow plugin.
            let shadow: PluginSlot<GatePlugin> =
                load_slot(&runtime, "shadow gate", (candidate.path.clone(), &candidate.sha256), &limits)?;
            gate_service = gate_service.with_shadow(Arc::new(shadow));
        }
        let manager = SeedManager::new(SeedManagerParts {
            settings: Arc::clone(&settings),
            clock: Arc::clone(&clock),
            sink,
            verifier,
            validator,
            policies: Policies { annotations, blueprints },
            gates: gate_service,
            kernels: Arc::new(kernels),
            prefetch_events,
            rollback,
            fetch_breaker,
            isolation_breaker,
            recorder: self.recorder,
        });
        // Subscribed before anything can emit, so no CRITICAL event is missed.
        let critical = hub.subscribe_critical();
        Ok(EmbeddedHost {
            manager: Arc::new(manager),
            hub,
            critical: Mutex::new(critical),
            outbox: Mutex::new(Outbox::default()),
            purger: Mutex::new(Some(purger)),
            shutdown_timeout: Duration::from_millis(settings.kernels.shutdown_timeout_ms),
            trainer_settings: settings.trainer_settings(),
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

/// The configured plugin file and its pin, or the default plugin built with
/// this host, pinned to the digest recorded at build time.
fn pinned<'a>(configured: &'a Option<PluginRef>, default_path: &str, default_sha256: &'a str) -> (PathBuf, &'a str) {
    match configured {
        Some(r) => (r.path.clone(), r.sha256.as_str()),
        None => (PathBuf::from(default_path), default_sha256),
    }
}

/// Loads one pinned plugin; it must pass the conformance smoke canary.
fn load_slot<P: Reloadable>(
    runtime: &PluginRuntime,
    which: &'static str,
    (path, sha256): (PathBuf, &str),
    limits: &PluginLimits,
) -> Result<PluginSlot<P>, HostError> {
    let err = |detail: String| HostError::Plugin { which, detail };
    let pin = Pin::sha256(sha256).map_err(|e| err(e.to_string()))?;
    let spec = PluginSpec { path, pin, limits: limits.clone() };
    PluginSlot::new(runtime, &spec, CheckOptions::smoke()).map_err(|e| err(e.to_string()))
}

#[derive(Debug, Default)]
struct Outbox {
    events: VecDeque<TelemetryEvent>,
    dropped: u64,
}

/// The control plane in-process.
pub struct EmbeddedHost {
    manager: Arc<SeedManager>,
    hub: Arc<TelemetryHub>,
    critical: Mutex<crate::telemetry::CriticalReceiver>,
    outbox: Mutex<Outbox>,
    purger: Mutex<Option<NoncePurger>>,
    shutdown_timeout: Duration,
    /// What registration answers: the trainer-side settings of this host.
    trainer_settings: TrainerSettings,
}

impl std::fmt::Debug for EmbeddedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedHost").field("manager", &self.manager).finish_non_exhaustive()
    }
}

impl EmbeddedHost {
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

    /// Telemetry events lost since start: dropped by the hub's bounded
    /// per-step queue or pushed out of the undrained outbox.
    pub fn telemetry_dropped(&self) -> u64 {
        let outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner).dropped;
        outbox + self.hub.stats().dropped
    }

    fn push_events(&self, events: impl IntoIterator<Item = TelemetryEvent>) {
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            if outbox.events.len() == OUTBOX_CAPACITY {
                outbox.events.pop_front();
                outbox.dropped += 1;
            }
            outbox.events.push_back(event);
        }
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
        let step = report.step;
        let directives = self.manager.step_report(report).map_err(bad)?;
        match self.hub.finalize_step(step) {
            Ok(packets) => self.push_events(packets.into_iter().flat_map(|p| p.events)),
            Err(err) => tracing::warn!(%err, "kasmina.telemetry.finalize_failed"),
        }
        Ok(directives)
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
        let mut events = Vec::new();
        {
            // CRITICAL first: they bypassed the per-step queue.
            let mut critical = self.critical.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(event) = critical.try_recv() {
                events.push(event);
            }
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        events.extend(outbox.events.drain(..));
        Ok(events)
    }
}
