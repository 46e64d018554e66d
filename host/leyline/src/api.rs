//! The one API between a trainer/controller and the control plane.
//!
//! The embedded host implements [`KasminaApi`] in-process; the daemon serves
//! the same trait over a socket and its client implements it again, so a
//! trainer switches between the two with one flag. The control plane never
//! touches tensors: it sends [`GraftDirective`]s and receives
//! [`StepReport`]s; the trainer's seed slots do the tensor work.

use serde::{Deserialize, Serialize};

use crate::{AdaptationCommand, BlendMode, BlueprintDescriptor, Dim, Outcome, SeedStage, SeedState, TelemetryEvent};

pub use crate::blend::BlendSpec;
pub use crate::checkpoint::{CheckpointAction, CheckpointEvent, HeldSeed};
pub use crate::ranks::RankSummary;

/// One seed site a host model exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSpec {
    /// Site name (a layer name, e.g. `hidden`).
    pub name: String,
    /// Shape of the features at the site, batch dimension first.
    pub feature_shape: Vec<Dim>,
}

/// A seed slot: a seed id the controller may target, bound to one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    /// Seed id (what commands name as `target_seed_id`).
    pub seed_id: String,
    /// Site the seed grafts at; must be one of the registered sites.
    pub site: String,
}

/// A trainer announces its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRegistration {
    /// Training run this trainer executes.
    pub training_run_id: String,
    /// Sites, in forward order.
    pub sites: Vec<SiteSpec>,
    /// Seed slots; a command for a seed id not listed here is refused.
    pub slots: Vec<SlotSpec>,
    /// Seeds the trainer holds grafted now (empty on a first registration).
    /// A re-registering trainer lists them so that the control plane adopts
    /// those whose kernel digest it verified and sends a fresh attach for
    /// the rest; nothing is culled for a reconnect or a daemon restart.
    #[serde(default)]
    pub held: Vec<HeldSeed>,
    /// Rollback points whose weights checkpoint the trainer still holds;
    /// points not listed can no longer be restored.
    #[serde(default)]
    pub checkpoints: Vec<String>,
    /// Data-parallel ranks of the job (SPEC.md §10); 1 for a single-process
    /// trainer. Only rank 0 registers and reports; with more than one rank
    /// every step report must carry a [`RankSummary`] of exactly this size.
    #[serde(default = "one_rank")]
    pub world_size: u32,
}

fn one_rank() -> u32 {
    1
}

impl HostRegistration {
    /// A first registration: no seeds or checkpoints held yet.
    pub fn new(training_run_id: impl Into<String>, sites: Vec<SiteSpec>, slots: Vec<SlotSpec>) -> Self {
        HostRegistration {
            training_run_id: training_run_id.into(),
            sites,
            slots,
            held: Vec::new(),
            checkpoints: Vec::new(),
            world_size: 1,
        }
    }
}

/// A verified kernel artifact, as served to a trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelArtifact {
    /// Blueprint id.
    pub blueprint_id: String,
    /// SHA-256 (hex) the bytes were verified against.
    pub sha256: String,
    /// TorchScript bytes.
    pub bytes: Vec<u8>,
    /// The blueprint's descriptor.
    pub descriptor: BlueprintDescriptor,
}

/// What the control plane tells the trainer to do before its next step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GraftDirective {
    /// Load the named verified kernel and graft it at `site`.
    Attach {
        /// Seed id.
        seed_id: String,
        /// Site to graft at.
        site: String,
        /// Blueprint to load (fetch with [`KasminaApi::fetch_kernel`]).
        blueprint_id: String,
        /// Digest the artifact must have.
        artifact_sha256: String,
        /// How to blend once blending starts.
        blend: BlendSpec,
    },
    /// Run the seed in `stage` with blend weight `alpha` from now on.
    Stage {
        /// Seed id.
        seed_id: String,
        /// Stage to run in.
        stage: SeedStage,
        /// Blend α for the next step.
        alpha: f64,
    },
    /// Remove the seed from the model (culled or reset).
    Detach {
        /// Seed id.
        seed_id: String,
        /// Why.
        reason: String,
    },
    /// Drop the knowledge-distillation teacher (EMERGENCY with include_teacher).
    DropTeacher,
    /// Apply optimizer hyperparameters (OPTIMIZER command).
    Optimizer {
        /// Optimizer id.
        optimizer_id: String,
        /// Hyperparameters by name.
        hyperparameters: std::collections::BTreeMap<String, f64>,
    },
    /// Swap the seed out of (or back into) the forward path.
    Pause {
        /// Seed id.
        seed_id: String,
        /// `true` to pause, `false` to resume.
        paused: bool,
    },
    /// Capture a checkpoint of the model's weights and every grafted seed's
    /// slot for rollback point `point_id`, and report it in the next step
    /// report ([`CheckpointEvent`]).
    Checkpoint {
        /// Rollback point id.
        point_id: String,
        /// On disk (full path, survives a trainer crash) rather than in memory.
        durable: bool,
    },
    /// Return the model's weights and seed slots to checkpoint `point_id`,
    /// all or nothing, and report it in the next step report.
    RestoreCheckpoint {
        /// Rollback point id.
        point_id: String,
    },
}

impl GraftDirective {
    /// The seed the directive is about, if it names one.
    pub fn seed_id(&self) -> Option<&str> {
        match self {
            GraftDirective::Attach { seed_id, .. }
            | GraftDirective::Stage { seed_id, .. }
            | GraftDirective::Detach { seed_id, .. }
            | GraftDirective::Pause { seed_id, .. } => Some(seed_id),
            GraftDirective::DropTeacher
            | GraftDirective::Optimizer { .. }
            | GraftDirective::Checkpoint { .. }
            | GraftDirective::RestoreCheckpoint { .. } => None,
        }
    }
}

/// What one seed did during one training step, as the trainer measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedStepReport {
    /// Seed id.
    pub seed_id: String,
    /// Stage the trainer ran the seed in (the "reported" stage for gates).
    pub stage: SeedStage,
    /// Whether a kernel is attached.
    pub kernel_attached: bool,
    /// Digest of the attached kernel, if any.
    pub kernel_sha256: Option<String>,
    /// Seed-side loss this step, if measured.
    pub loss: Option<f64>,
    /// Whether every seed output value was finite.
    pub outputs_finite: bool,
    /// Whether the seed output matched the site's shape.
    pub output_shape_ok: bool,
    /// Kernel forward latency, µs.
    pub kernel_latency_us: u64,
    /// Isolation violations counted this step.
    pub isolation_violations: u32,
    /// Largest host/seed gradient cosine this step.
    pub max_gradient_cosine: f64,
    /// Whether anything but the seed's own verified kernel ran.
    pub fallback_used: bool,
    /// α actually applied.
    pub alpha: f64,
    /// What the blend did this step (None when no blend ran: not yet
    /// blending, paused, or the seed failed).
    pub blend: Option<BlendReport>,
}

/// Blend statistics of one seed for one step (SPEC.md §5 telemetry). For
/// CONVEX/RESIDUAL the effective α is the scalar α, so mean and p95 equal it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendReport {
    /// Blend mode that ran.
    pub mode: BlendMode,
    /// Mean effective α (over channels for CHANNEL, samples for CONFIDENCE).
    pub alpha_mean: f64,
    /// 95th percentile (nearest rank) of the effective α.
    pub alpha_p95: f64,
    /// Share of samples whose α·g was clamped into [α_lo, α_hi] (CONFIDENCE; 0 otherwise).
    pub clamped_fraction: f64,
    /// Share of channels with α_eff = 0 (CHANNEL only).
    pub sparsity: Option<f64>,
    /// Mean confidence gate g (CONFIDENCE only).
    pub gate_mean: Option<f64>,
    /// Wall time of the blend op, µs.
    pub kernel_us: f64,
}

/// Knowledge distillation as the trainer ran it this step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillationReport {
    /// KD loss (before weighting).
    pub kd_loss: f64,
    /// Weight the KD loss was mixed in with.
    pub weight: f64,
    /// Bytes of teacher parameters and buffers held.
    pub teacher_memory_bytes: u64,
}

/// Everything the trainer reports after one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Training step just completed.
    pub step: u64,
    /// Training run.
    pub training_run_id: String,
    /// Task loss of the host model.
    pub task_loss: f64,
    /// Global metric (e.g. validation accuracy), when measured this step.
    pub global_metric: Option<f64>,
    /// Per-seed reports.
    pub seeds: Vec<SeedStepReport>,
    /// Knowledge distillation, when a teacher ran this step.
    pub distillation: Option<DistillationReport>,
    /// Checkpoints captured, restored, failed or evicted since the last
    /// report (answers to [`GraftDirective::Checkpoint`] and
    /// [`GraftDirective::RestoreCheckpoint`]).
    pub checkpoints: Vec<CheckpointEvent>,
    /// What every data-parallel rank applied and whether they agreed (None
    /// for a single-process trainer); see [`crate::ranks::merge_rank_reports`].
    #[serde(default)]
    pub ranks: Option<RankSummary>,
}

/// Gradient isolation settings the host holds; the trainer measures with
/// them (SPEC.md §6). Sent in the answer to registration so one settings
/// file rules both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationPolicy {
    /// Cosine similarity counted as a violation, in (0, 1].
    pub cosine_threshold: f64,
    /// Coordinates sampled per parameter.
    pub samples_per_param: u32,
    /// Violations within the window that open the seed's isolation breaker.
    pub violations_to_trip: u32,
    /// Window length in steps.
    pub window_steps: u64,
    /// Fail the seed on its first violation.
    pub fail_fast: bool,
}

/// Knowledge-distillation settings the host holds (SPEC.md §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillationPolicy {
    /// Weight of the KD loss, in [0, 1].
    pub weight: f64,
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// Teacher memory budget, bytes.
    pub teacher_memory_bytes: u64,
}

/// The host's answer to a registration: what the trainer must apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerSettings {
    /// Contract version the host speaks.
    pub contract_version: u32,
    /// Gradient isolation.
    pub isolation: IsolationPolicy,
    /// Knowledge distillation.
    pub distillation: DistillationPolicy,
}

/// Health summary of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Contract version.
    pub contract_version: u32,
    /// Registered training run, if any.
    pub training_run_id: Option<String>,
    /// Seeds known.
    pub seeds: u64,
    /// Commands accepted since start.
    pub commands_accepted: u64,
    /// Commands rejected since start.
    pub commands_rejected: u64,
    /// Last step reported.
    pub last_step: Option<u64>,
}

/// An API call failed before it could produce a domain answer (transport,
/// protocol, or a host-side fault). Domain refusals are [`Outcome`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// Category.
    pub code: ApiErrorCode,
    /// Detail for the operator.
    pub message: String,
}

/// Categories of [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiErrorCode {
    /// The request was malformed or not allowed for this role.
    BadRequest,
    /// The named thing does not exist.
    NotFound,
    /// The kernel could not be supplied (see message).
    KernelUnavailable,
    /// The host has not been registered yet.
    NotRegistered,
    /// Transport failure (daemon mode).
    Transport,
    /// The server is shutting down.
    ShuttingDown,
    /// A bug on the host side.
    Internal,
    /// The decision journal cannot be written (disk full, failing writes or
    /// fsyncs): nothing of the call was applied, or — after a failed fsync —
    /// its outcome is unknown (see message). The daemon retries the journal
    /// on later calls and takes them again once it can write.
    JournalUnavailable,
}

impl ApiError {
    /// Builds an error.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

/// The control plane as trainers and controllers see it.
pub trait KasminaApi: Send + Sync {
    /// Verifies, parses, admits and executes a signed command.
    fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError>;
    /// Registers the trainer's model and its sites; answers with the
    /// settings the trainer must apply.
    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError>;
    /// Returns the verified kernel artifact of a blueprint.
    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError>;
    /// Reports a finished step; returns what to change before the next one.
    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError>;
    /// Every seed's state.
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError>;
    /// Host summary.
    fn status(&self) -> Result<HostStatus, ApiError>;
    /// Telemetry events emitted since the last call, CRITICAL first (the
    /// embedded caller's receiver; bounded, losses counted).
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError>;
    /// Adds a listener that receives every event as it is emitted (push):
    /// the daemon fans them out to its observers this way, with no polling.
    /// A client of a remote host refuses (it streams with its own
    /// subscription instead).
    fn subscribe_telemetry(&self, listener: std::sync::Arc<dyn TelemetryListener>) -> Result<(), ApiError>;
}

/// Receives telemetry the moment it is emitted. Called on the emitting
/// thread, possibly while the host holds a lock: it must not block (queue
/// or drop, and count what it drops).
pub trait TelemetryListener: Send + Sync {
    /// One event.
    fn event(&self, event: &TelemetryEvent);
}

/// Forwards every call, so a trainer or controller can hold the API by
/// reference or shared pointer (`&EmbeddedHost`, `Arc<dyn KasminaApi>`).
macro_rules! forward_api {
    ($($ptr:ty),*) => {$(
        impl<T: KasminaApi + ?Sized> KasminaApi for $ptr {
            fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError> {
                (**self).submit_command(command)
            }
            fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
                (**self).register_host(registration)
            }
            fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
                (**self).fetch_kernel(blueprint_id)
            }
            fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
                (**self).step_report(report)
            }
            fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
                (**self).seed_states()
            }
            fn status(&self) -> Result<HostStatus, ApiError> {
                (**self).status()
            }
            fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
                (**self).drain_telemetry()
            }
            fn subscribe_telemetry(
                &self,
                listener: std::sync::Arc<dyn TelemetryListener>,
            ) -> Result<(), ApiError> {
                (**self).subscribe_telemetry(listener)
            }
        }
    )*};
}

forward_api!(&T, std::sync::Arc<T>, Box<T>);
