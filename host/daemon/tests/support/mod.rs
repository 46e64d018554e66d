//! Shared test support. Every test reaches the control plane through
//! [`test_api`]: the real embedded host (real plugin components, a real
//! Urza library of TorchScript fixtures, real HMAC verification). The
//! transport load tests and benches use [`transport_api`], an in-memory
//! control plane, so they measure the socket and not the host.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod daemon_process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use kasmina_client::codec::{self, FrameDecoder, FrameError};
use kasmina_client::{ClientSettings, CommandBuilder, DaemonClient};
use kasmina_daemon::{ServerSettings, ShutdownReport};
use leyline::api::{
    ApiError, ApiErrorCode, CheckpointEvent, GraftDirective, HeldSeed, HostRegistration, HostStatus, KasminaApi,
    KernelArtifact, SeedStepReport, StepReport, TelemetryListener, TrainerSettings,
};
use leyline::protocol::Role;
use leyline::{
    AdaptationCommand, BlendMode, BlueprintDescriptor, BlueprintTier, CommandPayload, DType, Dim, HealthStatus,
    KernelInterface, Outcome, ReasonCode, SeedCommand, SeedOperation, SeedStage, SeedState, TelemetryEvent,
    TelemetryLevel, TensorSpec,
};

/// The test key (hex of 32 bytes of 7).
pub const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";
/// A real fixture blueprint whose interface fits the `hidden` [B, 64] site.
pub const BLUEPRINT: &str = "mlp_adapter_64";
pub const RUN: &str = "run-1";

/// Short lifecycle and a generous plugin deadline (debug builds on 2
/// shared cores get descheduled for longer than the 10 ms default).
pub const SETTINGS: &str = r#"
[lifecycle]
attach_timeout_steps = 3
training_steps = 3
blend_steps = 4
shadow_steps = 2
probation_steps = 2
[gates]
latency_budget_us = 300
[plugins]
deadline_ms = 250
"#;

pub fn key() -> HmacKey {
    HmacKey::from_hex(KEY_HEX).unwrap()
}

/// Settings for tests: [`SETTINGS`] plus `extra` TOML, the shared plugin cache.
pub fn test_settings(extra: &str) -> Settings {
    let mut settings = Settings::from_toml(&format!("{SETTINGS}\n{extra}")).unwrap();
    settings.plugins.cache_dir = Some(plugin_cache());
    settings
}

/// Compiled plugin artifacts are shared by every test run (content-keyed).
pub fn plugin_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A fresh Urza library with every fixture published.
pub fn urza(dir: &Path) -> PathBuf {
    let urza_dir = dir.join("urza");
    let urza = kasmina_kernels::UrzaLibrary::open(&urza_dir).unwrap();
    kasmina_kernels::fixtures::publish_all(&urza).unwrap();
    urza_dir
}

/// The real embedded host, with the temp dir its Urza library lives in.
pub struct RealHost {
    pub host: EmbeddedHost,
    _dir: tempfile::TempDir,
}

pub fn real_host(extra_settings: &str) -> RealHost {
    let dir = tempfile::tempdir().unwrap();
    let host =
        HostBuilder::new(test_settings(extra_settings)).hmac_key(key()).urza_dir(urza(dir.path())).build().unwrap();
    RealHost { host, _dir: dir }
}

impl KasminaApi for RealHost {
    fn submit_command(&self, c: AdaptationCommand) -> Result<Outcome, ApiError> {
        self.host.submit_command(c)
    }
    fn register_host(&self, r: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.host.register_host(r)
    }
    fn fetch_kernel(&self, b: &str) -> Result<KernelArtifact, ApiError> {
        self.host.fetch_kernel(b)
    }
    fn step_report(&self, r: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        self.host.step_report(r)
    }
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        self.host.seed_states()
    }
    fn status(&self) -> Result<HostStatus, ApiError> {
        self.host.status()
    }
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        self.host.drain_telemetry()
    }
    fn subscribe_telemetry(&self, listener: Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        self.host.subscribe_telemetry(listener)
    }
}

/// The control plane every test talks to: the real embedded host.
pub fn test_api() -> Arc<dyn KasminaApi> {
    Arc::new(real_host(""))
}

/// An in-memory control plane for transport load tests and benches.
pub fn transport_api() -> Arc<dyn KasminaApi> {
    Arc::new(InMemoryApi::default())
}

/// A small but honest in-memory control plane: verifies that commands are
/// signed and not replayed, keeps seed states, moves stages on SEED
/// operations, checks registration on step reports, and buffers telemetry
/// (CRITICAL for security rejections) like the embedded host does.
#[derive(Default)]
pub struct InMemoryApi {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    registration: Option<HostRegistration>,
    seeds: BTreeMap<String, SeedState>,
    seen_commands: BTreeSet<String>,
    accepted: u64,
    rejected: u64,
    last_step: Option<u64>,
    telemetry: std::collections::VecDeque<TelemetryEvent>,
    listeners: Vec<Arc<dyn TelemetryListener>>,
}

fn seed(seed_id: &str, site: &str) -> SeedState {
    SeedState {
        seed_id: seed_id.to_owned(),
        site: site.to_owned(),
        stage: SeedStage::Dormant,
        blueprint_id: None,
        alpha: 0.0,
        epoch: 0,
        blend_mode: None,
        health: HealthStatus::Healthy,
        paused: false,
        blend: None,
    }
}

impl State {
    /// Pushes to listeners at once (as the real host does) and keeps the
    /// newest events for `drain_telemetry`.
    fn emit(&mut self, event: TelemetryEvent) {
        for listener in &self.listeners {
            listener.event(&event);
        }
        if self.telemetry.len() == 10_000 {
            self.telemetry.pop_front();
        }
        self.telemetry.push_back(event);
    }

    fn reject(&mut self, cmd: &AdaptationCommand, reason: ReasonCode, detail: &str) -> Outcome {
        self.rejected += 1;
        let level = if reason.is_security_critical() { TelemetryLevel::Critical } else { TelemetryLevel::Warning };
        self.emit(
            TelemetryEvent::new("kasmina.command.rejected", level, detail, 0)
                .seed(&cmd.target_seed_id)
                .attr("reason", reason.as_str()),
        );
        Outcome::rejected(reason, detail)
    }
}

impl KasminaApi for InMemoryApi {
    fn submit_command(&self, cmd: AdaptationCommand) -> Result<Outcome, ApiError> {
        let mut st = self.state.lock().unwrap();
        st.emit(TelemetryEvent::new("kasmina.command.received", TelemetryLevel::Info, cmd.command_id.clone(), 0));
        if cmd.signature.as_ref().is_none_or(|s| s.is_empty()) {
            return Ok(st.reject(&cmd, ReasonCode::MissingSignature, "command is not signed"));
        }
        if cmd.command_id.is_empty() {
            return Ok(st.reject(&cmd, ReasonCode::MissingCommandId, "empty command id"));
        }
        if !st.seen_commands.insert(cmd.command_id.clone()) {
            return Ok(st.reject(&cmd, ReasonCode::NonceReplayed, "command id already used"));
        }
        let CommandPayload::Seed(SeedCommand { operation, blueprint_id, .. }) = &cmd.payload else {
            return Ok(st.reject(&cmd, ReasonCode::UnsupportedCommand, "only SEED commands are supported here"));
        };
        let Some(current) = st.seeds.get(&cmd.target_seed_id).map(|s| s.stage) else {
            return Ok(st.reject(&cmd, ReasonCode::InvalidField, "unknown seed"));
        };
        let next = match (operation, current) {
            (SeedOperation::Germinate, SeedStage::Dormant) => SeedStage::Germinated,
            (SeedOperation::StartTraining, SeedStage::Germinated) => SeedStage::Training,
            (SeedOperation::Cull | SeedOperation::Cancel, _) => SeedStage::Culled,
            (SeedOperation::Stabilize | SeedOperation::Evaluate, s) => s,
            _ => {
                return Ok(st.reject(
                    &cmd,
                    ReasonCode::InvalidStage,
                    &format!("{} not allowed in {current:?}", operation.as_str()),
                ));
            }
        };
        let s = st.seeds.get_mut(&cmd.target_seed_id).unwrap();
        s.stage = next;
        if *operation == SeedOperation::Germinate {
            s.blueprint_id = Some(blueprint_id.clone());
            s.blend_mode = Some(BlendMode::Convex);
        }
        st.accepted += 1;
        st.emit(
            TelemetryEvent::new("kasmina.command.accepted", TelemetryLevel::Info, cmd.command_id.clone(), 0)
                .seed(&cmd.target_seed_id),
        );
        Ok(Outcome::accepted().with("stage", format!("{next:?}")))
    }

    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        let mut st = self.state.lock().unwrap();
        if registration.sites.is_empty() {
            return Err(ApiError::new(ApiErrorCode::BadRequest, "a host needs at least one site"));
        }
        for slot in &registration.slots {
            if !registration.sites.iter().any(|s| s.name == slot.site) {
                return Err(ApiError::new(
                    ApiErrorCode::BadRequest,
                    format!("slot {} names unknown site {}", slot.seed_id, slot.site),
                ));
            }
            st.seeds.entry(slot.seed_id.clone()).or_insert_with(|| seed(&slot.seed_id, &slot.site));
        }
        st.registration = Some(registration);
        Ok(kasmina::settings::Settings::default().trainer_settings())
    }

    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        let st = self.state.lock().unwrap();
        if !st.seeds.values().any(|s| s.blueprint_id.as_deref() == Some(blueprint_id)) {
            return Err(ApiError::new(
                ApiErrorCode::NotFound,
                format!("no germinated seed uses blueprint {blueprint_id}"),
            ));
        }
        let bytes = format!("torchscript for {blueprint_id}").into_bytes();
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let spec = TensorSpec { shape: vec![Dim::Batch, Dim::Fixed(64)], dtype: DType::F32 };
        let descriptor = BlueprintDescriptor {
            blueprint_id: blueprint_id.to_owned(),
            name: blueprint_id.to_owned(),
            tier: BlueprintTier::Safe,
            parameter_bounds: BTreeMap::new(),
            risk: 0.1,
            quarantine_only: false,
            approval_required: false,
            interface: KernelInterface { inputs: vec![spec.clone()], outputs: vec![spec] },
        };
        Ok(KernelArtifact { blueprint_id: blueprint_id.to_owned(), sha256, bytes, descriptor })
    }

    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        let mut st = self.state.lock().unwrap();
        let Some(reg) = &st.registration else {
            return Err(ApiError::new(ApiErrorCode::NotRegistered, "register the host before reporting steps"));
        };
        if reg.training_run_id != report.training_run_id {
            return Err(ApiError::new(
                ApiErrorCode::BadRequest,
                format!("run {} is not registered", report.training_run_id),
            ));
        }
        st.last_step = Some(report.step);
        let directives = st
            .seeds
            .values_mut()
            .filter(|s| s.stage == SeedStage::Training)
            .map(|s| {
                s.epoch += 1;
                GraftDirective::Stage { seed_id: s.seed_id.clone(), stage: s.stage, alpha: s.alpha }
            })
            .collect();
        Ok(directives)
    }

    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        Ok(self.state.lock().unwrap().seeds.values().cloned().collect())
    }

    fn status(&self) -> Result<HostStatus, ApiError> {
        let st = self.state.lock().unwrap();
        Ok(HostStatus {
            contract_version: leyline::CONTRACT_VERSION,
            training_run_id: st.registration.as_ref().map(|r| r.training_run_id.clone()),
            seeds: st.seeds.len() as u64,
            commands_accepted: st.accepted,
            commands_rejected: st.rejected,
            last_step: st.last_step,
        })
    }

    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        Ok(self.state.lock().unwrap().telemetry.drain(..).collect())
    }
    fn subscribe_telemetry(&self, listener: Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        self.state.lock().unwrap().listeners.push(listener);
        Ok(())
    }
}

/// Wraps an API so that `status()` blocks until released: a request held
/// in flight, for shutdown tests. `entered` fires when the call starts.
pub struct GatedApi {
    pub inner: Arc<dyn KasminaApi>,
    pub entered: Mutex<std_mpsc::Sender<()>>,
    pub release: Mutex<std_mpsc::Receiver<()>>,
}

impl KasminaApi for GatedApi {
    fn submit_command(&self, c: AdaptationCommand) -> Result<Outcome, ApiError> {
        self.inner.submit_command(c)
    }
    fn register_host(&self, r: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.inner.register_host(r)
    }
    fn fetch_kernel(&self, b: &str) -> Result<KernelArtifact, ApiError> {
        self.inner.fetch_kernel(b)
    }
    fn step_report(&self, r: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        self.inner.step_report(r)
    }
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        self.inner.seed_states()
    }
    fn status(&self) -> Result<HostStatus, ApiError> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv();
        self.inner.status()
    }
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        self.inner.drain_telemetry()
    }
    fn subscribe_telemetry(&self, listener: Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        self.inner.subscribe_telemetry(listener)
    }
}

/// A daemon on a temp Unix socket, run on its own runtime thread.
pub struct TestServer {
    pub path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<ShutdownReport, kasmina_daemon::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start(api: Arc<dyn KasminaApi>, settings: ServerSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kasminad.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let p = path.clone();
        let join = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let socket = kasmina_daemon::UnixSocket::bind(&p)?;
                ready_tx.send(()).unwrap();
                kasmina_daemon::serve_bound(socket, api, settings, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        ready_rx.recv().expect("server bound its socket");
        TestServer { path, shutdown: Some(tx), join: Some(join), _dir: dir }
    }

    pub fn client(&self, role: Role) -> DaemonClient {
        DaemonClient::connect_unix(&self.path, role, "test", ClientSettings::default()).unwrap()
    }

    /// Triggers shutdown and waits for `run` to return.
    pub fn stop(mut self) -> ShutdownReport {
        self.trigger_shutdown();
        self.join.take().unwrap().join().unwrap().unwrap()
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn join(mut self) -> ShutdownReport {
        self.join.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

pub fn settings() -> ServerSettings {
    ServerSettings::default()
}

pub fn registration() -> HostRegistration {
    HostRegistration::new(
        "run-1",
        vec![leyline::api::SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..4).map(|i| leyline::api::SlotSpec { seed_id: format!("hidden-{i}"), site: "hidden".to_owned() }).collect(),
    )
}

pub fn now_ms() -> u64 {
    kasmina_client::command::now_ms()
}

/// Annotations every test command carries: the registered run and site.
const ANNOTATIONS: [(&str, &str); 3] =
    [("training_run_id", RUN), ("mesh_layers", "hidden"), ("blend_mode", "RESIDUAL")];

/// A SEED command for the real host with id `id`: [`ANNOTATIONS`], issued
/// now, signed with [`key`] when `signed`.
pub fn command(id: &str, seed: &str, operation: SeedOperation, signed: bool) -> AdaptationCommand {
    let builder = CommandBuilder::seed(seed, operation, BLUEPRINT)
        .command_id(id)
        .issued_by("test-controller")
        .annotations(ANNOTATIONS);
    if signed { builder.sign(&key()) } else { builder.build() }
}

/// A signed PAUSE (or resume) command.
pub fn pause(id: &str, seed: &str, resume: bool) -> AdaptationCommand {
    CommandBuilder::pause(seed, resume)
        .command_id(id)
        .issued_by("test-controller")
        .annotations(ANNOTATIONS)
        .sign(&key())
}

/// One seed as the simulated trainer runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSeed {
    pub stage: SeedStage,
    pub sha256: String,
    pub alpha: f64,
    pub paused: bool,
}

/// Plays a trainer that grafts what it is told, reports a kernel latency of
/// `latency_us`, keeps checkpoints of what it runs and answers checkpoint
/// directives, and re-registers declaring what it holds.
pub struct SimTrainer {
    pub step: u64,
    pub latency_us: u64,
    /// Report that something other than the verified kernel ran.
    pub fallback_used: bool,
    pub attached: BTreeMap<String, SimSeed>,
    checkpoints: BTreeMap<String, BTreeMap<String, SimSeed>>,
    events: Vec<CheckpointEvent>,
}

impl SimTrainer {
    pub fn new(latency_us: u64) -> Self {
        SimTrainer {
            step: 0,
            latency_us,
            fallback_used: false,
            attached: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// The registration a reconnecting trainer sends: what it holds.
    pub fn registration(&self) -> HostRegistration {
        let mut registration = registration();
        registration.held = self
            .attached
            .iter()
            .map(|(id, s)| HeldSeed {
                seed_id: id.clone(),
                blueprint_id: BLUEPRINT.to_owned(),
                kernel_sha256: s.sha256.clone(),
                stage: s.stage,
                alpha: s.alpha,
                paused: s.paused,
            })
            .collect();
        registration.checkpoints = self.checkpoints.keys().cloned().collect();
        registration
    }

    pub fn step(&mut self, api: &dyn KasminaApi) -> Vec<GraftDirective> {
        self.step += 1;
        let seeds = self
            .attached
            .iter()
            .map(|(id, s)| SeedStepReport {
                seed_id: id.clone(),
                stage: s.stage,
                kernel_attached: true,
                kernel_sha256: Some(s.sha256.clone()),
                loss: Some(if self.step.is_multiple_of(2) { 0.501 } else { 0.499 }),
                outputs_finite: true,
                output_shape_ok: true,
                kernel_latency_us: self.latency_us,
                isolation_violations: 0,
                max_gradient_cosine: 0.01,
                fallback_used: self.fallback_used,
                alpha: s.alpha,
                blend: None,
            })
            .collect();
        let report = StepReport {
            step: self.step,
            training_run_id: RUN.to_owned(),
            task_loss: 0.5,
            global_metric: Some(0.9),
            seeds,
            distillation: None,
            checkpoints: std::mem::take(&mut self.events),
        };
        let directives = api.step_report(report).unwrap();
        self.apply(&directives);
        directives
    }

    pub fn apply(&mut self, directives: &[GraftDirective]) {
        for d in directives {
            match d {
                GraftDirective::Attach { seed_id, artifact_sha256, .. } => {
                    let seed = SimSeed {
                        stage: SeedStage::Germinated,
                        sha256: artifact_sha256.clone(),
                        alpha: 0.0,
                        paused: false,
                    };
                    self.attached.insert(seed_id.clone(), seed);
                }
                GraftDirective::Stage { seed_id, stage, alpha } => {
                    if let Some(s) = self.attached.get_mut(seed_id) {
                        s.stage = *stage;
                        s.alpha = *alpha;
                    }
                }
                GraftDirective::Pause { seed_id, paused } => {
                    if let Some(s) = self.attached.get_mut(seed_id) {
                        s.paused = *paused;
                    }
                }
                GraftDirective::Detach { seed_id, .. } => {
                    self.attached.remove(seed_id);
                }
                GraftDirective::Checkpoint { point_id, durable } => {
                    self.checkpoints.insert(point_id.clone(), self.attached.clone());
                    self.events.push(CheckpointEvent::Captured {
                        point_id: point_id.clone(),
                        durable: *durable,
                        elapsed_us: 10,
                        bytes: 64,
                    });
                }
                GraftDirective::RestoreCheckpoint { point_id } => {
                    if let Some(seeds) = self.checkpoints.get(point_id) {
                        self.attached = seeds.clone();
                        self.events.push(CheckpointEvent::Restored { point_id: point_id.clone(), elapsed_us: 10 });
                    }
                }
                GraftDirective::DropTeacher | GraftDirective::Optimizer { .. } => {}
            }
        }
    }
}

pub fn stage_of(api: &dyn KasminaApi, seed: &str) -> SeedStage {
    api.seed_states().unwrap().into_iter().find(|s| s.seed_id == seed).unwrap().stage
}

pub fn step(step: u64) -> StepReport {
    StepReport {
        step,
        training_run_id: "run-1".to_owned(),
        task_loss: 0.5,
        global_metric: None,
        seeds: Vec::new(),
        distillation: None,
        checkpoints: Vec::new(),
    }
}

/// A hand-driven connection for sending malformed or pipelined frames.
pub struct RawConn {
    pub stream: std::os::unix::net::UnixStream,
    /// Reads through a buffer on a second handle of `stream`.
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    decoder: FrameDecoder,
}

impl RawConn {
    pub fn connect(path: &std::path::Path) -> Self {
        let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        Self::from_stream(stream)
    }

    fn from_stream(stream: std::os::unix::net::UnixStream) -> Self {
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        RawConn { stream, reader, decoder: FrameDecoder::new(u32::MAX) }
    }

    pub fn hello(path: &std::path::Path, role: Role) -> Self {
        let mut c = Self::connect(path);
        c.send(&leyline::protocol::ClientFrame::Hello {
            protocol_version: leyline::protocol::PROTOCOL_VERSION,
            role,
            client_name: "raw".into(),
        });
        assert!(matches!(c.recv().unwrap(), leyline::protocol::ServerFrame::Welcome { .. }));
        c
    }

    /// A second handle on the same socket, for a separate writer thread
    /// (bytes this handle has buffered are not shared: read on one only).
    pub fn try_clone(&self) -> Self {
        Self::from_stream(self.stream.try_clone().unwrap())
    }

    pub fn send(&mut self, frame: &leyline::protocol::ClientFrame) {
        let mut bytes = Vec::new();
        codec::encode_frame(frame, u32::MAX, &mut bytes).unwrap();
        self.send_bytes(&bytes);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).unwrap();
    }

    pub fn recv(&mut self) -> Result<leyline::protocol::ServerFrame, FrameError> {
        codec::read_frame_blocking(&mut self.reader, &mut self.decoder)
    }
}
