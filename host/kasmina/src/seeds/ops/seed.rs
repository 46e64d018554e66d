//! Seed operations under the state lock: the seed must exist and the run
//! match, then the operation's module acts on a staged copy, which is
//! written back only if the command acted or a gate failure culled it.

use kasmina_plugin_host::annotation::ParsedAnnotations;
use leyline::annotations as keys;
use leyline::command::SeedCommand;
use leyline::{AdaptationCommand, GateId, ReasonCode, SeedOperation, SeedStage};

use super::germinate::Staging;
use super::prepare::Precomputed;
use super::{EXPECTED_STAGE, OpResult, Refusal};
use crate::seeds::SeedManager;

/// What a seed operation is given besides the seed itself.
pub(super) struct SeedCall<'a> {
    pub(super) command: &'a AdaptationCommand,
    pub(super) sc: &'a SeedCommand,
    pub(super) parsed: &'a ParsedAnnotations,
    pub(super) run_id: &'a str,
    /// The stage the controller believes the seed is in.
    pub(super) expected: SeedStage,
    pub(super) pre: &'a Precomputed,
}

impl SeedManager {
    pub(super) fn seed_command(
        &self,
        command: &AdaptationCommand,
        sc: &SeedCommand,
        pre: &mut Precomputed,
    ) -> OpResult {
        // The verdicts computed before the lock become the gates' memo
        // (moved: nothing else reads them).
        let memo = std::mem::take(&mut pre.gates);
        let staged = pre.germination.take();
        let pre = &*pre;
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(registration) = &st.registration else {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                "no trainer has registered a model yet (register_host)",
            ));
        };
        let run_id = registration.training_run_id.clone();
        let Some(current) = st.seeds.get(&command.target_seed_id) else {
            let known: Vec<&str> = st.seeds.keys().map(String::as_str).collect();
            return Err(Refusal::new(
                ReasonCode::InvalidField,
                format!("unknown seed {:?}; registered slots: {}", command.target_seed_id, known.join(", ")),
            ));
        };
        // Parsed before the lock; parsed here only if the registration or
        // seed appeared in between.
        let parsed_now;
        let parsed = match &pre.parsed {
            Some(parsed) => parsed,
            None => {
                parsed_now = self.parse(command)?;
                &parsed_now
            }
        };
        check_run_and_mesh(parsed, &run_id, sc.operation)?;
        let expected = expected_stage(command, sc.operation, current.stage)
            .map_err(|detail| Refusal::new(ReasonCode::InvalidField, detail))?;
        let call = SeedCall { command, sc, parsed, run_id: &run_id, expected, pre };
        let before = current.stage;
        // A GERMINATE staged before the lock on this very seed, with the
        // same host facts and catalog entry, is taken as staged, with its G0
        // verdict: staging again would produce the same seed.
        // The catalog entry is looked up once, for that check and for
        // `germinate`.
        let entry = match sc.operation {
            SeedOperation::Germinate => self.kernels.urza().entry_arc(&sc.blueprint_id),
            _ => None,
        };
        let prestaged = staged.filter(|s| {
            sc.operation == SeedOperation::Germinate && {
                let env = self.environment_of(st, &current.seed_id, &current.site, Some(sc.blueprint_id.as_str()));
                s.still_matches(current, &env, entry.as_ref())
            }
        });
        // Work on a copy: nothing is written back unless the command acts.
        let (mut seed, staging) = match prestaged {
            Some(s) => {
                let s = *s;
                (s.staged, Staging::Done { g0: s.g0, germinated: s.germinated, accepted: s.accepted })
            }
            None => (current.clone(), Staging::Now),
        };
        let mut directives = Vec::new();
        let mut spent_g0 = None;
        st.gate_memo = memo;
        let result = match sc.operation {
            SeedOperation::Germinate => self.germinate(st, &call, &mut seed, entry.as_deref(), staging, &mut spent_g0),
            SeedOperation::StartTraining => {
                self.advance_now(st, &call, &mut seed, &mut directives, GateId::G1GradientHealth)
            }
            SeedOperation::StartGrafting => {
                self.advance_now(st, &call, &mut seed, &mut directives, GateId::G2Stability)
            }
            SeedOperation::Stabilize => Self::set_hold(&mut seed, true),
            SeedOperation::FineTune => Self::fine_tune(&call, &mut seed),
            SeedOperation::Evaluate => self.evaluate_now(st, &call, &seed),
            SeedOperation::Fossilize => self.fossilize(st, &call, &mut seed, &mut directives),
            SeedOperation::Cull | SeedOperation::Cancel => self.cull_command(st, &call, &mut seed, &mut directives),
        };
        let spent_memo = std::mem::take(&mut st.gate_memo);
        let mut replaced = None;
        // A gate failure while acting changed the stage (culled): keep it.
        if result.is_ok() || seed.stage != before {
            replaced = st.seeds.insert(seed.seed_id.clone(), seed);
            st.directives.append(&mut directives);
        }
        // The lock is released before what the command no longer needs (the
        // memo, the state it replaced) is freed.
        drop(guard);
        drop((spent_memo, replaced, spent_g0));
        result
    }
}

/// The run the annotations name must be the registered one; operations
/// that graft need mesh layers.
fn check_run_and_mesh(parsed: &ParsedAnnotations, run_id: &str, op: SeedOperation) -> Result<(), Refusal> {
    match parsed.training_run_id.as_deref() {
        Some(id) if id == run_id => {}
        Some(other) => {
            return Err(Refusal::new(
                ReasonCode::InvalidField,
                format!("{} {other:?} does not match the registered run {run_id:?}", keys::TRAINING_RUN_ID),
            ));
        }
        None => {
            let detail = format!("annotation {} is required", keys::TRAINING_RUN_ID);
            return Err(Refusal::new(ReasonCode::MissingField, detail).key(keys::TRAINING_RUN_ID));
        }
    }
    if op.requires_mesh_layers() && parsed.mesh_layers.is_empty() {
        let detail = format!("{} requires {}", op.as_str(), keys::MESH_LAYERS);
        return Err(Refusal::new(ReasonCode::MissingField, detail).key(keys::MESH_LAYERS));
    }
    Ok(())
}

/// The stage the controller expects: the `expected_stage` annotation when
/// given, otherwise the stage the operation starts from.
pub(super) fn expected_stage(
    command: &AdaptationCommand,
    op: SeedOperation,
    current: SeedStage,
) -> Result<SeedStage, String> {
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
