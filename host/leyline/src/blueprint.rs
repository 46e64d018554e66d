//! Blueprint descriptors as the Urza catalog publishes them (SPEC.md §7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Risk tier of a blueprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlueprintTier {
    /// Reviewed, low-risk building blocks.
    Safe,
    /// Allowed, watched more closely.
    Experimental,
    /// Refused unless explicitly approved.
    HighRisk,
}

impl BlueprintTier {
    /// Stable name used in catalogs and telemetry.
    pub const fn as_str(self) -> &'static str {
        match self {
            BlueprintTier::Safe => "SAFE",
            BlueprintTier::Experimental => "EXPERIMENTAL",
            BlueprintTier::HighRisk => "HIGH_RISK",
        }
    }
}

/// Inclusive bounds a blueprint declares for one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParameterBounds {
    /// Smallest allowed value.
    pub min: f64,
    /// Largest allowed value.
    pub max: f64,
}

impl ParameterBounds {
    /// Whether `value` is finite and within `[min, max]`.
    pub fn admits(&self, value: f64) -> bool {
        value.is_finite() && value >= self.min && value <= self.max
    }
}

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// The symbolic batch dimension (any size ≥ 1).
    Batch,
    /// A fixed size.
    Fixed(u64),
}

/// Element type of a declared tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
}

/// Shape and dtype of one kernel input or output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Dimensions, outermost first.
    pub shape: Vec<Dim>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// Whether a concrete shape matches this spec (batch dims accept any size ≥ 1).
    pub fn matches(&self, concrete: &[i64]) -> bool {
        self.shape.len() == concrete.len()
            && self.shape.iter().zip(concrete).all(|(d, &c)| match d {
                Dim::Batch => c >= 1,
                Dim::Fixed(n) => u64::try_from(c).is_ok_and(|c| c == *n),
            })
    }
}

/// The I/O interface a kernel declares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelInterface {
    /// Inputs, in call order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in return order.
    pub outputs: Vec<TensorSpec>,
}

/// A blueprint as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueprintDescriptor {
    /// Catalog id (what commands name).
    pub blueprint_id: String,
    /// Human-readable name.
    pub name: String,
    /// Risk tier.
    pub tier: BlueprintTier,
    /// Bounds per parameter name; a parameter not listed here is not accepted.
    pub parameter_bounds: BTreeMap<String, ParameterBounds>,
    /// Risk score in [0, 1].
    pub risk: f64,
    /// May only run in a quarantine context.
    pub quarantine_only: bool,
    /// Needs an explicit approval to be admitted.
    pub approval_required: bool,
    /// Declared kernel I/O.
    pub interface: KernelInterface,
}
