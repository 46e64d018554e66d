//! Command execution: verify → validate → parse (plugin) → admit (plugin) →
//! act. Every refusal is an [`Outcome`] with a reason code and a telemetry
//! event; refusals before "act" change no state.
//!
//! A gate failure while acting is not a refusal of the command: the gate
//! ran and the seed is culled (SPEC.md §2). Its outcome is
//! `accepted = false, reason = gate_failed` with `seed_culled = true`.

mod control;

use kasmina_plugin_host::annotation::{AnnotationError, ParsedAnnotations};
use kasmina_plugin_host::blueprint::AdmissionContext;
use leyline::annotations as keys;
use leyline::api::GraftDirective;
use leyline::command::SeedCommand;
use leyline::prefetch::PrefetchRequest;
use leyline::{
    AdaptationCommand, AttrValue, CommandPayload, GateId, Outcome, ReasonCode, SeedOperation, SeedStage,
    TelemetryEvent, TelemetryLevel,
};

use super::blend::{blend_spec, mode_source};
use super::checkpoints::PointCtx;
use super::{SeedContext, SeedManager, State};
use crate::rollback::RollbackReason;

/// Annotation naming the stage the controller believes the seed is in.
pub const EXPECTED_STAGE: &str = "expected_stage";

impl SeedManager {
    /// Executes a signed command; see the module docs for the order.
    pub fn submit_command(&self, command: AdaptationCommand) -> Outcome {
        let span = tracing::info_span!(
            "kasmina.command.submit",
            command_id = %command.command_id,
            seed = %command.target_seed_id,
            kind = command.command_type().as_str()
        );
        let _entered = span.enter();
        let command = match self.verifier.verify(command) {
            Ok(verified) => verified.into_command(),
            Err(outcome) => {
                self.lock().rejected += 1;
                return outcome;
            }
        };
        let validation = self.validator.validate(&command);
        if !validation.accepted {
            self.lock().rejected += 1;
            return validation;
        }
        let outcome = match command.execution_deadline_ms {
            Some(deadline) if self.clock.now_ms() > deadline => self.reject(
                &command,
                ReasonCode::DeadlineExceeded,
                format!("execution deadline {deadline} ms has passed"),
            ),
            _ => self.act(&command),
        };
        let mut st = self.lock();
        if outcome.accepted {
            st.accepted += 1;
            drop(st);
            if let Some(rec) = &self.recorder {
                rec.command_accepted(&command, &outcome);
            }
        } else {
            st.rejected += 1;
        }
        outcome
    }

    fn act(&self, command: &AdaptationCommand) -> Outcome {
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
            return self.reject(command, ReasonCode::InvalidStage, why);
        }
        match &command.payload {
            CommandPayload::Seed(seed) => self.seed_command(command, seed),
            CommandPayload::Pause(pause) => self.pause(command, *pause),
            CommandPayload::CircuitBreaker(cb) => self.force_breaker(command, cb),
            CommandPayload::Emergency(e) => self.emergency(command, *e),
            CommandPayload::Optimizer(o) => self.optimizer(command, o),
            CommandPayload::Rollback(r) => self.rollback_command(command, r),
            CommandPayload::StructuralPruning(_) => self.reject(
                command,
                ReasonCode::UnsupportedCommand,
                "STRUCTURAL_PRUNING is not supported by this host; prune with the trainer's tooling",
            ),
        }
    }

    /// Emits the rejection event and builds the outcome.
    pub(super) fn reject(&self, command: &AdaptationCommand, reason: ReasonCode, detail: impl Into<String>) -> Outcome {
        self.reject_key(command, reason, None, detail)
    }

    /// [`reject`](Self::reject) naming the annotation key at fault, in both
    /// the outcome and the event (attribute `key`), so a controller and an
    /// operator see which key to fix without parsing the detail.
    fn reject_key(
        &self,
        command: &AdaptationCommand,
        reason: ReasonCode,
        key: Option<&str>,
        detail: impl Into<String>,
    ) -> Outcome {
        let detail = detail.into();
        let mut event = TelemetryEvent::new(
            "kasmina.command.rejected",
            TelemetryLevel::Warning,
            detail.clone(),
            self.clock.now_ms(),
        )
        .seed(command.target_seed_id.as_str())
        .attr("command_id", command.command_id.as_str())
        .attr("command_type", command.command_type().as_str())
        .attr("reason", reason.as_str());
        let mut outcome = Outcome::rejected(reason, detail).with("command_id", command.command_id.as_str());
        if let Some(key) = key {
            event = event.attr("key", key);
            outcome = outcome.with("key", key);
        }
        self.sink.emit(event);
        outcome
    }

    fn accept(&self, command: &AdaptationCommand, what: &str) -> Outcome {
        self.accept_with(command, what, Vec::new())
    }

    /// Accepts with extra attributes, carried by both the outcome and the
    /// `kasmina.command.executed` event (so an observer sees what the
    /// controller was told, e.g. GERMINATE's blend facts).
    pub(super) fn accept_with(
        &self,
        command: &AdaptationCommand,
        what: &str,
        extra: Vec<(&'static str, AttrValue)>,
    ) -> Outcome {
        let mut event =
            TelemetryEvent::new("kasmina.command.executed", TelemetryLevel::Info, what.to_owned(), self.clock.now_ms())
                .seed(command.target_seed_id.as_str())
                .attr("command_id", command.command_id.as_str())
                .attr("command_type", command.command_type().as_str());
        let mut outcome = Outcome::accepted().with("command_id", command.command_id.as_str()).with("result", what);
        for (key, value) in extra {
            outcome = outcome.with(key, value.to_string());
            event = event.attr(key, value);
        }
        self.sink.emit(event);
        outcome
    }

    fn seed_command(&self, command: &AdaptationCommand, sc: &SeedCommand) -> Outcome {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(registration) = &st.registration else {
            return self.reject(
                command,
                ReasonCode::InvalidStage,
                "no trainer has registered a model yet (register_host)",
            );
        };
        let run_id = registration.training_run_id.clone();
        let Some(current) = st.seeds.get(&command.target_seed_id) else {
            let known: Vec<&str> = st.seeds.keys().map(String::as_str).collect();
            return self.reject(
                command,
                ReasonCode::InvalidField,
                format!("unknown seed {:?}; registered slots: {}", command.target_seed_id, known.join(", ")),
            );
        };
        let parsed = match self.parse_annotations(command, &run_id, sc.operation) {
            Ok(parsed) => parsed,
            Err(outcome) => return outcome,
        };
        let expected = match expected_stage(command, sc.operation, current.stage) {
            Ok(stage) => stage,
            Err(detail) => return self.reject(command, ReasonCode::InvalidField, detail),
        };
        // Work on a copy: nothing is written back unless the command acts.
        let mut seed = current.clone();
        let mut directives = Vec::new();
        let outcome = match sc.operation {
            SeedOperation::Germinate => self.germinate(st, command, sc, &parsed, &run_id, expected, &mut seed),
            SeedOperation::StartTraining => {
                self.advance_now(st, command, &mut seed, &mut directives, GateId::G1GradientHealth, expected)
            }
            SeedOperation::StartGrafting => {
                self.advance_now(st, command, &mut seed, &mut directives, GateId::G2Stability, expected)
            }
            SeedOperation::Stabilize => self.set_hold(command, &mut seed, true),
            SeedOperation::FineTune => self.fine_tune(command, sc, &mut seed),
            SeedOperation::Evaluate => self.evaluate_now(st, command, &seed, expected),
            SeedOperation::Fossilize => self.fossilize(st, command, &mut seed, &mut directives, expected),
            SeedOperation::Cull | SeedOperation::Cancel => {
                if seed.stage.is_active() {
                    let why = format!("{} by command {}", sc.operation.as_str(), command.command_id);
                    let at = PointCtx::of(st);
                    self.cull(&at, &mut directives, &mut seed, RollbackReason::Culled, &why, st.last_step);
                    self.accept(command, &why)
                } else {
                    self.reject(command, ReasonCode::InvalidStage, format!("cannot cull a seed in {}", seed.stage))
                }
            }
        };
        // A gate failure while acting changed the stage (culled): keep it.
        if outcome.accepted || seed.stage != current.stage {
            st.seeds.insert(seed.seed_id.clone(), seed);
            st.directives.append(&mut directives);
        }
        outcome
    }

    fn parse_annotations(
        &self,
        command: &AdaptationCommand,
        run_id: &str,
        op: SeedOperation,
    ) -> Result<ParsedAnnotations, Outcome> {
        let parsed = match self.policies.annotations.current().parse(&command.annotations, &self.annotation_limits()) {
            Ok(parsed) => parsed,
            Err(AnnotationError::Rejected(err)) => {
                let key = Some(err.key.as_str()).filter(|k| !k.is_empty());
                return Err(self
                    .reject_key(command, ReasonCode::InvalidField, key, err.detail.clone())
                    .with("code", format!("{:?}", err.code)));
            }
            Err(AnnotationError::Plugin(failure)) => {
                return Err(self.reject(command, ReasonCode::PluginFailure, failure.to_string()));
            }
        };
        match parsed.training_run_id.as_deref() {
            Some(id) if id == run_id => {}
            Some(other) => {
                return Err(self.reject(
                    command,
                    ReasonCode::InvalidField,
                    format!("{} {other:?} does not match the registered run {run_id:?}", keys::TRAINING_RUN_ID),
                ));
            }
            None => {
                let detail = format!("annotation {} is required", keys::TRAINING_RUN_ID);
                return Err(self.reject_key(command, ReasonCode::MissingField, Some(keys::TRAINING_RUN_ID), detail));
            }
        }
        if op.requires_mesh_layers() && parsed.mesh_layers.is_empty() {
            let detail = format!("{} requires {}", op.as_str(), keys::MESH_LAYERS);
            return Err(self.reject_key(command, ReasonCode::MissingField, Some(keys::MESH_LAYERS), detail));
        }
        Ok(parsed)
    }

    #[allow(clippy::too_many_arguments)]
    fn germinate(
        &self,
        st: &State,
        command: &AdaptationCommand,
        sc: &SeedCommand,
        parsed: &ParsedAnnotations,
        run_id: &str,
        expected: SeedStage,
        seed: &mut SeedContext,
    ) -> Outcome {
        if seed.stage != SeedStage::Dormant {
            let mut detail = format!("GERMINATE needs a DORMANT seed; {} is {}", seed.seed_id, seed.stage);
            if let Some(until) = seed.embargo_until_ms {
                detail.push_str(&format!(" (embargo ends in {} ms)", until.saturating_sub(self.clock.now_ms())));
            }
            return self.reject(command, ReasonCode::InvalidStage, detail);
        }
        // Refused here, before any state changes, with the key named: a spec
        // the trainer would refuse must never germinate a seed.
        let blend = match blend_spec(parsed) {
            Ok(blend) => blend,
            Err(refusal) => return self.reject_key(command, refusal.reason, Some(refusal.key), refusal.detail),
        };
        let blend_facts: Vec<(&'static str, AttrValue)> = vec![
            (keys::BLEND_MODE, blend.mode.as_str().into()),
            (keys::BLEND_MODE_SOURCE, mode_source(parsed).into()),
            ("alpha_clamped", u64::from(parsed.alpha_clamped).into()),
        ];
        seed.blueprint_id = Some(sc.blueprint_id.clone());
        seed.parameters = sc.parameters.clone();
        seed.mesh_layers = parsed.mesh_layers.clone();
        seed.blend = Some(blend);
        let entry = self.kernels.urza().entry(&sc.blueprint_id);
        seed.descriptor = entry.as_ref().map(|e| e.descriptor.clone());
        if let Some(entry) = &entry {
            let context = AdmissionContext { training_run_id: run_id.to_owned(), quarantine: false, approved: false };
            let verdict = self.policies.blueprints.current().admit(&entry.descriptor, &sc.parameters, &context);
            if !verdict.passed {
                let mut outcome = self.reject(command, ReasonCode::BlueprintRefused, verdict.reason.clone());
                outcome.attributes.extend(verdict.attributes.into_iter().map(|(k, v)| (format!("policy.{k}"), v)));
                return outcome;
            }
        }
        // G0 guards DORMANT → GERMINATED; a failure leaves the slot dormant
        // (the table has no DORMANT → CULLED edge).
        let decision = self.gate(st, seed, GateId::G0Sanity, expected);
        if !decision.passed {
            let mut outcome = self
                .reject(command, ReasonCode::GateFailed, decision.reason.clone())
                .with("gate", GateId::G0Sanity.as_str());
            outcome.attributes.extend(decision.attributes.into_iter().map(|(k, v)| (format!("gate.{k}"), v)));
            return outcome;
        }
        self.transition(seed, SeedStage::Germinated, st.last_step, "G0 passed");
        seed.metric_baseline = st.latest_metric;
        let request = PrefetchRequest {
            request_id: command.command_id.clone(),
            seed_id: seed.seed_id.clone(),
            blueprint_id: sc.blueprint_id.clone(),
            training_run_id: run_id.to_owned(),
            issued_at_ms: self.clock.now_ms(),
            timeout_ms: self.settings.kernels.prefetch_timeout_ms,
        };
        match self.kernels.prefetch(request) {
            Ok(()) => seed.prefetch_request = Some(command.command_id.clone()),
            Err(err) => {
                // Germinated but no kernel will come: the step after this
                // finds no prefetch and fails G1 (kernel not verified).
                seed.last_failure = Some(format!("prefetch refused: {err}"));
            }
        }
        self.accept_with(command, &format!("germinated {} with {}", seed.seed_id, sc.blueprint_id), blend_facts)
    }

    fn advance_now(
        &self,
        st: &State,
        command: &AdaptationCommand,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        gate: GateId,
        expected: SeedStage,
    ) -> Outcome {
        let (from, to) = gate.edge();
        if seed.stage != from {
            return self.reject(
                command,
                ReasonCode::InvalidStage,
                format!("{gate} needs {from}; {} is {}", seed.seed_id, seed.stage),
            );
        }
        match self.pass_gate(st, seed, directives, gate, expected, st.last_step) {
            Ok(()) => self.accept(command, &format!("{} advanced to {to}", seed.seed_id)),
            Err(reason) => Outcome::rejected(ReasonCode::GateFailed, reason)
                .with("gate", gate.as_str())
                .with("seed_culled", "true")
                .with("command_id", command.command_id.as_str()),
        }
    }

    fn set_hold(&self, command: &AdaptationCommand, seed: &mut SeedContext, hold: bool) -> Outcome {
        if !seed.stage.is_active() {
            return self.reject(
                command,
                ReasonCode::InvalidStage,
                format!("{} is {}, not active", seed.seed_id, seed.stage),
            );
        }
        seed.hold = hold;
        self.accept(command, if hold { "automatic advancement held" } else { "automatic advancement resumed" })
    }

    fn fine_tune(&self, command: &AdaptationCommand, sc: &SeedCommand, seed: &mut SeedContext) -> Outcome {
        if let Some(descriptor) = &seed.descriptor {
            for (name, value) in &sc.parameters {
                let admitted = descriptor.parameter_bounds.get(name).is_some_and(|b| b.admits(*value));
                if !admitted {
                    return self.reject(
                        command,
                        ReasonCode::InvalidField,
                        format!("parameter {name}={value} is outside the blueprint's bounds"),
                    );
                }
            }
        }
        let outcome = self.set_hold(command, seed, false);
        if outcome.accepted {
            seed.parameters.extend(sc.parameters.iter().map(|(k, v)| (k.clone(), *v)));
        }
        outcome
    }

    fn evaluate_now(
        &self,
        st: &State,
        command: &AdaptationCommand,
        seed: &SeedContext,
        expected: SeedStage,
    ) -> Outcome {
        let Some(gate) = leyline::lifecycle::ALL_GATES.into_iter().find(|g| g.edge().0 == seed.stage) else {
            return self.reject(command, ReasonCode::InvalidStage, format!("no gate leaves {}", seed.stage));
        };
        // A dry run: the verdict is reported, nothing transitions.
        let decision = self.gate(st, seed, gate, expected);
        let mut outcome = self
            .accept(command, &format!("{gate} dry run: {}", if decision.passed { "passed" } else { "failed" }))
            .with("gate", gate.as_str())
            .with("passed", decision.passed.to_string())
            .with("reason", decision.reason.as_str());
        outcome.attributes.extend(decision.attributes.into_iter().map(|(k, v)| (format!("gate.{k}"), v)));
        outcome
    }

    fn fossilize(
        &self,
        st: &State,
        command: &AdaptationCommand,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        expected: SeedStage,
    ) -> Outcome {
        if seed.stage != SeedStage::Probationary
            || expected != SeedStage::Probationary
            || seed.reported_stage != SeedStage::Probationary
        {
            return self.reject(
                command,
                ReasonCode::InvalidStage,
                format!(
                    "FOSSILIZE needs PROBATIONARY; host holds {}, controller expects {expected}, trainer reports {}",
                    seed.stage, seed.reported_stage
                ),
            );
        }
        let needed = self.settings.lifecycle.probation_steps;
        if seed.steps_in_stage < needed {
            return self.reject(
                command,
                ReasonCode::InvalidStage,
                format!("probation not complete: {}/{needed} steps", seed.steps_in_stage),
            );
        }
        // A durable point before the model changes for good.
        self.record_point(&PointCtx::of(st), &[&*seed], RollbackReason::Retired, directives);
        self.transition(seed, SeedStage::Fossilized, None, "fossilized by command");
        seed.alpha = 1.0;
        directives.push(GraftDirective::Stage {
            seed_id: seed.seed_id.clone(),
            stage: SeedStage::Fossilized,
            alpha: 1.0,
        });
        self.accept(command, &format!("{} fossilized", seed.seed_id))
    }
}

/// The stage the controller expects: the `expected_stage` annotation when
/// given, otherwise the stage the operation starts from.
fn expected_stage(command: &AdaptationCommand, op: SeedOperation, current: SeedStage) -> Result<SeedStage, String> {
    if let Some(name) = command.annotations.get(EXPECTED_STAGE) {
        return SeedStage::parse(name).ok_or_else(|| format!("annotation {EXPECTED_STAGE}={name:?} is not a stage"));
    }
    Ok(match op {
        SeedOperation::Germinate => SeedStage::Dormant,
        SeedOperation::StartTraining => SeedStage::Germinated,
        SeedOperation::StartGrafting => SeedStage::Training,
        SeedOperation::Fossilize => SeedStage::Probationary,
        _ => current,
    })
}
