//! Registration and the settings the host answers it with.

use super::*;

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
    /// Data-parallel ranks of the job (1: a single process).
    pub world_size: u32,
}

#[pymethods]
impl HostRegistration {
    #[new]
    #[pyo3(signature = (training_run_id, sites, slots, held = Vec::new(), checkpoints = Vec::new(), world_size = 1))]
    fn new(
        training_run_id: String,
        sites: Vec<SiteSpec>,
        slots: Vec<SlotSpec>,
        held: Vec<HeldSeed>,
        checkpoints: Vec<String>,
        world_size: u32,
    ) -> Self {
        HostRegistration { training_run_id, sites, slots, held, checkpoints, world_size }
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
            world_size: r.world_size,
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
    /// Postcard bytes (what rank 0 broadcasts to the other ranks).
    fn to_bytes(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        crate::ranks::encode(py, &wire::TrainerSettings::from(self))
    }
    /// Decodes `to_bytes()`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        Ok(crate::ranks::decode::<wire::TrainerSettings>(py, data, "trainer settings")?.into())
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

impl From<&TrainerSettings> for wire::TrainerSettings {
    fn from(s: &TrainerSettings) -> Self {
        let IsolationPolicy { cosine_threshold, samples_per_param, violations_to_trip, window_steps, fail_fast } =
            s.isolation.clone();
        let DistillationPolicy { weight, temperature, teacher_memory_bytes } = s.distillation.clone();
        wire::TrainerSettings {
            contract_version: s.contract_version,
            isolation: wire::IsolationPolicy {
                cosine_threshold,
                samples_per_param,
                violations_to_trip,
                window_steps,
                fail_fast,
            },
            distillation: wire::DistillationPolicy { weight, temperature, teacher_memory_bytes },
        }
    }
}
