//! One grafted seed on the trainer's side: its slot, the digest of the
//! kernel it runs, and what it did during the current training step.
//!
//! A seed that fails (an error from its kernel, a wrong output shape, a
//! non-finite value) is not used for that step — the host output stands —
//! and the failure goes into the step report, where the gates judge it.

use std::time::Instant;

use kasmina_tensor::{BlendStats, ForwardCtx, ForwardMode, SeedSlot};
use leyline::SeedStage;
use leyline::api::{BlendReport, SeedStepReport};
use tch::Tensor;

/// What went wrong with a seed during this step.
#[derive(Debug, Clone, PartialEq)]
pub enum SeedFailure {
    /// The seed produced NaN or infinite values.
    NonFinite,
    /// The seed's forward or blend failed (shape, missing logits, kernel error).
    Error(String),
}

/// Per-step measurements, reset after every report.
#[derive(Debug, Default)]
struct StepMeasure {
    failure: Option<SeedFailure>,
    latency_us: u64,
    violations: u32,
    max_cosine: f64,
    stats: Option<BlendStats>,
}

/// One seed grafted at a site.
#[derive(Debug)]
pub(crate) struct SeedRuntime {
    pub(crate) slot: SeedSlot,
    pub(crate) blueprint_id: String,
    pub(crate) sha256: String,
    /// The blend as the control plane specified it (checkpoints keep it).
    pub(crate) blend: leyline::api::BlendSpec,
    measure: StepMeasure,
}

impl SeedRuntime {
    pub(crate) fn new(slot: SeedSlot, blueprint_id: String, sha256: String, blend: leyline::api::BlendSpec) -> Self {
        SeedRuntime { slot, blueprint_id, sha256, blend, measure: StepMeasure::default() }
    }

    /// Runs the seed on `h`; returns what flows on. In training mode the
    /// step's measurements are recorded; inference leaves them alone.
    pub(crate) fn run(&mut self, h: &Tensor, ctx: &ForwardCtx<'_>) -> Tensor {
        let train = ctx.mode == ForwardMode::Train;
        let started = Instant::now();
        let result = self.slot.forward(h, ctx);
        let elapsed = started.elapsed().as_micros() as u64;
        let (out, failure) = match result {
            Ok(out) => {
                if train {
                    // Inference blends (evaluation) are not this step's statistics.
                    self.measure.stats = out.stats.clone();
                }
                let finite = out.seed.as_ref().is_none_or(all_finite);
                if finite {
                    // Inference output may alias the slot's reused buffer,
                    // which the next forward overwrites: hand out a copy.
                    let flowing = if train || out.stats.is_none() { out.out } else { out.out.copy() };
                    (flowing, None)
                } else {
                    (h.shallow_clone(), Some(SeedFailure::NonFinite))
                }
            }
            Err(err) => (h.shallow_clone(), Some(SeedFailure::Error(err.to_string()))),
        };
        if train {
            self.measure.latency_us = self.measure.latency_us.saturating_add(elapsed);
            if self.measure.failure.is_none() {
                self.measure.failure = failure;
            }
        }
        out
    }

    /// Records an isolation check's result for this step.
    pub(crate) fn record_isolation(&mut self, violation: bool, cosine: f64) {
        self.measure.violations += u32::from(violation);
        self.measure.max_cosine = self.measure.max_cosine.max(cosine);
    }

    /// Whether the seed learns this step (isolation is measured then).
    pub(crate) fn is_learning(&self) -> bool {
        !self.slot.is_paused() && matches!(self.slot.stage(), SeedStage::Training | SeedStage::Blending)
    }

    /// The failure recorded this step, if any.
    pub(crate) fn failure(&self) -> Option<&SeedFailure> {
        self.measure.failure.as_ref()
    }

    /// The step report for this seed; resets the step's measurements.
    pub(crate) fn take_report(&mut self, seed_id: &str, task_loss: f64) -> SeedStepReport {
        // The slot's copy includes inference blends; the training one is ours.
        let _ = self.slot.end_step();
        let m = std::mem::take(&mut self.measure);
        let attached = self.slot.kernel().is_some();
        let running = matches!(
            self.slot.stage(),
            SeedStage::Training
                | SeedStage::Blending
                | SeedStage::Shadowing
                | SeedStage::Probationary
                | SeedStage::Fossilized
        ) && !self.slot.is_paused();
        SeedStepReport {
            seed_id: seed_id.to_owned(),
            stage: self.slot.stage(),
            kernel_attached: attached,
            kernel_sha256: attached.then(|| self.sha256.clone()),
            // The seed learns from the task loss (straight-through while
            // incubating); a seed that did not run cleanly has no loss.
            loss: (running && m.failure.is_none()).then_some(task_loss),
            outputs_finite: m.failure != Some(SeedFailure::NonFinite),
            output_shape_ok: !matches!(m.failure, Some(SeedFailure::Error(_))),
            kernel_latency_us: m.latency_us,
            isolation_violations: m.violations,
            max_gradient_cosine: m.max_cosine,
            // Only the seed's own verified kernel ever runs here.
            fallback_used: false,
            alpha: self.slot.alpha(),
            blend: m.stats.filter(|_| m.failure.is_none()).map(|s| blend_report(&s)),
        }
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.f_isfinite().and_then(|f| f.f_all()).map(|a| a.int64_value(&[]) == 1).unwrap_or(false)
}

/// The contract's view of the tensor plane's blend statistics.
pub(crate) fn blend_report(s: &BlendStats) -> BlendReport {
    BlendReport {
        mode: s.mode,
        alpha_mean: s.alpha_mean,
        alpha_p95: s.alpha_p95,
        clamped_fraction: s.clamped_fraction,
        sparsity: s.sparsity,
        gate_mean: s.gate_mean,
        kernel_us: s.kernel_us,
    }
}
