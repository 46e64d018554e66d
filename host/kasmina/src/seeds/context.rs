//! Everything the control plane knows about one seed: the state gates are
//! built from and `export_seed_states` reports.

use std::collections::{BTreeMap, VecDeque};

use leyline::api::{BlendReport, BlendSpec, SeedStepReport};
use leyline::journal::SeedProgress;
use leyline::{BlueprintDescriptor, HealthStatus, SeedStage, SeedState};

use super::blend_window::BlendWindow;

/// Facts about the seed's verified kernel, from the kernel load manager.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelFacts {
    /// Digest the artifact was verified against.
    pub sha256: String,
    /// Prewarm p95 forward latency, µs.
    pub prewarm_p95_us: u64,
}

/// One seed slot's control-plane state.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedContext {
    /// Seed id.
    pub seed_id: String,
    /// Site the slot grafts at.
    pub site: String,
    /// Stage the host holds.
    pub stage: SeedStage,
    /// Stage the trainer last reported running the seed in.
    pub reported_stage: SeedStage,
    /// Blueprint, once germinated.
    pub blueprint_id: Option<String>,
    /// Its Urza descriptor.
    pub descriptor: Option<BlueprintDescriptor>,
    /// Requested parameters.
    pub parameters: BTreeMap<String, f64>,
    /// Blend configuration from the annotations.
    pub blend: Option<BlendSpec>,
    /// Mesh layers from the annotations.
    pub mesh_layers: Vec<String>,
    /// Steps in the current stage.
    pub steps_in_stage: u64,
    /// α the trainer is told to apply.
    pub alpha: f64,
    /// Recent seed losses (bounded by the gate loss window).
    pub losses: VecDeque<f64>,
    /// The verified kernel, once supplied.
    pub kernel: Option<KernelFacts>,
    /// Prefetch request in flight, if any.
    pub prefetch_request: Option<String>,
    /// Whether an Attach directive was sent for `kernel`.
    pub attach_sent: bool,
    /// Trainer confirms a kernel is attached.
    pub kernel_attached: bool,
    /// Digest of the kernel the trainer says it runs.
    pub reported_kernel_sha256: Option<String>,
    /// Anything but the seed's own verified kernel ran (sticky).
    pub fallback_used: bool,
    /// Latest seed outputs finite.
    pub outputs_finite: bool,
    /// Latest seed output matched the site shape.
    pub output_shape_ok: bool,
    /// Latest kernel latency reported by the trainer, µs.
    pub kernel_latency_us: Option<u64>,
    /// Blend statistics of the last reported step.
    pub last_blend: Option<BlendReport>,
    /// Blend statistics of the recent blended steps (gate inputs, API 0.2.0).
    pub blend_window: BlendWindow,
    /// Isolation violations in the current window.
    pub isolation_violations: u32,
    /// Largest host/seed gradient cosine in the window.
    pub max_cosine: f64,
    /// Swapped out of the forward path.
    pub paused: bool,
    /// Automatic advancement held (STABILIZE).
    pub hold: bool,
    /// Global metric when the seed germinated (G4 baseline).
    pub metric_baseline: Option<f64>,
    /// When the embargo ends (ms since the epoch).
    pub embargo_until_ms: Option<u64>,
    /// Last gate failure reason, for health and reports.
    pub last_failure: Option<String>,
    /// Why the seed's kernel could not be supplied (`kernel_digest_mismatch`,
    /// `artifact_missing`, `prefetch_timeout`, …): the gate that fails for
    /// want of a kernel names this as its reason (see `gates::with_cause`).
    pub kernel_failure: Option<String>,
    /// The trainer has not yet shown that it runs this seed as the control
    /// plane holds it (after a restart, a reconnect or a rollback): no
    /// progress is counted and no gate runs until it has, or until the
    /// resync window (`attach_timeout_steps`) runs out.
    pub resync_pending: bool,
    /// Step reports seen while `resync_pending`.
    pub resync_steps: u64,
    /// A RESUME arrived while `resync_pending`; the entry gate is re-checked
    /// (and the seed resumed or culled) once the trainer has resynchronised.
    pub resume_pending: bool,
    /// Data-parallel ranks applied different things to this seed (the
    /// digests): its next gate fails with `rank_divergence` (`ranks`).
    pub rank_divergence: Option<String>,
}

impl SeedContext {
    /// A dormant slot (bootstrap UNKNOWN → DORMANT is done by the caller).
    pub fn new(seed_id: &str, site: &str) -> Self {
        SeedContext {
            seed_id: seed_id.to_owned(),
            site: site.to_owned(),
            stage: SeedStage::Unknown,
            reported_stage: SeedStage::Dormant,
            blueprint_id: None,
            descriptor: None,
            parameters: BTreeMap::new(),
            blend: None,
            mesh_layers: Vec::new(),
            steps_in_stage: 0,
            alpha: 0.0,
            losses: VecDeque::new(),
            kernel: None,
            prefetch_request: None,
            attach_sent: false,
            kernel_attached: false,
            reported_kernel_sha256: None,
            fallback_used: false,
            outputs_finite: true,
            output_shape_ok: true,
            kernel_latency_us: None,
            last_blend: None,
            blend_window: BlendWindow::default(),
            isolation_violations: 0,
            max_cosine: 0.0,
            paused: false,
            hold: false,
            metric_baseline: None,
            embargo_until_ms: None,
            last_failure: None,
            kernel_failure: None,
            resync_pending: false,
            resync_steps: 0,
            resume_pending: false,
            rank_divergence: None,
        }
    }

    /// Whether the attached kernel is the verified one the catalog named.
    pub fn kernel_verified(&self) -> bool {
        match (&self.kernel, &self.reported_kernel_sha256) {
            (Some(k), Some(reported)) => self.kernel_attached && k.sha256 == *reported,
            _ => false,
        }
    }

    /// The latency gates judge: what the trainer measured, or prewarm's p95
    /// before the first report. Unknown is infinite, never zero.
    pub fn observed_latency_us(&self) -> f64 {
        match (self.kernel_latency_us, &self.kernel) {
            (Some(us), _) => us as f64,
            (None, Some(k)) => k.prewarm_p95_us as f64,
            (None, None) => f64::INFINITY,
        }
    }

    /// G5's notion of clean: no kernel, no prefetch, nothing attached, no
    /// outstanding violations.
    pub fn is_clean(&self) -> bool {
        self.kernel.is_none()
            && self.prefetch_request.is_none()
            && !self.kernel_attached
            && self.isolation_violations == 0
    }

    /// Folds one step's trainer report in. `loss_window` bounds the losses.
    pub fn absorb(&mut self, report: &SeedStepReport, loss_window: usize) {
        self.reported_stage = report.stage;
        self.kernel_attached = report.kernel_attached;
        self.reported_kernel_sha256 = report.kernel_sha256.clone();
        if report.fallback_used {
            self.fallback_used = true;
        }
        // A trainer running a kernel other than the verified one is a
        // fallback, whatever it claims.
        if let (Some(k), Some(reported)) = (&self.kernel, &report.kernel_sha256)
            && report.kernel_attached
            && k.sha256 != *reported
        {
            self.fallback_used = true;
        }
        self.outputs_finite = report.outputs_finite;
        self.output_shape_ok = report.output_shape_ok;
        self.last_blend = report.blend.clone();
        if let Some(blend) = &report.blend {
            self.blend_window.push(blend, report.kernel_latency_us, loss_window);
        }
        if report.kernel_attached {
            self.kernel_latency_us = Some(report.kernel_latency_us);
        }
        if let Some(loss) = report.loss {
            if self.losses.len() == loss_window {
                self.losses.pop_front();
            }
            self.losses.push_back(loss);
            if !loss.is_finite() {
                self.outputs_finite = false;
            }
        }
        self.isolation_violations = self.isolation_violations.saturating_add(report.isolation_violations);
        if report.max_gradient_cosine.is_nan() || report.max_gradient_cosine > self.max_cosine {
            self.max_cosine = report.max_gradient_cosine;
        }
    }

    /// The trainer's report did not mention this seed. In stages where the
    /// trainer holds nothing (before attach, after detach) the host's stage
    /// is the reported one; in a running stage the trainer has lost the
    /// seed, which gates then see as "kernel not attached".
    pub fn absent_from_report(&mut self) {
        self.kernel_attached = false;
        self.last_blend = None;
        self.reported_kernel_sha256 = None;
        match self.stage {
            SeedStage::Training
            | SeedStage::Blending
            | SeedStage::Shadowing
            | SeedStage::Probationary
            | SeedStage::Fossilized => {}
            _ => self.reported_stage = self.stage,
        }
    }

    /// Enters `stage`, resetting the per-stage step count.
    pub fn enter(&mut self, stage: SeedStage) {
        self.stage = stage;
        self.steps_in_stage = 0;
    }

    /// Forgets everything the seed held, back to an empty slot.
    pub fn clear_for_reset(&mut self) {
        let fresh = SeedContext::new(&self.seed_id, &self.site);
        let stage = self.stage;
        let reported = self.reported_stage;
        *self = SeedContext { stage, reported_stage: reported, ..fresh };
    }

    /// Health classification.
    pub fn health(&self, isolation_breaker_open: bool) -> HealthStatus {
        if isolation_breaker_open && self.stage.is_active() || self.fallback_used {
            HealthStatus::Critical
        } else if matches!(self.stage, SeedStage::Culled | SeedStage::Embargoed) || !self.outputs_finite {
            HealthStatus::Unhealthy
        } else if self.isolation_violations > 0 || !self.output_shape_ok || self.paused {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// Progress inside the current stage, as journaled.
    pub fn to_progress(&self) -> SeedProgress {
        SeedProgress {
            seed_id: self.seed_id.clone(),
            stage: self.stage,
            alpha: self.alpha,
            steps_in_stage: self.steps_in_stage,
            losses: self.losses.iter().copied().collect(),
            isolation_violations: self.isolation_violations,
            max_cosine: self.max_cosine,
            metric_baseline: self.metric_baseline,
            fallback_used: self.fallback_used,
            outputs_finite: self.outputs_finite,
            hold: self.hold,
            resume_pending: self.resume_pending,
        }
    }

    /// Puts journaled progress back; the caller checks that `p.stage` is
    /// the seed's stage. The loss window keeps at most `loss_window` values.
    pub fn apply_progress(&mut self, p: &SeedProgress, loss_window: usize) {
        self.alpha = p.alpha;
        self.steps_in_stage = p.steps_in_stage;
        let skip = p.losses.len().saturating_sub(loss_window);
        self.losses = p.losses.iter().skip(skip).copied().collect();
        self.isolation_violations = p.isolation_violations;
        self.max_cosine = p.max_cosine;
        self.metric_baseline = p.metric_baseline;
        self.fallback_used = p.fallback_used;
        self.outputs_finite = p.outputs_finite;
        self.hold = p.hold;
        self.resume_pending = p.resume_pending;
    }

    /// Whether the trainer holds a kernel for the seed in this stage.
    pub fn runs_kernel(&self) -> bool {
        matches!(
            self.stage,
            SeedStage::Training
                | SeedStage::Blending
                | SeedStage::Shadowing
                | SeedStage::Probationary
                | SeedStage::Fossilized
        )
    }

    /// The exported snapshot.
    pub fn to_state(&self, isolation_breaker_open: bool) -> SeedState {
        SeedState {
            seed_id: self.seed_id.clone(),
            site: self.site.clone(),
            stage: self.stage,
            blueprint_id: self.blueprint_id.clone(),
            alpha: self.alpha,
            epoch: self.steps_in_stage,
            blend_mode: self.blend.as_ref().map(|b| b.mode),
            health: self.health(isolation_breaker_open),
            paused: self.paused,
            blend: self.last_blend.clone(),
        }
    }
}
