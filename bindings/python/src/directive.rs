//! `GraftDirective`: what the control plane tells a trainer to do before its
//! next step. One Python class per variant (`GraftDirective.Attach`,
//! `GraftDirective.Stage`, …), each a subclass of `GraftDirective` with the
//! variant's fields as attributes, so `isinstance` and `match` both work.

use std::collections::BTreeMap;

use pyo3::prelude::*;

use leyline::api as wire;

use crate::contract::BlendSpec;
use crate::enums::{CheckpointAction, SeedStage};

/// A graft directive (see the variants).
#[pyclass(frozen, from_py_object, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub enum GraftDirective {
    /// Load the named verified kernel and graft it at `site`.
    Attach {
        /// Seed id.
        seed_id: String,
        /// Site to graft at.
        site: String,
        /// Blueprint to fetch.
        blueprint_id: String,
        /// SHA-256 the artifact must have.
        artifact_sha256: String,
        /// How to blend once blending starts.
        blend: BlendSpec,
    },
    /// Run the seed in `stage` with blend weight `alpha` from now on.
    Stage {
        /// Seed id.
        seed_id: String,
        /// Stage.
        stage: SeedStage,
        /// α for the next step.
        alpha: f64,
    },
    /// Remove the seed from the model.
    Detach {
        /// Seed id.
        seed_id: String,
        /// Why.
        reason: String,
    },
    /// Drop the knowledge-distillation teacher.
    DropTeacher {},
    /// Apply optimizer hyperparameters.
    Optimizer {
        /// Optimizer id.
        optimizer_id: String,
        /// Hyperparameters by name.
        hyperparameters: BTreeMap<String, f64>,
    },
    /// Swap the seed out of (or back into) the forward path.
    Pause {
        /// Seed id.
        seed_id: String,
        /// `True` to pause.
        paused: bool,
    },
    /// Capture a checkpoint of the model's weights and every grafted seed's
    /// slot for rollback point `point_id`; report it in the next step report.
    Checkpoint {
        /// Rollback point id.
        point_id: String,
        /// On disk (survives a trainer crash) rather than in memory.
        durable: bool,
    },
    /// Return the model's weights and seed slots to checkpoint `point_id`,
    /// all or nothing; report it in the next step report.
    RestoreCheckpoint {
        /// Rollback point id.
        point_id: String,
    },
}

#[pymethods]
impl GraftDirective {
    /// The seed this directive concerns (None for DropTeacher / Optimizer).
    #[getter]
    fn target(&self) -> Option<String> {
        match self {
            GraftDirective::Attach { seed_id, .. }
            | GraftDirective::Stage { seed_id, .. }
            | GraftDirective::Detach { seed_id, .. }
            | GraftDirective::Pause { seed_id, .. } => Some(seed_id.clone()),
            GraftDirective::DropTeacher {}
            | GraftDirective::Optimizer { .. }
            | GraftDirective::Checkpoint { .. }
            | GraftDirective::RestoreCheckpoint { .. } => None,
        }
    }

    fn __repr__(&self) -> String {
        format!("GraftDirective.{self:?}")
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<GraftDirective>().is_ok_and(|o| *o.get() == *self)
    }
}

impl From<wire::GraftDirective> for GraftDirective {
    fn from(d: wire::GraftDirective) -> Self {
        match d {
            wire::GraftDirective::Attach { seed_id, site, blueprint_id, artifact_sha256, blend } => {
                GraftDirective::Attach { seed_id, site, blueprint_id, artifact_sha256, blend: blend.into() }
            }
            wire::GraftDirective::Stage { seed_id, stage, alpha } => {
                GraftDirective::Stage { seed_id, stage: stage.into(), alpha }
            }
            wire::GraftDirective::Detach { seed_id, reason } => GraftDirective::Detach { seed_id, reason },
            wire::GraftDirective::DropTeacher => GraftDirective::DropTeacher {},
            wire::GraftDirective::Optimizer { optimizer_id, hyperparameters } => {
                GraftDirective::Optimizer { optimizer_id, hyperparameters }
            }
            wire::GraftDirective::Pause { seed_id, paused } => GraftDirective::Pause { seed_id, paused },
            wire::GraftDirective::Checkpoint { point_id, durable } => GraftDirective::Checkpoint { point_id, durable },
            wire::GraftDirective::RestoreCheckpoint { point_id } => GraftDirective::RestoreCheckpoint { point_id },
        }
    }
}

/// What the trainer did with a checkpoint since its last step report (one
/// class per variant, like `GraftDirective`).
#[pyclass(frozen, from_py_object, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointEvent {
    /// The weights were captured.
    Captured {
        /// Rollback point id.
        point_id: String,
        /// Written to disk rather than kept in memory.
        durable: bool,
        /// Wall time of the capture, µs.
        elapsed_us: u64,
        /// Bytes held.
        bytes: u64,
    },
    /// The model was returned to the checkpoint.
    Restored {
        /// Rollback point id.
        point_id: String,
        /// Wall time of the restore, µs.
        elapsed_us: u64,
    },
    /// A capture or restore failed; nothing was changed by it.
    Failed {
        /// Rollback point id.
        point_id: String,
        /// What was attempted.
        action: CheckpointAction,
        /// Why.
        reason: String,
    },
    /// The trainer dropped a checkpoint it held.
    Evicted {
        /// Rollback point id.
        point_id: String,
        /// Why.
        reason: String,
    },
}

#[pymethods]
impl CheckpointEvent {
    fn __repr__(&self) -> String {
        format!("CheckpointEvent.{self:?}")
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<CheckpointEvent>().is_ok_and(|o| *o.get() == *self)
    }
}

impl From<&CheckpointEvent> for wire::CheckpointEvent {
    fn from(e: &CheckpointEvent) -> Self {
        match e.clone() {
            CheckpointEvent::Captured { point_id, durable, elapsed_us, bytes } => {
                wire::CheckpointEvent::Captured { point_id, durable, elapsed_us, bytes }
            }
            CheckpointEvent::Restored { point_id, elapsed_us } => {
                wire::CheckpointEvent::Restored { point_id, elapsed_us }
            }
            CheckpointEvent::Failed { point_id, action, reason } => {
                wire::CheckpointEvent::Failed { point_id, action: action.into(), reason }
            }
            CheckpointEvent::Evicted { point_id, reason } => wire::CheckpointEvent::Evicted { point_id, reason },
        }
    }
}
