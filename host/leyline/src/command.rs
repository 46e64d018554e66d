//! Adaptation commands (SPEC.md §3) and their canonical signing bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BreakerState;

/// Operations a SEED command can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SeedOperation {
    /// DORMANT → GERMINATED with a blueprint.
    Germinate,
    /// GERMINATED → TRAINING.
    StartTraining,
    /// TRAINING → BLENDING.
    StartGrafting,
    /// Hold the current stage while signals settle.
    Stabilize,
    /// Re-evaluate the current gate now.
    Evaluate,
    /// Continue training with new parameters.
    FineTune,
    /// PROBATIONARY → FOSSILIZED.
    Fossilize,
    /// Reject the seed now.
    Cull,
    /// Abandon an in-flight operation (culls the seed).
    Cancel,
}

impl SeedOperation {
    /// Stable upper-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SeedOperation::Germinate => "GERMINATE",
            SeedOperation::StartTraining => "START_TRAINING",
            SeedOperation::StartGrafting => "START_GRAFTING",
            SeedOperation::Stabilize => "STABILIZE",
            SeedOperation::Evaluate => "EVALUATE",
            SeedOperation::FineTune => "FINE_TUNE",
            SeedOperation::Fossilize => "FOSSILIZE",
            SeedOperation::Cull => "CULL",
            SeedOperation::Cancel => "CANCEL",
        }
    }

    /// Whether the operation needs `mesh_layers` (all but CULL/CANCEL).
    pub const fn requires_mesh_layers(self) -> bool {
        !matches!(self, SeedOperation::Cull | SeedOperation::Cancel)
    }
}

/// Payload of a SEED command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedCommand {
    /// What to do.
    pub operation: SeedOperation,
    /// Blueprint the operation concerns.
    pub blueprint_id: String,
    /// Blueprint parameters, checked against the descriptor's bounds.
    pub parameters: BTreeMap<String, f64>,
}

/// Payload of a ROLLBACK command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackCommand {
    /// Rollback point to restore; `None` means the latest for the seed.
    pub rollback_point_id: Option<String>,
    /// Why the controller asks for it.
    pub reason: String,
}

/// Payload of an OPTIMIZER command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerCommand {
    /// Optimizer to configure.
    pub optimizer_id: String,
    /// Hyperparameters by name.
    pub hyperparameters: BTreeMap<String, f64>,
}

/// Payload of a CIRCUIT_BREAKER command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakerCommand {
    /// Which breaker (`fetch`, `isolation`).
    pub breaker: String,
    /// State to force.
    pub desired_state: BreakerState,
    /// Why; recorded in telemetry.
    pub rationale: String,
}

/// Payload of a PAUSE command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseCommand {
    /// `false` pauses the seed, `true` resumes it.
    pub resume: bool,
}

/// Payload of an EMERGENCY command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyCommand {
    /// Clean caches and cancel prefetches.
    pub cleanup: bool,
    /// Also drop the KD teacher.
    pub include_teacher: bool,
}

/// Payload of a STRUCTURAL_PRUNING command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuralPruningCommand {
    /// Layers to prune.
    pub target_layers: Vec<String>,
    /// Fraction to prune, in [0, 1].
    pub ratio: f64,
}

/// The one payload of a command; its variant is the command type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandPayload {
    /// Seed lifecycle operation.
    Seed(SeedCommand),
    /// Restore a rollback point.
    Rollback(RollbackCommand),
    /// Reconfigure an optimizer.
    Optimizer(OptimizerCommand),
    /// Force a circuit breaker's state.
    CircuitBreaker(CircuitBreakerCommand),
    /// Pause or resume a seed.
    Pause(PauseCommand),
    /// Emergency cleanup.
    Emergency(EmergencyCommand),
    /// Structural pruning.
    StructuralPruning(StructuralPruningCommand),
}

/// Command type, derived from the payload variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandType {
    /// SEED.
    Seed,
    /// ROLLBACK.
    Rollback,
    /// OPTIMIZER.
    Optimizer,
    /// CIRCUIT_BREAKER.
    CircuitBreaker,
    /// PAUSE.
    Pause,
    /// EMERGENCY.
    Emergency,
    /// STRUCTURAL_PRUNING.
    StructuralPruning,
}

impl CommandType {
    /// Stable upper-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandType::Seed => "SEED",
            CommandType::Rollback => "ROLLBACK",
            CommandType::Optimizer => "OPTIMIZER",
            CommandType::CircuitBreaker => "CIRCUIT_BREAKER",
            CommandType::Pause => "PAUSE",
            CommandType::Emergency => "EMERGENCY",
            CommandType::StructuralPruning => "STRUCTURAL_PRUNING",
        }
    }
}

impl CommandPayload {
    /// The command type this payload makes.
    pub const fn command_type(&self) -> CommandType {
        match self {
            CommandPayload::Seed(_) => CommandType::Seed,
            CommandPayload::Rollback(_) => CommandType::Rollback,
            CommandPayload::Optimizer(_) => CommandType::Optimizer,
            CommandPayload::CircuitBreaker(_) => CommandType::CircuitBreaker,
            CommandPayload::Pause(_) => CommandType::Pause,
            CommandPayload::Emergency(_) => CommandType::Emergency,
            CommandPayload::StructuralPruning(_) => CommandType::StructuralPruning,
        }
    }
}

/// A signed instruction from the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptationCommand {
    /// Contract version the sender used.
    pub version: u32,
    /// Unique id; doubles as the replay nonce.
    pub command_id: String,
    /// Seed the command targets.
    pub target_seed_id: String,
    /// The command must act before this instant (ms since the Unix epoch).
    pub execution_deadline_ms: Option<u64>,
    /// When the controller issued it (ms since the Unix epoch).
    pub issued_at_ms: Option<u64>,
    /// Who issued it.
    pub issued_by: String,
    /// What to do.
    pub payload: CommandPayload,
    /// String annotations (parsed by the annotation plugin).
    pub annotations: BTreeMap<String, String>,
    /// HMAC-SHA256 over [`canonical_bytes`]; excluded from them.
    pub signature: Option<Vec<u8>>,
}

impl AdaptationCommand {
    /// The command type, from the payload.
    pub const fn command_type(&self) -> CommandType {
        self.payload.command_type()
    }
}

/// Domain-separation prefix of the signing bytes; a signature over any other
/// kind of message can never verify as a command.
pub const CANONICAL_DOMAIN: &[u8] = b"esper.kasmina.command.v1\0";

/// Everything but the signature, borrowed, in a fixed field order.
#[derive(Serialize)]
struct SigningView<'a> {
    version: u32,
    command_id: &'a str,
    target_seed_id: &'a str,
    execution_deadline_ms: Option<u64>,
    issued_at_ms: Option<u64>,
    issued_by: &'a str,
    payload: &'a CommandPayload,
    annotations: &'a BTreeMap<String, String>,
}

/// The canonical bytes the HMAC covers: the domain prefix followed by the
/// postcard encoding of every field except the signature.
///
/// Deterministic across runs and machines: postcard writes integers as
/// varints and floats as little-endian IEEE bytes, fields in declaration
/// order, and every map in the contract is a `BTreeMap` (sorted keys).
pub fn canonical_bytes(command: &AdaptationCommand) -> Vec<u8> {
    let view = SigningView {
        version: command.version,
        command_id: &command.command_id,
        target_seed_id: &command.target_seed_id,
        execution_deadline_ms: command.execution_deadline_ms,
        issued_at_ms: command.issued_at_ms,
        issued_by: &command.issued_by,
        payload: &command.payload,
        annotations: &command.annotations,
    };
    let out = CANONICAL_DOMAIN.to_vec();
    // Serialising plain data into a Vec cannot fail: no I/O, no
    // length-unknown sequences, no non-string map keys.
    match postcard::to_extend(&view, out) {
        Ok(bytes) => bytes,
        Err(err) => unreachable!("postcard encoding of an in-memory command failed: {err}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> AdaptationCommand {
        let mut parameters = BTreeMap::new();
        parameters.insert("width".to_owned(), 64.0);
        parameters.insert("dropout".to_owned(), 0.125);
        let mut annotations = BTreeMap::new();
        annotations.insert("training_run_id".to_owned(), "run-7".to_owned());
        annotations.insert("mesh_layers".to_owned(), "block1,block2".to_owned());
        AdaptationCommand {
            version: 1,
            command_id: "cmd-0001".to_owned(),
            target_seed_id: "seed-a".to_owned(),
            execution_deadline_ms: Some(1_700_000_060_000),
            issued_at_ms: Some(1_700_000_000_000),
            issued_by: "tamiyo".to_owned(),
            payload: CommandPayload::Seed(SeedCommand {
                operation: SeedOperation::Germinate,
                blueprint_id: "mlp-adapter".to_owned(),
                parameters,
            }),
            annotations,
            signature: None,
        }
    }

    /// Golden vector: these exact bytes are what controllers in any language
    /// must sign. If this test fails, the wire contract changed — bump
    /// CONTRACT_VERSION and the domain tag rather than editing the vector.
    #[test]
    fn canonical_bytes_match_golden_vector() {
        let hex: String = canonical_bytes(&sample()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_HEX);
    }

    const GOLDEN_HEX: &str = concat!(
        "65737065722e6b61736d696e612e636f6d6d616e642e7631000108636d642d3030303106736565642d6101e0a499ffbc",
        "310180d095ffbc310674616d69796f00000b6d6c702d61646170746572020764726f706f7574000000000000c03f0577",
        "696474680000000000005040020b6d6573685f6c61796572730d626c6f636b312c626c6f636b320f747261696e696e67",
        "5f72756e5f69640572756e2d37",
    );

    #[test]
    fn signature_is_excluded_and_every_other_field_counts() {
        let base = canonical_bytes(&sample());
        let mut signed = sample();
        signed.signature = Some(vec![1, 2, 3]);
        assert_eq!(canonical_bytes(&signed), base);

        let mutations: Vec<fn(&mut AdaptationCommand)> = vec![
            |c| c.version = 2,
            |c| c.command_id.push('x'),
            |c| c.target_seed_id.push('x'),
            |c| c.execution_deadline_ms = None,
            |c| c.issued_at_ms = Some(1),
            |c| c.issued_by.push('x'),
            |c| c.payload = CommandPayload::Pause(PauseCommand { resume: true }),
            |c| {
                c.annotations.insert("blend_mode".to_owned(), "CONVEX".to_owned());
            },
        ];
        for (i, mutate) in mutations.iter().enumerate() {
            let mut c = sample();
            mutate(&mut c);
            assert_ne!(canonical_bytes(&c), base, "mutation {i} did not change the signing bytes");
        }
    }

    #[test]
    fn annotation_insertion_order_does_not_matter() {
        let mut a = sample();
        a.annotations.clear();
        a.annotations.insert("z".to_owned(), "1".to_owned());
        a.annotations.insert("a".to_owned(), "2".to_owned());
        let mut b = sample();
        b.annotations.clear();
        b.annotations.insert("a".to_owned(), "2".to_owned());
        b.annotations.insert("z".to_owned(), "1".to_owned());
        assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
    }

    #[test]
    fn postcard_round_trip_preserves_the_command() {
        let mut c = sample();
        c.signature = Some(vec![9; 32]);
        let bytes = postcard::to_allocvec(&c).expect("encode");
        let back: AdaptationCommand = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, c);
        assert_eq!(back.command_type(), CommandType::Seed);
    }

    #[test]
    fn mesh_requirement_matches_spec() {
        assert!(!SeedOperation::Cull.requires_mesh_layers());
        assert!(!SeedOperation::Cancel.requires_mesh_layers());
        assert!(SeedOperation::Germinate.requires_mesh_layers());
        assert!(SeedOperation::Fossilize.requires_mesh_layers());
    }
}
