//! [`Trainer`]: the runtime a training loop calls at three points.
//!
//! ```text
//! forward:        h = trainer.site("hidden", &h, &ctx)?      (each site)
//! loss:           loss = trainer.distill(&task, &logits, &x)? (optional KD)
//! after backward: trainer.after_backward(step)?              (isolation)
//! optimizer:      trainer.optimizer_step()?                  (seed optimizers)
//! once per step:  trainer.end_step(step, loss, metric)?      (report + directives)
//! ```
//!
//! The control plane decides; the trainer applies. Everything a seed does
//! wrong is measured and reported, never raised: the gates cull it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kasmina_core::{MemorySink, SystemClock};
use kasmina_tensor::{
    Distiller, ForwardCtx, IsolationConfig, IsolationMonitor, ParameterRegistry, SeedOptimizers, Teacher,
};
use leyline::SeedStage;
use leyline::api::{DistillationReport, GraftDirective, KasminaApi, StepReport, TrainerSettings};
use tch::{CModule, Tensor};

use crate::checkpoint::CheckpointStore;
use crate::config::TrainerConfig;
use crate::directives::TrainerEvent;
use crate::error::{Result, TrainerError};
use crate::seed::{SeedFailure, SeedRuntime};

/// Isolation events the trainer keeps locally (its findings travel in the
/// step report); bounded so a long run cannot grow it.
const LOCAL_EVENT_CAPACITY: usize = 256;

/// What one `end_step` did.
#[derive(Debug, Default)]
pub struct StepResult {
    /// The directives the control plane returned, in the order applied.
    pub directives: Vec<GraftDirective>,
    /// What applying them did (attach, refusals, detaches …).
    pub events: Vec<TrainerEvent>,
}

/// A read-only view of one grafted seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedView {
    /// Site the seed is grafted at.
    pub site: String,
    /// Stage the trainer runs it in.
    pub stage: SeedStage,
    /// Blueprint of its kernel.
    pub blueprint_id: String,
    /// SHA-256 of its kernel.
    pub sha256: String,
    /// α of the next blend.
    pub alpha: f64,
    /// Whether it is swapped out of the forward path.
    pub paused: bool,
    /// Trainable parameters of its kernel (elements).
    pub parameters: i64,
}

/// The trainer-side runtime over any [`KasminaApi`] (embedded host or daemon client).
pub struct Trainer<A: KasminaApi> {
    pub(crate) api: A,
    pub(crate) config: TrainerConfig,
    pub(crate) settings: TrainerSettings,
    pub(crate) seeds: BTreeMap<String, SeedRuntime>,
    pub(crate) optimizers: SeedOptimizers,
    pub(crate) registry: ParameterRegistry,
    pub(crate) isolation: IsolationMonitor,
    pub(crate) distiller: Distiller,
    pub(crate) host_params: Vec<Tensor>,
    pub(crate) checkpoints: CheckpointStore,
    kd: Option<DistillationReport>,
    last_step: Option<u64>,
    pub(crate) learning_rate: Option<f64>,
}

impl<A: KasminaApi> std::fmt::Debug for Trainer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("run", &self.config.run_id)
            .field("seeds", &self.seeds.keys().collect::<Vec<_>>())
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

impl<A: KasminaApi> Trainer<A> {
    /// Registers the model with the control plane and builds the runtime
    /// with the isolation and distillation settings the host answered with.
    pub fn register(api: A, config: TrainerConfig) -> Result<Self> {
        config.validate()?;
        // Durable checkpoints of an earlier run of this trainer are still restorable.
        let checkpoints = CheckpointStore::open(config.checkpoint_dir.as_deref())?;
        let mut registration = config.registration();
        registration.checkpoints = checkpoints.ids();
        let settings = api.register_host(registration)?;
        let i = &settings.isolation;
        let isolation = IsolationMonitor::new(
            IsolationConfig {
                cosine_threshold: i.cosine_threshold,
                samples_per_param: i.samples_per_param as usize,
                violations_to_trip: i.violations_to_trip,
                window_steps: i.window_steps,
                fail_fast: false,
            },
            Arc::new(SystemClock),
            Arc::new(MemorySink::new(LOCAL_EVENT_CAPACITY)),
        )?;
        let distiller = Distiller::new(settings.distillation.weight, settings.distillation.temperature)?;
        Ok(Trainer {
            api,
            config,
            settings,
            seeds: BTreeMap::new(),
            optimizers: SeedOptimizers::new(),
            registry: ParameterRegistry::new(),
            isolation,
            distiller,
            host_params: Vec::new(),
            checkpoints,
            kd: None,
            last_step: None,
            learning_rate: None,
        })
    }

    /// The host parameters isolation is measured against and rollback
    /// checkpoints copy (call once, after building the model; typically
    /// `var_store.trainable_variables()`, whose order is the order the
    /// variables were created in, so a durable checkpoint restores into a
    /// model built by the same code in another process).
    pub fn watch_host_parameters(&mut self, params: Vec<Tensor>) {
        self.host_params = params;
    }

    /// The settings the host answered the registration with.
    pub fn settings(&self) -> &TrainerSettings {
        &self.settings
    }

    /// The control plane this trainer talks to.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// Re-registers with `api` — a new connection after the daemon
    /// restarted, or the same one — declaring the seeds this trainer still
    /// runs and the rollback checkpoints it still holds, so the control
    /// plane adopts them (after checking each kernel's digest) instead of
    /// culling them, and re-sends what this trainer lost. Nothing about the
    /// model changes here; the resynchronising directives arrive with the
    /// next [`end_step`](Self::end_step).
    pub fn reconnect(&mut self, api: A) -> Result<()> {
        let mut registration = self.config.registration();
        registration.held = self.held_seeds();
        registration.checkpoints = self.checkpoints.ids();
        self.settings = api.register_host(registration)?;
        self.api = api;
        Ok(())
    }

    /// Runs every seed grafted at `site` on the host's output there, in slot
    /// order, and returns what the model continues with. A seed that fails
    /// leaves its input unchanged (and is reported). `ctx` carries the mode
    /// and, for CONFIDENCE blends, the batch's classification logits.
    pub fn site(&mut self, site: &str, host_out: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        if !self.config.sites.iter().any(|s| s.name == site) {
            return Err(TrainerError::UnknownSite(site.to_owned()));
        }
        let mut h = host_out.shallow_clone();
        for slot in self.config.slots.iter().filter(|s| s.site == site) {
            if let Some(seed) = self.seeds.get_mut(&slot.seed_id) {
                h = seed.run(&h, ctx);
            }
        }
        Ok(h)
    }

    /// The training loss with knowledge distillation mixed in when a teacher
    /// is set (SPEC §8: `T²·KL`, weight from the host's settings); the task
    /// loss unchanged otherwise. The KD term is reported with the step.
    pub fn distill(&mut self, task_loss: &Tensor, student_logits: &Tensor, input: &Tensor) -> Result<Tensor> {
        let (loss, kd) = self.distiller.loss_with_kd(task_loss, student_logits, input)?;
        self.kd = match (kd, self.distiller.teacher()) {
            (Some(kd), Some(teacher)) => Some(DistillationReport {
                kd_loss: kd.f_double_value(&[]).map_err(|e| TrainerError::Teacher(format!("KD loss value: {e}")))?,
                weight: self.distiller.weight(),
                teacher_memory_bytes: teacher.memory_bytes(),
            }),
            _ => None,
        };
        Ok(loss)
    }

    /// Installs a teacher for distillation, within the host's teacher memory
    /// budget; its parameters become immutable in the registry. Returns the
    /// teacher's memory in bytes.
    pub fn set_teacher(&mut self, module: CModule) -> Result<u64> {
        let teacher = Teacher::new(module, self.settings.distillation.teacher_memory_bytes)?;
        let bytes = teacher.memory_bytes();
        self.registry.set_teacher(teacher.parameters()).map_err(|e| TrainerError::Teacher(e.to_string()))?;
        self.distiller.set_teacher(teacher);
        Ok(bytes)
    }

    /// Whether a teacher is installed.
    pub fn has_teacher(&self) -> bool {
        self.distiller.teacher().is_some()
    }

    /// Zeroes the seed optimizers' gradients (call beside the host optimizer's).
    pub fn zero_grad(&self) -> Result<()> {
        Ok(self.optimizers.zero_grad()?)
    }

    /// Sets the seeds' learning rate (follow the host's schedule with it).
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.optimizers.set_learning_rate(lr)?;
        self.learning_rate = Some(lr);
        Ok(())
    }

    /// After `loss.backward()`: measures gradient isolation of every seed
    /// that learns this step (sampled cosine against the host parameters).
    pub fn after_backward(&mut self, step: u64) -> Result<()> {
        for (id, seed) in self.seeds.iter_mut().filter(|(_, s)| s.is_learning()) {
            let Some(kernel) = seed.slot.kernel() else { continue };
            let report = self.isolation.check(id, step, &self.host_params, &kernel.parameters())?;
            seed.record_isolation(report.violation, report.cosine.unwrap_or(0.0));
        }
        Ok(())
    }

    /// Steps the seed optimizers (call beside the host optimizer's step).
    pub fn optimizer_step(&self) -> Result<()> {
        Ok(self.optimizers.step()?)
    }

    /// Ends training step `step`: reports it (task loss, optional metric,
    /// every seed's measurements and blend statistics, the KD term) and
    /// applies the directives that come back, in order.
    pub fn end_step(&mut self, step: u64, task_loss: f64, metric: Option<f64>) -> Result<StepResult> {
        if let Some(last) = self.last_step
            && step <= last
        {
            return Err(TrainerError::StepOrder { last, got: step });
        }
        let report = StepReport {
            step,
            training_run_id: self.config.run_id.clone(),
            task_loss,
            global_metric: metric,
            seeds: self.seeds.iter_mut().map(|(id, s)| s.take_report(id, task_loss)).collect(),
            distillation: self.kd.take(),
            checkpoints: std::mem::take(&mut self.checkpoints.events),
            ranks: None,
        };
        let directives = match self.api.step_report(report.clone()) {
            Ok(directives) => directives,
            Err(err) => {
                // Not delivered: the checkpoint results go with the next report.
                self.checkpoints.events.splice(0..0, report.checkpoints);
                return Err(err.into());
            }
        };
        self.last_step = Some(step);
        let mut events = Vec::new();
        for directive in &directives {
            self.apply(directive, &mut events);
        }
        Ok(StepResult { directives, events })
    }

    /// The stage the trainer runs `seed_id` in, if it is grafted.
    pub fn seed_stage(&self, seed_id: &str) -> Option<SeedStage> {
        self.seeds.get(seed_id).map(|s| s.slot.stage())
    }

    /// The failure recorded for `seed_id` in the current step, if any.
    pub fn seed_failure(&self, seed_id: &str) -> Option<&SeedFailure> {
        self.seeds.get(seed_id).and_then(SeedRuntime::failure)
    }

    /// Every grafted seed, by id.
    pub fn seeds(&self) -> BTreeMap<String, SeedView> {
        self.seeds
            .iter()
            .map(|(id, s)| {
                let parameters =
                    s.slot.kernel().map_or(0, |k| k.parameters().iter().map(|p| p.numel() as i64).sum::<i64>());
                let view = SeedView {
                    site: s.slot.site().to_owned(),
                    stage: s.slot.stage(),
                    blueprint_id: s.blueprint_id.clone(),
                    sha256: s.sha256.clone(),
                    alpha: s.slot.alpha(),
                    paused: s.slot.is_paused(),
                    parameters,
                };
                (id.clone(), view)
            })
            .collect()
    }

    /// Parameters of fossilized seeds: what growing added to the model.
    pub fn fossilized_parameters(&self) -> i64 {
        self.seeds().values().filter(|s| s.stage == SeedStage::Fossilized).map(|s| s.parameters).sum()
    }
}
