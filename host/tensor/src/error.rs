//! The crate's error type: one variant per thing a caller can act on.
//!
//! Shapes, blend parameters and logits come from outside (a controller's
//! annotations, a trainer's batch, a kernel from Urza), so every mismatch is a
//! typed error here rather than a libtorch panic.

use leyline::{BlendMode, SeedStage};

/// Errors of the tensor plane.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// libtorch refused an operation (device, dtype, out-of-memory, …).
    #[error("libtorch error in {op}: {source}")]
    Torch {
        /// Which operation of ours failed.
        op: &'static str,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// The seed kernel itself failed or panicked inside libtorch.
    #[error("seed kernel failed: {0}")]
    Kernel(String),
    /// Host and seed outputs (or a reused buffer) disagree in shape.
    #[error("shape mismatch in {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was compared.
        what: &'static str,
        /// The shape we needed.
        expected: Vec<i64>,
        /// The shape we were given.
        got: Vec<i64>,
    },
    /// Tensors disagree in dtype or device, or the dtype cannot be blended.
    #[error("incompatible {what}: expected {expected}, got {got}")]
    Incompatible {
        /// What was compared.
        what: &'static str,
        /// What we needed.
        expected: String,
        /// What we were given.
        got: String,
    },
    /// A tensor has the wrong number of dimensions for the operation.
    #[error("{what} must have {expected} dimensions, got {got}")]
    WrongRank {
        /// Which tensor.
        what: &'static str,
        /// Accepted ranks, in words (e.g. `"3 to 5"`).
        expected: &'static str,
        /// Its rank.
        got: usize,
    },
    /// CONFIDENCE blending needs classification logits for this batch.
    #[error("CONFIDENCE blending needs classification logits [N, classes] for this batch")]
    MissingLogits,
    /// Logits do not cover the batch being blended.
    #[error("logits batch {logits} does not match the feature batch {features}")]
    LogitsBatchMismatch {
        /// Batch size of the logits.
        logits: i64,
        /// Batch size of the features.
        features: i64,
    },
    /// Fewer than two classes: top-1 minus top-2 is undefined.
    #[error("logits need at least 2 classes, got {0}")]
    TooFewClasses(i64),
    /// CHANNEL α vector length differs from the feature channel count.
    #[error("alpha_vec has {len} entries but the features have {channels} channels")]
    AlphaVecLength {
        /// Length of α_vec.
        len: usize,
        /// Channels (dim 1) of the features.
        channels: i64,
    },
    /// A blend parameter is out of range or not finite.
    #[error("invalid blend parameter {name} = {value}: {rule}")]
    InvalidParameter {
        /// Parameter name as in the annotations (`alpha`, `gate_k`, …).
        name: &'static str,
        /// The offending value.
        value: f64,
        /// The rule it broke.
        rule: &'static str,
    },
    /// A blend spec broke the contract's rules ([`leyline::BlendSpec::validate`]);
    /// the error names the annotation key at fault.
    #[error(transparent)]
    InvalidBlend(#[from] leyline::BlendSpecError),
    /// The blend spec lacks what its mode needs (e.g. CHANNEL without α_vec).
    #[error("{mode:?} blending requires {missing}")]
    IncompleteSpec {
        /// The blend mode.
        mode: BlendMode,
        /// What is missing.
        missing: &'static str,
    },
    /// The operation is not valid in the slot's current stage.
    #[error("operation {op} not valid in stage {stage:?}")]
    WrongStage {
        /// What was attempted.
        op: &'static str,
        /// The slot's stage.
        stage: SeedStage,
    },
    /// The stage needs a kernel but none is attached.
    #[error("stage {0:?} needs an attached seed kernel")]
    NoKernel(SeedStage),
    /// A site name is unknown to the model.
    #[error("unknown site {0:?}")]
    UnknownSite(String),
    /// A site or slot name was registered twice.
    #[error("duplicate {what} {name:?}")]
    Duplicate {
        /// `site` or `slot`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Sites were applied out of their declared order within one forward pass.
    #[error("site {site:?} applied out of order (after {previous:?})")]
    SiteOrder {
        /// The site being applied.
        site: String,
        /// The site applied before it in this pass.
        previous: String,
    },
    /// A configuration value is unusable.
    #[error("invalid configuration {name}: {rule}")]
    InvalidConfig {
        /// Setting name.
        name: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// The isolation monitor was asked to fail fast and a violation occurred.
    #[error(
        "gradient isolation violated for seed {seed_id}: cosine {cosine:?} (threshold {threshold}), {leaked_parameters} host parameters reached"
    )]
    IsolationViolation {
        /// The seed.
        seed_id: String,
        /// Measured cosine (sampled check).
        cosine: Option<f64>,
        /// Host parameters the seed output reached (input-leak probe).
        leaked_parameters: usize,
        /// Configured threshold.
        threshold: f64,
    },
    /// A value that must be finite was not (NaN/inf gradients, logits, loss).
    #[error("non-finite {0}")]
    NonFinite(&'static str),
    /// The KD teacher would exceed its memory budget.
    #[error("teacher needs {needed} bytes, over the budget of {budget} bytes")]
    TeacherOverBudget {
        /// Estimated bytes of the teacher's parameters.
        needed: u64,
        /// Budget.
        budget: u64,
    },
}

impl TensorError {
    /// Wraps a libtorch error with the name of our operation.
    pub(crate) fn torch(op: &'static str) -> impl FnOnce(tch::TchError) -> TensorError {
        move |source| TensorError::Torch { op, source }
    }
}

/// Result alias for the crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;
