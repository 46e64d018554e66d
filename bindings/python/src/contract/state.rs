//! Blueprints and kernel artifacts; seed states, outcomes and telemetry.

use super::*;

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
