//! Building signed commands. [`CommandBuilder`] fills what every command
//! needs — a fresh unique `command_id` (the host's replay nonce), the
//! contract version, `issued_at_ms` = now — and signs over
//! [`leyline::command::canonical_bytes`], so a controller never assembles the
//! envelope by hand or signs a field twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leyline::command::{
    CircuitBreakerCommand, EmergencyCommand, OptimizerCommand, PauseCommand, RollbackCommand, SeedCommand,
    StructuralPruningCommand,
};
use leyline::{AdaptationCommand, BreakerState, CommandPayload, SeedOperation};
use sha2::{Digest, Sha256};

use crate::key::{HmacKey, sign_in_place};

/// `issued_by` of a builder that was not told who issues the command.
pub const DEFAULT_ISSUER: &str = "kasmina-client";
/// Random bytes in a fresh command id (hex-encoded: twice as many characters).
pub const COMMAND_ID_BYTES: usize = 16;

/// Builds one [`AdaptationCommand`]. Start from the constructor for the
/// command type, adjust, then [`Self::sign`] (or [`Self::build`] for an
/// unsigned command, e.g. to test that the host refuses it).
///
/// ```
/// # use kasmina_client::{CommandBuilder, HmacKey};
/// # use leyline::SeedOperation;
/// let key = HmacKey::from_bytes(&[7; 32]).unwrap();
/// let cmd = CommandBuilder::seed("hidden-0", SeedOperation::Germinate, "mlp_adapter_64")
///     .issued_by("my-controller")
///     .annotation("training_run_id", "run-1")
///     .annotation("mesh_layers", "hidden")
///     .sign(&key);
/// assert!(cmd.signature.is_some());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a builder does nothing until `sign` or `build`"]
pub struct CommandBuilder {
    command: AdaptationCommand,
}

impl CommandBuilder {
    /// A command with `payload` for `target_seed_id`: fresh id, current
    /// contract version, issued now by [`DEFAULT_ISSUER`], no deadline, no
    /// annotations.
    pub fn new(target_seed_id: impl Into<String>, payload: CommandPayload) -> Self {
        CommandBuilder {
            command: AdaptationCommand {
                version: leyline::CONTRACT_VERSION,
                command_id: fresh_command_id(),
                target_seed_id: target_seed_id.into(),
                execution_deadline_ms: None,
                issued_at_ms: Some(now_ms()),
                issued_by: DEFAULT_ISSUER.to_owned(),
                payload,
                annotations: BTreeMap::new(),
                signature: None,
            },
        }
    }

    /// A SEED command (no blueprint parameters; see [`Self::parameter`]).
    pub fn seed(target_seed_id: impl Into<String>, operation: SeedOperation, blueprint_id: impl Into<String>) -> Self {
        let payload = CommandPayload::Seed(SeedCommand {
            operation,
            blueprint_id: blueprint_id.into(),
            parameters: BTreeMap::new(),
        });
        Self::new(target_seed_id, payload)
    }

    /// A ROLLBACK command; `rollback_point_id: None` restores the latest point.
    pub fn rollback(
        target_seed_id: impl Into<String>,
        rollback_point_id: Option<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::new(
            target_seed_id,
            CommandPayload::Rollback(RollbackCommand { rollback_point_id, reason: reason.into() }),
        )
    }

    /// An OPTIMIZER command (no hyperparameters; see [`Self::parameter`]).
    pub fn optimizer(target_seed_id: impl Into<String>, optimizer_id: impl Into<String>) -> Self {
        let payload = CommandPayload::Optimizer(OptimizerCommand {
            optimizer_id: optimizer_id.into(),
            hyperparameters: BTreeMap::new(),
        });
        Self::new(target_seed_id, payload)
    }

    /// A CIRCUIT_BREAKER command forcing `breaker` into `desired_state`.
    pub fn circuit_breaker(
        target_seed_id: impl Into<String>,
        breaker: impl Into<String>,
        desired_state: BreakerState,
        rationale: impl Into<String>,
    ) -> Self {
        let payload = CommandPayload::CircuitBreaker(CircuitBreakerCommand {
            breaker: breaker.into(),
            desired_state,
            rationale: rationale.into(),
        });
        Self::new(target_seed_id, payload)
    }

    /// A PAUSE command: pauses the seed, or resumes it when `resume`.
    pub fn pause(target_seed_id: impl Into<String>, resume: bool) -> Self {
        Self::new(target_seed_id, CommandPayload::Pause(PauseCommand { resume }))
    }

    /// An EMERGENCY command.
    pub fn emergency(target_seed_id: impl Into<String>, cleanup: bool, include_teacher: bool) -> Self {
        Self::new(target_seed_id, CommandPayload::Emergency(EmergencyCommand { cleanup, include_teacher }))
    }

    /// A STRUCTURAL_PRUNING command (the host refuses it as unsupported).
    pub fn structural_pruning(target_seed_id: impl Into<String>, target_layers: Vec<String>, ratio: f64) -> Self {
        let payload = CommandPayload::StructuralPruning(StructuralPruningCommand { target_layers, ratio });
        Self::new(target_seed_id, payload)
    }

    /// Replaces the fresh id. A reused id is a replay: the host refuses it.
    pub fn command_id(mut self, command_id: impl Into<String>) -> Self {
        self.command.command_id = command_id.into();
        self
    }

    /// A fresh id that starts with `prefix` and a dash (`cli-3f9a…`), so
    /// logs show who made it.
    pub fn command_id_prefix(mut self, prefix: &str) -> Self {
        self.command.command_id = format!("{prefix}-{}", fresh_command_id());
        self
    }

    /// Overrides the contract version (tests of version checks).
    pub fn version(mut self, version: u32) -> Self {
        self.command.version = version;
        self
    }

    /// Who issues the command.
    pub fn issued_by(mut self, issued_by: impl Into<String>) -> Self {
        self.command.issued_by = issued_by.into();
        self
    }

    /// Overrides the issue time (ms since the Unix epoch); `None` sends a
    /// command without one, which the host refuses as not fresh.
    pub fn issued_at_ms(mut self, issued_at_ms: Option<u64>) -> Self {
        self.command.issued_at_ms = issued_at_ms;
        self
    }

    /// The absolute deadline (ms since the Unix epoch), or none.
    pub fn deadline_ms(mut self, deadline_ms: Option<u64>) -> Self {
        self.command.execution_deadline_ms = deadline_ms;
        self
    }

    /// A deadline `within` after the issue time (after now if there is none).
    pub fn deadline_in(mut self, within: Duration) -> Self {
        let from = self.command.issued_at_ms.unwrap_or_else(now_ms);
        let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.command.execution_deadline_ms = Some(from.saturating_add(within_ms));
        self
    }

    /// Adds (or replaces) one annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.command.annotations.insert(key.into(), value.into());
        self
    }

    /// Adds (or replaces) several annotations.
    pub fn annotations<K: Into<String>, V: Into<String>>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        self.command.annotations.extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets a blueprint parameter (SEED) or hyperparameter (OPTIMIZER).
    /// Other command types have no numeric parameters: the value is dropped,
    /// and debug builds stop here, since that is a bug in the caller.
    pub fn parameter(mut self, name: impl Into<String>, value: f64) -> Self {
        match &mut self.command.payload {
            CommandPayload::Seed(seed) => {
                seed.parameters.insert(name.into(), value);
            }
            CommandPayload::Optimizer(opt) => {
                opt.hyperparameters.insert(name.into(), value);
            }
            other => debug_assert!(false, "{} commands take no parameters", other.command_type().as_str()),
        }
        self
    }

    /// The command as built so far (unsigned).
    pub fn peek(&self) -> &AdaptationCommand {
        &self.command
    }

    /// The command without a signature.
    pub fn build(self) -> AdaptationCommand {
        self.command
    }

    /// The command signed with `key`: HMAC-SHA256 over its canonical bytes.
    pub fn sign(self, key: &HmacKey) -> AdaptationCommand {
        let mut command = self.command;
        sign_in_place(&mut command, key);
        command
    }
}

/// A fresh command id: [`COMMAND_ID_BYTES`] random bytes from the operating
/// system, as hex. Only uniqueness matters (the signature covers the id), so
/// if the OS generator fails the id is a hash of the time, the process and a
/// counter instead of a panic.
pub fn fresh_command_id() -> String {
    let mut bytes = [0u8; COMMAND_ID_BYTES];
    if getrandom::getrandom(&mut bytes).is_err() {
        bytes.copy_from_slice(&fallback_id_bytes()[..COMMAND_ID_BYTES]);
    }
    hex::encode(bytes)
}

fn fallback_id_bytes() -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut hash = Sha256::new();
    hash.update(nanos.to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hash.finalize().into()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use leyline::CommandType;
    use leyline::command::canonical_bytes;

    fn key() -> HmacKey {
        HmacKey::from_bytes(&[7; 32]).unwrap()
    }

    #[test]
    fn every_command_type_builds_with_fresh_ids_and_now() {
        let before = now_ms();
        let built = [
            CommandBuilder::seed("s", SeedOperation::Germinate, "bp").build(),
            CommandBuilder::rollback("s", None, "why").build(),
            CommandBuilder::optimizer("s", "adam").build(),
            CommandBuilder::circuit_breaker("s", "fetch", BreakerState::Open, "why").build(),
            CommandBuilder::pause("s", false).build(),
            CommandBuilder::emergency("s", true, false).build(),
            CommandBuilder::structural_pruning("s", vec!["l1".into()], 0.5).build(),
        ];
        let types: Vec<CommandType> = built.iter().map(AdaptationCommand::command_type).collect();
        assert_eq!(
            types,
            [
                CommandType::Seed,
                CommandType::Rollback,
                CommandType::Optimizer,
                CommandType::CircuitBreaker,
                CommandType::Pause,
                CommandType::Emergency,
                CommandType::StructuralPruning
            ]
        );
        let ids: std::collections::BTreeSet<&str> = built.iter().map(|c| c.command_id.as_str()).collect();
        assert_eq!(ids.len(), built.len(), "ids are unique");
        for c in &built {
            assert_eq!(c.command_id.len(), COMMAND_ID_BYTES * 2);
            assert!(c.command_id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(c.issued_at_ms.unwrap() >= before);
            assert_eq!(
                (c.version, c.issued_by.as_str(), c.signature.as_ref()),
                (leyline::CONTRACT_VERSION, DEFAULT_ISSUER, None)
            );
        }
    }

    #[test]
    fn signature_covers_the_canonical_bytes() {
        let cmd = CommandBuilder::seed("hidden-0", SeedOperation::Germinate, "bp")
            .command_id("c1")
            .issued_by("t")
            .annotation("training_run_id", "run-1")
            .annotations([("mesh_layers", "hidden")])
            .parameter("width", 64.0)
            .deadline_in(Duration::from_secs(5))
            .sign(&key());
        let signature = cmd.signature.clone().unwrap();
        assert!(key().verify(&canonical_bytes(&cmd), &signature));
        assert_eq!(cmd.command_id, "c1");
        assert_eq!(cmd.execution_deadline_ms, cmd.issued_at_ms.map(|t| t + 5_000));
        assert_eq!(cmd.annotations.len(), 2);
        let CommandPayload::Seed(seed) = &cmd.payload else { panic!("seed payload") };
        assert_eq!(seed.parameters.get("width"), Some(&64.0));

        let mut tampered = cmd.clone();
        tampered.target_seed_id = "hidden-1".into();
        assert!(!key().verify(&canonical_bytes(&tampered), &signature));
    }

    #[test]
    fn prefixed_ids_and_overrides() {
        let cmd = CommandBuilder::pause("s", true).command_id_prefix("cli").issued_at_ms(None).version(99).build();
        assert!(cmd.command_id.starts_with("cli-") && cmd.command_id.len() == 4 + COMMAND_ID_BYTES * 2);
        assert_eq!((cmd.issued_at_ms, cmd.version), (None, 99));
        assert_eq!(fallback_id_bytes().len(), 32);
        assert_ne!(fallback_id_bytes(), fallback_id_bytes(), "the counter keeps fallback ids apart");
    }
}
