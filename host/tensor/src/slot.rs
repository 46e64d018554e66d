//! A seed slot: one seed grafted at a named site of the host's forward pass.
//!
//! The slot holds the seed kernel, its blend spec, the α the control plane
//! last directed, its stage and a paused flag, and turns the host's output at the site into the
//! blended output (SPEC.md §5):
//!
//! | stage | output | seed learns? |
//! |---|---|---|
//! | UNKNOWN, DORMANT, GERMINATED, CULLED, EMBARGOED, RESETTING | host | no |
//! | TRAINING (incubator) | `host + (s − s.detach())`, value = host | yes, straight-through |
//! | BLENDING | blend with the α the control plane directed | yes |
//! | SHADOWING, PROBATIONARY | blend with α = 1; host output returned beside it | yes |
//! | FOSSILIZED (and TERMINATED after it) | blend with α = 1, host *not* detached | as part of the host |
//! | any stage while paused | host | no |
//!
//! Before fossilization the seed is always fed `host.detach()`, and the host
//! branch of every blend is detached: no gradient reaches the host from the
//! seed's path. A fossilized seed is an ordinary layer of the host, so
//! gradients flow through it both ways.
//!
//! [`ForwardMode::Train`] uses the autograd kernels; [`ForwardMode::Infer`]
//! writes into the slot's reused buffer with the fused no-grad kernels (and
//! skips the seed entirely where its value is not used).

use leyline::SeedStage;
use tch::Tensor;

use crate::blend::BlendSpec;
use crate::blend::kernels::{blend, blend_fossil, blend_into, buffer_fits, incubate};
use crate::blend::stats::BlendStats;
use crate::error::{Result, TensorError};
use crate::kernel::SeedKernel;

/// Whether this forward pass trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Autograd on: outputs carry the graph, the seed receives gradients.
    Train,
    /// No autograd: fused kernels into reused buffers.
    Infer,
}

/// Per-batch context handed to every slot.
#[derive(Debug, Clone, Copy)]
pub struct ForwardCtx<'a> {
    /// Train or infer.
    pub mode: ForwardMode,
    /// Classification logits `[N, classes]` of this batch (CONFIDENCE).
    pub logits: Option<&'a Tensor>,
}

impl ForwardCtx<'_> {
    /// A training context without logits.
    pub fn train() -> Self {
        ForwardCtx { mode: ForwardMode::Train, logits: None }
    }

    /// An inference context without logits.
    pub fn infer() -> Self {
        ForwardCtx { mode: ForwardMode::Infer, logits: None }
    }
}

impl<'a> ForwardCtx<'a> {
    /// The same context carrying this batch's classification logits
    /// `[N, classes]` (what CONFIDENCE blends gate on).
    pub fn with_logits(self, logits: &'a Tensor) -> ForwardCtx<'a> {
        ForwardCtx { logits: Some(logits), ..self }
    }
}

/// What a slot produced for one batch.
#[derive(Debug)]
pub struct SlotOutput {
    /// The output to feed downstream. In `Infer` mode with a blend this
    /// aliases the slot's reused buffer: it is overwritten by the slot's next
    /// forward, so copy it if it must outlive that.
    pub out: Tensor,
    /// The host output at the site (for SHADOWING comparisons).
    pub host: Tensor,
    /// The seed's output, when the seed ran.
    pub seed: Option<Tensor>,
    /// Blend statistics, when a blend ran.
    pub stats: Option<BlendStats>,
}

/// One seed at one site.
pub struct SeedSlot {
    seed_id: String,
    site: String,
    kernel: Option<Box<dyn SeedKernel>>,
    spec: BlendSpec,
    stage: SeedStage,
    paused: bool,
    fossilized: bool,
    buffer: Option<Tensor>,
    last_stats: Option<BlendStats>,
    /// α for BLENDING, as the control plane last directed it. There is one
    /// α ramp in the system — the control plane's — so embedded and daemon
    /// trainers apply identical values; until the first directive it is 0.
    blending_alpha: f64,
}

impl std::fmt::Debug for SeedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSlot")
            .field("seed_id", &self.seed_id)
            .field("site", &self.site)
            .field("stage", &self.stage)
            .field("paused", &self.paused)
            .field("kernel", &self.kernel.is_some())
            .field("mode", &self.spec.mode())
            .finish()
    }
}

impl SeedSlot {
    /// A DORMANT slot with no kernel.
    pub fn new(seed_id: impl Into<String>, site: impl Into<String>, spec: BlendSpec) -> Result<Self> {
        let (seed_id, site) = (seed_id.into(), site.into());
        if seed_id.is_empty() || site.is_empty() {
            return Err(TensorError::InvalidConfig { name: "slot", rule: "seed id and site must be non-empty".into() });
        }
        Ok(SeedSlot {
            seed_id,
            site,
            kernel: None,
            spec,
            stage: SeedStage::Dormant,
            paused: false,
            fossilized: false,
            buffer: None,
            last_stats: None,
            blending_alpha: 0.0,
        })
    }

    /// The seed id.
    pub fn seed_id(&self) -> &str {
        &self.seed_id
    }

    /// The site name.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The current stage.
    pub fn stage(&self) -> SeedStage {
        self.stage
    }

    /// The blend spec.
    pub fn spec(&self) -> &BlendSpec {
        &self.spec
    }

    /// The α the next blend uses in the current stage (0 when the seed is not blended in).
    pub fn alpha(&self) -> f64 {
        match self.effective_stage() {
            SeedStage::Blending => self.blending_alpha,
            SeedStage::Shadowing | SeedStage::Probationary | SeedStage::Fossilized => 1.0,
            _ => 0.0,
        }
    }

    /// Sets α for BLENDING to the value the control plane decided (a
    /// `GraftDirective::Stage`), so every trainer — embedded or beside a
    /// daemon — applies exactly the same ramp. Out-of-range values are refused.
    pub fn set_alpha(&mut self, alpha: f64) -> Result<()> {
        if !(alpha.is_finite() && (0.0..=1.0).contains(&alpha)) {
            return Err(TensorError::InvalidConfig { name: "alpha", rule: format!("{alpha} is outside [0, 1]") });
        }
        self.blending_alpha = alpha;
        Ok(())
    }

    /// Whether the slot is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The attached kernel, if any.
    pub fn kernel(&self) -> Option<&dyn SeedKernel> {
        self.kernel.as_deref()
    }

    /// Stats of the last blend (cleared by [`SeedSlot::end_step`]).
    pub fn last_stats(&self) -> Option<&BlendStats> {
        self.last_stats.as_ref()
    }

    /// Attaches the kernel the load manager supplied. Only in GERMINATED
    /// (the kernel is what G1 checks before TRAINING).
    pub fn attach_kernel(&mut self, kernel: Box<dyn SeedKernel>) -> Result<()> {
        if self.stage != SeedStage::Germinated {
            return Err(TensorError::WrongStage { op: "attach_kernel", stage: self.stage });
        }
        self.kernel = Some(kernel);
        Ok(())
    }

    /// Detaches and returns the kernel (cull/reset), dropping the buffer.
    /// Refused for a fossilized seed: it is part of the host now.
    pub fn detach_kernel(&mut self) -> Result<Option<Box<dyn SeedKernel>>> {
        if self.fossilized {
            return Err(TensorError::WrongStage { op: "detach_kernel", stage: self.stage });
        }
        self.buffer = None;
        Ok(self.kernel.take())
    }

    /// Moves to `to`, checked against the one transition table in leyline.
    /// Entering TRAINING needs a kernel; entering BLENDING starts at α = 0
    /// until the control plane directs otherwise.
    pub fn transition(&mut self, to: SeedStage) -> Result<()> {
        if !self.stage.can_transition_to(to) {
            return Err(TensorError::WrongStage { op: "transition", stage: self.stage });
        }
        if matches!(to, SeedStage::Training) && self.kernel.is_none() {
            return Err(TensorError::NoKernel(to));
        }
        if to == SeedStage::Blending {
            self.blending_alpha = 0.0;
        }
        if to == SeedStage::Fossilized {
            self.fossilized = true;
        }
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.set_train(matches!(
                to,
                SeedStage::Training
                    | SeedStage::Blending
                    | SeedStage::Shadowing
                    | SeedStage::Probationary
                    | SeedStage::Fossilized
            ))?;
        }
        self.stage = to;
        Ok(())
    }

    /// Pauses (seed swapped out of the forward path) or resumes. Resuming
    /// does not re-run gates: the control plane does that before calling.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Ends a training step: returns (and clears) the step's blend stats.
    pub fn end_step(&mut self) -> Option<BlendStats> {
        self.last_stats.take()
    }

    /// The stage that decides the forward behaviour (TERMINATED after
    /// FOSSILIZED still runs the fossil).
    fn effective_stage(&self) -> SeedStage {
        if self.fossilized { SeedStage::Fossilized } else { self.stage }
    }

    /// Runs the slot on the host's output at the site.
    pub fn forward(&mut self, host_out: &Tensor, ctx: &ForwardCtx<'_>) -> Result<SlotOutput> {
        let host_only = |host: &Tensor| SlotOutput {
            out: host.shallow_clone(),
            host: host.shallow_clone(),
            seed: None,
            stats: None,
        };
        if self.paused {
            return Ok(host_only(host_out));
        }
        let stage = self.effective_stage();
        let alpha = match stage {
            SeedStage::Unknown
            | SeedStage::Dormant
            | SeedStage::Germinated
            | SeedStage::Culled
            | SeedStage::Embargoed
            | SeedStage::Resetting
            | SeedStage::Terminated => return Ok(host_only(host_out)),
            // Inference skips the incubating seed: its value is not used.
            SeedStage::Training if ctx.mode == ForwardMode::Infer => return Ok(host_only(host_out)),
            SeedStage::Training => None,
            SeedStage::Blending => Some(self.blending_alpha),
            SeedStage::Shadowing | SeedStage::Probationary | SeedStage::Fossilized => Some(1.0),
        };
        // `confidence_logits_required`: a trainer that does not hand over
        // the batch's logits fails from the first step the seed runs, not
        // only once blending starts.
        if self.spec.logits_required() && ctx.logits.is_none() {
            return Err(TensorError::MissingLogits);
        }
        let kernel = self.kernel.as_deref().ok_or(TensorError::NoKernel(stage))?;
        let fossil = stage == SeedStage::Fossilized;
        // Before fossilization the seed sees detached features only.
        let seed_in = if fossil { host_out.shallow_clone() } else { host_out.detach() };
        let run_seed = || kernel.forward(&seed_in);
        let seed = match ctx.mode {
            ForwardMode::Train => run_seed()?,
            ForwardMode::Infer => tch::no_grad(run_seed)?,
        };
        let Some(alpha) = alpha else {
            let out = incubate(host_out, &seed)?;
            return Ok(SlotOutput { out, host: host_out.shallow_clone(), seed: Some(seed), stats: None });
        };
        let (out, stats) = match ctx.mode {
            ForwardMode::Train if fossil => blend_fossil(&self.spec, alpha, host_out, &seed, ctx.logits)?,
            ForwardMode::Train => blend(&self.spec, alpha, host_out, &seed, ctx.logits)?,
            ForwardMode::Infer => {
                let buffer = buffer_for(&mut self.buffer, host_out)?;
                let stats = blend_into(&self.spec, alpha, host_out, &seed, ctx.logits, buffer)?;
                (buffer.shallow_clone(), stats)
            }
        };
        self.last_stats = Some(stats.clone());
        Ok(SlotOutput { out, host: host_out.shallow_clone(), seed: Some(seed), stats: Some(stats) })
    }
}

/// The reused output buffer, reallocated only when the host output's shape,
/// dtype or device changes (e.g. a smaller last batch).
fn buffer_for<'a>(slot: &'a mut Option<Tensor>, host: &Tensor) -> Result<&'a mut Tensor> {
    if !slot.as_ref().is_some_and(|b| buffer_fits(b, host)) {
        *slot = Some(Tensor::f_empty_like(host).map_err(TensorError::torch("blend buffer"))?);
    }
    slot.as_mut().ok_or(TensorError::Kernel("blend buffer missing".into()))
}
