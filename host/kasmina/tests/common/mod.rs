//! Shared builders for the integration tests: a test key, commands of every
//! type, and a verifier wired to a manual clock and an in-memory sink.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kasmina::security::{CommandVerifier, HmacKey, NonceLedger, VerifierConfig, sign_in_place};
use kasmina_core::{ManualClock, MemorySink};
use leyline::command::{
    CircuitBreakerCommand, EmergencyCommand, OptimizerCommand, PauseCommand, RollbackCommand, SeedCommand,
    StructuralPruningCommand,
};
use leyline::{AdaptationCommand, BreakerState, CommandPayload, SeedOperation};

/// 32 bytes of hex: a valid test key.
pub const KEY_HEX: &str = "4b61736d696e612d746573742d6b65792d3031323334353637383961626364ef";
/// Start of every manual clock: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000_000;

pub fn key() -> HmacKey {
    HmacKey::from_hex(KEY_HEX).expect("test key is valid")
}

pub fn seed_command(id: &str, operation: SeedOperation, issued_at_ms: u64) -> AdaptationCommand {
    let annotations = BTreeMap::from([
        ("training_run_id".to_owned(), "run-42".to_owned()),
        ("mesh_layers".to_owned(), "block1,block2".to_owned()),
    ]);
    AdaptationCommand {
        version: leyline::CONTRACT_VERSION,
        command_id: id.to_owned(),
        target_seed_id: "seed-a".to_owned(),
        execution_deadline_ms: Some(issued_at_ms + 60_000),
        issued_at_ms: Some(issued_at_ms),
        issued_by: "tamiyo".to_owned(),
        payload: CommandPayload::Seed(SeedCommand {
            operation,
            blueprint_id: "mlp-adapter".to_owned(),
            parameters: BTreeMap::from([("width".to_owned(), 64.0)]),
        }),
        annotations,
        signature: None,
    }
}

pub fn germinate(id: &str, issued_at_ms: u64) -> AdaptationCommand {
    seed_command(id, SeedOperation::Germinate, issued_at_ms)
}

pub fn signed(mut command: AdaptationCommand) -> AdaptationCommand {
    sign_in_place(&mut command, &key());
    command
}

/// A valid command of every non-seed type, each with the payload it needs.
pub fn other_payloads() -> Vec<CommandPayload> {
    vec![
        CommandPayload::Rollback(RollbackCommand { rollback_point_id: None, reason: "regression".to_owned() }),
        CommandPayload::Optimizer(OptimizerCommand {
            optimizer_id: "adamw".to_owned(),
            hyperparameters: BTreeMap::from([("lr".to_owned(), 1e-3)]),
        }),
        CommandPayload::CircuitBreaker(CircuitBreakerCommand {
            breaker: "fetch".to_owned(),
            desired_state: BreakerState::Closed,
            rationale: "urza restored".to_owned(),
        }),
        CommandPayload::Pause(PauseCommand { resume: false }),
        CommandPayload::Emergency(EmergencyCommand { cleanup: true, include_teacher: true }),
    ]
}

pub fn pruning_payload() -> CommandPayload {
    CommandPayload::StructuralPruning(StructuralPruningCommand { target_layers: vec!["block3".to_owned()], ratio: 0.5 })
}

pub struct Rig {
    pub clock: Arc<ManualClock>,
    pub sink: Arc<MemorySink>,
    pub ledger: Arc<NonceLedger>,
    pub verifier: CommandVerifier,
}

/// Verifier with TTL 300 s, capacity `capacity`, window 60 s, skew 5 s.
pub fn rig(capacity: usize) -> Rig {
    let clock = Arc::new(ManualClock::new(T0));
    let sink = Arc::new(MemorySink::new(10_000));
    let ledger = Arc::new(NonceLedger::new(300_000, capacity));
    let verifier = CommandVerifier::new(
        key(),
        ledger.clone(),
        VerifierConfig { freshness_window_ms: 60_000, future_skew_ms: 5_000 },
        clock.clone(),
        sink.clone(),
    )
    .expect("valid config");
    Rig { clock, sink, ledger, verifier }
}
