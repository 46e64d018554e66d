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
pub(crate) use crate::ranks::RankSummary;

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

mod registration;
mod reports;
mod state;

pub use registration::*;
pub use reports::*;
pub use state::*;

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
