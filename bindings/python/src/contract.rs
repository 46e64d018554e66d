//! The contract's structs as frozen Python classes.
//!
//! Each class mirrors one `leyline` struct field for field, with a keyword
//! constructor, `==` and a `repr`, and converts to and from it here — the
//! one place the Python shape and the wire shape meet. Conversions are
//! written out field by field (no `..Default`), so a field added to the
//! contract fails this build until it is mirrored. Shapes use `None` for the
//! batch dimension (`[None, 64]` is `[Batch, Fixed(64)]`).

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use leyline::api as wire;
use leyline::{AttrValue, Dim};

use crate::directive::CheckpointEvent;
use crate::enums::{BlendMode, BlueprintTier, DType, HealthStatus, ReasonCode, SeedStage, TelemetryLevel};
use crate::errors;

pub(crate) fn dims_from_wire(dims: &[Dim]) -> Vec<Option<u64>> {
    dims.iter()
        .map(|d| match d {
            Dim::Batch => None,
            Dim::Fixed(n) => Some(*n),
        })
        .collect()
}

pub(crate) fn dims_to_wire(dims: &[Option<u64>]) -> Vec<Dim> {
    dims.iter().map(|d| d.map_or(Dim::Batch, Dim::Fixed)).collect()
}

// ---------------------------------------------------------------- registration

/// One seed site of the host model: a name and its feature shape, batch
/// dimension first (`None` = batch).
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSpec {
    /// Site name.
    pub name: String,
    /// Feature shape, `None` for the batch dimension.
    pub feature_shape: Vec<Option<u64>>,
}

#[pymethods]
impl SiteSpec {
    #[new]
    fn new(name: String, feature_shape: Vec<Option<u64>>) -> Self {
        SiteSpec { name, feature_shape }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// A seed slot: a seed id commands may target, bound to one site.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpec {
    /// Seed id.
    pub seed_id: String,
    /// Site it grafts at.
    pub site: String,
}

#[pymethods]
impl SlotSpec {
    #[new]
    fn new(seed_id: String, site: String) -> Self {
        SlotSpec { seed_id, site }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// A seed the trainer holds grafted, declared when it (re-)registers.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct HeldSeed {
    /// Seed id.
    pub seed_id: String,
    /// Blueprint of the grafted kernel.
    pub blueprint_id: String,
    /// SHA-256 of the kernel the trainer runs.
    pub kernel_sha256: String,
    /// Stage the trainer runs it in.
    pub stage: SeedStage,
    /// α the trainer applies.
    pub alpha: f64,
    /// Whether it is swapped out of the forward path.
    pub paused: bool,
}

#[pymethods]
impl HeldSeed {
    #[new]
    fn new(
        seed_id: String,
        blueprint_id: String,
        kernel_sha256: String,
        stage: SeedStage,
        alpha: f64,
        paused: bool,
    ) -> Self {
        HeldSeed { seed_id, blueprint_id, kernel_sha256, stage, alpha, paused }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// What a trainer announces about its model.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct HostRegistration {
    /// Training run.
    pub training_run_id: String,
    /// Sites, in forward order.
    pub sites: Vec<SiteSpec>,
    /// Seed slots.
    pub slots: Vec<SlotSpec>,
    /// Seeds the trainer holds grafted now (empty on a first registration):
    /// a re-registering trainer lists them so the control plane adopts those
    /// whose kernel digest it verified instead of culling them.
    pub held: Vec<HeldSeed>,
    /// Rollback points whose weights checkpoint the trainer still holds.
    pub checkpoints: Vec<String>,
}

#[pymethods]
impl HostRegistration {
    #[new]
    #[pyo3(signature = (training_run_id, sites, slots, held = Vec::new(), checkpoints = Vec::new()))]
    fn new(
        training_run_id: String,
        sites: Vec<SiteSpec>,
        slots: Vec<SlotSpec>,
        held: Vec<HeldSeed>,
        checkpoints: Vec<String>,
    ) -> Self {
        HostRegistration { training_run_id, sites, slots, held, checkpoints }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<&HostRegistration> for wire::HostRegistration {
    fn from(r: &HostRegistration) -> Self {
        wire::HostRegistration {
            training_run_id: r.training_run_id.clone(),
            sites: r
                .sites
                .iter()
                .map(|s| wire::SiteSpec { name: s.name.clone(), feature_shape: dims_to_wire(&s.feature_shape) })
                .collect(),
            slots: r
                .slots
                .iter()
                .map(|s| wire::SlotSpec { seed_id: s.seed_id.clone(), site: s.site.clone() })
                .collect(),
            held: r
                .held
                .iter()
                .map(|h| wire::HeldSeed {
                    seed_id: h.seed_id.clone(),
                    blueprint_id: h.blueprint_id.clone(),
                    kernel_sha256: h.kernel_sha256.clone(),
                    stage: h.stage.into(),
                    alpha: h.alpha,
                    paused: h.paused,
                })
                .collect(),
            checkpoints: r.checkpoints.clone(),
        }
    }
}

// ---------------------------------------------------------------- settings

/// Gradient isolation settings the host answered the registration with.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationPolicy {
    /// Cosine counted as a violation.
    pub cosine_threshold: f64,
    /// Coordinates sampled per parameter (k).
    pub samples_per_param: u32,
    /// Violations within the window that open the breaker.
    pub violations_to_trip: u32,
    /// Window length, steps.
    pub window_steps: u64,
    /// Fail on the first violation.
    pub fail_fast: bool,
}

#[pymethods]
impl IsolationPolicy {
    #[new]
    fn new(
        cosine_threshold: f64,
        samples_per_param: u32,
        violations_to_trip: u32,
        window_steps: u64,
        fail_fast: bool,
    ) -> Self {
        IsolationPolicy { cosine_threshold, samples_per_param, violations_to_trip, window_steps, fail_fast }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// Knowledge-distillation settings the host holds.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct DistillationPolicy {
    /// KD loss weight.
    pub weight: f64,
    /// Softmax temperature.
    pub temperature: f64,
    /// Teacher memory budget, bytes.
    pub teacher_memory_bytes: u64,
}

#[pymethods]
impl DistillationPolicy {
    #[new]
    fn new(weight: f64, temperature: f64, teacher_memory_bytes: u64) -> Self {
        DistillationPolicy { weight, temperature, teacher_memory_bytes }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// The host's answer to a registration.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSettings {
    /// Contract version the host speaks.
    pub contract_version: u32,
    /// Gradient isolation.
    pub isolation: IsolationPolicy,
    /// Knowledge distillation.
    pub distillation: DistillationPolicy,
}

#[pymethods]
impl TrainerSettings {
    #[new]
    fn new(contract_version: u32, isolation: IsolationPolicy, distillation: DistillationPolicy) -> Self {
        TrainerSettings { contract_version, isolation, distillation }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<wire::TrainerSettings> for TrainerSettings {
    fn from(s: wire::TrainerSettings) -> Self {
        let wire::IsolationPolicy { cosine_threshold, samples_per_param, violations_to_trip, window_steps, fail_fast } =
            s.isolation;
        let wire::DistillationPolicy { weight, temperature, teacher_memory_bytes } = s.distillation;
        TrainerSettings {
            contract_version: s.contract_version,
            isolation: IsolationPolicy {
                cosine_threshold,
                samples_per_param,
                violations_to_trip,
                window_steps,
                fail_fast,
            },
            distillation: DistillationPolicy { weight, temperature, teacher_memory_bytes },
        }
    }
}

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
}

#[pymethods]
impl StepReport {
    #[new]
    #[pyo3(signature = (step, training_run_id, task_loss, global_metric = None, seeds = Vec::new(), distillation = None, checkpoints = Vec::new()))]
    fn new(
        step: u64,
        training_run_id: String,
        task_loss: f64,
        global_metric: Option<f64>,
        seeds: Vec<SeedStepReport>,
        distillation: Option<DistillationReport>,
        checkpoints: Vec<CheckpointEvent>,
    ) -> Self {
        StepReport { step, training_run_id, task_loss, global_metric, seeds, distillation, checkpoints }
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
        }
    }
}

// ---------------------------------------------------------------- blueprints and kernels

/// Shape and dtype of one declared kernel input or output.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Shape, `None` for the batch dimension.
    pub shape: Vec<Option<u64>>,
    /// Element type.
    pub dtype: DType,
}

#[pymethods]
impl TensorSpec {
    #[new]
    fn new(shape: Vec<Option<u64>>, dtype: DType) -> Self {
        TensorSpec { shape, dtype }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// A blueprint as the Urza catalog describes it.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct BlueprintDescriptor {
    /// Catalog id.
    pub blueprint_id: String,
    /// Human-readable name.
    pub name: String,
    /// Risk tier.
    pub tier: BlueprintTier,
    /// Inclusive `(min, max)` per parameter name.
    pub parameter_bounds: BTreeMap<String, (f64, f64)>,
    /// Risk score in [0, 1].
    pub risk: f64,
    /// May only run in quarantine.
    pub quarantine_only: bool,
    /// Needs explicit approval.
    pub approval_required: bool,
    /// Declared kernel inputs.
    pub inputs: Vec<TensorSpec>,
    /// Declared kernel outputs.
    pub outputs: Vec<TensorSpec>,
}

#[pymethods]
impl BlueprintDescriptor {
    #[new]
    #[pyo3(signature = (blueprint_id, name, tier, inputs, outputs, parameter_bounds = BTreeMap::new(), risk = 0.0, quarantine_only = false, approval_required = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        blueprint_id: String,
        name: String,
        tier: BlueprintTier,
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        parameter_bounds: BTreeMap<String, (f64, f64)>,
        risk: f64,
        quarantine_only: bool,
        approval_required: bool,
    ) -> Self {
        BlueprintDescriptor {
            blueprint_id,
            name,
            tier,
            parameter_bounds,
            risk,
            quarantine_only,
            approval_required,
            inputs,
            outputs,
        }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

fn tensor_spec_from_wire(t: leyline::TensorSpec) -> TensorSpec {
    TensorSpec { shape: dims_from_wire(&t.shape), dtype: t.dtype.into() }
}

impl From<leyline::BlueprintDescriptor> for BlueprintDescriptor {
    fn from(d: leyline::BlueprintDescriptor) -> Self {
        let leyline::BlueprintDescriptor {
            blueprint_id,
            name,
            tier,
            parameter_bounds,
            risk,
            quarantine_only,
            approval_required,
            interface,
        } = d;
        BlueprintDescriptor {
            blueprint_id,
            name,
            tier: tier.into(),
            parameter_bounds: parameter_bounds.into_iter().map(|(k, b)| (k, (b.min, b.max))).collect(),
            risk,
            quarantine_only,
            approval_required,
            inputs: interface.inputs.into_iter().map(tensor_spec_from_wire).collect(),
            outputs: interface.outputs.into_iter().map(tensor_spec_from_wire).collect(),
        }
    }
}

/// A verified kernel artifact as the control plane serves it: TorchScript
/// bytes, the SHA-256 they were verified against, and the descriptor.
#[pyclass(frozen, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct KernelArtifact {
    /// Blueprint id.
    #[pyo3(get)]
    pub blueprint_id: String,
    /// SHA-256 (hex) the daemon verified the bytes against.
    #[pyo3(get)]
    pub sha256: String,
    /// The blueprint's descriptor.
    #[pyo3(get)]
    pub descriptor: BlueprintDescriptor,
    bytes: Vec<u8>,
}

#[pymethods]
impl KernelArtifact {
    #[new]
    fn new(blueprint_id: String, sha256: String, bytes: &Bound<'_, PyBytes>, descriptor: BlueprintDescriptor) -> Self {
        KernelArtifact { blueprint_id, sha256, descriptor, bytes: bytes.as_bytes().to_vec() }
    }

    /// The TorchScript bytes (a copy).
    #[getter]
    fn bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    fn __len__(&self) -> usize {
        self.bytes.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "KernelArtifact(blueprint_id={:?}, sha256={:?}, {} bytes)",
            self.blueprint_id,
            self.sha256,
            self.bytes.len()
        )
    }
}

impl From<wire::KernelArtifact> for KernelArtifact {
    fn from(k: wire::KernelArtifact) -> Self {
        let wire::KernelArtifact { blueprint_id, sha256, bytes, descriptor } = k;
        KernelArtifact { blueprint_id, sha256, descriptor: descriptor.into(), bytes }
    }
}

// ---------------------------------------------------------------- state and outcomes

/// A snapshot of one seed, as operators and controllers see it.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct SeedState {
    /// Seed id.
    pub seed_id: String,
    /// Site.
    pub site: String,
    /// Current stage.
    pub stage: SeedStage,
    /// Blueprint, once germinated.
    pub blueprint_id: Option<String>,
    /// Current α.
    pub alpha: f64,
    /// Steps spent in the current stage.
    pub epoch: u64,
    /// Blend mode, once known.
    pub blend_mode: Option<BlendMode>,
    /// Health.
    pub health: HealthStatus,
    /// Whether paused.
    pub paused: bool,
    /// Blend statistics of the last reported step.
    pub blend: Option<BlendReport>,
}

#[pymethods]
impl SeedState {
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<leyline::SeedState> for SeedState {
    fn from(s: leyline::SeedState) -> Self {
        let leyline::SeedState { seed_id, site, stage, blueprint_id, alpha, epoch, blend_mode, health, paused, blend } =
            s;
        SeedState {
            seed_id,
            site,
            stage: stage.into(),
            blueprint_id,
            alpha,
            epoch,
            blend_mode: blend_mode.map(Into::into),
            health: health.into(),
            paused,
            blend: blend.map(Into::into),
        }
    }
}

/// Health summary of a host.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// Contract version.
    pub contract_version: u32,
    /// Registered run.
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

#[pymethods]
impl HostStatus {
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<wire::HostStatus> for HostStatus {
    fn from(s: wire::HostStatus) -> Self {
        let wire::HostStatus {
            contract_version,
            training_run_id,
            seeds,
            commands_accepted,
            commands_rejected,
            last_step,
        } = s;
        HostStatus { contract_version, training_run_id, seeds, commands_accepted, commands_rejected, last_step }
    }
}

/// Accepted, or rejected with a reason code; both carry attributes.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the command was accepted.
    pub accepted: bool,
    /// Why it was rejected (None exactly when accepted).
    pub reason: Option<ReasonCode>,
    /// Detail (what was wrong, which key, which stage).
    pub attributes: BTreeMap<String, String>,
}

#[pymethods]
impl Outcome {
    /// Raises `CommandRejected` (code = the reason code, `.outcome` = this)
    /// if the command was rejected; returns `self` otherwise.
    fn raise_for_rejection<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        Outcome::raise_for_rejection_of(slf)
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl Outcome {
    /// See `raise_for_rejection`.
    pub(crate) fn raise_for_rejection_of<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let me = slf.get();
        if me.accepted {
            return Ok(slf.clone());
        }
        let py = slf.py();
        let code = me.reason.map_or("rejected", ReasonCode::wire_name);
        let detail = me.attributes.get("detail").map(String::as_str).unwrap_or("");
        let extra = PyDict::new(py);
        extra.set_item("outcome", slf)?;
        Err(errors::kasmina_error(
            py,
            "CommandRejected",
            format!("command rejected: {code}: {detail}"),
            code,
            Some(&extra),
        ))
    }
}

impl From<leyline::Outcome> for Outcome {
    fn from(o: leyline::Outcome) -> Self {
        let leyline::Outcome { accepted, reason, attributes } = o;
        Outcome { accepted, reason: reason.map(Into::into), attributes }
    }
}

/// One telemetry event.
#[pyclass(frozen, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryEvent {
    /// Dotted name, e.g. `kasmina.gate.verdict`.
    #[pyo3(get)]
    pub name: String,
    /// Severity.
    #[pyo3(get)]
    pub level: TelemetryLevel,
    /// Seed concerned, if any.
    #[pyo3(get)]
    pub seed_id: Option<String>,
    /// Message.
    #[pyo3(get)]
    pub message: String,
    /// When (ms since the Unix epoch).
    #[pyo3(get)]
    pub timestamp_ms: u64,
    attributes: BTreeMap<String, AttrValue>,
}

#[pymethods]
impl TelemetryEvent {
    /// Structured detail: `str`, `int`, `float` or `bool` values.
    #[getter]
    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in &self.attributes {
            match v {
                AttrValue::Str(s) => dict.set_item(k, s)?,
                AttrValue::Int(i) => dict.set_item(k, i)?,
                AttrValue::Float(f) => dict.set_item(k, f)?,
                AttrValue::Bool(b) => dict.set_item(k, b)?,
            }
        }
        Ok(dict)
    }

    /// One attribute rendered as text exactly as the Rust side renders it
    /// (`Display`), or `""` when absent: timelines built in Python and in
    /// Rust then compare equal.
    fn attr_text(&self, key: &str) -> String {
        self.attributes.get(key).map(ToString::to_string).unwrap_or_default()
    }

    fn __repr__(&self) -> String {
        format!(
            "TelemetryEvent(name={:?}, level={}, seed_id={:?}, message={:?})",
            self.name,
            self.level.wire_name(),
            self.seed_id,
            self.message
        )
    }
}

impl From<leyline::TelemetryEvent> for TelemetryEvent {
    fn from(e: leyline::TelemetryEvent) -> Self {
        let leyline::TelemetryEvent { name, level, seed_id, message, attributes, timestamp_ms } = e;
        TelemetryEvent { name, level: level.into(), seed_id, message, timestamp_ms, attributes }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SiteSpec>()?;
    m.add_class::<SlotSpec>()?;
    m.add_class::<HeldSeed>()?;
    m.add_class::<HostRegistration>()?;
    m.add_class::<IsolationPolicy>()?;
    m.add_class::<DistillationPolicy>()?;
    m.add_class::<TrainerSettings>()?;
    m.add_class::<BlendSpec>()?;
    m.add_class::<BlendReport>()?;
    m.add_class::<SeedStepReport>()?;
    m.add_class::<DistillationReport>()?;
    m.add_class::<StepReport>()?;
    m.add_class::<TensorSpec>()?;
    m.add_class::<BlueprintDescriptor>()?;
    m.add_class::<KernelArtifact>()?;
    m.add_class::<SeedState>()?;
    m.add_class::<HostStatus>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<TelemetryEvent>()?;
    Ok(())
}
