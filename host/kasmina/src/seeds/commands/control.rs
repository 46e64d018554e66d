//! Commands that act on a running seed or the whole host rather than move a
//! seed through its lifecycle: PAUSE (resume re-checks the entry gate, and
//! waits for a resynchronising trainer before it does), CIRCUIT_BREAKER,
//! EMERGENCY (one rollback point for the whole cleanup) and OPTIMIZER.

use leyline::api::GraftDirective;
use leyline::command::{CircuitBreakerCommand, EmergencyCommand, OptimizerCommand, PauseCommand};
use leyline::{AdaptationCommand, GateId, Outcome, ReasonCode, TelemetryEvent, TelemetryLevel};

use super::super::checkpoints::PointCtx;
use super::super::{SeedContext, SeedManager, State};
use crate::rollback::RollbackReason;

impl SeedManager {
    pub(super) fn pause(&self, command: &AdaptationCommand, pause: PauseCommand) -> Outcome {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(current) = st.seeds.get(&command.target_seed_id) else {
            return self.reject(
                command,
                ReasonCode::InvalidField,
                format!("unknown seed {:?}", command.target_seed_id),
            );
        };
        let mut seed = current.clone();
        if !seed.stage.is_active() {
            return self.reject(
                command,
                ReasonCode::InvalidStage,
                format!("{} is {}, not active", seed.seed_id, seed.stage),
            );
        }
        let mut directives = Vec::new();
        let outcome = if !pause.resume {
            if seed.resume_pending {
                // Still paused on both sides: the deferred resume is dropped.
                seed.resume_pending = false;
                self.accept(command, "pending resume cancelled: the seed stays paused")
            } else if seed.paused {
                return self.reject(command, ReasonCode::InvalidStage, "seed is already paused");
            } else {
                seed.paused = true;
                directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: true });
                self.accept(command, "paused: seed swapped out of the forward path")
            }
        } else {
            if !seed.paused {
                return self.reject(command, ReasonCode::InvalidStage, "seed is not paused");
            }
            if seed.resume_pending {
                return self.reject(command, ReasonCode::InvalidStage, "a resume is already pending");
            }
            if seed.resync_pending {
                // The trainer has not yet shown what it runs (restart,
                // reconnect): the gate re-check would judge facts nobody
                // knows yet. It runs once the trainer has resynchronised.
                seed.resume_pending = true;
                self.accept_with(
                    command,
                    "resume deferred: the entry gate is re-checked once the trainer has resynchronised",
                    vec![("resume", "deferred".into())],
                )
            } else {
                match self.recheck_entry_gate(st, &seed) {
                    Ok(()) => {
                        seed.paused = false;
                        directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: false });
                        self.accept(command, "resumed after re-checking gates")
                    }
                    Err((gate, reason)) => {
                        let why = format!("resume re-check {gate} failed: {reason}");
                        let at = PointCtx::of(st);
                        self.cull(
                            &at,
                            &mut directives,
                            &mut seed,
                            RollbackReason::GateFailed(gate),
                            &why,
                            st.last_step,
                        );
                        Outcome::rejected(ReasonCode::GateFailed, why)
                            .with("gate", gate.as_str())
                            .with("seed_culled", "true")
                    }
                }
            }
        };
        st.seeds.insert(seed.seed_id.clone(), seed);
        st.directives.append(&mut directives);
        outcome
    }

    /// Runs the resume that was deferred until the trainer resynchronised:
    /// the entry gate is re-checked with today's facts; the seed resumes or
    /// is culled.
    pub(in crate::seeds) fn finish_deferred_resume(
        &self,
        st: &State,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        step: u64,
    ) {
        seed.resume_pending = false;
        match self.recheck_entry_gate(st, seed) {
            Ok(()) => {
                seed.paused = false;
                directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: false });
                self.sink.emit(
                    TelemetryEvent::new(
                        "kasmina.seed.resumed",
                        TelemetryLevel::Info,
                        format!("{} resumed after its deferred gate re-check", seed.seed_id),
                        self.clock.now_ms(),
                    )
                    .seed(seed.seed_id.as_str()),
                );
            }
            Err((gate, reason)) => {
                let why = format!("deferred resume re-check {gate} failed: {reason}");
                self.cull(&PointCtx::of(st), directives, seed, RollbackReason::GateFailed(gate), &why, Some(step));
            }
        }
    }

    /// Re-runs the gate that admitted the seed into its current stage, with
    /// today's facts (resume after pause).
    fn recheck_entry_gate(&self, st: &State, seed: &SeedContext) -> Result<(), (GateId, String)> {
        let Some(gate) = leyline::lifecycle::ALL_GATES.into_iter().find(|g| g.edge().1 == seed.stage) else {
            return Ok(());
        };
        let (from, _) = gate.edge();
        let mut probe = seed.clone();
        probe.stage = from;
        probe.reported_stage = from;
        let decision = self.gate(st, &probe, gate, from);
        if decision.passed { Ok(()) } else { Err((gate, decision.reason)) }
    }

    pub(super) fn force_breaker(&self, command: &AdaptationCommand, cb: &CircuitBreakerCommand) -> Outcome {
        let breaker = match cb.breaker.as_str() {
            "fetch" => &self.fetch_breaker,
            "isolation" => &self.isolation_breaker,
            other => {
                return self.reject(
                    command,
                    ReasonCode::InvalidField,
                    format!("unknown breaker {other:?}; known: fetch, isolation"),
                );
            }
        };
        breaker.force_state(cb.desired_state, &cb.rationale);
        self.accept(command, &format!("breaker {} forced to {}", cb.breaker, cb.desired_state.as_str()))
    }

    pub(super) fn emergency(&self, command: &AdaptationCommand, e: EmergencyCommand) -> Outcome {
        // Announced first, on the priority channel, before its culls.
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
            // One point for the whole cleanup: the state before it.
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
        self.accept(command, &format!("emergency: {culled} seeds culled, {cleared} cache entries cleared"))
    }

    pub(super) fn optimizer(&self, command: &AdaptationCommand, o: &OptimizerCommand) -> Outcome {
        if o.optimizer_id.is_empty() {
            return self.reject(command, ReasonCode::MissingField, "optimizer_id is empty");
        }
        if let Some((k, v)) = o.hyperparameters.iter().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return self.reject(
                command,
                ReasonCode::InvalidField,
                format!("hyperparameter {k}={v} must be finite and >= 0"),
            );
        }
        let mut st = self.lock();
        st.optimizer.insert(o.optimizer_id.clone(), o.hyperparameters.clone());
        st.directives.push(GraftDirective::Optimizer {
            optimizer_id: o.optimizer_id.clone(),
            hyperparameters: o.hyperparameters.clone(),
        });
        drop(st);
        self.accept(command, &format!("optimizer {} reconfigured", o.optimizer_id))
    }
}
