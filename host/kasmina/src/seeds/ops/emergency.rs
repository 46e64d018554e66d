//! EMERGENCY: announced first on the priority channel; with `cleanup`,
//! every active seed is culled under one rollback point (the state before
//! the cleanup) and the kernel cache is cleared; `include_teacher` drops
//! the KD teacher at the trainer's next step.

use leyline::api::GraftDirective;
use leyline::command::EmergencyCommand;
use leyline::{AdaptationCommand, TelemetryEvent, TelemetryLevel};

use super::{Accepted, OpResult};
use crate::rollback::RollbackReason;
use crate::seeds::checkpoints::PointCtx;
use crate::seeds::{SeedContext, SeedManager};

impl SeedManager {
    pub(super) fn emergency(&self, command: &AdaptationCommand, e: EmergencyCommand) -> OpResult {
        self.sink.emit(
            TelemetryEvent::new(
                "kasmina.emergency",
                TelemetryLevel::Critical,
                "emergency command received",
                self.clock.now_ms(),
            )
            .attr("command_id", command.command_id.as_str())
            .attr("cleanup", e.cleanup)
            .attr("include_teacher", e.include_teacher),
        );
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut directives = Vec::new();
        self.cancel_rollback(st, "EMERGENCY", &mut directives);
        let mut culled = 0u64;
        let step = st.last_step;
        if e.cleanup {
            let active: Vec<&SeedContext> = st.seeds.values().filter(|s| s.stage.is_active()).collect();
            if !active.is_empty() {
                self.record_point(&PointCtx::of(st), &active, RollbackReason::Emergency, &mut directives);
            }
        }
        for seed in st.seeds.values_mut() {
            self.kernels.cancel_seed(&seed.seed_id);
            if e.cleanup && seed.stage.is_active() {
                self.cull_seed(&mut directives, seed, RollbackReason::Emergency, "emergency cleanup", step);
                culled += 1;
            }
        }
        let cleared = if e.cleanup { self.kernels.clear_cache() } else { 0 };
        if e.include_teacher {
            directives.push(GraftDirective::DropTeacher);
        }
        st.directives.append(&mut directives);
        drop(guard);
        self.sink.emit(
            TelemetryEvent::new(
                "kasmina.emergency.done",
                TelemetryLevel::Critical,
                "emergency cleanup finished",
                self.clock.now_ms(),
            )
            .attr("command_id", command.command_id.as_str())
            .attr("seeds_culled", culled)
            .attr("cache_entries_cleared", cleared)
            // The trainer drops it when it applies the directive at its next step.
            .attr("teacher_drop_directed", e.include_teacher),
        );
        Ok(Accepted::new(format!("emergency: {culled} seeds culled, {cleared} cache entries cleared")))
    }
}
