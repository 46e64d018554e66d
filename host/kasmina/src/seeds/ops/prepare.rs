//! The part of a command that runs before the state lock: the envelope, the
//! fields, the deadline, and every plugin the operation will consult —
//! annotation parser, blueprint admission, and the gate — asked about a
//! staged copy of the seed taken under a brief read of the state.
//!
//! Nothing here changes state. What it computes is advice for apply: the
//! parsed annotations and admission verdict are the command's own (they do
//! not depend on the seed), and a precomputed gate verdict is used only if
//! the facts the gate sees are still exactly the same when the command is
//! applied.

use std::sync::Arc;

use kasmina_kernels::CatalogEntry;
use kasmina_plugin_host::Verdict;
use kasmina_plugin_host::annotation::{AnnotationError, ParsedAnnotations};
use kasmina_plugin_host::blueprint::AdmissionContext;
use leyline::annotations as keys;
use leyline::command::SeedCommand;
use leyline::{
    AdaptationCommand, CommandPayload, GateId, Outcome, ReasonCode, SeedOperation, SeedStage, TelemetryEvent,
};

use super::super::{SeedContext, SeedManager};
use super::germinate::{G0_PASSED, accepted_germination, stage_germination};
use super::seed::expected_stage;
use super::{Accepted, Refusal};
use crate::gates::{FinishedVerdict, GateDecision, GateEnvironment};
use crate::seeds::blend::blend_spec;

/// A command ready to apply: verified, validated, and with its plugin
/// verdicts computed ([`SeedManager::prepare_command`]).
#[derive(Debug)]
pub struct PreparedCommand(pub(super) Prepared);

#[derive(Debug)]
pub(super) enum Prepared {
    /// Refused by the verifier or validator, which already reported it.
    Answered(Outcome),
    /// Refused here (deadline, annotations): concluded on apply.
    Refused(Box<AdaptationCommand>, Refusal),
    /// Checks passed; plugin verdicts computed where they could be.
    Ready(Box<AdaptationCommand>, Box<Precomputed>),
}

/// Plugin verdicts computed outside the state lock.
#[derive(Debug, Default)]
pub(super) struct Precomputed {
    /// The annotation parser's answer (seed commands).
    pub(super) parsed: Option<ParsedAnnotations>,
    /// Blueprint admission (GERMINATE).
    pub(super) admission: Option<Verdict>,
    /// Gate verdicts for the staged seed.
    pub(super) gates: Vec<GateDecision>,
    /// GERMINATE: the seed as read and as staged, with what staging and G0
    /// read besides it.
    pub(super) germination: Option<Box<StagedGermination>>,
}

/// A GERMINATE staged before the lock. Apply takes `staged` (and the G0
/// verdict finished on it) instead of staging again and rebuilding the
/// gate's inputs only when the seed equals `read` field for field, the host
/// facts equal `env` and the catalog still serves the same `entry`: then
/// staging under the lock would produce exactly `staged`.
#[derive(Debug)]
pub(super) struct StagedGermination {
    pub(super) read: SeedContext,
    pub(super) env: GateEnvironment,
    pub(super) entry: Arc<CatalogEntry>,
    pub(super) staged: SeedContext,
    /// G0's verdict on `staged` with its event, if the plugin was asked.
    pub(super) g0: Option<FinishedVerdict>,
    /// The DORMANT → GERMINATED event (its step set on apply), unless
    /// `g0` failed. Like `g0`'s event it carries the time it was built,
    /// microseconds before the lock.
    pub(super) germinated: Option<TelemetryEvent>,
    /// What the command reports if it is accepted.
    pub(super) accepted: Accepted,
}

impl StagedGermination {
    /// Whether `current` is the seed this was staged from, with the same
    /// facts around it (see the type's docs).
    pub(super) fn still_matches(
        &self,
        current: &SeedContext,
        env: &GateEnvironment,
        entry: Option<&Arc<CatalogEntry>>,
    ) -> bool {
        entry.is_some_and(|e| Arc::ptr_eq(e, &self.entry)) && self.env == *env && self.read == *current
    }
}

impl SeedManager {
    /// Everything before the state lock (see the module docs): cheap to
    /// throw away, changes no state beyond the verifier's nonce ledger.
    pub fn prepare_command(&self, command: AdaptationCommand) -> PreparedCommand {
        let span = tracing::info_span!(
            "kasmina.command.prepare",
            command_id = %command.command_id,
            seed = %command.target_seed_id,
            kind = command.command_type().as_str()
        );
        let _entered = span.enter();
        let command = match self.verifier.verify(command) {
            Ok(verified) => verified.into_command(),
            Err(outcome) => return PreparedCommand(Prepared::Answered(outcome)),
        };
        if let Err(rejected) = self.validator.admit(&command) {
            return PreparedCommand(Prepared::Answered(rejected));
        }
        if let Some(deadline) = command.execution_deadline_ms
            && self.clock.now_ms() > deadline
        {
            let refusal =
                Refusal::new(ReasonCode::DeadlineExceeded, format!("execution deadline {deadline} ms has passed"));
            return PreparedCommand(Prepared::Refused(Box::new(command), refusal));
        }
        let result = match &command.payload {
            CommandPayload::Seed(sc) => self.prepare_seed(&command, sc),
            CommandPayload::Pause(p) if p.resume => Ok(self.prepare_resume(&command)),
            _ => Ok(Precomputed::default()),
        };
        PreparedCommand(match result {
            Ok(pre) => Prepared::Ready(Box::new(command), Box::new(pre)),
            Err(refusal) => Prepared::Refused(Box::new(command), refusal),
        })
    }

    /// Parses the annotations, then asks admission and the operation's gate
    /// about a staged copy. A seed or registration that is missing is left
    /// for apply to refuse (in the order it always checks).
    fn prepare_seed(&self, command: &AdaptationCommand, sc: &SeedCommand) -> Result<Precomputed, Refusal> {
        // One brief read of the state, before the annotation plugin is
        // asked: whether the registration and the seed exist and, for an
        // operation that runs a gate, a copy of the seed with the host facts
        // its gate would see once staged. Apply checks everything again
        // against the seed as it is then, and uses a verdict computed here
        // only if its facts are still exactly the same.
        let snapshot = {
            let st = self.read();
            let (Some(registration), Some(seed)) = (&st.registration, st.seeds.get(&command.target_seed_id)) else {
                return Ok(Precomputed::default());
            };
            let germinate = sc.operation == SeedOperation::Germinate && seed.stage == SeedStage::Dormant;
            let gated = germinate
                || matches!(
                    sc.operation,
                    SeedOperation::StartTraining | SeedOperation::StartGrafting | SeedOperation::Evaluate
                );
            gated.then(|| {
                // GERMINATE stages the blueprint it names; nothing else
                // changes what the environment reads from the seed.
                let blueprint = if germinate { Some(sc.blueprint_id.as_str()) } else { seed.blueprint_id.as_deref() };
                let env = self.environment_of(&st, &seed.seed_id, &seed.site, blueprint);
                (seed.clone(), env, germinate.then(|| registration.training_run_id.clone()))
            })
        };
        let parsed = self.parse(command)?;
        let mut pre = Precomputed::default();
        let Some((mut staged, env, run_id)) = snapshot else {
            pre.parsed = Some(parsed);
            return Ok(pre);
        };
        let Ok(expected) = expected_stage(command, sc.operation, staged.stage) else {
            pre.parsed = Some(parsed);
            return Ok(pre);
        };
        let gate = match (sc.operation, run_id) {
            (SeedOperation::Germinate, Some(run_id)) => match blend_spec(&parsed) {
                // The catalog's shared entry: only the staged seed takes its
                // own copy of the descriptor.
                Ok(blend) => self
                    .kernels
                    .urza()
                    .entry_arc(&sc.blueprint_id)
                    .map(|entry| (GateId::G0Sanity, Some((blend, entry, run_id)))),
                Err(_) => None,
            },
            (SeedOperation::StartTraining, _) => Some((GateId::G1GradientHealth, None)),
            (SeedOperation::StartGrafting, _) => Some((GateId::G2Stability, None)),
            (SeedOperation::Evaluate, _) => {
                leyline::lifecycle::ALL_GATES.into_iter().find(|g| g.edge().0 == staged.stage).map(|g| (g, None))
            }
            _ => None,
        };
        let Some((gate, germination)) = gate else {
            pre.parsed = Some(parsed);
            return Ok(pre);
        };
        // Staging reads no state: done with no lock held.
        let admission = germination.map(|(blend, entry, run_id)| {
            let read = staged.clone();
            let accepted = accepted_germination(&staged.seed_id, sc, &parsed, &blend);
            stage_germination(&mut staged, sc, &parsed, blend, Some(&entry.descriptor));
            (read, entry, run_id, accepted)
        });
        pre.parsed = Some(parsed);
        let mut read_and_entry = None;
        if let Some((read, entry, run_id, accepted)) = admission {
            let context = AdmissionContext { training_run_id: run_id, quarantine: false, approved: false };
            let verdict = self.policies.blueprints.current().admit(&entry.descriptor, &sc.parameters, &context);
            let passed = verdict.passed;
            pre.admission = Some(verdict);
            if !passed {
                return Ok(pre);
            }
            read_and_entry = Some((read, entry, accepted));
        }
        let (from, _) = gate.edge();
        if staged.stage == from {
            pre.gates.extend(self.gates.precompute(gate, &staged, expected, &env));
        }
        if let Some((read, entry, accepted)) = read_and_entry {
            // Finished here, event and all: apply emits it as it is if it
            // takes the staged seed, and asks G0 again if it does not.
            let g0 = pre.gates.iter().position(|d| d.gate == GateId::G0Sanity);
            let g0 = g0.map(|i| self.gates.finish_precomputed(&staged, pre.gates.swap_remove(i)));
            let germinated = g0
                .as_ref()
                .is_none_or(|g0| g0.decision.passed)
                .then(|| self.transition_event(&staged.seed_id, staged.stage, SeedStage::Germinated, None, G0_PASSED));
            pre.germination = Some(Box::new(StagedGermination { read, env, entry, staged, g0, germinated, accepted }));
        }
        Ok(pre)
    }

    /// A resume re-checks the seed's entry gate: asked here on the probe
    /// the re-check will build.
    fn prepare_resume(&self, command: &AdaptationCommand) -> Precomputed {
        let probe = {
            let st = self.read();
            st.seeds
                .get(&command.target_seed_id)
                .filter(|s| s.paused && !s.resync_pending && s.stage.is_active())
                .and_then(entry_gate_probe)
                .map(|(gate, probe)| {
                    let env = self.environment(&st, &probe);
                    (gate, probe, env)
                })
        };
        let mut pre = Precomputed::default();
        if let Some((gate, probe, env)) = probe {
            pre.gates.extend(self.gates.precompute(gate, &probe, probe.stage, &env));
        }
        pre
    }

    /// The annotation plugin's answer, or the refusal naming the key.
    pub(super) fn parse(&self, command: &AdaptationCommand) -> Result<ParsedAnnotations, Refusal> {
        match self.policies.annotations.current().parse(&command.annotations, &self.annotation_limits()) {
            Ok(parsed) => Ok(parsed),
            Err(AnnotationError::Rejected(err)) => {
                // The parser plugin's interface has no mesh code of its own;
                // a refusal it names `mesh_layers` is the host's invalid_mesh.
                let reason =
                    if err.key == keys::MESH_LAYERS { ReasonCode::InvalidMesh } else { ReasonCode::InvalidField };
                let mut refusal = Refusal::new(reason, err.detail.clone());
                if !err.key.is_empty() {
                    refusal = refusal.key(&err.key);
                }
                Err(refusal.with("code", format!("{:?}", err.code)))
            }
            Err(AnnotationError::Plugin(failure)) => Err(Refusal::new(ReasonCode::PluginFailure, failure.to_string())),
        }
    }
}

/// The gate that admitted `seed` into its stage, and the seed as it stood
/// before that gate (resume re-checks it with today's facts).
pub(super) fn entry_gate_probe(seed: &SeedContext) -> Option<(GateId, SeedContext)> {
    let gate = leyline::lifecycle::ALL_GATES.into_iter().find(|g| g.edge().1 == seed.stage)?;
    let (from, _) = gate.edge();
    let mut probe = seed.clone();
    probe.stage = from;
    probe.reported_stage = from;
    Some((gate, probe))
}
