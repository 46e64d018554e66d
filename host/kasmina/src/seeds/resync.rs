//! Resynchronising a (re-)registering trainer with the control plane.
//!
//! After a daemon restart, a trainer reconnect or a trainer restart, what
//! the trainer runs and what the control plane holds may differ. The
//! registration lists the seeds the trainer still holds
//! ([`leyline::api::HeldSeed`]); for every seed the control plane decides:
//!
//! | control plane | trainer holds | result |
//! |---|---|---|
//! | running (TRAINING…FOSSILIZED) | same kernel digest, same stage | adopted (α, pause aligned) |
//! | running | same digest, an earlier stage | adopted, stages caught up by directive |
//! | running | other digest / later stage / nothing | a fresh verified Attach, stages replayed |
//! | GERMINATED, kernel sent | same digest | adopted |
//! | GERMINATED, kernel sent | nothing | the Attach is sent again |
//! | not active | anything | Detach |
//!
//! A seed re-attached or caught up stays `resync_pending` — no progress is
//! counted and no gate runs — until a step report shows the trainer running
//! it as held, or the resync window (`attach_timeout_steps`) runs out (then
//! it is culled with `resync_failed`). Nothing is culled for the restart or
//! reconnect itself. Queued directives naming seeds are superseded by these
//! (they were computed for a trainer that is gone); rollback checkpoints the
//! trainer no longer lists can no longer be restored.

use leyline::api::{GraftDirective, HeldSeed, HostRegistration};
use leyline::{SeedStage, TelemetryEvent, TelemetryLevel};

use super::{SeedContext, SeedManager, State};

/// The running stages in lifecycle order, as a trainer's slot walks them.
const PATH: [SeedStage; 6] = [
    SeedStage::Germinated,
    SeedStage::Training,
    SeedStage::Blending,
    SeedStage::Shadowing,
    SeedStage::Probationary,
    SeedStage::Fossilized,
];

/// What resynchronisation did with one seed (telemetry `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Adopted,
    CaughtUp,
    Reattached,
    Replaced,
    Detached,
    Unrecoverable,
}

impl Action {
    const fn as_str(self) -> &'static str {
        match self {
            Action::Adopted => "adopted",
            Action::CaughtUp => "caught_up",
            Action::Reattached => "reattached",
            Action::Replaced => "replaced",
            Action::Detached => "detached",
            Action::Unrecoverable => "unrecoverable",
        }
    }
}

impl SeedManager {
    /// Resynchronises every seed with what `registration` says the trainer
    /// holds, and queues the directives that make both agree.
    pub(super) fn resynchronise(&self, st: &mut State, registration: &HostRegistration) {
        let mut directives: Vec<GraftDirective> = Vec::new();
        self.cancel_rollback(st, "the trainer re-registered", &mut directives);
        // Directives computed for the previous trainer session; a checkpoint
        // it never received cannot describe its point any more.
        for d in &st.directives {
            if let GraftDirective::Checkpoint { point_id, .. } = d {
                let why = "the trainer re-registered before receiving the checkpoint directive";
                let _ = self.rollback.mark_unavailable(point_id, why, true);
            }
        }
        st.directives.retain(|d| {
            d.seed_id().is_none()
                && !matches!(d, GraftDirective::Checkpoint { .. } | GraftDirective::RestoreCheckpoint { .. })
        });
        for (point_id, _) in std::mem::take(&mut st.awaiting) {
            let _ = self.rollback.mark_unavailable(&point_id, "the trainer re-registered before reporting it", true);
        }
        for point_id in self.rollback.ready_ids() {
            if !registration.checkpoints.contains(&point_id) {
                let _ =
                    self.rollback.mark_unavailable(&point_id, "the re-registering trainer no longer holds it", false);
            }
        }
        for seed in st.seeds.values_mut() {
            let held = registration.held.iter().find(|h| h.seed_id == seed.seed_id);
            if let Some(action) = self.resync_seed(seed, held, &mut directives) {
                self.sink.emit(resync_event(seed, held, action, self.clock.now_ms()));
            }
        }
        st.directives.append(&mut directives);
    }

    /// Decides one seed; `None` when there was nothing to reconcile.
    fn resync_seed(
        &self,
        seed: &mut SeedContext,
        held: Option<&HeldSeed>,
        directives: &mut Vec<GraftDirective>,
    ) -> Option<Action> {
        seed.resync_steps = 0;
        if !seed.stage.is_active() {
            seed.resync_pending = false;
            let held = held?;
            directives.push(GraftDirective::Detach {
                seed_id: seed.seed_id.clone(),
                reason: format!("the control plane holds {} as {}", held.seed_id, seed.stage),
            });
            return Some(Action::Detached);
        }
        let sent_kernel = seed.stage == SeedStage::Germinated && seed.attach_sent;
        if !seed.runs_kernel() && !sent_kernel {
            // GERMINATED, kernel not yet supplied: the normal Attach follows.
            seed.resync_pending = false;
            return None;
        }
        let Some(kernel) = seed.kernel.clone() else {
            // The kernel did not verify again after the restart: nothing to
            // attach; its gates fail it for that, not for the restart.
            seed.resync_pending = false;
            return Some(Action::Unrecoverable);
        };
        let matching = held.filter(|h| h.kernel_sha256 == kernel.sha256);
        let from = matching.and_then(|h| position(h.stage)).filter(|at| Some(*at) <= position(seed.stage));
        match (matching, from) {
            (Some(h), Some(at)) => {
                seed.kernel_attached = true;
                seed.reported_kernel_sha256 = Some(h.kernel_sha256.clone());
                seed.reported_stage = h.stage;
                let behind = h.stage != seed.stage;
                // Behind: the stages it missed, the last with the seed's α.
                self.stage_chain(seed, at + 1, directives);
                if !behind && seed.stage == SeedStage::Blending && (h.alpha - seed.alpha).abs() > 1e-12 {
                    directives.push(stage_directive(seed, seed.stage, seed.alpha));
                }
                if h.paused != seed.paused {
                    directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: seed.paused });
                }
                // A deferred RESUME runs its re-check at the first report.
                seed.resync_pending = behind || seed.resume_pending;
                Some(if behind { Action::CaughtUp } else { Action::Adopted })
            }
            _ => {
                let Some(blend) = seed.blend.clone() else {
                    seed.resync_pending = false;
                    return Some(Action::Unrecoverable);
                };
                let Some(blueprint_id) = seed.blueprint_id.clone() else {
                    seed.resync_pending = false;
                    return Some(Action::Unrecoverable);
                };
                directives.push(GraftDirective::Attach {
                    seed_id: seed.seed_id.clone(),
                    site: seed.site.clone(),
                    blueprint_id,
                    artifact_sha256: kernel.sha256.clone(),
                    blend,
                });
                self.stage_chain(seed, 1, directives);
                if seed.paused {
                    directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: true });
                }
                seed.attach_sent = true;
                seed.kernel_attached = false;
                seed.reported_kernel_sha256 = None;
                seed.resync_pending = true;
                Some(if held.is_some() { Action::Replaced } else { Action::Reattached })
            }
        }
    }

    /// Stage directives walking the trainer's slot from `PATH[from]` to the
    /// seed's stage; the last one carries the seed's α.
    fn stage_chain(&self, seed: &SeedContext, from: usize, directives: &mut Vec<GraftDirective>) {
        let Some(to) = position(seed.stage) else { return };
        for stage in PATH.iter().take(to + 1).skip(from) {
            let alpha = if *stage == seed.stage { seed.alpha } else { entry_alpha(*stage) };
            directives.push(stage_directive(seed, *stage, alpha));
        }
    }
}

fn position(stage: SeedStage) -> Option<usize> {
    PATH.iter().position(|s| *s == stage)
}

/// α as the control plane sets it when a seed enters `stage`.
fn entry_alpha(stage: SeedStage) -> f64 {
    match stage {
        SeedStage::Shadowing | SeedStage::Probationary | SeedStage::Fossilized => 1.0,
        _ => 0.0,
    }
}

fn stage_directive(seed: &SeedContext, stage: SeedStage, alpha: f64) -> GraftDirective {
    GraftDirective::Stage { seed_id: seed.seed_id.clone(), stage, alpha }
}

fn resync_event(seed: &SeedContext, held: Option<&HeldSeed>, action: Action, now_ms: u64) -> TelemetryEvent {
    let level = match action {
        Action::Adopted | Action::CaughtUp | Action::Reattached => TelemetryLevel::Info,
        Action::Replaced | Action::Detached | Action::Unrecoverable => TelemetryLevel::Warning,
    };
    let mut event = TelemetryEvent::new(
        "kasmina.seed.resync",
        level,
        format!("{} {} after registration (control plane: {})", seed.seed_id, action.as_str(), seed.stage),
        now_ms,
    )
    .seed(seed.seed_id.as_str())
    .attr("action", action.as_str())
    .attr("stage", seed.stage.as_str())
    .attr("held", held.is_some());
    if let Some(h) = held {
        event = event.attr("held_stage", h.stage.as_str()).attr("held_sha256", h.kernel_sha256.as_str());
    }
    event
}
