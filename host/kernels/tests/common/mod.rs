//! Shared set-up for the integration tests: a real Urza library in a temp
//! directory holding the committed TorchScript fixtures, a manual clock, a
//! memory telemetry sink and a real fetch breaker.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use kasmina_core::{BreakerConfig, CircuitBreaker, ManualClock, MemorySink};
use kasmina_kernels::fixtures;
use kasmina_kernels::{KernelLoadManager, KernelManagerConfig, PrefetchEvents, UrzaLibrary};
use leyline::prefetch::PrefetchRequest;

pub const T0: u64 = 1_700_000_000_000;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub urza: Arc<UrzaLibrary>,
    pub clock: Arc<ManualClock>,
    pub sink: Arc<MemorySink>,
    pub breaker: Arc<CircuitBreaker>,
}

impl Env {
    /// A library with every fixture published; a breaker that needs
    /// `failure_threshold` consecutive failures to open.
    pub fn new(failure_threshold: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let sink = Arc::new(MemorySink::new(10_000));
        let urza = Arc::new(UrzaLibrary::open_with_clock(dir.path().join("urza"), clock.clone()).unwrap());
        fixtures::publish_all(&urza).unwrap();
        let cfg = BreakerConfig { failure_threshold, cooldown_ms: 10_000, half_open_successes: 1 };
        let breaker = Arc::new(CircuitBreaker::new("fetch", cfg, clock.clone(), sink.clone()));
        Env { dir, urza, clock, sink, breaker }
    }

    pub fn manager(&self, config: KernelManagerConfig) -> (KernelLoadManager, PrefetchEvents) {
        KernelLoadManager::new(self.urza.clone(), config, self.breaker.clone(), self.sink.clone(), self.clock.clone())
            .unwrap()
    }

    pub fn default_manager(&self) -> (KernelLoadManager, PrefetchEvents) {
        self.manager(config())
    }

    pub fn artifact_path(&self, blueprint_id: &str) -> PathBuf {
        self.urza.artifact_path(&self.urza.show(blueprint_id).unwrap())
    }

    pub fn event_names(&self) -> Vec<String> {
        self.sink.events().into_iter().map(|e| e.name).collect()
    }

    pub fn request(&self, request_id: &str, seed_id: &str, blueprint_id: &str) -> PrefetchRequest {
        PrefetchRequest {
            request_id: request_id.to_owned(),
            seed_id: seed_id.to_owned(),
            blueprint_id: blueprint_id.to_owned(),
            training_run_id: "run-7".to_owned(),
            issued_at_ms: self.clock_now(),
            timeout_ms: 20_000,
        }
    }

    pub fn clock_now(&self) -> u64 {
        use kasmina_core::Clock;
        self.clock.now_ms()
    }

    /// Replaces a blueprint's artifact with a FIFO: opening it blocks until
    /// a writer appears, like an artifact on a hung network mount. Lets
    /// tests hold a load in flight without sleeping.
    pub fn make_artifact_hang(&self, blueprint_id: &str) -> PathBuf {
        let path = self.artifact_path(blueprint_id);
        std::fs::remove_file(&path).unwrap();
        let status = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo failed");
        path
    }
}

/// Test configuration: generous cache, 2 s shutdown bound.
pub fn config() -> KernelManagerConfig {
    KernelManagerConfig {
        cache_max_entries: 64,
        cache_max_bytes: 64 << 20,
        cache_ttl_ms: 3_600_000,
        prefetch_timeout_ms: 30_000,
        prefetch_max_in_flight: 8,
        shutdown_timeout_ms: 2_000,
        prewarm_runs: 3,
        prewarm_memory_bytes: 1 << 30,
        device: tch::Device::Cpu,
    }
}

/// Releases a reader blocked opening a FIFO made by `make_artifact_hang`
/// (O_RDWR on a FIFO never blocks on Linux); the reader then sees EOF.
pub fn release_fifo(path: &std::path::Path) {
    let _ = std::fs::OpenOptions::new().read(true).write(true).open(path);
}
