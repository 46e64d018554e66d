//! The control plane the daemon serves: the embedded host, optionally
//! journaled, behind the same [`KasminaApi`] trait.
//!
//! [`DaemonHost::start`] opens the journal (a torn tail is cut and
//! reported), builds the host with the [`JournalRecorder`], restores seed
//! state from the records, and writes a snapshot of the restored state as
//! the new base. State-changing calls (commands, registration, step
//! reports) are applied one at a time so each call's records form one group
//! ending in a boundary record, and each returns only once that group is
//! durable; the wait for the fsync is outside that turn, so calls from
//! several connections share fsyncs (group commit, see `recorder`).
//!
//! When the journal fails (a full disk, a failed write or fsync) the call
//! it failed in is refused — a command with reason `journal_unavailable`,
//! a registration or step report with an error saying so — and never
//! acknowledged, and the daemon keeps serving. (If the journal cannot even
//! be reopened to cut what the call wrote, the call ends in an error that
//! says its outcome is unknown, as for a call in flight at a crash.)
//! Recovery is bounded:
//! 1. at once, the journal is reopened through the last acknowledged
//!    record (cutting what the refused call wrote) and the seed state is
//!    rewound to it (`SeedManager::rewind`), so nothing the refused call
//!    changed is visible or can reach a later snapshot;
//! 2. then, and on later state-changing calls at most once per
//!    [`JOURNAL_RETRY_INTERVAL_MS`], the journal is compacted into a fresh
//!    segment with a snapshot; once that is durable, calls are taken
//!    again. Until then each is refused `journal_unavailable`; reads
//!    (`seed_states`, `status`, telemetry) keep working throughout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use kasmina::seeds::restore::RestoreReport;
use kasmina::seeds::with_step_attempts;
use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use kasmina_core::{Clock, SystemClock};
use kasmina_journal::{DecisionJournal, FsStorage, JournalConfig, RecoveryReport, Storage, decision_journal_config};
use leyline::api::{
    ApiError, ApiErrorCode, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport,
    TelemetryListener, TrainerSettings,
};
use leyline::journal::JournalRecord;
use leyline::{AdaptationCommand, Outcome, ReasonCode, SeedState, TelemetryEvent};

use crate::recorder::{JOURNAL_RETRY_INTERVAL_MS, JournalRecorder, SnapshotParts};

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
    /// What the journal writes through: the real file system, or a test's
    /// simulated disk (`kasmina_journal::storage::sim::SimStorage`).
    pub journal_storage: Arc<dyn Storage>,
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
            journal_storage: Arc::new(FsStorage),
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
        let StartOptions { settings, urza_dir, journal_dir, journal_config, journal_storage, key, clock } = options;
        // Connections have their own telemetry queues (subscribe or drain):
        // nothing drains the embedded host's outbox.
        let mut builder = HostBuilder::new(settings).clock(Arc::clone(&clock)).without_outbox();
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
        let (journal, entries, recovery) = DecisionJournal::open_on(journal_storage, &dir, journal_config)
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

    /// Runs one state-changing call: applied in turn, and answered only
    /// once its records are durable — the wait for the fsync is outside the
    /// turn, so calls applied meanwhile share the next fsync (group commit,
    /// see `recorder`). `Err`: the journal is unavailable (see
    /// [`JournalRefusal`]).
    fn mutate<T>(
        &self,
        step: Option<u64>,
        call: impl FnOnce(&EmbeddedHost) -> Result<T, ApiError>,
    ) -> Result<Result<T, ApiError>, JournalRefusal> {
        let Some(recorder) = &self.recorder else {
            let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
            return Ok(call(&self.host));
        };
        let (result, ticket) = {
            let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(why) = recorder.failure() {
                if !recorder.retry_due() {
                    return Err(JournalRefusal::NotApplied(why));
                }
                // The call has not run: whatever the attempt gives, it is refused whole.
                self.recover(recorder).map_err(|e| JournalRefusal::NotApplied(e.to_string()))?;
            }
            if let Some(step) = step {
                recorder.set_step(step);
            }
            let result = call(&self.host);
            match recorder.finish_call(|| self.host.manager().progress_state(), || snapshot_parts(&self.host)) {
                Ok(ticket) => (result, ticket),
                Err(why) => return Err(self.refuse(recorder, why)),
            }
        };
        match recorder.wait_durable(ticket) {
            Ok(()) => Ok(result),
            Err(why) => {
                let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
                if recorder.generation() != ticket.generation {
                    // Another refused call's recovery already cut this one.
                    return Err(JournalRefusal::NotApplied(why));
                }
                Err(self.refuse(recorder, why))
            }
        }
    }

    /// Refuses a call whose records the journal failed to take: nothing of
    /// it may stay visible or reach a later snapshot, so the seeds are
    /// rewound now (reads and truncation work on a full disk); resuming may
    /// have to wait for space. Called with the serial lock held.
    fn refuse(&self, recorder: &JournalRecorder, why: String) -> JournalRefusal {
        match self.recover(recorder) {
            Ok(()) | Err(RecoverError::Resume(_)) => JournalRefusal::NotApplied(why),
            Err(RecoverError::Rewind(still)) => JournalRefusal::Unknown(format!("{why}; {still}")),
        }
    }

    /// One recovery attempt (see the module docs): reopen through the last
    /// acknowledged record, rewind the seeds to it, compact. Called with
    /// the serial lock held.
    fn recover(&self, recorder: &JournalRecorder) -> Result<(), RecoverError> {
        let (records, report) = recorder.reopen().map_err(RecoverError::Rewind)?;
        let rewound = self
            .host
            .manager()
            .rewind(&records)
            .map_err(|e| RecoverError::Rewind(format!("rewinding seed state to the journal failed: {e}")))?;
        tracing::warn!(discarded = report.discarded, seeds = rewound.seeds, "kasmina.daemon.journal_rewound");
        recorder.resume(snapshot_parts(&self.host)).map_err(RecoverError::Resume)
    }
}

/// Why a state-changing call was not taken.
#[derive(Debug)]
enum JournalRefusal {
    /// Nothing of the call was applied, in memory or on disk: either it
    /// never ran, or what it wrote was cut from the journal and its effects
    /// rewound. The answer is definitive.
    NotApplied(String),
    /// The journal failed during the call and could not even be reopened
    /// to cut what the call wrote: it is in memory rolled forward and may
    /// or may not be on disk, like a call in flight at a crash. Whatever
    /// recovers next (a later attempt, or a restart) decides, from the
    /// journal.
    Unknown(String),
}

/// Why a recovery attempt failed, and how far it got.
#[derive(Debug)]
enum RecoverError {
    /// Before anything was cut or rewound.
    Rewind(String),
    /// After the cut and the rewind: only taking calls again failed.
    Resume(String),
}

impl std::fmt::Display for RecoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverError::Rewind(why) | RecoverError::Resume(why) => f.write_str(why),
        }
    }
}

impl JournalRefusal {
    /// The error a registration or step report gets.
    fn into_api_error(self) -> ApiError {
        let message = match self {
            JournalRefusal::NotApplied(why) => format!("{}: {}", ReasonCode::JournalUnavailable, not_applied(&why)),
            JournalRefusal::Unknown(why) => format!("{}: {}", ReasonCode::JournalUnavailable, unknown(&why)),
        };
        ApiError::new(ApiErrorCode::JournalUnavailable, message)
    }
}

fn not_applied(why: &str) -> String {
    format!(
        "{why}; nothing of this call was applied. The daemon retries its journal on later calls (at most every {JOURNAL_RETRY_INTERVAL_MS} ms) and takes calls again once it can write (free disk space)"
    )
}

fn unknown(why: &str) -> String {
    format!(
        "{why}; the journal could not be reopened, so whether this call is durable is unknown (as for a call in flight at a crash) until the daemon recovers its journal; check the seed states then"
    )
}

/// What a journal snapshot of `host` holds.
fn snapshot_parts(host: &EmbeddedHost) -> SnapshotParts {
    SnapshotParts {
        seeds: host.manager().export_seed_states(),
        progress: host.manager().progress_state(),
        nonces: host.manager().live_nonces(),
    }
}

impl KasminaApi for DaemonHost {
    fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError> {
        // Plugins are asked before the call's turn and the fsync is waited
        // for after it: only applying the decision and appending its
        // records are serialised.
        let id = command.command_id.clone();
        let prepared = self.host.prepare_command(command);
        match self.mutate(None, |h| Ok(h.apply_command(prepared))) {
            Ok(answer) => answer,
            Err(JournalRefusal::NotApplied(why)) => {
                Ok(Outcome::rejected(ReasonCode::JournalUnavailable, not_applied(&why)).with("command_id", id.as_str()))
            }
            Err(unknown) => Err(unknown.into_api_error()),
        }
    }
    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.mutate(None, |h| h.register_host(registration)).map_err(JournalRefusal::into_api_error)?
    }
    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        self.host.fetch_kernel(blueprint_id)
    }
    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        let step = report.step;
        // Kernel waits and gate verdicts happen before the call's turn, so
        // a slow kernel load never holds up other calls; a seed germinated
        // meanwhile sends the report back to wait again, outside the turn.
        with_step_attempts(|last_try| {
            let prepared = self.host.prepare_step(&report);
            self.mutate(Some(step), |h| h.apply_step(&report, prepared, last_try))
                .map_err(JournalRefusal::into_api_error)?
        })
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
