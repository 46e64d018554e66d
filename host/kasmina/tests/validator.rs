//! The validator over every command type: structured outcomes, the field
//! that was wrong, and a telemetry event for every rejection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use common::{T0, germinate, other_payloads, pruning_payload, seed_command};
use kasmina::settings::Settings;
use kasmina::validator::CommandValidator;
use kasmina_core::{ManualClock, MemorySink};
use leyline::command::{CircuitBreakerCommand, EmergencyCommand, OptimizerCommand, RollbackCommand};
use leyline::{AdaptationCommand, BreakerState, CommandPayload, Outcome, ReasonCode, SeedOperation, TelemetryLevel};

fn validator() -> (CommandValidator, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new(1_000));
    let v = CommandValidator::new(&Settings::default().annotations, Arc::new(ManualClock::new(T0)), sink.clone());
    (v, sink)
}

fn with_payload(payload: CommandPayload) -> AdaptationCommand {
    AdaptationCommand { payload, ..germinate("c", T0) }
}

fn assert_rejected(
    v: &CommandValidator,
    sink: &MemorySink,
    command: &AdaptationCommand,
    reason: ReasonCode,
    field: &str,
) -> Outcome {
    let before = sink.named("kasmina.command.invalid").len();
    let outcome = v.validate(command);
    assert!(!outcome.accepted, "{field}: accepted");
    assert_eq!(outcome.reason, Some(reason), "{field}: {:?}", outcome.attributes);
    assert_eq!(outcome.attributes.get("field").map(String::as_str), Some(field));
    let events = sink.named("kasmina.command.invalid");
    assert_eq!(events.len(), before + 1, "{field}: no telemetry");
    let last = &events[events.len() - 1];
    assert_eq!(last.level, TelemetryLevel::Warning);
    assert_eq!(last.attributes.get("reason").map(ToString::to_string).as_deref(), Some(reason.as_str()));
    outcome
}

#[test]
fn every_seed_operation_and_every_other_type_is_accepted_when_complete() {
    let (v, sink) = validator();
    for op in [
        SeedOperation::Germinate,
        SeedOperation::StartTraining,
        SeedOperation::StartGrafting,
        SeedOperation::Stabilize,
        SeedOperation::Evaluate,
        SeedOperation::FineTune,
        SeedOperation::Fossilize,
        SeedOperation::Cull,
        SeedOperation::Cancel,
    ] {
        let outcome = v.validate(&seed_command("c", op, T0));
        assert!(outcome.accepted, "{op:?}: {:?}", outcome.attributes);
        assert_eq!(outcome.attributes.get("operation").map(String::as_str), Some(op.as_str()));
    }
    for payload in other_payloads() {
        let kind = payload.command_type();
        let outcome = v.validate(&with_payload(payload));
        assert!(outcome.accepted, "{kind:?}: {:?}", outcome.attributes);
        assert_eq!(outcome.attributes.get("command_type").map(String::as_str), Some(kind.as_str()));
    }
    assert!(sink.events().is_empty());
    assert_eq!(v.accepted(), 14);
}

#[test]
fn seed_commands_need_seed_blueprint_run_id_and_mesh_layers() {
    let (v, sink) = validator();
    let mut c = germinate("c", T0);
    c.target_seed_id = "  ".to_owned();
    let outcome = assert_rejected(&v, &sink, &c, ReasonCode::MissingField, "target_seed_id");
    assert_eq!(outcome.attributes.get("command_type").map(String::as_str), Some("SEED"));

    let mut c = germinate("c", T0);
    if let CommandPayload::Seed(seed) = &mut c.payload {
        seed.blueprint_id.clear();
    }
    assert_rejected(&v, &sink, &c, ReasonCode::MissingField, "blueprint_id");

    let mut c = germinate("c", T0);
    c.annotations.remove("training_run_id");
    assert_rejected(&v, &sink, &c, ReasonCode::MissingField, "training_run_id");
    c.annotations.insert("training_run_id".to_owned(), String::new());
    assert_rejected(&v, &sink, &c, ReasonCode::MissingField, "training_run_id");

    let mut c = germinate("c", T0);
    c.annotations.remove("mesh_layers");
    assert_rejected(&v, &sink, &c, ReasonCode::MissingField, "mesh_layers");
    for op in [SeedOperation::Cull, SeedOperation::Cancel] {
        let mut c = seed_command("c", op, T0);
        c.annotations.remove("mesh_layers");
        assert!(v.validate(&c).accepted, "{op:?} needs no mesh layers");
        c.annotations.remove("training_run_id");
        assert!(!v.validate(&c).accepted, "{op:?} still needs a run id");
    }
    assert_eq!(v.rejections().get(&ReasonCode::MissingField), Some(&7));
}

#[test]
fn non_finite_parameters_are_invalid() {
    let (v, sink) = validator();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut c = germinate("c", T0);
        if let CommandPayload::Seed(seed) = &mut c.payload {
            seed.parameters.insert("dropout".to_owned(), bad);
        }
        let outcome = assert_rejected(&v, &sink, &c, ReasonCode::InvalidField, "parameters");
        assert!(outcome.attributes["detail"].contains("dropout"));
    }
    let c = with_payload(CommandPayload::Optimizer(OptimizerCommand {
        optimizer_id: "adamw".to_owned(),
        hyperparameters: [("lr".to_owned(), f64::NAN)].into(),
    }));
    assert_rejected(&v, &sink, &c, ReasonCode::InvalidField, "hyperparameters");
}

#[test]
fn structural_pruning_is_unsupported_with_a_clear_reason() {
    let (v, sink) = validator();
    let outcome =
        assert_rejected(&v, &sink, &with_payload(pruning_payload()), ReasonCode::UnsupportedCommand, "command_type");
    assert!(outcome.attributes["detail"].contains("STRUCTURAL_PRUNING is not supported"), "{:?}", outcome.attributes);
}

#[test]
fn unknown_type_tags_are_rejected_with_telemetry() {
    let (v, sink) = validator();
    let outcome = v.reject_unknown_type("c9", "TELEPORT");
    assert_eq!(outcome.reason, Some(ReasonCode::UnknownCommandType));
    assert!(outcome.attributes["detail"].contains("TELEPORT"));
    let events = sink.named("kasmina.command.invalid");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].attributes.get("reason").map(ToString::to_string).as_deref(), Some("unknown_command_type"));
}

#[test]
fn other_types_need_their_own_fields() {
    let (v, sink) = validator();
    let cases: Vec<(CommandPayload, ReasonCode, &str)> = vec![
        (
            CommandPayload::Rollback(RollbackCommand {
                rollback_point_id: Some(String::new()),
                reason: "r".to_owned(),
            }),
            ReasonCode::MissingField,
            "rollback_point_id",
        ),
        (
            CommandPayload::Rollback(RollbackCommand { rollback_point_id: None, reason: " ".to_owned() }),
            ReasonCode::MissingField,
            "reason",
        ),
        (
            CommandPayload::Optimizer(OptimizerCommand {
                optimizer_id: "adamw".to_owned(),
                hyperparameters: Default::default(),
            }),
            ReasonCode::MissingField,
            "hyperparameters",
        ),
        (
            CommandPayload::CircuitBreaker(CircuitBreakerCommand {
                breaker: "kitchen".to_owned(),
                desired_state: BreakerState::Open,
                rationale: "drill".to_owned(),
            }),
            ReasonCode::InvalidField,
            "breaker",
        ),
        (
            CommandPayload::CircuitBreaker(CircuitBreakerCommand {
                breaker: "isolation".to_owned(),
                desired_state: BreakerState::Open,
                rationale: String::new(),
            }),
            ReasonCode::MissingField,
            "rationale",
        ),
        (
            CommandPayload::Emergency(EmergencyCommand { cleanup: false, include_teacher: true }),
            ReasonCode::InvalidField,
            "include_teacher",
        ),
    ];
    for (payload, reason, field) in cases {
        assert_rejected(&v, &sink, &with_payload(payload), reason, field);
    }
    let mut pause = with_payload(CommandPayload::Pause(leyline::command::PauseCommand { resume: true }));
    pause.target_seed_id.clear();
    assert_rejected(&v, &sink, &pause, ReasonCode::MissingField, "target_seed_id");
}

#[test]
fn annotation_bytes_and_contract_version_are_capped() {
    let (v, sink) = validator();
    let cap = Settings::default().annotations.total_bytes_cap as usize;
    let mut c = germinate("c", T0);
    c.annotations.insert("alpha_vec".to_owned(), "0".repeat(cap));
    assert_rejected(&v, &sink, &c, ReasonCode::InvalidField, "annotations");

    let mut c = germinate("c", T0);
    c.version = leyline::CONTRACT_VERSION + 1;
    assert_rejected(&v, &sink, &c, ReasonCode::UnsupportedCommand, "version");

    let mut c = germinate("c", T0);
    c.target_seed_id = "s".repeat(300);
    let outcome = assert_rejected(&v, &sink, &c, ReasonCode::InvalidField, "target_seed_id");
    assert!(outcome.attributes["command_id"].len() <= 132);

    // The run id is an id too (256 bytes), refused before the annotation
    // parser sees it; 256 bytes, padded with spaces, is the negative control.
    let mut c = germinate("c", T0);
    c.annotations.insert("training_run_id".to_owned(), "r".repeat(257));
    assert_rejected(&v, &sink, &c, ReasonCode::InvalidField, "training_run_id");
    c.annotations.insert("training_run_id".to_owned(), format!("  {}  ", "r".repeat(256)));
    assert!(v.validate(&c).accepted, "a 256-byte run id is within the cap");
    // So is `blend_mode_source` (who chose the mode), which the parser echoes.
    c.annotations.insert("blend_mode_source".to_owned(), "s".repeat(257));
    assert_rejected(&v, &sink, &c, ReasonCode::InvalidField, "blend_mode_source");
    c.annotations.insert("blend_mode_source".to_owned(), "s".repeat(256));
    assert!(v.validate(&c).accepted, "a 256-byte source is within the cap");
}
