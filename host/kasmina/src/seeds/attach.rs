//! Two step-driven moves of a seed waiting on the trainer: a GERMINATED
//! seed's kernel arriving (Attach sent, then G1 once the trainer confirms
//! or the attach window runs out), and a resynchronising seed's
//! confirmation (see `resync`).

use kasmina_kernels::PrefetchEvent;
use leyline::api::GraftDirective;
use leyline::{GateId, SeedStage, TelemetryEvent, TelemetryLevel};

use super::checkpoints::PointCtx;
use super::context::KernelFacts;
use super::{SeedContext, SeedManager, State};
use crate::rollback::RollbackReason;

impl SeedManager {
    /// A seed waiting for the trainer to resynchronise: confirmed once the
    /// trainer reports it in the control plane's stage on the verified
    /// kernel (then a deferred RESUME runs its gate re-check); culled with
    /// `resync_failed` if that does not happen within the resync window.
    pub(super) fn advance_resync(
        &self,
        st: &State,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        step: u64,
    ) {
        if seed.reported_stage == seed.stage && seed.kernel_verified() {
            seed.resync_pending = false;
            seed.resync_steps = 0;
            self.sink.emit(
                TelemetryEvent::new(
                    "kasmina.seed.resynced",
                    TelemetryLevel::Info,
                    format!("{} runs on the trainer as the control plane holds it ({})", seed.seed_id, seed.stage),
                    self.clock.now_ms(),
                )
                .seed(seed.seed_id.as_str())
                .attr("stage", seed.stage.as_str())
                .attr("step", step),
            );
            if seed.resume_pending {
                self.finish_deferred_resume(st, seed, directives, step);
            }
            return;
        }
        seed.resync_steps += 1;
        // One step for the directives to reach the trainer, then the window.
        let window = self.settings.lifecycle.attach_timeout_steps.saturating_add(1);
        if seed.resync_steps > window {
            let why = format!(
                "resync_failed: the trainer did not run the seed as {} on its verified kernel within {window} steps",
                seed.stage
            );
            self.cull(&PointCtx::of(st), directives, seed, RollbackReason::ResyncFailed, &why, Some(step));
        }
    }

    pub(super) fn advance_germinated(
        &self,
        st: &mut State,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        step: u64,
    ) {
        seed.steps_in_stage += 1;
        if seed.kernel.is_none() {
            match st.prefetch_results.remove(&seed.seed_id) {
                Some(PrefetchEvent::Ready { ready, kernel }) => {
                    seed.prefetch_request = None;
                    seed.kernel = Some(KernelFacts {
                        sha256: ready.artifact_sha256.clone(),
                        prewarm_p95_us: kernel.prewarm().p95_us,
                    });
                    let Some(blend) = seed.blend.clone() else {
                        self.cull(
                            &PointCtx::of(st),
                            directives,
                            seed,
                            RollbackReason::GateFailed(GateId::G1GradientHealth),
                            "no blend spec",
                            Some(step),
                        );
                        return;
                    };
                    directives.push(GraftDirective::Attach {
                        seed_id: seed.seed_id.clone(),
                        site: seed.site.clone(),
                        blueprint_id: ready.blueprint_id.clone(),
                        artifact_sha256: ready.artifact_sha256,
                        blend,
                    });
                    seed.attach_sent = true;
                }
                Some(PrefetchEvent::Failed(err)) => {
                    seed.prefetch_request = None;
                    let cause = crate::gates::kernel_failure_cause(err.kind);
                    self.sink.emit(
                        TelemetryEvent::new(
                            "kasmina.kernel.unavailable",
                            crate::gates::kernel_failure_level(err.kind),
                            err.detail.clone(),
                            self.clock.now_ms(),
                        )
                        .seed(seed.seed_id.as_str())
                        .attr("kind", format!("{:?}", err.kind))
                        .attr("cause", cause)
                        .attr("blueprint_id", err.blueprint_id.as_str()),
                    );
                    seed.kernel_failure = Some(cause.to_owned());
                    seed.last_failure = Some(format!("kernel unavailable: {}", err.detail));
                    // G1 decides (kernel not attached/verified) and culls.
                    let _ = self.pass_gate(
                        st,
                        seed,
                        directives,
                        GateId::G1GradientHealth,
                        SeedStage::Germinated,
                        Some(step),
                    );
                }
                None if seed.prefetch_request.is_none() => {
                    // Prefetch was refused or timed out: there is no kernel.
                    let _ = self.pass_gate(
                        st,
                        seed,
                        directives,
                        GateId::G1GradientHealth,
                        SeedStage::Germinated,
                        Some(step),
                    );
                }
                None => {}
            }
            return;
        }
        // Kernel supplied: once the trainer confirms the attach, ask G1; if it
        // never does within the attach window, G1 decides without it.
        let confirmed = seed.reported_stage == SeedStage::Germinated && seed.reported_kernel_sha256.is_some();
        let overdue = seed.steps_in_stage > self.settings.lifecycle.attach_timeout_steps;
        if seed.attach_sent && !seed.hold && (confirmed || overdue) {
            let _ = self.pass_gate(st, seed, directives, GateId::G1GradientHealth, SeedStage::Germinated, Some(step));
        }
    }
}
