//! Structured outcomes: every check returns accepted/rejected with a
//! machine-readable reason and attributes, never a bare bool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Machine-readable rejection reasons of the command envelope and pipeline.
///
/// The string forms are part of the contract (SPEC.md §3): telemetry, counters
/// and clients key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReasonCode {
    /// No signature on the command.
    MissingSignature,
    /// HMAC does not match.
    InvalidSignature,
    /// Empty command id (the nonce).
    MissingCommandId,
    /// Command id seen within the nonce TTL.
    NonceReplayed,
    /// No issued_at timestamp.
    MissingTimestamp,
    /// issued_at older than the freshness window.
    StaleCommand,
    /// issued_at too far in the future.
    IssuedInFuture,
    /// The command type is not known to this host.
    UnknownCommandType,
    /// The command type is known but not supported by this host.
    UnsupportedCommand,
    /// A required field or annotation is missing or empty.
    MissingField,
    /// A field or annotation is present but malformed or out of range.
    InvalidField,
    /// The execution deadline passed before the command could act.
    DeadlineExceeded,
    /// The seed is not in a stage where the operation applies.
    InvalidStage,
    /// A lifecycle gate failed.
    GateFailed,
    /// The blueprint policy refused the blueprint.
    BlueprintRefused,
    /// A plugin failed (timeout, trap, OOM, bad output, version).
    PluginFailure,
    /// A kernel could not be supplied.
    KernelUnavailable,
    /// A circuit breaker refused the operation.
    BreakerOpen,
    /// The rollback point cannot be restored (never confirmed, evicted,
    /// its checkpoint failed or is gone); the detail says which.
    RollbackUnavailable,
    /// The daemon could not make the command durable in its decision
    /// journal (disk full, a failed write or fsync): nothing of it was
    /// applied. Retry later; the daemon takes commands again once its
    /// journal can be written.
    JournalUnavailable,
    /// The `mesh_layers` annotation is present but is not a list of layer
    /// names (a JSON value other than a list of strings, an empty name, too
    /// many layers): the detail says what was wrong.
    InvalidMesh,
}

impl ReasonCode {
    /// The snake_case code (SPEC.md §3 names).
    pub const fn as_str(self) -> &'static str {
        use ReasonCode::*;
        match self {
            MissingSignature => "missing_signature",
            InvalidSignature => "invalid_signature",
            MissingCommandId => "missing_command_id",
            NonceReplayed => "nonce_replayed",
            MissingTimestamp => "missing_timestamp",
            StaleCommand => "stale_command",
            IssuedInFuture => "issued_in_future",
            UnknownCommandType => "unknown_command_type",
            UnsupportedCommand => "unsupported_command",
            MissingField => "missing_field",
            InvalidField => "invalid_field",
            DeadlineExceeded => "deadline_exceeded",
            InvalidStage => "invalid_stage",
            GateFailed => "gate_failed",
            BlueprintRefused => "blueprint_refused",
            PluginFailure => "plugin_failure",
            KernelUnavailable => "kernel_unavailable",
            BreakerOpen => "breaker_open",
            RollbackUnavailable => "rollback_unavailable",
            JournalUnavailable => "journal_unavailable",
            InvalidMesh => "invalid_mesh",
        }
    }

    /// Whether a rejection for this reason is a security event (CRITICAL).
    pub const fn is_security_critical(self) -> bool {
        matches!(self, ReasonCode::MissingSignature | ReasonCode::InvalidSignature | ReasonCode::NonceReplayed)
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepted, or rejected with a reason; both carry attributes explaining why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether the command (or check) was accepted.
    pub accepted: bool,
    /// Why it was rejected; `None` exactly when accepted.
    pub reason: Option<ReasonCode>,
    /// Free-form detail (what was wrong, which key, which stage).
    pub attributes: BTreeMap<String, String>,
}

impl Outcome {
    /// An acceptance with no attributes.
    pub fn accepted() -> Self {
        Outcome { accepted: true, reason: None, attributes: BTreeMap::new() }
    }

    /// A rejection with one `detail` attribute.
    pub fn rejected(reason: ReasonCode, detail: impl Into<String>) -> Self {
        let mut attributes = BTreeMap::new();
        attributes.insert("detail".to_owned(), detail.into());
        Outcome { accepted: false, reason: Some(reason), attributes }
    }

    /// Adds an attribute (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
}
