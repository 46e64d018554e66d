//! The control plane the daemon serves: the embedded host, optionally
//! journaled, behind the same [`KasminaApi`] trait.
//!
//! [`DaemonHost::start`] opens the journal (a torn tail is cut and
//! reported), builds the host with the [`JournalRecorder`], restores seed
//! state from the records, and writes a snapshot of the restored state as
//! the new base. State-changing calls (commands, registration, step
//! reports) are serialised so each call's records form one group ending
//! in a boundary record, and each returns only once that group is durable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use kasmina::seeds::STEP_ATTEMPTS;
use kasmina::seeds::restore::RestoreReport;
use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use kasmina_core::{Clock, SystemClock};
use kasmina_journal::{DecisionJournal, JournalConfig, RecoveryReport, decision_journal_config};
use leyline::api::{
    ApiError, ApiErrorCode, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport,
    TelemetryListener, TrainerSettings,
};
use leyline::journal::JournalRecord;
use leyline::{AdaptationCommand, Outcome, SeedState, TelemetryEvent};

use crate::recorder::{JournalRecorder, SnapshotParts};

/// Why the daemon's control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The journal could not be opened (corruption other than a torn tail,
    /// a schema mismatch, I/O).
    #[error("journal {dir}: {source}")]
    Journal {
        /// Journal directory.
        dir: PathBuf,
        /// What failed.
        source: kasmina_journal::JournalError,
    },
    /// The host could not be built.
    #[error(transparent)]
    Host(#[from] kasmina::HostError),
    /// The journal does not replay onto this host.
    #[error("restoring seed state from journal {dir}: {source}")]
    Restore {
        /// Journal directory.
        dir: PathBuf,
        /// What does not fit.
        source: kasmina::seeds::restore::RestoreError,
    },
    /// The restored state could not be written back as the new base.
    #[error("journal {dir}: {detail}")]
    Checkpoint {
        /// Journal directory.
        dir: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// How to start the control plane.
pub struct StartOptions {
    /// Validated settings.
    pub settings: Settings,
    /// Urza library (overrides `kernels.urza_dir`).
    pub urza_dir: Option<PathBuf>,
    /// Journal directory; `None` runs without a journal (nothing survives
    /// a restart).
    pub journal_dir: Option<PathBuf>,
    /// Journal limits (segment size, compaction threshold).
    pub journal_config: JournalConfig,
    /// Key to use instead of the settings' key file / environment.
    pub key: Option<HmacKey>,
    /// Clock (tests inject one).
    pub clock: Arc<dyn Clock>,
}

impl StartOptions {
    /// Options with the system clock and the default journal limits.
    pub fn new(settings: Settings) -> Self {
        StartOptions {
            settings,
            urza_dir: None,
            journal_dir: None,
            journal_config: decision_journal_config(),
            key: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("urza_dir", &self.urza_dir)
            .field("journal_dir", &self.journal_dir)
            .finish_non_exhaustive()
    }
}

/// What start-up found in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReport {
    /// Segments and records read, and any torn tail that was cut.
    pub recovery: RecoveryReport,
    /// What the restore rebuilt.
    pub restore: RestoreReport,
}

impl std::fmt::Display for StartReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.recovery;
        write!(f, "journal: {} segments, {} records", r.segments, r.records)?;
        if let Some(t) = &r.torn_tail {
            write!(
                f,
                "; torn tail cut: {} bytes at offset {} of {} ({})",
                t.bytes_cut,
                t.offset,
                t.segment.display(),
                t.defect
            )?;
        }
        let s = &self.restore;
        write!(
            f,
            "; restored {} seeds ({} records applied{}, {} uncommitted ignored, {} nonces, {} prefetches, {} kernels re-verified, {} with in-stage progress, {} breakers, {} awaiting trainer resync)",
            s.seeds,
            s.records_applied,
            if s.from_snapshot { " after a snapshot" } else { "" },
            s.uncommitted_ignored,
            s.nonces_restored,
            s.prefetches_reissued,
            s.kernels_reverified,
            s.progress_restored,
            s.breakers_restored,
            s.awaiting_resync
        )?;
        for (seed, warning) in &s.warnings {
            write!(f, "; WARNING {seed}: {warning}")?;
        }
        Ok(())
    }
}

/// The daemon's control plane.
pub struct DaemonHost {
    host: Arc<EmbeddedHost>,
    recorder: Option<Arc<JournalRecorder>>,
    serial: Mutex<()>,
}

impl std::fmt::Debug for DaemonHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHost").field("journaled", &self.recorder.is_some()).finish_non_exhaustive()
    }
}

impl DaemonHost {
    /// Builds the host; with a journal, recovers and restores first.
    pub fn start(options: StartOptions) -> Result<(Self, Option<StartReport>), StartError> {
        let StartOptions { settings, urza_dir, journal_dir, journal_config, key, clock } = options;
        let mut builder = HostBuilder::new(settings).clock(Arc::clone(&clock));
        if let Some(key) = key {
            builder = builder.hmac_key(key);
        }
        if let Some(dir) = urza_dir {
            builder = builder.urza_dir(dir);
        }
        let Some(dir) = journal_dir else {
            let host = Arc::new(builder.build()?);
            return Ok((DaemonHost { host, recorder: None, serial: Mutex::new(()) }, None));
        };
        let (journal, entries, recovery) = DecisionJournal::open(&dir, journal_config)
            .map_err(|source| StartError::Journal { dir: dir.clone(), source })?;
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(segment = %torn.segment.display(), offset = torn.offset, bytes_cut = torn.bytes_cut, defect = %torn.defect, "kasmina.daemon.journal_tail_cut");
        }
        let records: Vec<JournalRecord> = entries.into_iter().map(|e| e.record).collect();
        let recorder = Arc::new(JournalRecorder::new(journal, &records, Arc::clone(&clock)));
        let host =
            Arc::new(builder.recorder(Arc::clone(&recorder) as Arc<dyn kasmina::seeds::DecisionRecorder>).build()?);
        let restore =
            host.manager().restore(&records).map_err(|source| StartError::Restore { dir: dir.clone(), source })?;
        recorder
            .checkpoint(snapshot_parts(&host))
            .map_err(|detail| StartError::Checkpoint { dir: dir.clone(), detail })?;
        let report = StartReport { recovery, restore };
        tracing::info!(%report, "kasmina.daemon.journal_restored");
        Ok((DaemonHost { host, recorder: Some(recorder), serial: Mutex::new(()) }, Some(report)))
    }

    /// A daemon host over an already built embedded host, without a journal.
    pub fn unjournaled(host: Arc<EmbeddedHost>) -> Self {
        DaemonHost { host, recorder: None, serial: Mutex::new(()) }
    }

    /// The embedded host (metrics, shutdown).
    pub fn host(&self) -> &Arc<EmbeddedHost> {
        &self.host
    }

    /// Writes a durable snapshot of the current state — seeds and the nonce
    /// ledger's live entries — as the base for the next start (graceful
    /// shutdown). Nothing to do without a journal.
    pub fn checkpoint(&self) -> Result<(), String> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        match &self.recorder {
            Some(recorder) => recorder.checkpoint(snapshot_parts(&self.host)),
            None => Ok(()),
        }
    }

    /// The journal recorder, when journaled.
    pub fn recorder(&self) -> Option<&Arc<JournalRecorder>> {
        self.recorder.as_ref()
    }

    /// Runs one state-changing call: serialised, refused once the journal
    /// failed, and answered only after its records are durable.
    fn mutate<T>(
        &self,
        step: Option<u64>,
        call: impl FnOnce(&EmbeddedHost) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(recorder) = &self.recorder else { return call(&self.host) };
        if let Some(why) = recorder.failure() {
            return Err(journal_down(&why));
        }
        if let Some(step) = step {
            recorder.set_step(step);
        }
        let result = call(&self.host);
        recorder
            .finish_call(|| self.host.manager().progress_state(), || snapshot_parts(&self.host))
            .map_err(|why| journal_down(&why))?;
        result
    }
}

/// What a journal snapshot of `host` holds.
fn snapshot_parts(host: &EmbeddedHost) -> SnapshotParts {
    SnapshotParts {
        seeds: host.manager().export_seed_states(),
        progress: host.manager().progress_state(),
        nonces: host.manager().live_nonces(),
    }
}

fn journal_down(why: &str) -> ApiError {
    ApiError::new(
        ApiErrorCode::Internal,
        format!("{why}; the daemon refuses state changes until it is restarted (restart recovers the journal)"),
    )
}

impl KasminaApi for DaemonHost {
    fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError> {
        // Plugins are asked before the call's turn: only applying the
        // decision and journaling it are serialised.
        let prepared = self.host.prepare_command(command);
        self.mutate(None, |h| Ok(h.apply_command(prepared)))
    }
    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.mutate(None, |h| h.register_host(registration))
    }
    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        self.host.fetch_kernel(blueprint_id)
    }
    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        let step = report.step;
        // Kernel waits and gate verdicts happen before the call's turn, so
        // a slow kernel load never holds up other calls; a seed germinated
        // meanwhile sends the report back to wait again, outside the turn.
        for attempt in 1..=STEP_ATTEMPTS {
            let prepared = self.host.prepare_step(&report);
            let last_try = attempt == STEP_ATTEMPTS;
            if let Some(directives) = self.mutate(Some(step), |h| h.apply_step(&report, prepared, last_try))? {
                return Ok(directives);
            }
        }
        Err(ApiError::new(ApiErrorCode::Internal, "the last step attempt did not apply"))
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
