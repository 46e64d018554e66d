//! PAUSE and resume. Pausing swaps the seed out of the forward path; a
//! resume re-checks the gate that admitted the seed into its stage with
//! today's facts (verdict computed before the lock), and culls it if that
//! fails. A seed waiting for its trainer to resynchronise (restart,
//! reconnect) defers the re-check until the trainer has shown what it runs.

use leyline::api::GraftDirective;
use leyline::command::PauseCommand;
use leyline::{AdaptationCommand, GateId, ReasonCode, TelemetryEvent, TelemetryLevel};

use super::prepare::{Precomputed, entry_gate_probe};
use super::{Accepted, OpResult, Refusal};
use crate::rollback::RollbackReason;
use crate::seeds::checkpoints::PointCtx;
use crate::seeds::{SeedContext, SeedManager, State};

impl SeedManager {
    pub(super) fn pause(&self, command: &AdaptationCommand, pause: PauseCommand, pre: &mut Precomputed) -> OpResult {
        let memo = std::mem::take(&mut pre.gates);
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(current) = st.seeds.get(&command.target_seed_id) else {
            return Err(Refusal::new(ReasonCode::InvalidField, format!("unknown seed {:?}", command.target_seed_id)));
        };
        let mut seed = current.clone();
        if !seed.stage.is_active() {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                format!("{} is {}, not active", seed.seed_id, seed.stage),
            ));
        }
        let mut directives = Vec::new();
        let result = if pause.resume {
            st.gate_memo = memo;
            let result = self.resume(st, &mut seed, &mut directives);
            st.gate_memo.clear();
            result
        } else if seed.resume_pending {
            // Still paused on both sides: the deferred resume is dropped.
            seed.resume_pending = false;
            Ok(Accepted::new("pending resume cancelled: the seed stays paused"))
        } else if seed.paused {
            return Err(Refusal::new(ReasonCode::InvalidStage, "seed is already paused"));
        } else {
            seed.paused = true;
            directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: true });
            Ok(Accepted::new("paused: seed swapped out of the forward path"))
        };
        let before = current.stage;
        if result.is_ok() || seed.stage != before {
            st.seeds.insert(seed.seed_id.clone(), seed);
            st.directives.append(&mut directives);
        }
        result
    }

    fn resume(&self, st: &State, seed: &mut SeedContext, directives: &mut Vec<GraftDirective>) -> OpResult {
        if !seed.paused {
            return Err(Refusal::new(ReasonCode::InvalidStage, "seed is not paused"));
        }
        if seed.resume_pending {
            return Err(Refusal::new(ReasonCode::InvalidStage, "a resume is already pending"));
        }
        if seed.resync_pending {
            // The trainer has not yet shown what it runs (restart,
            // reconnect): the gate re-check would judge facts nobody
            // knows yet. It runs once the trainer has resynchronised.
            seed.resume_pending = true;
            return Ok(Accepted::new(
                "resume deferred: the entry gate is re-checked once the trainer has resynchronised",
            )
            .with("resume", "deferred"));
        }
        match self.recheck_entry_gate(st, seed) {
            Ok(()) => {
                seed.paused = false;
                directives.push(GraftDirective::Pause { seed_id: seed.seed_id.clone(), paused: false });
                Ok(Accepted::new("resumed after re-checking gates"))
            }
            Err((gate, reason)) => {
                let why = format!("resume re-check {gate} failed: {reason}");
                let at = PointCtx::of(st);
                self.cull(&at, directives, seed, RollbackReason::GateFailed(gate), &why, st.last_step);
                Err(Refusal::new(ReasonCode::GateFailed, why).with("gate", gate.as_str()).with("seed_culled", "true"))
            }
        }
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
    /// today's facts.
    fn recheck_entry_gate(&self, st: &State, seed: &SeedContext) -> Result<(), (GateId, String)> {
        let Some((gate, probe)) = entry_gate_probe(seed) else { return Ok(()) };
        let decision = self.gate(st, &probe, gate, probe.stage);
        if decision.passed { Ok(()) } else { Err((gate, decision.reason)) }
    }
}
