//! [`TrainerConfig`]: what a trainer declares once — its run, device, seed
//! sites with their feature shapes, seed slots, and how seeds are optimised.

use std::path::PathBuf;

use kasmina_tensor::SeedOptimizerConfig;
use leyline::Dim;
use leyline::api::{HostRegistration, SiteSpec, SlotSpec};
use tch::Device;

use crate::error::{Result, TrainerError};

/// Seed optimizer used when no other is configured: Adam, lr 1e-3.
pub const DEFAULT_SEED_OPTIMIZER: SeedOptimizerConfig =
    SeedOptimizerConfig::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, weight_decay: 0.0 };

/// The trainer's declaration, built with chained calls:
///
/// ```no_run
/// # use kasmina_trainer::TrainerConfig;
/// # use leyline::Dim;
/// let config = TrainerConfig::new("run-1", tch::Device::Cpu)
///     .site("hidden", [Dim::Batch, Dim::Fixed(64)])
///     .slot("seed-a", "hidden");
/// ```
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    pub(crate) run_id: String,
    pub(crate) device: Device,
    pub(crate) sites: Vec<SiteSpec>,
    pub(crate) slots: Vec<SlotSpec>,
    pub(crate) seed_optimizer: SeedOptimizerConfig,
    pub(crate) checkpoint_dir: Option<PathBuf>,
}

impl TrainerConfig {
    /// A configuration for training run `run_id` on `device`, with no sites yet.
    pub fn new(run_id: impl Into<String>, device: Device) -> Self {
        TrainerConfig {
            run_id: run_id.into(),
            device,
            sites: Vec::new(),
            slots: Vec::new(),
            seed_optimizer: DEFAULT_SEED_OPTIMIZER,
            checkpoint_dir: None,
        }
    }

    /// Declares a seed site (in forward order) with its feature shape, batch first.
    pub fn site(mut self, name: impl Into<String>, feature_shape: impl Into<Vec<Dim>>) -> Self {
        self.sites.push(SiteSpec { name: name.into(), feature_shape: feature_shape.into() });
        self
    }

    /// Declares a seed slot: a seed id commands may target, grafting at `site`.
    pub fn slot(mut self, seed_id: impl Into<String>, site: impl Into<String>) -> Self {
        self.slots.push(SlotSpec { seed_id: seed_id.into(), site: site.into() });
        self
    }

    /// How seed parameters are optimised once they train.
    pub fn seed_optimizer(mut self, config: SeedOptimizerConfig) -> Self {
        self.seed_optimizer = config;
        self
    }

    /// Where durable rollback checkpoints (the full path) are written, one
    /// file per rollback point (created if missing). Without it a durable
    /// checkpoint directive fails — loudly, never silently kept in memory.
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self
    }

    /// Checks what the control plane cannot see: a non-empty run id, at
    /// least one site, slots on declared sites. (The host re-checks the rest.)
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::Config(m));
        if self.run_id.trim().is_empty() {
            return bad("the training run id is empty: pass the run's real id".into());
        }
        if self.sites.is_empty() {
            return bad("no seed sites: declare at least one with TrainerConfig::site".into());
        }
        for slot in &self.slots {
            if !self.sites.iter().any(|s| s.name == slot.site) {
                return bad(format!("slot {} names site {:?}, which is not declared", slot.seed_id, slot.site));
            }
        }
        Ok(())
    }

    pub(crate) fn registration(&self) -> HostRegistration {
        HostRegistration::new(self.run_id.clone(), self.sites.clone(), self.slots.clone())
    }
}
