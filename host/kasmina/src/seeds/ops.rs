//! Commands, one module per operation (SPEC.md §3). Every command goes:
//!
//! 1. **prepare** ([`prepare`], no state lock): verify the envelope,
//!    validate the fields, check the deadline, then ask the plugins —
//!    annotation parser, blueprint admission, the gate the operation will
//!    run — on a staged copy of the seed;
//! 2. **apply** (state lock): the operation's module checks the command
//!    against the seed as it is now and acts on a staged copy, returning
//!    `Result<Accepted, Refusal>`; the copy is written back only when the
//!    command acted (or a gate failure culled the seed). A gate whose facts
//!    still match takes the prepared verdict; otherwise it asks the plugin
//!    there (counted as a call under the lock);
//! 3. **conclude** ([`SeedManager::conclude`]): the one place that turns
//!    the result into the [`Outcome`], the counters and the telemetry event,
//!    and has the journal record an accepted command before it is answered.
//!
//! A gate failure while acting is not a refusal of the command: the gate
//! ran and the seed is culled (SPEC.md §2). Its outcome is `accepted =
//! false, reason = gate_failed` with `seed_culled = true`.
//!
//! Modules: [`germinate`], [`lifecycle`] (START_TRAINING, START_GRAFTING,
//! EVALUATE, STABILIZE, FINE_TUNE), [`fossilize`], [`cull`] (CULL, CANCEL),
//! [`pause`] (PAUSE, resume), [`rollback`], [`emergency`], [`breaker`],
//! [`optimizer`]; [`seed`] routes seed operations.

mod breaker;
mod cull;
mod emergency;
mod fossilize;
mod germinate;
mod lifecycle;
mod optimizer;
mod pause;
mod prepare;
mod rollback;
mod seed;

use std::sync::atomic::Ordering;

use leyline::{AdaptationCommand, AttrValue, CommandPayload, Outcome, ReasonCode, TelemetryEvent, TelemetryLevel};

pub use self::prepare::PreparedCommand;
use self::prepare::{Precomputed, Prepared};
use super::SeedManager;

/// Annotation naming the stage the controller believes the seed is in.
pub const EXPECTED_STAGE: &str = "expected_stage";

/// Why a command was not carried out: the reason code, a sentence for the
/// operator, and attributes (the annotation `key` at fault, the `gate`…)
/// that reach both the outcome and the telemetry event.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Reason code.
    pub reason: ReasonCode,
    /// What was wrong and what to do.
    pub detail: String,
    /// Structured facts, in order.
    pub attributes: Vec<(String, String)>,
}

impl Refusal {
    /// A refusal with no attributes.
    pub fn new(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Refusal { reason, detail: detail.into(), attributes: Vec::new() }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.attributes.push((key.into(), value.to_string()));
        self
    }

    /// Names the annotation key at fault, so a controller and an operator
    /// see which key to fix without parsing the detail.
    #[must_use]
    pub fn key(self, key: &str) -> Self {
        self.with("key", key)
    }
}

/// What an accepted command did: a sentence and the facts the controller
/// is told (GERMINATE's blend facts, EVALUATE's verdict…), carried by both
/// the outcome and the `kasmina.command.executed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// What was done.
    pub what: String,
    /// Facts, in order.
    pub facts: Vec<(String, AttrValue)>,
}

impl Accepted {
    /// Accepted with no extra facts.
    pub fn new(what: impl Into<String>) -> Self {
        Accepted { what: what.into(), facts: Vec::new() }
    }

    /// Adds a fact.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<AttrValue>) -> Self {
        self.facts.push((key.into(), value.into()));
        self
    }
}

/// What every operation returns.
pub type OpResult = Result<Accepted, Refusal>;

impl SeedManager {
    /// Executes a signed command: [`prepare_command`](Self::prepare_command)
    /// then [`apply_command`](Self::apply_command).
    pub fn submit_command(&self, command: AdaptationCommand) -> Outcome {
        let prepared = self.prepare_command(command);
        self.apply_command(prepared)
    }

    /// Applies a prepared command under the state lock and concludes it.
    /// A caller that serialises its own calls (the daemon, for its journal)
    /// prepares first, outside that serialisation.
    pub fn apply_command(&self, prepared: PreparedCommand) -> Outcome {
        let (command, result) = match prepared.0 {
            Prepared::Answered(outcome) => {
                // Refused by the verifier or validator, which reported it.
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return outcome;
            }
            Prepared::Refused(command, refusal) => (command, Err(refusal)),
            Prepared::Ready(command, mut pre) => {
                let span = tracing::info_span!(
                    "kasmina.command.apply",
                    command_id = %command.command_id,
                    seed = %command.target_seed_id,
                );
                let _entered = span.enter();
                let result = self.act(&command, &mut pre);
                (command, result)
            }
        };
        self.conclude(&command, result)
    }

    /// `pre`'s gate verdicts are handed to the gates (moved, not copied).
    fn act(&self, command: &AdaptationCommand, pre: &mut Precomputed) -> OpResult {
        // While the trainer restores a rollback point, nothing may change
        // the seeds or breakers the restore is about to put back.
        if matches!(
            command.payload,
            CommandPayload::Seed(_)
                | CommandPayload::Pause(_)
                | CommandPayload::Rollback(_)
                | CommandPayload::CircuitBreaker(_)
        ) && let Some(why) = self.frozen_by_rollback()
        {
            return Err(Refusal::new(ReasonCode::InvalidStage, why));
        }
        match &command.payload {
            CommandPayload::Seed(sc) => self.seed_command(command, sc, pre),
            CommandPayload::Pause(pause) => self.pause(command, *pause, pre),
            CommandPayload::CircuitBreaker(cb) => self.force_breaker(command, cb),
            CommandPayload::Emergency(e) => self.emergency(command, *e),
            CommandPayload::Optimizer(o) => self.optimizer(o),
            CommandPayload::Rollback(r) => self.rollback_command(command, r),
            CommandPayload::StructuralPruning(_) => Err(Refusal::new(
                ReasonCode::UnsupportedCommand,
                "STRUCTURAL_PRUNING is not supported by this host; prune with the trainer's tooling",
            )),
        }
    }

    /// The one place a result becomes an [`Outcome`], a counter and a
    /// telemetry event. An accepted command is journaled (durably) before
    /// it is answered.
    fn conclude(&self, command: &AdaptationCommand, result: OpResult) -> Outcome {
        let now = self.clock.now_ms();
        match result {
            Ok(accepted) => {
                let mut event =
                    TelemetryEvent::new("kasmina.command.executed", TelemetryLevel::Info, &accepted.what, now)
                        .seed(command.target_seed_id.as_str())
                        .attr("command_id", command.command_id.as_str())
                        .attr("command_type", command.command_type().as_str());
                let mut outcome = Outcome::accepted()
                    .with("command_id", command.command_id.as_str())
                    .with("result", accepted.what.as_str());
                for (key, value) in accepted.facts {
                    outcome = outcome.with(key.as_str(), value.to_string());
                    event = event.attr(key, value);
                }
                self.sink.emit(event);
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if let Some(rec) = &self.recorder {
                    rec.command_accepted(command, &outcome);
                }
                outcome
            }
            Err(refusal) => {
                let mut event =
                    TelemetryEvent::new("kasmina.command.rejected", TelemetryLevel::Warning, &refusal.detail, now)
                        .seed(command.target_seed_id.as_str())
                        .attr("command_id", command.command_id.as_str())
                        .attr("command_type", command.command_type().as_str())
                        .attr("reason", refusal.reason.as_str());
                let mut outcome =
                    Outcome::rejected(refusal.reason, refusal.detail).with("command_id", command.command_id.as_str());
                for (key, value) in refusal.attributes {
                    event = event.attr(key.as_str(), value.as_str());
                    outcome = outcome.with(key.as_str(), value);
                }
                self.sink.emit(event);
                self.rejected.fetch_add(1, Ordering::Relaxed);
                outcome
            }
        }
    }
}
