//! Step reports drive the lifecycle: each report updates what the host knows
//! about every seed, then each seed advances when its stage's progress is
//! complete and the guarding gate passes (SPEC.md §2: "driven by training
//! progress plus gates — not all at once").
//!
//! | stage | advances when | gate |
//! |---|---|---|
//! | GERMINATED | kernel prefetched, attach confirmed by the trainer | G1 |
//! | TRAINING | `training_steps` steps trained | G2 |
//! | BLENDING | α ramp of `blend_steps` complete | G3 |
//! | SHADOWING | `shadow_steps` shadow window complete | G4 |
//! | PROBATIONARY | FOSSILIZE command after `probation_steps` | — |
//! | EMBARGOED | embargo period over → RESETTING | — |
//! | RESETTING | slot clean | G5 |
//!
//! Before any of that, the trainer's checkpoint reports are applied (a
//! confirmed restore puts the control plane's half of a rollback point
//! back, so the seed reports of the same step match it). A seed waiting for
//! the trainer to resynchronise (restart, reconnect) makes no progress until
//! the trainer runs it as held; while a rollback is in flight no seed moves.

use leyline::api::{BlendReport, GraftDirective, StepReport};
use leyline::{GateId, SeedStage, TelemetryEvent, TelemetryLevel};

use super::checkpoints::PointCtx;
use super::schedule::ramp_alpha;
use super::step_prepare::PreparedStep;
use super::{SeedContext, SeedManager, State};
use crate::rollback::RollbackReason;

/// How many times a step report is prepared before it is applied whatever
/// a newly germinated seed's kernel is doing.
pub const STEP_ATTEMPTS: u32 = 3;

/// Runs `attempt(last_try)` until it applies the step (`Ok(Some)`), at most
/// [`STEP_ATTEMPTS`] times; the last try always applies. Every caller of
/// [`SeedManager::apply_step`] goes through this, each with its own way of
/// preparing and applying (the daemon prepares outside its serialisation).
pub fn with_step_attempts<T, E>(mut attempt: impl FnMut(bool) -> Result<Option<T>, E>) -> Result<T, E> {
    for n in 1..STEP_ATTEMPTS {
        if let Some(done) = attempt(false)? {
            return Ok(done);
        }
        tracing::debug!(attempt = n, "kasmina.step.prepare_again");
    }
    match attempt(true)? {
        Some(done) => Ok(done),
        // `apply_step` with `last_try` applies whatever is pending.
        None => unreachable!("the last step attempt always applies"),
    }
}

impl SeedManager {
    /// Absorbs one step report and returns the directives for the next step:
    /// [`prepare_step`](Self::prepare_step) (kernel waits, gate verdicts;
    /// no state lock) then [`apply_step`](Self::apply_step).
    pub fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, String> {
        with_step_attempts(|last_try| self.apply_step(&report, self.prepare_step(&report), last_try))
    }

    /// Applies a step report under the state lock. A seed germinated after
    /// the report was prepared may still wait for its kernel: unless this
    /// is the `last_try`, nothing is applied and `Ok(None)` asks the caller
    /// to prepare again (waiting without any lock), so the step at which a
    /// kernel attaches does not depend on thread timing. Callers make at
    /// most [`STEP_ATTEMPTS`] attempts.
    pub fn apply_step(
        &self,
        report: &StepReport,
        mut prepared: PreparedStep,
        last_try: bool,
    ) -> Result<Option<Vec<GraftDirective>>, String> {
        let span = tracing::debug_span!("kasmina.step.report", step = report.step);
        let _entered = span.enter();
        let mut guard = self.lock();
        // Only a seed not waited for yet sends the report back: one whose
        // kernel already timed out while preparing is not waited for twice.
        if !last_try && !Self::seeds_waiting_for_kernels(&guard).is_subset(&prepared.waited) {
            return Ok(None);
        }
        let st = &mut *guard;
        let Some(registration) = &st.registration else {
            return Err("no model registered; call register_host first".to_owned());
        };
        if report.training_run_id != registration.training_run_id {
            return Err(format!(
                "report is for run {:?}, registered run is {:?}",
                report.training_run_id, registration.training_run_id
            ));
        }
        if let Some(last) = st.last_step
            && report.step <= last
        {
            return Err(format!("step {} does not follow the last reported step {last}", report.step));
        }
        for seed_report in &report.seeds {
            if !st.seeds.contains_key(&seed_report.seed_id) {
                return Err(format!("report names unknown seed {:?}", seed_report.seed_id));
            }
        }
        super::ranks::validate_report(report, registration.world_size, &st.seeds)?;
        // Checked whole; now apply.
        st.last_step = Some(report.step);
        self.absorb_checkpoint_events(st, &report.checkpoints);
        if let Some(metric) = report.global_metric
            && metric.is_finite()
        {
            st.latest_metric = Some(metric);
        }
        if let Some(kd) = &report.distillation {
            self.sink.emit(
                TelemetryEvent::new(
                    "kasmina.distillation.step",
                    TelemetryLevel::Info,
                    format!("KD loss {:.4} (weight {})", kd.kd_loss, kd.weight),
                    self.clock.now_ms(),
                )
                .attr("step", report.step)
                .attr("kd_loss", kd.kd_loss)
                .attr("weight", kd.weight)
                .attr("teacher_memory_bytes", kd.teacher_memory_bytes),
            );
        }
        st.latest_distillation = report.distillation.clone();
        let window = self.settings.gates.loss_window;
        let latest_metric = st.latest_metric;
        for seed in st.seeds.values_mut() {
            match report.seeds.iter().find(|r| r.seed_id == seed.seed_id) {
                Some(seed_report) => {
                    seed.absorb(seed_report, window);
                    if let Some(blend) = &seed_report.blend {
                        self.sink.emit(blend_event(&seed.seed_id, report.step, blend, self.clock.now_ms()));
                    }
                    // Every reported step counts: clean steps are the probes
                    // that close an open breaker after its cooldown.
                    self.isolation.record_step(&seed.seed_id, report.step, u64::from(seed_report.isolation_violations));
                }
                None => seed.absent_from_report(),
            }
            if seed.stage.is_active() && seed.metric_baseline.is_none() {
                // G4 compares against the metric when the seed joined.
                seed.metric_baseline = latest_metric;
            }
        }
        super::ranks::absorb(&mut st.seeds, report, self.clock.now_ms()).into_iter().for_each(|e| self.sink.emit(e));
        self.collect_prefetch_results(st);
        let ids: Vec<String> = st.seeds.keys().cloned().collect();
        let mut directives = std::mem::take(&mut st.directives);
        if !Self::rollback_frozen(st) {
            st.gate_memo = std::mem::take(&mut prepared.gates);
            for id in ids {
                let Some(mut seed) = st.seeds.remove(&id) else { continue };
                self.advance(st, &mut seed, &mut directives, report.step);
                st.seeds.insert(id, seed);
            }
            st.gate_memo.clear();
        }
        self.expect_checkpoint_results(st, &directives);
        Ok(Some(directives))
    }

    /// Moves prefetch results that arrived since the step was prepared onto
    /// the state, without waiting (the wait happened before the lock).
    fn collect_prefetch_results(&self, st: &mut State) {
        let mut events = self.prefetch_events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Ok(event) = events.try_recv() {
            st.prefetch_results.insert(event.seed_id().to_owned(), event);
        }
    }

    fn advance(&self, st: &mut State, seed: &mut SeedContext, directives: &mut Vec<GraftDirective>, step: u64) {
        if seed.resync_pending {
            self.advance_resync(st, seed, directives, step);
            return;
        }
        if seed.paused {
            return;
        }
        match seed.stage {
            SeedStage::Germinated => self.advance_germinated(st, seed, directives, step),
            SeedStage::Training => {
                seed.steps_in_stage += 1;
                if !seed.hold && seed.steps_in_stage >= self.settings.lifecycle.training_steps {
                    let _ = self.pass_gate(st, seed, directives, GateId::G2Stability, SeedStage::Training, Some(step));
                }
            }
            SeedStage::Blending => {
                seed.steps_in_stage += 1;
                let l = &self.settings.lifecycle;
                seed.alpha = ramp_alpha(seed.steps_in_stage, l.blend_steps, l.blend_temperature);
                if !seed.hold && seed.steps_in_stage >= l.blend_steps {
                    let _ = self.pass_gate(st, seed, directives, GateId::G3Interface, SeedStage::Blending, Some(step));
                } else {
                    directives.push(GraftDirective::Stage {
                        seed_id: seed.seed_id.clone(),
                        stage: SeedStage::Blending,
                        alpha: seed.alpha,
                    });
                }
            }
            SeedStage::Shadowing => {
                seed.steps_in_stage += 1;
                if !seed.hold && seed.steps_in_stage >= self.settings.lifecycle.shadow_steps {
                    let _ =
                        self.pass_gate(st, seed, directives, GateId::G4SystemImpact, SeedStage::Shadowing, Some(step));
                }
            }
            SeedStage::Probationary | SeedStage::Fossilized => seed.steps_in_stage += 1,
            SeedStage::Embargoed => {
                let over = seed.embargo_until_ms.is_some_and(|until| self.clock.now_ms() >= until);
                if over && self.transition(seed, SeedStage::Resetting, Some(step), "embargo over") {
                    // Release everything the slot held; G5 checks it is gone.
                    // The culled seed's isolation record goes with it (G5
                    // refused a slot with violations outstanding forever
                    // otherwise); violations reported from now on count.
                    self.kernels.cancel_seed(&seed.seed_id);
                    seed.prefetch_request = None;
                    seed.kernel = None;
                    seed.isolation_violations = 0;
                    self.isolation.reset_seed(&seed.seed_id);
                    st.prefetch_results.remove(&seed.seed_id);
                }
            }
            SeedStage::Resetting => {
                seed.steps_in_stage += 1;
                let decision = self.gate(st, seed, GateId::G5Reset, SeedStage::Resetting);
                if decision.passed {
                    seed.clear_for_reset();
                    self.isolation.reset_seed(&seed.seed_id);
                    self.transition(seed, SeedStage::Dormant, Some(step), "G5 passed: slot clean");
                    seed.reported_stage = SeedStage::Dormant;
                }
                // A failed G5 keeps the slot RESETTING until it is clean.
            }
            SeedStage::Unknown | SeedStage::Dormant | SeedStage::Culled | SeedStage::Terminated => {}
        }
    }
    /// Runs `gate`; on pass moves the seed along its edge and tells the
    /// trainer, on failure culls it. Returns the failure reason.
    pub(super) fn pass_gate(
        &self,
        st: &State,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        gate: GateId,
        expected: SeedStage,
        step: Option<u64>,
    ) -> Result<(), String> {
        let decision = self.gate(st, seed, gate, expected);
        if !decision.passed {
            let why = format!("{gate} failed: {}", decision.reason);
            self.cull(&PointCtx::of(st), directives, seed, RollbackReason::GateFailed(gate), &why, step);
            return Err(decision.reason);
        }
        let (_, to) = gate.edge();
        self.transition(seed, to, step, &format!("{gate} passed"));
        seed.alpha = match to {
            SeedStage::Shadowing | SeedStage::Probationary | SeedStage::Fossilized => 1.0,
            _ => 0.0,
        };
        directives.push(GraftDirective::Stage { seed_id: seed.seed_id.clone(), stage: to, alpha: seed.alpha });
        Ok(())
    }
}

/// The per-seed, per-step blend telemetry (SPEC.md §5): mode, α mean and
/// p95, clamped fraction, sparsity (CHANNEL), gate mean (CONFIDENCE) and
/// kernel time, as the trainer measured them.
fn blend_event(seed_id: &str, step: u64, b: &BlendReport, now_ms: u64) -> TelemetryEvent {
    let mut event = TelemetryEvent::new(
        "kasmina.blend.step",
        TelemetryLevel::Info,
        format!("{} blend: alpha mean {:.3}, p95 {:.3}", b.mode.as_str(), b.alpha_mean, b.alpha_p95),
        now_ms,
    )
    .seed(seed_id)
    .attr("step", step)
    .attr("mode", b.mode.as_str())
    .attr("alpha_mean", b.alpha_mean)
    .attr("alpha_p95", b.alpha_p95)
    .attr("clamped_fraction", b.clamped_fraction)
    .attr("kernel_us", b.kernel_us);
    if let Some(s) = b.sparsity {
        event = event.attr("sparsity", s);
    }
    if let Some(g) = b.gate_mean {
        event = event.attr("gate_mean", g);
    }
    event
}
