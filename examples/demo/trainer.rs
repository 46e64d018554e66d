//! The trainer: the host network, its seed slots at the `hidden` site, and
//! an ordinary training loop that calls `kasmina-trainer` at three points —
//! at the site in forward, after backward, and once per step. Everything
//! Kasmina-specific (kernel digests, slots, blends, isolation, optimizers of
//! seeds, step reports, directives) lives in that crate, not here.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kasmina_trainer::{ForwardCtx, SeedOptimizerConfig, Trainer, TrainerConfig, TrainerEvent};
use leyline::Dim;
use leyline::api::KasminaApi;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

use super::controller::Controller;
use super::report::TimelineEntry;
use crate::digits::{self, HostNet, Split};

/// The one seed site of the demo network.
pub const SITE: &str = "hidden";
/// The training run id the trainer registers.
pub const RUN_ID: &str = "digits-demo";
/// The seed slots the trainer declares.
pub const SLOTS: [&str; 2] = ["seed-a", "seed-b"];

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Training steps.
    pub steps: u64,
    /// Mini-batch size.
    pub batch: i64,
    /// Hidden width (the site's feature width; the blueprints expect 64).
    pub hidden: i64,
    /// Seed for initialisation and batch order.
    pub seed: u64,
    /// Device.
    pub device: Device,
    /// Learning rate of the host and the seeds.
    pub learning_rate: f64,
    /// Validation accuracy is measured and reported every this many steps.
    pub eval_every: u64,
    /// Knowledge distillation: the run without seeds saves its trained
    /// network here as a TorchScript teacher, and the seeded run distils
    /// from it (`--teacher`).
    pub teacher: Option<std::path::PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Final validation accuracy.
    pub val_accuracy: f64,
    /// Mean training loss over the last 20 steps.
    pub final_loss: f64,
    /// Host parameters.
    pub host_parameters: i64,
    /// Parameters of seeds that ended FOSSILIZED (now part of the model).
    pub parameters_added: i64,
    /// Wall time per step, ms.
    pub ms_per_step: f64,
}

/// The control-plane side of a seeded run.
pub struct Control<'a> {
    /// Connections to the control plane.
    pub apis: super::Apis<'a>,
    /// The scripted controller.
    pub controller: &'a mut Controller,
    /// Where the lifecycle timeline is collected.
    pub timeline: &'a mut Vec<TimelineEntry>,
}

impl TrainConfig {
    /// The demo's configuration: batch 64, hidden 64, Adam 1e-2, validation
    /// every 5 steps.
    pub fn demo(steps: u64, seed: u64, device: Device) -> Self {
        TrainConfig { steps, batch: 64, hidden: 64, seed, device, learning_rate: 1e-2, eval_every: 5, teacher: None }
    }
}

/// Trains the host (and, with `control`, its seeds).
pub fn train(config: &TrainConfig, data: &Split, mut control: Option<Control<'_>>, progress: bool) -> Result<RunStats> {
    tch::manual_seed(config.seed as i64);
    let mut vs = nn::VarStore::new(config.device);
    let net = HostNet::new(&vs.root(), config.hidden);
    let host_parameters: i64 = vs.trainable_variables().iter().map(|p| p.numel() as i64).sum();
    let mut opt = nn::Adam::default().build(&vs, config.learning_rate)?;
    // Durable rollback checkpoints (fossilization records one) live as long as the run.
    let checkpoints = tempfile::Builder::new().prefix("kasmina-demo-checkpoints").tempdir()?;
    let mut trainer = match &control {
        Some(c) => Some(register(c.apis.trainer, config, &vs, checkpoints.path())?),
        None => None,
    };
    let mut batches = Batches::new(data.train_x.size()[0] as usize, config);
    let mut losses = VecDeque::new();
    let started = Instant::now();
    for step in 1..=config.steps {
        if let Some(c) = control.as_mut() {
            c.controller.before_step(step, c.apis.controller, c.timeline)?;
        }
        let (x, y) = batches.next(data, config.device);
        let h = net.hidden(&x);
        let logits = match trainer.as_mut() {
            Some(t) => {
                // CONFIDENCE blends gate on the host's own confidence for this batch.
                let host_logits = tch::no_grad(|| net.head(&h));
                net.head(&t.site(SITE, &h, &ForwardCtx::train().with_logits(&host_logits))?)
            }
            None => net.head(&h),
        };
        let task_loss = logits.cross_entropy_for_logits(&y);
        let loss = match trainer.as_mut() {
            Some(t) => t.distill(&task_loss, &logits, &x)?,
            None => task_loss,
        };
        // Cosine decay to 5 % of the base rate, for host and seeds alike.
        let lr = learning_rate_at(config, step);
        opt.set_lr(lr);
        opt.zero_grad();
        if let Some(t) = trainer.as_mut() {
            t.set_learning_rate(lr)?;
            t.zero_grad()?;
        }
        loss.backward();
        if let Some(t) = trainer.as_mut() {
            t.after_backward(step)?;
            t.optimizer_step()?;
        }
        opt.step();
        let loss_value = loss.double_value(&[]);
        if losses.len() == 20 {
            losses.pop_front();
        }
        losses.push_back(loss_value);
        let metric = (step % config.eval_every == 0 || step == config.steps)
            .then(|| evaluate(&net, trainer.as_mut(), &data.val_x, &data.val_y))
            .transpose()?;
        if let (Some(t), Some(c)) = (trainer.as_mut(), control.as_mut()) {
            let result = t.end_step(step, loss_value, metric)?;
            record(step, t, result.events, c.timeline)?;
        }
        if progress {
            show_progress(config, step, loss_value, trainer.as_ref())?;
        }
    }
    if progress {
        eprintln!();
    }
    let ms_per_step = started.elapsed().as_secs_f64() * 1e3 / config.steps.max(1) as f64;
    if let (None, Some(path)) = (&control, &config.teacher) {
        // Training is over: a frozen network traces into constants.
        vs.freeze();
        save_teacher(&net, path, config.device)?;
    }
    let test_accuracy = evaluate(&net, trainer.as_mut(), &data.test_x, &data.test_y)?;
    let val_accuracy = evaluate(&net, trainer.as_mut(), &data.val_x, &data.val_y)?;
    if !test_accuracy.is_finite() {
        bail!("evaluation produced a non-finite accuracy");
    }
    Ok(RunStats {
        test_accuracy,
        val_accuracy,
        final_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
        host_parameters,
        parameters_added: trainer.as_ref().map_or(0, Trainer::fossilized_parameters),
        ms_per_step,
    })
}

type DemoTrainer<'a> = Trainer<&'a dyn KasminaApi>;

/// Registers the demo's one site and two slots; isolation is measured
/// against the host network's parameters, and rollback checkpoints copy them
/// (durable ones into `checkpoints`).
fn register<'a>(
    api: &'a dyn KasminaApi,
    config: &TrainConfig,
    vs: &nn::VarStore,
    checkpoints: &std::path::Path,
) -> Result<DemoTrainer<'a>> {
    let declared = SLOTS.iter().fold(
        TrainerConfig::new(RUN_ID, config.device).site(SITE, [Dim::Batch, Dim::Fixed(config.hidden as u64)]),
        |c, seed| c.slot(*seed, SITE),
    );
    let adam = SeedOptimizerConfig::Adam { lr: config.learning_rate, beta1: 0.9, beta2: 0.999, weight_decay: 0.0 };
    let mut trainer = Trainer::register(api, declared.seed_optimizer(adam).checkpoint_dir(checkpoints))?;
    trainer.watch_host_parameters(vs.trainable_variables());
    if let Some(path) = &config.teacher {
        let teacher = tch::CModule::load_on_device(path, config.device)
            .with_context(|| format!("loading the teacher {} (the baseline run writes it)", path.display()))?;
        trainer.set_teacher(teacher)?;
    }
    Ok(trainer)
}

/// Saves the trained host network as a TorchScript teacher (traced:
/// parameters become constants, which is what an immutable teacher is).
fn save_teacher(net: &HostNet, path: &std::path::Path, device: Device) -> Result<()> {
    let example = Tensor::zeros([1, digits::FEATURES as i64], (tch::Kind::Float, device));
    let mut forward = |inputs: &[Tensor]| vec![net.head(&net.hidden(&inputs[0]))];
    let module = tch::CModule::create_by_tracing("teacher", "forward", &[example], &mut forward)?;
    module.save(path).with_context(|| format!("saving the teacher to {}", path.display()))?;
    Ok(())
}

/// Telemetry and the trainer's own events, into the timeline.
fn record(step: u64, t: &DemoTrainer<'_>, events: Vec<TrainerEvent>, timeline: &mut Vec<TimelineEntry>) -> Result<()> {
    for event in t.api().drain_telemetry()? {
        timeline.extend(TimelineEntry::from_event(step, &event));
    }
    for event in events {
        match event {
            TrainerEvent::Detached { seed_id, reason } => {
                timeline.push(TimelineEntry::note(step, &seed_id, format!("detached: {reason}")));
            }
            TrainerEvent::KernelRefused { seed_id, blueprint_id, reason } => {
                timeline.push(TimelineEntry::note(step, &seed_id, format!("refused kernel {blueprint_id}: {reason}")));
            }
            TrainerEvent::DirectiveRefused { seed_id, reason } => {
                timeline.push(TimelineEntry::note(step, seed_id.as_deref().unwrap_or("-"), reason));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The same shuffled batch order with and without seeds: the comparison is fair.
struct Batches {
    order: Vec<usize>,
    n: usize,
    batch: usize,
    rng: rand::rngs::StdRng,
}

impl Batches {
    fn new(n: usize, config: &TrainConfig) -> Self {
        Batches {
            order: Vec::new(),
            n,
            batch: config.batch as usize,
            rng: rand::rngs::StdRng::seed_from_u64(config.seed),
        }
    }

    fn next(&mut self, data: &Split, device: Device) -> (Tensor, Tensor) {
        let mut idx = Vec::with_capacity(self.batch);
        while idx.len() < self.batch {
            if self.order.is_empty() {
                self.order = (0..self.n).collect();
                self.order.shuffle(&mut self.rng);
            }
            idx.extend(self.order.pop().map(|i| i as i64));
        }
        let idx = Tensor::from_slice(&idx).to(device);
        (data.train_x.index_select(0, &idx), data.train_y.index_select(0, &idx))
    }
}

fn learning_rate_at(config: &TrainConfig, step: u64) -> f64 {
    let progress = step as f64 / config.steps.max(1) as f64;
    let floor = 0.05;
    config.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

fn evaluate(net: &HostNet, trainer: Option<&mut DemoTrainer<'_>>, x: &Tensor, y: &Tensor) -> Result<f64> {
    tch::no_grad(|| {
        let h = net.hidden(x);
        let h = match trainer {
            Some(t) => {
                let host_logits = net.head(&h);
                t.site(SITE, &h, &ForwardCtx::infer().with_logits(&host_logits))?
            }
            None => h,
        };
        Ok(digits::accuracy(&net.head(&h), y))
    })
}

fn show_progress(config: &TrainConfig, step: u64, loss: f64, trainer: Option<&DemoTrainer<'_>>) -> Result<()> {
    if !step.is_multiple_of(10) && step != config.steps {
        return Ok(());
    }
    let done = (step * 30 / config.steps.max(1)) as usize;
    let stages: Vec<String> =
        trainer.map(|t| t.seeds().into_iter().map(|(id, s)| format!("{id}:{}", s.stage)).collect()).unwrap_or_default();
    eprint!(
        "\r[{}{}] step {step:>4}/{} loss {loss:.3} {}\x1b[K",
        "#".repeat(done),
        ".".repeat(30 - done),
        config.steps,
        stages.join(" ")
    );
    std::io::stderr().flush()?;
    Ok(())
}
