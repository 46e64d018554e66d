//! Exported state of one seed (`export_seed_states`).

use serde::{Deserialize, Serialize};

use crate::{BlendMode, HealthStatus, SeedStage};

/// A snapshot of one seed, as operators and controllers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedState {
    /// Seed id.
    pub seed_id: String,
    /// Site (layer) the seed is grafted at.
    pub site: String,
    /// Current stage.
    pub stage: SeedStage,
    /// Blueprint, once germinated.
    pub blueprint_id: Option<String>,
    /// Current blend α in [0, 1].
    pub alpha: f64,
    /// Training steps spent in the current stage.
    pub epoch: u64,
    /// Blend mode, once known.
    pub blend_mode: Option<BlendMode>,
    /// Health classification.
    pub health: HealthStatus,
    /// Whether the seed is paused (swapped out of the forward path).
    pub paused: bool,
    /// Blend statistics of the last reported step (None when no blend ran).
    pub blend: Option<crate::api::BlendReport>,
}
