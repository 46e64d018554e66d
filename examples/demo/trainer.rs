//! The trainer: the host network, its seed slots at the `hidden` site, and
//! the loop that reports each step to the control plane and applies the
//! directives it gets back.
//!
//! The trainer is careful the way a real one must be: it checks the SHA-256
//! of every kernel it is handed against the directive, and a seed whose
//! forward fails or produces non-finite values is not used for that step
//! (the host output stands) and is reported as such — the gates decide.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kasmina_core::{MemorySink, SystemClock};
use kasmina_tensor::{
    AlphaSchedule, BlendSpec, ConfidenceGate, ForwardCtx, IsolationConfig, IsolationMonitor, ParameterRegistry,
    ScheduleConfig, ScriptedKernel, SeedKernel, SeedOptimizerConfig, SeedOptimizers, SeedSlot,
};
use leyline::api::{GraftDirective, HostRegistration, KasminaApi, SeedStepReport, SiteSpec, SlotSpec, StepReport};
use leyline::{BlendMode, Dim, SeedStage};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use sha2::{Digest, Sha256};
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
#[derive(Debug, Clone, Copy)]
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

struct Seed {
    slot: SeedSlot,
    sha256: String,
    failed: Option<String>,
    latency_us: u64,
    violations: u32,
    max_cosine: f64,
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
        TrainConfig { steps, batch: 64, hidden: 64, seed, device, learning_rate: 1e-2, eval_every: 5 }
    }
}

/// Trains the host (and, with `control`, its seeds).
pub fn train(config: &TrainConfig, data: &Split, mut control: Option<Control<'_>>, progress: bool) -> Result<RunStats> {
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(config.device);
    let net = HostNet::new(&vs.root(), config.hidden);
    let host_params: Vec<Tensor> = vs.trainable_variables();
    let host_parameters: i64 = host_params.iter().map(Tensor::numel).map(|n| n as i64).sum();
    let mut opt = nn::Adam::default().build(&vs, config.learning_rate)?;
    let mut seeds: BTreeMap<String, Seed> = BTreeMap::new();
    let mut optimizers = SeedOptimizers::new();
    let mut registry = ParameterRegistry::new();
    // Isolation is measured for real; its events go to the host via the
    // step report (violations, cosine), so the local sink only bounds them.
    let mut isolation = IsolationMonitor::new(
        IsolationConfig {
            cosine_threshold: 0.1,
            samples_per_param: 256,
            violations_to_trip: 3,
            window_steps: 100,
            fail_fast: false,
        },
        std::sync::Arc::new(SystemClock),
        std::sync::Arc::new(MemorySink::new(256)),
    )?;
    if let Some(c) = control.as_mut() {
        c.apis.trainer.register_host(HostRegistration {
            training_run_id: RUN_ID.to_owned(),
            sites: vec![SiteSpec {
                name: SITE.to_owned(),
                feature_shape: vec![Dim::Batch, Dim::Fixed(config.hidden as u64)],
            }],
            slots: SLOTS.iter().map(|s| SlotSpec { seed_id: (*s).to_owned(), site: SITE.to_owned() }).collect(),
        })?;
    }
    let n_train = data.train_x.size()[0] as usize;
    let mut order: Vec<usize> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut losses = std::collections::VecDeque::new();
    let started = Instant::now();
    for step in 1..=config.steps {
        if let Some(c) = control.as_mut() {
            c.controller.before_step(step, c.apis.controller, c.timeline)?;
        }
        // Same batch order with and without seeds: the comparison is fair.
        let mut idx = Vec::with_capacity(config.batch as usize);
        while idx.len() < config.batch as usize {
            if order.is_empty() {
                order = (0..n_train).collect();
                order.shuffle(&mut rng);
            }
            idx.extend(order.pop().map(|i| i as i64));
        }
        let idx = Tensor::from_slice(&idx).to(config.device);
        let x = data.train_x.index_select(0, &idx);
        let y = data.train_y.index_select(0, &idx);

        let mut h = net.hidden(&x);
        let ctx = ForwardCtx::train();
        for seed in seeds.values_mut() {
            h = run_slot(seed, &h, &ctx);
        }
        let loss = net.head(&h).cross_entropy_for_logits(&y);
        // Cosine decay to 5 % of the base rate, for host and seeds alike, so
        // both runs end converged rather than mid-oscillation.
        let lr = learning_rate_at(config, step);
        opt.set_lr(lr);
        optimizers.set_learning_rate(lr)?;
        opt.zero_grad();
        optimizers.zero_grad()?;
        loss.backward();
        for (id, seed) in seeds.iter_mut() {
            seed.violations = 0;
            if matches!(seed.slot.stage(), SeedStage::Training | SeedStage::Blending)
                && let Some(kernel) = seed.slot.kernel()
            {
                let report = isolation.check(id, step, &host_params, &kernel.parameters())?;
                seed.violations = u32::from(report.violation);
                seed.max_cosine = report.cosine.unwrap_or(0.0);
            }
        }
        opt.step();
        optimizers.step()?;
        let loss_value = loss.double_value(&[]);
        if losses.len() == 20 {
            losses.pop_front();
        }
        losses.push_back(loss_value);

        let metric = (step % config.eval_every == 0 || step == config.steps)
            .then(|| evaluate(&net, &mut seeds, &data.val_x, &data.val_y));
        if let Some(c) = control.as_mut() {
            let (api, timeline) = (c.apis.trainer, &mut *c.timeline);
            let report = StepReport {
                step,
                training_run_id: RUN_ID.to_owned(),
                task_loss: loss_value,
                global_metric: metric,
                seeds: seeds.iter().map(|(id, s)| seed_report(id, s, loss_value)).collect(),
            };
            let directives = api.step_report(report)?;
            for event in api.drain_telemetry()? {
                if let Some(entry) = TimelineEntry::from_event(step, &event) {
                    timeline.push(entry);
                }
            }
            for directive in directives {
                apply(api, &mut seeds, &mut optimizers, &mut registry, directive, config, timeline, step)?;
            }
        }
        if progress && (step % 10 == 0 || step == config.steps) {
            let done = (step * 30 / config.steps.max(1)) as usize;
            let stages: Vec<String> = seeds.iter().map(|(id, s)| format!("{id}:{}", s.slot.stage())).collect();
            eprint!(
                "\r[{}{}] step {step:>4}/{} loss {loss_value:.3} {}\x1b[K",
                "#".repeat(done),
                ".".repeat(30 - done),
                config.steps,
                stages.join(" ")
            );
            std::io::stderr().flush()?;
        }
    }
    if progress {
        eprintln!();
    }
    let ms_per_step = started.elapsed().as_secs_f64() * 1e3 / config.steps.max(1) as f64;
    let test_accuracy = evaluate(&net, &mut seeds, &data.test_x, &data.test_y);
    let val_accuracy = evaluate(&net, &mut seeds, &data.val_x, &data.val_y);
    let parameters_added = seeds
        .values()
        .filter(|s| s.slot.stage() == SeedStage::Fossilized)
        .filter_map(|s| s.slot.kernel().map(|k| k.parameters().iter().map(|p| p.numel() as i64).sum::<i64>()))
        .sum();
    if !test_accuracy.is_finite() {
        bail!("evaluation produced a non-finite accuracy");
    }
    Ok(RunStats {
        test_accuracy,
        val_accuracy,
        final_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
        host_parameters,
        parameters_added,
        ms_per_step,
    })
}

fn learning_rate_at(config: &TrainConfig, step: u64) -> f64 {
    let progress = step as f64 / config.steps.max(1) as f64;
    let floor = 0.05;
    config.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// Runs one slot; a failing or non-finite seed leaves `h` unchanged.
fn run_slot(seed: &mut Seed, h: &Tensor, ctx: &ForwardCtx<'_>) -> Tensor {
    let started = Instant::now();
    let result = seed.slot.forward(h, ctx);
    seed.latency_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(out) => {
            let finite = out.seed.as_ref().is_none_or(|s| s.isfinite().all().int64_value(&[]) == 1);
            if finite {
                seed.failed = None;
                out.out
            } else {
                seed.failed = Some("non-finite seed output".to_owned());
                h.shallow_clone()
            }
        }
        Err(err) => {
            seed.failed = Some(err.to_string());
            h.shallow_clone()
        }
    }
}

fn evaluate(net: &HostNet, seeds: &mut BTreeMap<String, Seed>, x: &Tensor, y: &Tensor) -> f64 {
    tch::no_grad(|| {
        let mut h = net.hidden(x);
        let ctx = ForwardCtx::infer();
        for seed in seeds.values_mut() {
            // Inference outputs may alias the slot's reused buffer: copy.
            h = run_slot(seed, &h, &ctx).copy();
        }
        digits::accuracy(&net.head(&h), y)
    })
}

fn seed_report(id: &str, s: &Seed, task_loss: f64) -> SeedStepReport {
    let attached = s.slot.kernel().is_some();
    let running = matches!(
        s.slot.stage(),
        SeedStage::Training
            | SeedStage::Blending
            | SeedStage::Shadowing
            | SeedStage::Probationary
            | SeedStage::Fossilized
    );
    SeedStepReport {
        seed_id: id.to_owned(),
        stage: s.slot.stage(),
        kernel_attached: attached,
        kernel_sha256: attached.then(|| s.sha256.clone()),
        // The seed learns from the task loss (straight-through while
        // incubating); when it did not run cleanly there is no seed loss.
        loss: (running && s.failed.is_none()).then_some(task_loss),
        outputs_finite: !s.failed.as_deref().is_some_and(|f| f.contains("non-finite")),
        output_shape_ok: s.failed.is_none(),
        kernel_latency_us: s.latency_us,
        isolation_violations: s.violations,
        max_gradient_cosine: s.max_cosine,
        fallback_used: false,
        alpha: s.slot.alpha(),
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    api: &dyn KasminaApi,
    seeds: &mut BTreeMap<String, Seed>,
    optimizers: &mut SeedOptimizers,
    registry: &mut ParameterRegistry,
    directive: GraftDirective,
    config: &TrainConfig,
    timeline: &mut Vec<TimelineEntry>,
    step: u64,
) -> Result<()> {
    match directive {
        GraftDirective::Attach { seed_id, site, blueprint_id, artifact_sha256, blend } => {
            if site != SITE {
                bail!("directive grafts {seed_id} at unknown site {site}");
            }
            let artifact = api.fetch_kernel(&blueprint_id)?;
            let digest = hex(&Sha256::digest(&artifact.bytes));
            if digest != artifact_sha256 || artifact.sha256 != artifact_sha256 {
                // Never graft bytes other than the ones the directive names.
                timeline.push(TimelineEntry::note(
                    step,
                    &seed_id,
                    format!("refused kernel {blueprint_id}: digest {digest} != {artifact_sha256}"),
                ));
                return Ok(());
            }
            let vs = nn::VarStore::new(config.device);
            let module = tch::TrainableCModule::load_data(&mut std::io::Cursor::new(&artifact.bytes), vs.root())
                .with_context(|| format!("loading {blueprint_id}"))?;
            let kernel = ScriptedKernel::new(vs, module)?;
            let params = kernel.parameters();
            let schedule = AlphaSchedule::new(ScheduleConfig { steps: 1, temperature: 0.1, hysteresis: 0.0 })?;
            let mut slot = SeedSlot::new(&seed_id, SITE, tensor_spec(&blend)?, schedule)?;
            slot.transition(SeedStage::Germinated)?;
            slot.attach_kernel(Box::new(kernel))?;
            // Ownership is recorded at graft time; the parameters join an
            // optimizer only when the seed starts training (Stage directive).
            optimizers.leave(&seed_id);
            if registry.seeds().any(|s| s == seed_id) {
                registry.deregister_seed(&seed_id)?;
            }
            registry.register_seed(&seed_id, &params)?;
            seeds.insert(
                seed_id,
                Seed { slot, sha256: artifact_sha256, failed: None, latency_us: 0, violations: 0, max_cosine: 0.0 },
            );
        }
        GraftDirective::Stage { seed_id, stage, alpha } => {
            let seed =
                seeds.get_mut(&seed_id).with_context(|| format!("stage directive for unknown seed {seed_id}"))?;
            if seed.slot.stage() != stage {
                seed.slot.transition(stage)?;
                if stage == SeedStage::Training
                    && let Some(kernel) = seed.slot.kernel()
                {
                    let adam = SeedOptimizerConfig::Adam {
                        lr: learning_rate_at(config, step),
                        beta1: 0.9,
                        beta2: 0.999,
                        weight_decay: 0.0,
                    };
                    optimizers.join(&seed_id, &kernel.parameters(), registry, adam)?;
                }
            }
            if stage == SeedStage::Blending {
                seed.slot.set_directed_alpha(alpha)?;
            }
        }
        GraftDirective::Detach { seed_id, reason } => {
            optimizers.leave(&seed_id);
            if registry.seeds().any(|s| s == seed_id) {
                registry.deregister_seed(&seed_id)?;
            }
            if seeds.remove(&seed_id).is_some() {
                timeline.push(TimelineEntry::note(step, &seed_id, format!("detached: {reason}")));
            }
        }
        GraftDirective::Pause { seed_id, paused } => {
            if let Some(seed) = seeds.get_mut(&seed_id) {
                seed.slot.set_paused(paused);
            }
        }
        GraftDirective::DropTeacher => {}
        GraftDirective::Optimizer { optimizer_id, .. } => {
            timeline.push(TimelineEntry::note(
                step,
                "-",
                format!("optimizer {optimizer_id} settings received (the demo keeps its own)"),
            ));
        }
    }
    Ok(())
}

fn tensor_spec(blend: &leyline::api::BlendSpec) -> Result<BlendSpec> {
    Ok(match blend.mode {
        BlendMode::Convex => BlendSpec::convex(),
        BlendMode::Residual => BlendSpec::residual(),
        BlendMode::Channel => BlendSpec::channel(blend.alpha_vec.clone())?,
        BlendMode::Confidence => BlendSpec::confidence(ConfidenceGate {
            k: blend.gate_k,
            tau: blend.gate_tau,
            alpha_lo: blend.alpha_lo,
            alpha_hi: blend.alpha_hi,
        })?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
