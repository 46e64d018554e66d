//! The trainer: an ordinary training loop over a host network that calls
//! `kasmina-trainer` at three points — at each site in forward, after
//! backward, and once per step. Everything Kasmina-specific (kernel digests,
//! slots, blends, isolation, optimizers of seeds, step reports, directives)
//! lives in that crate, not here.
//!
//! The same loop, same initialisation and same batch order trains all three
//! runs of the comparison: the host alone (baseline), the host while the
//! controller grows seeds (seeded), and the host with the seeded run's
//! fossils built in from step 0 (static, `super::fossils`).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kasmina_trainer::{ForwardCtx, SeedOptimizerConfig, Trainer, TrainerConfig, TrainerEvent};
use leyline::api::KasminaApi;
use leyline::{BlendMode, SeedStage};
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

use super::controller::Controller;
use super::fossils::StaticGrafts;
use super::hosts::{HostKind, HostNet};
use super::report::TimelineEntry;
use super::schedule::{Batches, learning_rate_at};
use crate::digits::{self, Split};

/// The seed site of the linear host.
pub const SITE: &str = "hidden";
/// The training run id the trainer registers.
pub const RUN_ID: &str = "digits-demo";
/// The seed slots of the linear host.
pub const SLOTS: [&str; 2] = ["seed-a", "seed-b"];
/// The final loss is the mean over this many last steps.
const LOSS_WINDOW: usize = 20;

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Training steps.
    pub steps: u64,
    /// Mini-batch size.
    pub batch: i64,
    /// Width of the linear host's `hidden` site (its blueprints expect 64).
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
    /// The host network.
    pub host: HostKind,
}

/// One training step of a run: what the figure draws and what the summary's
/// numbers can be checked against.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Training step.
    pub step: u64,
    /// Training loss of the step's batch.
    pub loss: f64,
    /// Validation accuracy, on the steps it is measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// α of every grafted seed after the step (seeded run only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub alpha: BTreeMap<String, f64>,
}

/// A seed that ended FOSSILIZED: part of the final architecture, which the
/// static run trains from step 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fossil {
    /// Seed slot.
    pub seed_id: String,
    /// Site it grafted at.
    pub site: String,
    /// Its blueprint.
    pub blueprint_id: String,
    /// SHA-256 of the kernel the trainer grafted.
    pub sha256: String,
    /// How it blends (at α = 1 once fossilized).
    pub blend: BlendMode,
    /// Trainable parameters.
    pub parameters: i64,
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
    /// Parameters beyond the host's: seeds that ended FOSSILIZED (seeded
    /// run) or the fossils built in from the start (static run).
    pub parameters_added: i64,
    /// Wall time per step, ms.
    pub ms_per_step: f64,
    /// The seeds that ended FOSSILIZED (seeded run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fossils: Vec<Fossil>,
    /// Every step.
    pub curve: Vec<CurvePoint>,
}

impl RunStats {
    /// Host plus added parameters.
    pub fn parameters(&self) -> i64 {
        self.host_parameters + self.parameters_added
    }
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
    /// The demo's configuration on the linear host: batch 64, hidden 64,
    /// Adam 1e-2, validation every 5 steps.
    pub fn demo(steps: u64, seed: u64, device: Device) -> Self {
        TrainConfig {
            steps,
            batch: 64,
            hidden: 64,
            seed,
            device,
            learning_rate: 1e-2,
            eval_every: 5,
            teacher: None,
            host: HostKind::Linear,
        }
    }

    /// The same configuration on another host network.
    pub fn with_host(self, host: HostKind) -> Self {
        TrainConfig { host, ..self }
    }
}

/// What grafts at the sites during a run.
enum Grafts<'a> {
    /// Nothing: the baseline.
    None,
    /// Seeds grown through Kasmina.
    /// (Boxed: the trainer is large beside the other variants.)
    Seeds { trainer: Box<DemoTrainer<'a>>, control: Control<'a> },
    /// The seeded run's fossils, built in from step 0.
    Fossils(StaticGrafts),
}

impl<'a> Grafts<'a> {
    fn at_site(&mut self, net: &HostNet, index: usize, site: &str, h: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Grafts::None => Ok(h.shallow_clone()),
            Grafts::Seeds { trainer, .. } => {
                // CONFIDENCE blends gate on the host's own confidence for this batch.
                let logits = net.logits_from(index, h);
                let ctx = if train { ForwardCtx::train() } else { ForwardCtx::infer() };
                Ok(trainer.site(site, h, &ctx.with_logits(&logits))?)
            }
            Grafts::Fossils(fossils) => fossils.apply(site, h),
        }
    }

    fn trainer(&mut self) -> Option<&mut DemoTrainer<'a>> {
        match self {
            Grafts::Seeds { trainer, .. } => Some(&mut **trainer),
            _ => None,
        }
    }
}

/// Trains the host (and, with `control`, grows its seeds).
pub fn train(config: &TrainConfig, data: &Split, control: Option<Control<'_>>, progress: bool) -> Result<RunStats> {
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(config.device);
    let net = HostNet::new(config.host, &vs.root(), config.hidden);
    // Durable rollback checkpoints (fossilization records one) live as long as the run.
    let checkpoints = tempfile::Builder::new().prefix("kasmina-demo-checkpoints").tempdir()?;
    let grafts = match control {
        Some(control) => {
            let trainer = register(control.apis.trainer, config, &vs, checkpoints.path())?;
            Grafts::Seeds { trainer: Box::new(trainer), control }
        }
        None => Grafts::None,
    };
    run(config, data, vs, &net, grafts, progress)
}

/// Trains the final architecture of a seeded run from step 0: the host with
/// `fossils` built in at their sites, with the same initialisation, batch
/// order and schedule, no control plane.
pub fn train_static(config: &TrainConfig, data: &Split, fossils: &[Fossil], progress: bool) -> Result<RunStats> {
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(config.device);
    let net = HostNet::new(config.host, &vs.root(), config.hidden);
    let grafts = StaticGrafts::load(fossils, &vs, config)?;
    run(config, data, vs, &net, Grafts::Fossils(grafts), progress)
}

fn run(
    config: &TrainConfig,
    data: &Split,
    mut vs: nn::VarStore,
    net: &HostNet,
    mut grafts: Grafts<'_>,
    progress: bool,
) -> Result<RunStats> {
    let static_parameters = match &grafts {
        Grafts::Fossils(f) => f.parameters(),
        _ => 0,
    };
    let host_parameters = count(&vs) - static_parameters;
    let mut opt = nn::Adam::default().build(&vs, config.learning_rate)?;
    let mut batches = Batches::new(data.train_x.size()[0] as usize, config);
    let mut losses = VecDeque::new();
    let mut curve = Vec::with_capacity(config.steps as usize);
    let started = Instant::now();
    for step in 1..=config.steps {
        if let Grafts::Seeds { control: c, .. } = &mut grafts {
            c.controller.before_step(step, c.apis.controller, c.timeline)?;
        }
        let (x, y) = batches.next(data, config.device);
        let logits = net.forward_with(&x, &mut |i, site, h| grafts.at_site(net, i, site, h, true))?;
        let task_loss = logits.cross_entropy_for_logits(&y);
        let loss = match grafts.trainer() {
            Some(t) => t.distill(&task_loss, &logits, &x)?,
            None => task_loss,
        };
        // Cosine decay to 5 % of the base rate, for host and seeds alike.
        let lr = learning_rate_at(config, step);
        opt.set_lr(lr);
        opt.zero_grad();
        if let Some(t) = grafts.trainer() {
            t.set_learning_rate(lr)?;
            t.zero_grad()?;
        }
        loss.backward();
        if let Some(t) = grafts.trainer() {
            t.after_backward(step)?;
            t.optimizer_step()?;
        }
        opt.step();
        let loss_value = loss.double_value(&[]);
        if losses.len() == LOSS_WINDOW {
            losses.pop_front();
        }
        losses.push_back(loss_value);
        let metric = (step % config.eval_every == 0 || step == config.steps)
            .then(|| evaluate(net, &mut grafts, &data.val_x, &data.val_y))
            .transpose()?;
        let mut alpha = BTreeMap::new();
        if let Grafts::Seeds { trainer: t, control: c } = &mut grafts {
            let result = t.end_step(step, loss_value, metric)?;
            record(step, t, result.events, c.timeline)?;
            alpha = t.seeds().into_iter().filter(|(_, s)| blends(s.stage)).map(|(id, s)| (id, s.alpha)).collect();
        }
        curve.push(CurvePoint { step, loss: loss_value, val_accuracy: metric, alpha });
        if progress {
            show_progress(config, step, loss_value, grafts.trainer().map(|t| &*t))?;
        }
    }
    if progress {
        eprintln!();
    }
    let ms_per_step = started.elapsed().as_secs_f64() * 1e3 / config.steps.max(1) as f64;
    if let (Grafts::None, Some(path)) = (&grafts, &config.teacher) {
        // Training is over: a frozen network traces into constants.
        vs.freeze();
        save_teacher(net, path, config.device)?;
    }
    let test_accuracy = evaluate(net, &mut grafts, &data.test_x, &data.test_y)?;
    let val_accuracy = evaluate(net, &mut grafts, &data.val_x, &data.val_y)?;
    if !test_accuracy.is_finite() {
        bail!("evaluation produced a non-finite accuracy");
    }
    let (parameters_added, fossils) = match &grafts {
        Grafts::Seeds { trainer, control } => {
            (trainer.fossilized_parameters(), fossils(config.host, trainer, control)?)
        }
        _ => (static_parameters, Vec::new()),
    };
    Ok(RunStats {
        test_accuracy,
        val_accuracy,
        final_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
        host_parameters,
        parameters_added,
        ms_per_step,
        fossils,
        curve,
    })
}

/// Trainable parameters (elements) in `vs`.
fn count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|p| p.numel() as i64).sum()
}

/// Stages in which a seed's output reaches the model (α is meaningful).
fn blends(stage: SeedStage) -> bool {
    matches!(
        stage,
        SeedStage::Training
            | SeedStage::Blending
            | SeedStage::Shadowing
            | SeedStage::Probationary
            | SeedStage::Fossilized
    )
}

/// The seeds that ended FOSSILIZED, in slot order (the order they run at a site).
fn fossils(host: HostKind, trainer: &DemoTrainer<'_>, control: &Control<'_>) -> Result<Vec<Fossil>> {
    let seeds = trainer.seeds();
    let mut out = Vec::new();
    for (seed_id, _) in host.slots() {
        let Some(view) = seeds.get(*seed_id).filter(|v| v.stage == SeedStage::Fossilized) else { continue };
        let blend = control
            .controller
            .germination(seed_id)
            .with_context(|| format!("{seed_id} fossilized but the controller never germinated it"))?
            .blend;
        out.push(Fossil {
            seed_id: (*seed_id).to_owned(),
            site: view.site.clone(),
            blueprint_id: view.blueprint_id.clone(),
            sha256: view.sha256.clone(),
            blend,
            parameters: view.parameters,
        });
    }
    Ok(out)
}

type DemoTrainer<'a> = Trainer<&'a dyn KasminaApi>;

/// Registers the host's sites and slots; isolation is measured
/// against the host network's parameters, and rollback checkpoints copy them
/// (durable ones into `checkpoints`).
fn register<'a>(
    api: &'a dyn KasminaApi,
    config: &TrainConfig,
    vs: &nn::VarStore,
    checkpoints: &std::path::Path,
) -> Result<DemoTrainer<'a>> {
    let sites = config.host.sites(config.hidden);
    let declared = sites.into_iter().fold(TrainerConfig::new(RUN_ID, config.device), |c, s| c.site(s.name, s.shape));
    let declared = config.host.slots().iter().fold(declared, |c, (seed, site)| c.slot(*seed, *site));
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
    let mut forward = |inputs: &[Tensor]| vec![net.forward(&inputs[0])];
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

fn evaluate(net: &HostNet, grafts: &mut Grafts<'_>, x: &Tensor, y: &Tensor) -> Result<f64> {
    tch::no_grad(|| {
        let logits = net.forward_with(x, &mut |i, site, h| grafts.at_site(net, i, site, h, false))?;
        Ok(digits::accuracy(&logits, y))
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
