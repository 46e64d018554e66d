//! Rollback points and ROLLBACK (SPEC.md §8): capture what is needed to
//! return to a point, and return to it.
//!
//! Recording (every gate failure, cull, retire, emergency): the control
//! plane copies its own state — every seed's context (stage, α, kernel
//! digest, blend, windows) and the breakers — timed by the ledger around
//! the copy, and asks the trainer for the weights with a
//! [`GraftDirective::Checkpoint`] placed exactly where the point was taken
//! in the step's directive list (before the cull's Detach), so both halves
//! describe the same instant. The trainer's [`CheckpointEvent`] in its next
//! step report confirms the point (readiness = both captures) or makes it
//! unavailable; a directive the trainer never answers fails it too.
//!
//! Restoring (a ROLLBACK command): only a ready point is accepted; the
//! command sends [`GraftDirective::RestoreCheckpoint`] and freezes every
//! seed (no progress, no gates, seed commands refused) until the trainer
//! reports. When it confirms, the control plane puts its half back (timed)
//! and the restore latency is counted; when it fails, nothing changes on
//! either side.

use std::collections::BTreeMap;
use std::time::Instant;

use leyline::api::{CheckpointAction, CheckpointEvent, GraftDirective};
use leyline::journal::BreakerSnapshot;
use leyline::prefetch::PrefetchRequest;
use leyline::{SeedStage, TelemetryEvent, TelemetryLevel};

use super::{SeedContext, SeedManager, State};
use crate::rollback::{RollbackReason, elapsed_us};

/// The control plane's half of a rollback point.
#[derive(Debug, Clone)]
pub struct RollbackCapture {
    /// Every seed as it was, in seed-id order.
    pub seeds: Vec<SeedContext>,
    /// Every breaker as it was.
    pub breakers: Vec<BreakerSnapshot>,
    /// The latest global metric then (G4 compares against it).
    pub latest_metric: Option<f64>,
}

impl RollbackCapture {
    /// The captured context of one seed.
    pub fn seed(&self, seed_id: &str) -> Option<&SeedContext> {
        self.seeds.iter().find(|s| s.seed_id == seed_id)
    }
}

/// Where a point's state is read from: the seeds as the state holds them,
/// with the seeds being changed right now overriding their stored copies.
pub(super) struct PointCtx<'a> {
    pub(super) seeds: &'a BTreeMap<String, SeedContext>,
    pub(super) registered: bool,
    pub(super) latest_metric: Option<f64>,
}

impl<'a> PointCtx<'a> {
    pub(super) fn of(st: &'a State) -> Self {
        PointCtx { seeds: &st.seeds, registered: st.registration.is_some(), latest_metric: st.latest_metric }
    }
}

/// A ROLLBACK waiting for the trainer.
#[derive(Debug, Clone)]
pub(super) struct InFlightRollback {
    pub(super) point_id: String,
    pub(super) command_id: String,
}

impl SeedManager {
    /// Records a rollback point covering `current` (the first is the seed
    /// whose event records it) and queues the trainer's checkpoint directive
    /// at this position of `directives`.
    pub(super) fn record_point(
        &self,
        at: &PointCtx<'_>,
        current: &[&SeedContext],
        reason: RollbackReason,
        directives: &mut Vec<GraftDirective>,
    ) {
        let Some(first) = current.first() else { return };
        let ids: Vec<&str> = current.iter().map(|s| s.seed_id.as_str()).collect();
        let kind = reason.kind();
        let capture = || {
            let mut seeds = at.seeds.clone();
            for seed in current {
                seeds.insert(seed.seed_id.clone(), (*seed).clone());
            }
            Ok::<_, std::convert::Infallible>(RollbackCapture {
                seeds: seeds.into_values().collect(),
                breakers: self.breaker_snapshots(),
                latest_metric: at.latest_metric,
            })
        };
        let point = match self.rollback.record(&ids, first.stage, reason, kind, capture) {
            Ok(point) => point,
            Err(err) => {
                tracing::error!(seed = %first.seed_id, %err, "kasmina.rollback.record_failed");
                return;
            }
        };
        if at.registered {
            directives.push(GraftDirective::Checkpoint { point_id: point.id.clone(), durable: kind.durable() });
        } else {
            let _ = self.rollback.mark_unavailable(
                &point.id,
                "no trainer is registered: there are no weights to checkpoint",
                true,
            );
        }
    }

    /// Applies the trainer's checkpoint reports (before the seed reports of
    /// the same step, which already reflect a restore), then fails every
    /// delivered directive the trainer did not answer.
    pub(super) fn absorb_checkpoint_events(&self, st: &mut State, events: &[CheckpointEvent]) {
        let mut awaiting = std::mem::take(&mut st.awaiting);
        for event in events {
            let id = event.point_id();
            awaiting.retain(|(point, action)| {
                let answered = match event {
                    CheckpointEvent::Captured { .. } => *action == CheckpointAction::Capture,
                    CheckpointEvent::Restored { .. } => *action == CheckpointAction::Restore,
                    CheckpointEvent::Failed { action: a, .. } => a == action,
                    CheckpointEvent::Evicted { .. } => false,
                };
                !(answered && point == id)
            });
            let result = match event {
                CheckpointEvent::Captured { point_id, elapsed_us, bytes, .. } => {
                    self.rollback.confirm_capture(point_id, *elapsed_us, *bytes).map(|_| ())
                }
                CheckpointEvent::Failed { point_id, action: CheckpointAction::Capture, reason } => {
                    self.rollback.mark_unavailable(point_id, &format!("the trainer's capture failed: {reason}"), true)
                }
                CheckpointEvent::Evicted { point_id, reason } => {
                    self.rollback.mark_unavailable(point_id, &format!("the trainer evicted it: {reason}"), false)
                }
                CheckpointEvent::Restored { point_id, elapsed_us } => {
                    self.finish_rollback(st, point_id, Ok(*elapsed_us));
                    Ok(())
                }
                CheckpointEvent::Failed { point_id, action: CheckpointAction::Restore, reason } => {
                    self.finish_rollback(st, point_id, Err(reason.clone()));
                    Ok(())
                }
            };
            if let Err(err) = result {
                self.sink.emit(
                    TelemetryEvent::new(
                        "kasmina.rollback.unexpected_report",
                        TelemetryLevel::Warning,
                        format!("trainer reported {id}: {err}"),
                        self.clock.now_ms(),
                    )
                    .attr("rollback_point_id", id),
                );
            }
        }
        for (point_id, action) in awaiting {
            let why = format!("the trainer did not report the {} directive for {point_id}", action.as_str());
            match action {
                CheckpointAction::Capture => {
                    let _ = self.rollback.mark_unavailable(&point_id, &why, true);
                }
                CheckpointAction::Restore => self.finish_rollback(st, &point_id, Err(why)),
            }
        }
    }

    /// Remembers which checkpoint directives the trainer is about to receive.
    pub(super) fn expect_checkpoint_results(&self, st: &mut State, directives: &[GraftDirective]) {
        for d in directives {
            match d {
                GraftDirective::Checkpoint { point_id, .. } => {
                    st.awaiting.push((point_id.clone(), CheckpointAction::Capture));
                }
                GraftDirective::RestoreCheckpoint { point_id } => {
                    st.awaiting.push((point_id.clone(), CheckpointAction::Restore));
                }
                _ => {}
            }
        }
    }

    /// Why seed-changing commands are refused right now, if they are.
    pub(super) fn frozen_by_rollback(&self) -> Option<String> {
        self.read().rollback_in_flight.as_ref().map(|f| {
            format!(
                "rollback to {} (command {}) is being restored by the trainer; retry after its next step report",
                f.point_id, f.command_id
            )
        })
    }

    /// Whether seeds are frozen for an in-flight rollback.
    pub(super) fn rollback_frozen(st: &State) -> bool {
        st.rollback_in_flight.is_some()
    }

    /// Abandons an in-flight rollback (EMERGENCY, re-registration): the
    /// queued directive is withdrawn if not yet delivered; a trainer that
    /// restores anyway is overridden by what follows (every seed the point
    /// held is detached).
    pub(super) fn cancel_rollback(&self, st: &mut State, why: &str, directives: &mut Vec<GraftDirective>) {
        let Some(flight) = st.rollback_in_flight.take() else { return };
        st.directives
            .retain(|d| !matches!(d, GraftDirective::RestoreCheckpoint { point_id } if *point_id == flight.point_id));
        st.awaiting.retain(|(id, action)| !(id == &flight.point_id && *action == CheckpointAction::Restore));
        if let Ok(point) = self.rollback.get(&flight.point_id) {
            for captured in point.state.seeds.iter().filter(|s| s.runs_kernel()) {
                let live = st.seeds.get(&captured.seed_id);
                if live.is_none_or(|s| !s.runs_kernel()) {
                    directives.push(GraftDirective::Detach {
                        seed_id: captured.seed_id.clone(),
                        reason: format!("rollback to {} abandoned: {why}", flight.point_id),
                    });
                }
            }
        }
        self.rollback.restore_failed(&flight.point_id, &format!("abandoned: {why}"));
    }

    /// The trainer answered the RestoreCheckpoint: on success the control
    /// plane's half is put back (timed) and the restore counted.
    fn finish_rollback(&self, st: &mut State, point_id: &str, result: Result<u64, String>) {
        let in_flight = st.rollback_in_flight.as_ref().is_some_and(|f| f.point_id == point_id);
        if !in_flight {
            self.sink.emit(
                TelemetryEvent::new(
                    "kasmina.rollback.unexpected_report",
                    TelemetryLevel::Warning,
                    format!("trainer reported a restore of {point_id}, which is not in flight"),
                    self.clock.now_ms(),
                )
                .attr("rollback_point_id", point_id),
            );
            return;
        }
        st.rollback_in_flight = None;
        let trainer_us = match result {
            Ok(us) => us,
            Err(reason) => {
                self.rollback.restore_failed(point_id, &format!("the trainer's restore failed: {reason}"));
                return;
            }
        };
        let Ok(point) = self.rollback.get(point_id) else {
            self.rollback.restore_failed(point_id, "the point was evicted while the trainer restored it");
            return;
        };
        let started = Instant::now();
        let run = st.registration.as_ref().map(|r| r.training_run_id.clone());
        for captured in &point.state.seeds {
            let mut seed = captured.clone();
            seed.resync_pending = false;
            seed.resync_steps = 0;
            seed.resume_pending = false;
            if seed.stage == SeedStage::Germinated && seed.kernel.is_none() {
                self.reissue_prefetch(&mut seed, run.as_deref(), &point.id);
            }
            let from = st.seeds.get(&seed.seed_id).map(|s| s.stage);
            if from != Some(seed.stage) {
                self.sink.emit(
                    TelemetryEvent::new(
                        "kasmina.seed.rolled_back",
                        TelemetryLevel::Warning,
                        format!("{} returned to {} by rollback {}", seed.seed_id, seed.stage, point.id),
                        self.clock.now_ms(),
                    )
                    .seed(seed.seed_id.as_str())
                    .attr("from", from.map_or("-", SeedStage::as_str))
                    .attr("to", seed.stage.as_str())
                    .attr("rollback_point_id", point.id.as_str()),
                );
            }
            st.seeds.insert(seed.seed_id.clone(), seed);
        }
        for snapshot in &point.state.breakers {
            self.restore_breaker(snapshot);
        }
        st.latest_metric = point.state.latest_metric;
        let host_us = elapsed_us(started);
        if self.recorder.is_some() {
            self.decisions.push(super::decisions::Decision::StateReplaced { why: format!("rollback to {}", point.id) });
        }
        let _ = self.rollback.record_restore(point_id, host_us, trainer_us);
    }

    /// A germinated seed waiting for its kernel gets its prefetch again.
    fn reissue_prefetch(&self, seed: &mut SeedContext, run: Option<&str>, request_id: &str) {
        seed.prefetch_request = None;
        let (Some(run), Some(blueprint)) = (run, seed.blueprint_id.clone()) else { return };
        let request = PrefetchRequest {
            request_id: format!("{request_id}-{}", seed.seed_id),
            seed_id: seed.seed_id.clone(),
            blueprint_id: blueprint,
            training_run_id: run.to_owned(),
            issued_at_ms: self.clock.now_ms(),
            timeout_ms: self.settings.kernels.prefetch_timeout_ms,
        };
        let id = request.request_id.clone();
        match self.kernels.prefetch(request) {
            Ok(()) => seed.prefetch_request = Some(id),
            Err(err) => {
                seed.kernel_failure = Some("prefetch_refused".to_owned());
                seed.last_failure = Some(format!("prefetch refused: {err}"));
            }
        }
    }
}
