//! Applying the control plane's [`GraftDirective`]s to the trainer's model.
//!
//! Every directive either takes effect or is refused with a
//! [`TrainerEvent`] saying why; none aborts the training run. A kernel is
//! grafted only after its SHA-256 matches the directive, and a seed that
//! could not be set up is simply not grafted: the next step report shows
//! it without a kernel and the control plane's gate culls it.

use std::collections::BTreeMap;

use kasmina_tensor::{BlendSpec, ScriptedKernel, SeedKernel, SeedOptimizerConfig, SeedSlot};
use leyline::SeedStage;
use leyline::api::{CheckpointAction, GraftDirective, KasminaApi};
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::seed::SeedRuntime;
use crate::trainer::Trainer;

/// What applying one directive did.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainerEvent {
    /// A verified kernel was grafted.
    Attached {
        /// Seed id.
        seed_id: String,
        /// Blueprint.
        blueprint_id: String,
    },
    /// A kernel was not grafted (digest mismatch, load failure, bad blend).
    KernelRefused {
        /// Seed id.
        seed_id: String,
        /// Blueprint.
        blueprint_id: String,
        /// Why.
        reason: String,
    },
    /// The seed moved to another stage.
    StageChanged {
        /// Seed id.
        seed_id: String,
        /// New stage.
        stage: SeedStage,
    },
    /// The seed was removed from the model.
    Detached {
        /// Seed id.
        seed_id: String,
        /// Why (from the control plane).
        reason: String,
    },
    /// The seed was paused or resumed.
    Paused {
        /// Seed id.
        seed_id: String,
        /// Paused now?
        paused: bool,
    },
    /// The distillation teacher was dropped.
    TeacherDropped {
        /// Whether a teacher was installed.
        had_teacher: bool,
    },
    /// Optimizer hyperparameters were applied to the seed optimizers. The
    /// host optimizer belongs to the caller: apply `learning_rate` there too.
    OptimizerApplied {
        /// Optimizer id from the command.
        optimizer_id: String,
        /// The learning rate applied, if the command set one.
        learning_rate: Option<f64>,
        /// Hyperparameters this trainer does not apply (named, not dropped silently).
        not_applied: Vec<String>,
    },
    /// A directive could not be applied; the seed (if any) was ungrafted.
    DirectiveRefused {
        /// Seed id, when the directive named one.
        seed_id: Option<String>,
        /// Why.
        reason: String,
    },
    /// A rollback checkpoint of the weights and seed slots was captured.
    CheckpointCaptured {
        /// Rollback point id.
        point_id: String,
        /// Written to the checkpoint directory rather than kept in memory.
        durable: bool,
        /// Bytes held.
        bytes: u64,
    },
    /// The model was returned to a rollback checkpoint.
    CheckpointRestored {
        /// Rollback point id.
        point_id: String,
    },
    /// A checkpoint capture or restore failed; nothing was changed by it.
    CheckpointFailed {
        /// Rollback point id.
        point_id: String,
        /// Capture or restore.
        action: CheckpointAction,
        /// Why.
        reason: String,
    },
}

/// Hyperparameter names accepted as the learning rate.
const LEARNING_RATE_KEYS: [&str; 2] = ["lr", "learning_rate"];

impl<A: KasminaApi> Trainer<A> {
    /// Applies one directive, recording what happened.
    pub(crate) fn apply(&mut self, directive: &GraftDirective, events: &mut Vec<TrainerEvent>) {
        match directive {
            GraftDirective::Attach { seed_id, site, blueprint_id, artifact_sha256, blend } => {
                let event = match self.attach(seed_id, site, blueprint_id, artifact_sha256, blend) {
                    Ok(()) => TrainerEvent::Attached { seed_id: seed_id.clone(), blueprint_id: blueprint_id.clone() },
                    Err(reason) => {
                        tracing::warn!(seed = %seed_id, blueprint = %blueprint_id, %reason, "kasmina.trainer.kernel_refused");
                        TrainerEvent::KernelRefused {
                            seed_id: seed_id.clone(),
                            blueprint_id: blueprint_id.clone(),
                            reason,
                        }
                    }
                };
                events.push(event);
            }
            GraftDirective::Stage { seed_id, stage, alpha } => match self.stage(seed_id, *stage, *alpha) {
                Ok(changed) => {
                    if changed {
                        events.push(TrainerEvent::StageChanged { seed_id: seed_id.clone(), stage: *stage });
                    }
                }
                Err(reason) => {
                    self.ungraft(seed_id);
                    events.push(TrainerEvent::DirectiveRefused { seed_id: Some(seed_id.clone()), reason });
                }
            },
            GraftDirective::Detach { seed_id, reason } => {
                if self.ungraft(seed_id) {
                    events.push(TrainerEvent::Detached { seed_id: seed_id.clone(), reason: reason.clone() });
                }
            }
            GraftDirective::Pause { seed_id, paused } => match self.seeds.get_mut(seed_id) {
                Some(seed) => {
                    seed.slot.set_paused(*paused);
                    events.push(TrainerEvent::Paused { seed_id: seed_id.clone(), paused: *paused });
                }
                None => events.push(TrainerEvent::DirectiveRefused {
                    seed_id: Some(seed_id.clone()),
                    reason: "pause for a seed this trainer has not grafted".to_owned(),
                }),
            },
            GraftDirective::DropTeacher => {
                let had_teacher = self.distiller.drop_teacher().is_some();
                self.registry.drop_teacher();
                events.push(TrainerEvent::TeacherDropped { had_teacher });
            }
            GraftDirective::Optimizer { optimizer_id, hyperparameters } => {
                events.push(self.optimizer(optimizer_id, hyperparameters));
            }
            GraftDirective::Checkpoint { point_id, durable } => {
                events.push(self.capture_checkpoint(point_id, *durable));
            }
            GraftDirective::RestoreCheckpoint { point_id } => {
                events.push(self.restore_checkpoint(point_id));
            }
        }
    }

    fn attach(
        &mut self,
        seed_id: &str,
        site: &str,
        blueprint_id: &str,
        artifact_sha256: &str,
        blend: &leyline::api::BlendSpec,
    ) -> Result<(), String> {
        let (slot, params) = self.build_slot(seed_id, site, blueprint_id, artifact_sha256, blend)?;
        // A re-attach replaces whatever the slot held before.
        self.ungraft(seed_id);
        // Ownership is recorded at graft time; the parameters join an
        // optimizer only when the seed starts training.
        self.registry.register_seed(seed_id, &params).map_err(|e| e.to_string())?;
        let runtime = SeedRuntime::new(slot, blueprint_id.to_owned(), artifact_sha256.to_owned(), blend.clone());
        self.seeds.insert(seed_id.to_owned(), runtime);
        Ok(())
    }

    /// A GERMINATED slot with the verified kernel attached, not yet grafted:
    /// the kernel is fetched and grafted only if its SHA-256 matches.
    pub(crate) fn build_slot(
        &self,
        seed_id: &str,
        site: &str,
        blueprint_id: &str,
        artifact_sha256: &str,
        blend: &leyline::api::BlendSpec,
    ) -> Result<(SeedSlot, Vec<Tensor>), String> {
        let declared = self.config.slots.iter().any(|s| s.seed_id == seed_id && s.site == site);
        if !declared {
            return Err(format!("no slot {seed_id} at site {site:?} was registered by this trainer"));
        }
        let spec = BlendSpec::from_contract(blend).map_err(|e| format!("blend refused: {e}"))?;
        let artifact = self.api.fetch_kernel(blueprint_id).map_err(|e| format!("fetch failed: {e}"))?;
        let digest = hex::encode(Sha256::digest(&artifact.bytes));
        // Never graft bytes other than the ones the directive names.
        if digest != artifact_sha256 || artifact.sha256 != artifact_sha256 {
            return Err(format!("kernel digest {digest} does not match the directive's {artifact_sha256}"));
        }
        let kernel = ScriptedKernel::from_bytes(&artifact.bytes, self.config.device)
            .map_err(|e| format!("kernel does not load: {e}"))?;
        let params = kernel.parameters();
        let mut slot = SeedSlot::new(seed_id, site, spec).map_err(|e| e.to_string())?;
        slot.transition(SeedStage::Germinated).map_err(|e| e.to_string())?;
        slot.attach_kernel(Box::new(kernel)).map_err(|e| e.to_string())?;
        Ok((slot, params))
    }

    /// Moves the seed to `stage` (once) and applies α; `Ok(true)` if the stage changed.
    pub(crate) fn stage(&mut self, seed_id: &str, stage: SeedStage, alpha: f64) -> Result<bool, String> {
        let optimizer = self.seed_optimizer();
        let seed = self.seeds.get_mut(seed_id).ok_or_else(|| format!("stage {stage} for ungrafted seed {seed_id}"))?;
        let changed = seed.slot.stage() != stage;
        if changed {
            seed.slot.transition(stage).map_err(|e| e.to_string())?;
            if stage == SeedStage::Training
                && let Some(kernel) = seed.slot.kernel()
            {
                self.optimizers
                    .join(seed_id, &kernel.parameters(), &self.registry, optimizer)
                    .map_err(|e| e.to_string())?;
            }
        }
        if stage == SeedStage::Blending {
            seed.slot.set_alpha(alpha).map_err(|e| e.to_string())?;
        }
        Ok(changed)
    }

    /// Removes a seed from the model, its optimizer, registry and isolation
    /// window. `true` if it was grafted.
    pub(crate) fn ungraft(&mut self, seed_id: &str) -> bool {
        self.optimizers.leave(seed_id);
        if self.registry.seeds().any(|s| s == seed_id) {
            // Deregistering a registered seed cannot fail; nothing to report.
            let _ = self.registry.deregister_seed(seed_id);
        }
        self.isolation.forget(seed_id);
        self.seeds.remove(seed_id).is_some()
    }

    /// The configured seed optimizer, at the caller's current learning rate.
    fn seed_optimizer(&self) -> SeedOptimizerConfig {
        let mut config = self.config.seed_optimizer;
        if let Some(current) = self.learning_rate {
            match &mut config {
                SeedOptimizerConfig::Sgd { lr, .. } | SeedOptimizerConfig::Adam { lr, .. } => *lr = current,
            }
        }
        config
    }

    fn optimizer(&mut self, optimizer_id: &str, hyperparameters: &BTreeMap<String, f64>) -> TrainerEvent {
        let mut learning_rate = None;
        let mut not_applied = Vec::new();
        for (name, value) in hyperparameters {
            if LEARNING_RATE_KEYS.contains(&name.as_str()) {
                match self.set_learning_rate(*value) {
                    Ok(()) => learning_rate = Some(*value),
                    Err(e) => not_applied.push(format!("{name} ({e})")),
                }
            } else {
                not_applied.push(name.clone());
            }
        }
        TrainerEvent::OptimizerApplied { optimizer_id: optimizer_id.to_owned(), learning_rate, not_applied }
    }
}
