//! The daemon's control plane in-process on a simulated disk
//! (`kasmina_journal::storage::sim::SimStorage`): the only stand-in these
//! tests use, for the journal's storage, so a test can cut the power, fill
//! the disk or fail writes and fsyncs. Everything else is real (plugins,
//! Urza files, libtorch, HMAC).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kasmina_core::ManualClock;
use kasmina_daemon::{DaemonHost, StartOptions, StartReport};
use kasmina_journal::storage::sim::SimStorage;
use kasmina_journal::{JournalConfig, Storage};
use leyline::api::KasminaApi;
use leyline::{BlendMode, SeedStage};

/// The journal directory on the simulated disk.
pub fn journal_dir() -> PathBuf {
    PathBuf::from("/sim/journal")
}

/// A simulated disk, a manual clock (started at the wall clock, so signed
/// commands are fresh) and a real Urza library.
pub struct SimDaemon {
    pub disk: SimStorage,
    pub clock: Arc<ManualClock>,
    pub config: JournalConfig,
    urza: PathBuf,
    _dir: tempfile::TempDir,
}

impl SimDaemon {
    pub fn new(config: JournalConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let urza = super::urza(dir.path());
        SimDaemon {
            disk: SimStorage::new(),
            clock: Arc::new(ManualClock::new(super::now_ms())),
            config,
            urza,
            _dir: dir,
        }
    }

    pub fn urza(&self) -> &Path {
        &self.urza
    }

    /// Starts (or restarts) the control plane on the disk.
    pub fn start(&self) -> (DaemonHost, StartReport) {
        self.try_start().unwrap()
    }

    /// Like [`SimDaemon::start`]; fails when the disk does.
    pub fn try_start(&self) -> Result<(DaemonHost, StartReport), kasmina_daemon::StartError> {
        self.try_start_on(self.disk.shared())
    }

    /// Like [`SimDaemon::try_start`], with the journal on `storage` (the
    /// disk wrapped, e.g. by `kasmina_journal::storage::wrap::WrapFiles`).
    pub fn try_start_on(
        &self,
        storage: Arc<dyn Storage>,
    ) -> Result<(DaemonHost, StartReport), kasmina_daemon::StartError> {
        let mut settings = super::test_settings("");
        // Dozens of starts per test on two shared cores: the start-up canary
        // must not time out for the machine's sake.
        settings.plugins.deadline_ms = 2_000;
        let mut options = StartOptions::new(settings);
        options.key = Some(super::key());
        options.urza_dir = Some(self.urza.clone());
        options.journal_dir = Some(journal_dir());
        options.journal_config = self.config.clone();
        options.journal_storage = storage;
        options.clock = self.clock.clone();
        let (host, report) = DaemonHost::start(options)?;
        Ok((host, report.expect("journaled")))
    }
}

/// What of a seed's state must survive: stage, blueprint, pause, blend
/// mode. (α and the epoch are in-stage progress, made durable by the next
/// fsync; health is derived.)
#[derive(Debug, Clone, PartialEq)]
pub struct SeedView {
    pub seed_id: String,
    pub stage: SeedStage,
    pub blueprint_id: Option<String>,
    pub paused: bool,
    pub blend_mode: Option<BlendMode>,
}

pub fn view(api: &dyn KasminaApi) -> Vec<SeedView> {
    project(api.seed_states().unwrap())
}

/// What of each seed state must survive a restart.
pub fn project(states: Vec<leyline::SeedState>) -> Vec<SeedView> {
    states
        .into_iter()
        .map(|s| SeedView {
            seed_id: s.seed_id,
            stage: s.stage,
            blueprint_id: s.blueprint_id,
            paused: s.paused,
            blend_mode: s.blend_mode,
        })
        .collect()
}
