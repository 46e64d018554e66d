//! [`TrainerError`]: what can stop a trainer call, one variant per thing the
//! caller can act on. A misbehaving *seed* is never one of them: its failure
//! is recorded, the host output stands, and the step report lets the gates
//! decide. These errors are about the trainer's own use of the API.

use kasmina_tensor::TensorError;
use leyline::api::ApiError;

/// Why a trainer call failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// The control plane refused or could not be reached.
    #[error("control plane: {0}")]
    Api(#[from] ApiError),
    /// The trainer's configuration is unusable (names what is wrong).
    #[error("trainer configuration: {0}")]
    Config(String),
    /// `site` named a site the trainer did not register.
    #[error("unknown site {0:?}: register it in TrainerConfig::site before the first step")]
    UnknownSite(String),
    /// Steps must increase by one call of `end_step` per training step.
    #[error("step {got} reported after step {last}: call end_step once per step, in order")]
    StepOrder {
        /// Last step reported.
        last: u64,
        /// Step given.
        got: u64,
    },
    /// The distillation teacher could not be used (registry, loss value).
    #[error("distillation teacher: {0}")]
    Teacher(String),
    /// A tensor operation on the trainer's own side failed (not a seed's).
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Result alias for trainer calls.
pub type Result<T> = std::result::Result<T, TrainerError>;
