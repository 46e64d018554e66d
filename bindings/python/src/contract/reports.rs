//! The blend spec and what a trainer reports each step.

use super::*;

// ---------------------------------------------------------------- blend spec

/// How a seed blends (SPEC §5). Fields a mode does not use hold neutral
/// values: `alpha_vec` empty, `gate_k = gate_tau = alpha_lo = 0`,
/// `alpha_hi = 1`. `validate()` applies the contract's one set of rules.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct BlendSpec {
    /// Blend mode.
    pub mode: BlendMode,
    /// Per-channel α (CHANNEL).
    pub alpha_vec: Vec<f32>,
    /// Gate steepness k (CONFIDENCE).
    pub gate_k: f64,
    /// Gate margin τ (CONFIDENCE).
    pub gate_tau: f64,
    /// Lower clamp of the effective α (CONFIDENCE).
    pub alpha_lo: f64,
    /// Upper clamp of the effective α (CONFIDENCE).
    pub alpha_hi: f64,
    /// CONFIDENCE: a step without logits is an error.
    pub confidence_logits_required: bool,
}

#[pymethods]
impl BlendSpec {
    #[new]
    #[pyo3(signature = (mode, alpha_vec = Vec::new(), gate_k = 0.0, gate_tau = 0.0, alpha_lo = 0.0, alpha_hi = 1.0, confidence_logits_required = false))]
    fn new(
        mode: BlendMode,
        alpha_vec: Vec<f32>,
        gate_k: f64,
        gate_tau: f64,
        alpha_lo: f64,
        alpha_hi: f64,
        confidence_logits_required: bool,
    ) -> Self {
        BlendSpec { mode, alpha_vec, gate_k, gate_tau, alpha_lo, alpha_hi, confidence_logits_required }
    }

    /// CONVEX.
    #[staticmethod]
    fn convex() -> Self {
        wire::BlendSpec::convex().into()
    }

    /// RESIDUAL.
    #[staticmethod]
    fn residual() -> Self {
        wire::BlendSpec::residual().into()
    }

    /// CHANNEL with a per-channel α vector (not validated; see `validate`).
    #[staticmethod]
    fn channel(alpha_vec: Vec<f32>) -> Self {
        wire::BlendSpec::channel(alpha_vec).into()
    }

    /// CONFIDENCE with its gate (not validated; see `validate`).
    #[staticmethod]
    #[pyo3(signature = (k, tau, alpha_lo, alpha_hi, logits_required = false))]
    fn confidence(k: f64, tau: f64, alpha_lo: f64, alpha_hi: f64, logits_required: bool) -> Self {
        let mut spec = wire::BlendSpec::confidence(k, tau, alpha_lo, alpha_hi);
        spec.confidence_logits_required = logits_required;
        spec.into()
    }

    /// Raises `BlendSpecError` (with `.key`, the annotation key at fault) if
    /// the spec breaks a rule of the contract; the same check the host runs
    /// at admission and the Rust trainer before it blends.
    fn validate(&self, py: Python<'_>) -> PyResult<()> {
        wire::BlendSpec::from(self).validate().map_err(|e| errors::blend_error(py, &e))
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<wire::BlendSpec> for BlendSpec {
    fn from(s: wire::BlendSpec) -> Self {
        let wire::BlendSpec { mode, alpha_vec, gate_k, gate_tau, alpha_lo, alpha_hi, confidence_logits_required } = s;
        BlendSpec { mode: mode.into(), alpha_vec, gate_k, gate_tau, alpha_lo, alpha_hi, confidence_logits_required }
    }
}

impl From<&BlendSpec> for wire::BlendSpec {
    fn from(s: &BlendSpec) -> Self {
        wire::BlendSpec {
            mode: s.mode.into(),
            alpha_vec: s.alpha_vec.clone(),
            gate_k: s.gate_k,
            gate_tau: s.gate_tau,
            alpha_lo: s.alpha_lo,
            alpha_hi: s.alpha_hi,
            confidence_logits_required: s.confidence_logits_required,
        }
    }
}

// ---------------------------------------------------------------- step reports

/// Blend statistics of one seed for one step (SPEC §5 telemetry).
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct BlendReport {
    /// Mode that ran.
    pub mode: BlendMode,
    /// Mean effective α.
    pub alpha_mean: f64,
    /// 95th percentile (nearest rank) of the effective α.
    pub alpha_p95: f64,
    /// Share of samples whose α·g was clamped (CONFIDENCE).
    pub clamped_fraction: f64,
    /// Share of channels with α_eff = 0 (CHANNEL).
    pub sparsity: Option<f64>,
    /// Mean confidence gate (CONFIDENCE).
    pub gate_mean: Option<f64>,
    /// Wall time of the blend op, µs.
    pub kernel_us: f64,
}

#[pymethods]
impl BlendReport {
    #[new]
    #[pyo3(signature = (mode, alpha_mean, alpha_p95, clamped_fraction = 0.0, sparsity = None, gate_mean = None, kernel_us = 0.0))]
    fn new(
        mode: BlendMode,
        alpha_mean: f64,
        alpha_p95: f64,
        clamped_fraction: f64,
        sparsity: Option<f64>,
        gate_mean: Option<f64>,
        kernel_us: f64,
    ) -> Self {
        BlendReport { mode, alpha_mean, alpha_p95, clamped_fraction, sparsity, gate_mean, kernel_us }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<&BlendReport> for wire::BlendReport {
    fn from(b: &BlendReport) -> Self {
        wire::BlendReport {
            mode: b.mode.into(),
            alpha_mean: b.alpha_mean,
            alpha_p95: b.alpha_p95,
            clamped_fraction: b.clamped_fraction,
            sparsity: b.sparsity,
            gate_mean: b.gate_mean,
            kernel_us: b.kernel_us,
        }
    }
}

impl From<wire::BlendReport> for BlendReport {
    fn from(b: wire::BlendReport) -> Self {
        let wire::BlendReport { mode, alpha_mean, alpha_p95, clamped_fraction, sparsity, gate_mean, kernel_us } = b;
        BlendReport { mode: mode.into(), alpha_mean, alpha_p95, clamped_fraction, sparsity, gate_mean, kernel_us }
    }
}

/// What one seed did during one step, as the trainer measured it.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct SeedStepReport {
    /// Seed id.
    pub seed_id: String,
    /// Stage the trainer ran the seed in.
    pub stage: SeedStage,
    /// Whether a kernel is attached.
    pub kernel_attached: bool,
    /// Digest of the attached kernel.
    pub kernel_sha256: Option<String>,
    /// Seed-side loss this step.
    pub loss: Option<f64>,
    /// Whether every seed output value was finite.
    pub outputs_finite: bool,
    /// Whether the seed output matched the site's shape.
    pub output_shape_ok: bool,
    /// Kernel forward latency, µs.
    pub kernel_latency_us: u64,
    /// Isolation violations this step.
    pub isolation_violations: u32,
    /// Largest host/seed gradient cosine this step.
    pub max_gradient_cosine: f64,
    /// Whether anything but the seed's own verified kernel ran.
    pub fallback_used: bool,
    /// α applied.
    pub alpha: f64,
    /// Blend statistics (None when no blend ran).
    pub blend: Option<BlendReport>,
}

#[pymethods]
impl SeedStepReport {
    #[new]
    #[pyo3(signature = (seed_id, stage, kernel_attached, kernel_sha256 = None, loss = None, outputs_finite = true, output_shape_ok = true, kernel_latency_us = 0, isolation_violations = 0, max_gradient_cosine = 0.0, fallback_used = false, alpha = 0.0, blend = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        seed_id: String,
        stage: SeedStage,
        kernel_attached: bool,
        kernel_sha256: Option<String>,
        loss: Option<f64>,
        outputs_finite: bool,
        output_shape_ok: bool,
        kernel_latency_us: u64,
        isolation_violations: u32,
        max_gradient_cosine: f64,
        fallback_used: bool,
        alpha: f64,
        blend: Option<BlendReport>,
    ) -> Self {
        SeedStepReport {
            seed_id,
            stage,
            kernel_attached,
            kernel_sha256,
            loss,
            outputs_finite,
            output_shape_ok,
            kernel_latency_us,
            isolation_violations,
            max_gradient_cosine,
            fallback_used,
            alpha,
            blend,
        }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<&SeedStepReport> for wire::SeedStepReport {
    fn from(s: &SeedStepReport) -> Self {
        wire::SeedStepReport {
            seed_id: s.seed_id.clone(),
            stage: s.stage.into(),
            kernel_attached: s.kernel_attached,
            kernel_sha256: s.kernel_sha256.clone(),
            loss: s.loss,
            outputs_finite: s.outputs_finite,
            output_shape_ok: s.output_shape_ok,
            kernel_latency_us: s.kernel_latency_us,
            isolation_violations: s.isolation_violations,
            max_gradient_cosine: s.max_gradient_cosine,
            fallback_used: s.fallback_used,
            alpha: s.alpha,
            blend: s.blend.as_ref().map(Into::into),
        }
    }
}

/// Knowledge distillation as the trainer ran it this step.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct DistillationReport {
    /// KD loss (before weighting).
    pub kd_loss: f64,
    /// Weight it was mixed in with.
    pub weight: f64,
    /// Bytes of teacher parameters and buffers.
    pub teacher_memory_bytes: u64,
}

#[pymethods]
impl DistillationReport {
    #[new]
    fn new(kd_loss: f64, weight: f64, teacher_memory_bytes: u64) -> Self {
        DistillationReport { kd_loss, weight, teacher_memory_bytes }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// Everything the trainer reports after one step.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Step just completed.
    pub step: u64,
    /// Training run.
    pub training_run_id: String,
    /// Task loss of the host model.
    pub task_loss: f64,
    /// Global metric, when measured this step.
    pub global_metric: Option<f64>,
    /// Per-seed reports.
    pub seeds: Vec<SeedStepReport>,
    /// Knowledge distillation, when a teacher ran.
    pub distillation: Option<DistillationReport>,
    /// Checkpoints captured, restored, failed or evicted since the last report.
    pub checkpoints: Vec<CheckpointEvent>,
    /// What every data-parallel rank applied (None: a single process).
    pub ranks: Option<RankSummary>,
}

#[pymethods]
impl StepReport {
    #[new]
    #[pyo3(signature = (step, training_run_id, task_loss, global_metric = None, seeds = Vec::new(), distillation = None, checkpoints = Vec::new(), ranks = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        step: u64,
        training_run_id: String,
        task_loss: f64,
        global_metric: Option<f64>,
        seeds: Vec<SeedStepReport>,
        distillation: Option<DistillationReport>,
        checkpoints: Vec<CheckpointEvent>,
        ranks: Option<RankSummary>,
    ) -> Self {
        StepReport { step, training_run_id, task_loss, global_metric, seeds, distillation, checkpoints, ranks }
    }
    /// Postcard bytes of the report (what each rank sends rank 0 over the
    /// control group; `Client.rank_step` merges them).
    fn to_bytes(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        crate::ranks::encode(py, &wire::StepReport::from(self))
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<&StepReport> for wire::StepReport {
    fn from(r: &StepReport) -> Self {
        wire::StepReport {
            step: r.step,
            training_run_id: r.training_run_id.clone(),
            task_loss: r.task_loss,
            global_metric: r.global_metric,
            seeds: r.seeds.iter().map(Into::into).collect(),
            distillation: r.distillation.as_ref().map(|d| wire::DistillationReport {
                kd_loss: d.kd_loss,
                weight: d.weight,
                teacher_memory_bytes: d.teacher_memory_bytes,
            }),
            checkpoints: r.checkpoints.iter().map(Into::into).collect(),
            ranks: r.ranks.as_ref().map(Into::into),
        }
    }
}
