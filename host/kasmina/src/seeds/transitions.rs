//! The moves the seed manager records: stage transitions through the one
//! transition table, and gate decisions. Each is emitted as a telemetry
//! event and queued for the journal (`decisions.rs`); both wait for the
//! state lock's release.

use leyline::{AttrValue, GateId, SeedStage, TelemetryEvent, TelemetryLevel};

use super::decisions::Decision;
use super::{SeedContext, SeedManager, State};
use crate::gates::{FinishedVerdict, GateDecision};

impl SeedManager {
    /// Applies `seed.stage → to` through the one transition table.
    pub(super) fn transition(&self, seed: &mut SeedContext, to: SeedStage, step: Option<u64>, reason: &str) -> bool {
        self.transition_with(seed, to, step, reason, None)
    }

    /// [`transition`](Self::transition), emitting `prebuilt` — this very
    /// edge's event, built before the state lock by
    /// [`transition_event`](Self::transition_event) — with its step set.
    pub(super) fn transition_with(
        &self,
        seed: &mut SeedContext,
        to: SeedStage,
        step: Option<u64>,
        reason: &str,
        prebuilt: Option<TelemetryEvent>,
    ) -> bool {
        let from = seed.stage;
        if let Err(err) = from.check_transition(to) {
            self.sink.emit(
                TelemetryEvent::new(
                    "kasmina.seed.transition_refused",
                    TelemetryLevel::Error,
                    err.to_string(),
                    self.clock.now_ms(),
                )
                .seed(seed.seed_id.as_str()),
            );
            return false;
        }
        seed.enter(to);
        let event = match prebuilt {
            Some(mut event) => {
                // The step is the one thing read under the lock.
                match event.attributes.get_mut("step") {
                    Some(value) => *value = step_attr(step),
                    None => {
                        event.attributes.insert("step".to_owned(), step_attr(step));
                    }
                }
                event
            }
            None => self.transition_event(&seed.seed_id, from, to, step, reason),
        };
        self.sink.emit(event);
        if self.recorder.is_some() {
            self.decisions.push(Decision::Transition {
                seed_id: seed.seed_id.clone(),
                from,
                to,
                step,
                reason: reason.to_owned(),
            });
        }
        true
    }

    /// The `kasmina.seed.transition` event of one edge.
    pub(super) fn transition_event(
        &self,
        seed_id: &str,
        from: SeedStage,
        to: SeedStage,
        step: Option<u64>,
        reason: &str,
    ) -> TelemetryEvent {
        TelemetryEvent::new(
            "kasmina.seed.transition",
            TelemetryLevel::Info,
            format!("{seed_id} {from} -> {to}: {reason}"),
            self.clock.now_ms(),
        )
        .seed(seed_id)
        .attr("from", from.as_str())
        .attr("to", to.as_str())
        .attr("reason", reason)
        .attr("step", step_attr(step))
    }

    /// Evaluates `gate` and records the decision.
    pub(super) fn gate(&self, st: &State, seed: &SeedContext, gate: GateId, expected: SeedStage) -> GateDecision {
        let env = self.environment(st, seed);
        let decision = self.gates.evaluate_with(gate, seed, expected, &env, &st.gate_memo);
        self.record_gate(seed, decision)
    }

    /// [`gate`](Self::gate) with a verdict computed before the lock on this
    /// exact seed and these host facts (the caller checked both).
    /// A verdict finished before the lock (see
    /// [`GateService::finish_precomputed`]) taken as it is.
    pub(super) fn gate_precomputed(&self, seed: &SeedContext, finished: FinishedVerdict) -> GateDecision {
        self.sink.emit(finished.event);
        self.record_gate(seed, finished.decision)
    }

    pub(super) fn record_gate(&self, seed: &SeedContext, decision: GateDecision) -> GateDecision {
        if self.recorder.is_some() {
            self.decisions.push(Decision::Gate { seed_id: seed.seed_id.clone(), decision: Box::new(decision.clone()) });
        }
        decision
    }
}

/// A transition's step as an event attribute (-1: before the first step).
fn step_attr(step: Option<u64>) -> AttrValue {
    AttrValue::Int(step.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)))
}
