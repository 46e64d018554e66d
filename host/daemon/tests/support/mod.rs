//! Shared test support. Every test reaches the control plane through
//! [`test_api`]: the real embedded host (real plugin components, a real
//! Urza library of TorchScript fixtures, real HMAC verification). The
//! transport load tests and benches use [`transport_api`], an in-memory
//! control plane, so they measure the socket and not the host. The
//! power-cut and disk-fault tests start the daemon's control plane on a
//! simulated disk ([`sim_disk`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod daemon_process;
mod in_memory;
pub mod sim_disk;

pub use in_memory::InMemoryApi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use kasmina_client::codec::{self, FrameDecoder, FrameError};
use kasmina_client::{ClientSettings, CommandBuilder, DaemonClient};
use kasmina_daemon::{ServerSettings, ShutdownReport};
use leyline::api::{
    ApiError, CheckpointEvent, GraftDirective, HeldSeed, HostRegistration, HostStatus, KasminaApi, KernelArtifact,
    SeedStepReport, StepReport, TelemetryListener, TrainerSettings,
};
use leyline::protocol::Role;
use leyline::{AdaptationCommand, Dim, Outcome, SeedOperation, SeedStage, SeedState, TelemetryEvent};

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

/// Every event a host emits after [`collect`] subscribed it: the daemon's
/// host pushes telemetry to listeners and keeps no outbox to drain.
#[derive(Default)]
pub struct Collected(Mutex<Vec<TelemetryEvent>>);

impl TelemetryListener for Collected {
    fn event(&self, event: &TelemetryEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Collected {
    /// The events collected since the last call.
    pub fn take(&self) -> Vec<TelemetryEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Subscribes a [`Collected`] to `api`.
pub fn collect(api: &dyn KasminaApi) -> Arc<Collected> {
    let collected = Arc::new(Collected::default());
    api.subscribe_telemetry(Arc::clone(&collected) as Arc<dyn TelemetryListener>).unwrap();
    collected
}

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
        self.try_step(api).unwrap()
    }

    /// One step whose report may be refused: then nothing of it counts
    /// (the checkpoint events it carried are sent again with the next).
    pub fn try_step(&mut self, api: &dyn KasminaApi) -> Result<Vec<GraftDirective>, ApiError> {
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
                // A RESIDUAL blend reports its scalar α as mean and p95
                // (what the tensor plane reports), while it blends.
                blend: (s.stage == SeedStage::Blending).then_some(leyline::api::BlendReport {
                    mode: leyline::BlendMode::Residual,
                    alpha_mean: s.alpha,
                    alpha_p95: s.alpha,
                    clamped_fraction: 0.0,
                    sparsity: None,
                    gate_mean: None,
                    kernel_us: 2.0,
                }),
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
            ranks: None,
        };
        let events = report.checkpoints.clone();
        match api.step_report(report) {
            Ok(directives) => {
                self.apply(&directives);
                Ok(directives)
            }
            Err(err) => {
                self.events = events;
                Err(err)
            }
        }
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
        ranks: None,
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
