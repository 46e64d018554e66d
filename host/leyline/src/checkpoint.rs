//! Rollback checkpoints and trainer resynchronisation: what travels between
//! the control plane and the trainer so that a rollback point can return the
//! model to where it was (SPEC.md §8), and so that a trainer re-registering
//! after a daemon restart keeps the seeds it still holds.
//!
//! A rollback point has two halves. The control plane captures its own half
//! (every seed's state, the breakers) when it records the point and asks the
//! trainer for the other half with [`GraftDirective::Checkpoint`]: a copy of
//! the weights (host parameters and every grafted seed's kernel parameters,
//! plus each slot's state), in memory for the fast path or on disk for the
//! full path. The trainer times the real capture and reports it in its next
//! [`StepReport`] as a [`CheckpointEvent`]; only then is the point usable.
//! A ROLLBACK command sends [`GraftDirective::RestoreCheckpoint`]; the
//! trainer restores and reports again, and the control plane restores its
//! half when the trainer confirms — so both halves change together or not
//! at all.
//!
//! [`GraftDirective::Checkpoint`]: crate::api::GraftDirective::Checkpoint
//! [`GraftDirective::RestoreCheckpoint`]: crate::api::GraftDirective::RestoreCheckpoint
//! [`StepReport`]: crate::api::StepReport

use serde::{Deserialize, Serialize};

use crate::SeedStage;

/// What the trainer did with a checkpoint since its last step report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckpointEvent {
    /// The weights were captured.
    Captured {
        /// Rollback point id (from the directive).
        point_id: String,
        /// Written to disk (full path) rather than kept in memory.
        durable: bool,
        /// Wall time of the capture, µs, measured by the trainer around the
        /// tensor copies (and, when durable, the write, fsync and rename).
        elapsed_us: u64,
        /// Bytes held (tensor data; the file size when durable).
        bytes: u64,
    },
    /// The model was returned to the checkpoint.
    Restored {
        /// Rollback point id.
        point_id: String,
        /// Wall time of the restore, µs, measured by the trainer around
        /// loading (and verifying) the checkpoint and copying it back.
        elapsed_us: u64,
    },
    /// A capture or restore failed; nothing was changed by it.
    Failed {
        /// Rollback point id.
        point_id: String,
        /// What was attempted.
        action: CheckpointAction,
        /// Why, for the operator.
        reason: String,
    },
    /// The trainer dropped a checkpoint it held (bounded retention): the
    /// point can no longer be restored.
    Evicted {
        /// Rollback point id.
        point_id: String,
        /// Why.
        reason: String,
    },
}

impl CheckpointEvent {
    /// The rollback point the event concerns.
    pub fn point_id(&self) -> &str {
        match self {
            CheckpointEvent::Captured { point_id, .. }
            | CheckpointEvent::Restored { point_id, .. }
            | CheckpointEvent::Failed { point_id, .. }
            | CheckpointEvent::Evicted { point_id, .. } => point_id,
        }
    }
}

/// Which half of the checkpoint protocol an event answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointAction {
    /// [`GraftDirective::Checkpoint`](crate::api::GraftDirective::Checkpoint).
    Capture,
    /// [`GraftDirective::RestoreCheckpoint`](crate::api::GraftDirective::RestoreCheckpoint).
    Restore,
}

impl CheckpointAction {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckpointAction::Capture => "capture",
            CheckpointAction::Restore => "restore",
        }
    }
}

/// A seed the trainer holds grafted, declared when it (re-)registers so the
/// control plane can adopt it instead of culling it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldSeed {
    /// Seed id (one of the registration's slots).
    pub seed_id: String,
    /// Blueprint of the grafted kernel.
    pub blueprint_id: String,
    /// SHA-256 of the kernel the trainer runs; adopted only if it is the
    /// digest the control plane verified.
    pub kernel_sha256: String,
    /// Stage the trainer runs the seed in.
    pub stage: SeedStage,
    /// α the trainer applies.
    pub alpha: f64,
    /// Whether the trainer has it swapped out of the forward path.
    pub paused: bool,
}
