//! The command validator: after the envelope, before any plugin, every
//! command type is checked for the fields it needs (SPEC.md §3) and gets a
//! structured [`Outcome`] — accepted, or rejected with a reason code and
//! attributes naming the field. Every rejection emits telemetry.
//!
//! Annotation *parsing* (blend modes, α vectors, mesh lists) is the
//! annotation plugin's job; here only the presence of required keys and the
//! total annotation byte cap are enforced, so nothing oversized reaches it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kasmina_core::{Clock, TelemetrySink};
use leyline::command::{
    CircuitBreakerCommand, EmergencyCommand, OptimizerCommand, RollbackCommand, SeedCommand, StructuralPruningCommand,
};
use leyline::{AdaptationCommand, CommandPayload, CommandType, Outcome, ReasonCode, TelemetryEvent, TelemetryLevel};

use crate::settings::AnnotationSettings;
use crate::telemetry::clip;
use crate::telemetry::counters::{IntervalCounter, ReasonCounters};

// The annotation keys are the contract's (SPEC.md §4); re-exported under
// their old paths.
/// Annotation listing the mesh layers (required on seed commands but CULL/CANCEL).
pub use leyline::annotations::MESH_LAYERS;
/// Annotation naming the training run (required on seed commands).
pub use leyline::annotations::TRAINING_RUN_ID;
/// Annotations whose values are ids, held to [`MAX_ID_BYTES`] (trimmed).
pub const ID_ANNOTATIONS: [&str; 2] = [TRAINING_RUN_ID, leyline::annotations::BLEND_MODE_SOURCE];
/// Breakers a CIRCUIT_BREAKER command may name.
pub const KNOWN_BREAKERS: [&str; 2] = ["fetch", "isolation"];
/// Longest id (seed, blueprint, optimizer, rollback point) accepted.
pub const MAX_ID_BYTES: usize = 256;
/// Longest free text (rationale, reason) accepted.
pub const MAX_TEXT_BYTES: usize = 1_024;
/// Most entries in a parameter or hyperparameter map.
pub const MAX_PARAMETERS: usize = 256;
/// Longest untrusted string copied into attributes.
const ATTR_CAP: usize = 128;

type Check = Result<(), (ReasonCode, &'static str, String)>;

/// Validates commands. Thread-safe; share it in an `Arc`.
pub struct CommandValidator {
    annotation_bytes_cap: usize,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TelemetrySink>,
    accepted: IntervalCounter,
    rejected: ReasonCounters,
}

impl std::fmt::Debug for CommandValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandValidator").field("annotation_bytes_cap", &self.annotation_bytes_cap).finish()
    }
}

impl CommandValidator {
    /// A validator using the annotation byte cap from the settings.
    pub fn new(annotations: &AnnotationSettings, clock: Arc<dyn Clock>, sink: Arc<dyn TelemetrySink>) -> Self {
        CommandValidator {
            annotation_bytes_cap: annotations.total_bytes_cap as usize,
            clock,
            sink,
            accepted: IntervalCounter::new(),
            rejected: ReasonCounters::new(),
        }
    }

    /// Validates one command. Accepted outcomes carry `command_type` (and
    /// `operation` for seed commands); rejections name the `field`.
    pub fn validate(&self, command: &AdaptationCommand) -> Outcome {
        match self.admit(command) {
            Ok(()) => {
                let outcome = Outcome::accepted().with("command_type", command.command_type().as_str());
                match &command.payload {
                    CommandPayload::Seed(seed) => outcome.with("operation", seed.operation.as_str()),
                    _ => outcome,
                }
            }
            Err(rejected) => rejected,
        }
    }

    /// [`validate`](Self::validate) for a caller that only goes on when the
    /// command is accepted (the seed manager): the same checks, counters and
    /// telemetry, without building the accepted outcome; a rejection is the
    /// outcome `validate` returns.
    pub fn admit(&self, command: &AdaptationCommand) -> Result<(), Outcome> {
        let _span = tracing::debug_span!(
            "kasmina.command.validate",
            command_id = %clip(&command.command_id, ATTR_CAP),
            command_type = command.command_type().as_str()
        )
        .entered();
        match self.checks(command) {
            Ok(()) => {
                self.accepted.incr();
                Ok(())
            }
            Err((reason, field, detail)) => Err(self.reject(command, reason, field, detail)),
        }
    }

    /// For decoders: a command whose type tag this host does not know.
    /// Rejected as `unknown_command_type`, with telemetry, like any other.
    pub fn reject_unknown_type(&self, command_id: &str, type_tag: &str) -> Outcome {
        let now = self.clock.now_ms();
        self.rejected.incr(ReasonCode::UnknownCommandType);
        let detail = format!("unknown command type `{}`", clip(type_tag, ATTR_CAP));
        self.sink.emit(
            TelemetryEvent::new("kasmina.command.invalid", TelemetryLevel::Warning, detail.clone(), now)
                .attr("reason", ReasonCode::UnknownCommandType.as_str())
                .attr("command_id", clip(command_id, ATTR_CAP))
                .attr("command_type", clip(type_tag, ATTR_CAP)),
        );
        Outcome::rejected(ReasonCode::UnknownCommandType, detail)
            .with("command_id", clip(command_id, ATTR_CAP))
            .with("field", "command_type")
    }

    /// Commands accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.total()
    }

    /// Rejections by reason so far.
    pub fn rejections(&self) -> BTreeMap<ReasonCode, u64> {
        self.rejected.totals()
    }

    fn checks(&self, command: &AdaptationCommand) -> Check {
        if command.version != leyline::CONTRACT_VERSION {
            return Err((
                ReasonCode::UnsupportedCommand,
                "version",
                format!(
                    "contract version {} is not served; this host speaks {}",
                    command.version,
                    leyline::CONTRACT_VERSION
                ),
            ));
        }
        let annotation_bytes: usize = command.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if annotation_bytes > self.annotation_bytes_cap {
            return Err((
                ReasonCode::InvalidField,
                "annotations",
                format!("annotations total {annotation_bytes} bytes; the cap is {}", self.annotation_bytes_cap),
            ));
        }
        // Annotations whose values are ids (SPEC.md §3's 256-byte cap), checked
        // before the annotation parser runs: a parser that returned a longer one
        // would fail the plugin host's output check, and the command would be
        // refused as a plugin fault rather than as this command's bad input.
        for key in ID_ANNOTATIONS {
            if let Some(value) = command.annotations.get(key) {
                bounded_id(key, value.trim(), false)?;
            }
        }
        bounded_id("issued_by", &command.issued_by, false)?;
        match &command.payload {
            CommandPayload::Seed(seed) => self.seed(command, seed),
            CommandPayload::Rollback(rollback) => check_rollback(command, rollback),
            CommandPayload::Optimizer(optimizer) => check_optimizer(optimizer),
            CommandPayload::CircuitBreaker(breaker) => check_breaker(breaker),
            CommandPayload::Pause(_) => required_id("target_seed_id", &command.target_seed_id),
            CommandPayload::Emergency(emergency) => check_emergency(emergency),
            CommandPayload::StructuralPruning(pruning) => check_pruning(pruning),
        }
    }

    fn seed(&self, command: &AdaptationCommand, seed: &SeedCommand) -> Check {
        required_id("target_seed_id", &command.target_seed_id)?;
        required_id("blueprint_id", &seed.blueprint_id)?;
        required_annotation(command, TRAINING_RUN_ID)?;
        if seed.operation.requires_mesh_layers() {
            required_annotation(command, MESH_LAYERS)?;
        }
        finite_map("parameters", &seed.parameters)
    }

    fn reject(&self, command: &AdaptationCommand, reason: ReasonCode, field: &'static str, detail: String) -> Outcome {
        self.rejected.incr(reason);
        let command_type: CommandType = command.command_type();
        let mut event = TelemetryEvent::new(
            "kasmina.command.invalid",
            TelemetryLevel::Warning,
            format!("{} command rejected: {detail}", command_type.as_str()),
            self.clock.now_ms(),
        )
        .attr("reason", reason.as_str())
        .attr("field", field)
        .attr("command_id", clip(&command.command_id, ATTR_CAP))
        .attr("command_type", command_type.as_str());
        // Only verified commands reach the validator, so the seed id is
        // trusted enough to key health; it is still length-checked first.
        if !command.target_seed_id.is_empty() && command.target_seed_id.len() <= MAX_ID_BYTES {
            event = event.seed(command.target_seed_id.as_str());
        }
        self.sink.emit(event);
        Outcome::rejected(reason, detail)
            .with("field", field)
            .with("command_type", command_type.as_str())
            .with("command_id", clip(&command.command_id, ATTR_CAP))
    }
}

fn required_id(field: &'static str, value: &str) -> Check {
    bounded_id(field, value, true)
}

fn bounded_id(field: &'static str, value: &str, required: bool) -> Check {
    if required && value.trim().is_empty() {
        return Err((ReasonCode::MissingField, field, format!("{field} is required and empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err((
            ReasonCode::InvalidField,
            field,
            format!("{field} is {} bytes; the cap is {MAX_ID_BYTES}", value.len()),
        ));
    }
    Ok(())
}

fn required_text(field: &'static str, value: &str) -> Check {
    if value.trim().is_empty() {
        return Err((ReasonCode::MissingField, field, format!("{field} is required and empty")));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err((
            ReasonCode::InvalidField,
            field,
            format!("{field} is {} bytes; the cap is {MAX_TEXT_BYTES}", value.len()),
        ));
    }
    Ok(())
}

fn required_annotation(command: &AdaptationCommand, key: &'static str) -> Check {
    match command.annotations.get(key) {
        Some(value) if !value.trim().is_empty() => Ok(()),
        Some(_) => Err((ReasonCode::MissingField, key, format!("annotation `{key}` is empty"))),
        None => Err((ReasonCode::MissingField, key, format!("annotation `{key}` is required"))),
    }
}

fn finite_map(field: &'static str, map: &BTreeMap<String, f64>) -> Check {
    if map.len() > MAX_PARAMETERS {
        return Err((ReasonCode::InvalidField, field, format!("{} {field}; the cap is {MAX_PARAMETERS}", map.len())));
    }
    for (name, value) in map {
        if name.trim().is_empty() || name.len() > MAX_ID_BYTES {
            return Err((ReasonCode::InvalidField, field, format!("{field} has an empty or over-long name")));
        }
        if !value.is_finite() {
            return Err((
                ReasonCode::InvalidField,
                field,
                format!("{field} `{}` is {value}; it must be finite", clip(name, ATTR_CAP)),
            ));
        }
    }
    Ok(())
}

fn check_rollback(command: &AdaptationCommand, rollback: &RollbackCommand) -> Check {
    required_id("target_seed_id", &command.target_seed_id)?;
    if let Some(id) = &rollback.rollback_point_id {
        // `None` means "latest for the seed"; an empty id is not a synonym.
        required_id("rollback_point_id", id)?;
    }
    required_text("reason", &rollback.reason)
}

fn check_optimizer(optimizer: &OptimizerCommand) -> Check {
    required_id("optimizer_id", &optimizer.optimizer_id)?;
    if optimizer.hyperparameters.is_empty() {
        return Err((
            ReasonCode::MissingField,
            "hyperparameters",
            "an OPTIMIZER command must set at least one hyperparameter".to_owned(),
        ));
    }
    finite_map("hyperparameters", &optimizer.hyperparameters)
}

fn check_breaker(breaker: &CircuitBreakerCommand) -> Check {
    if !KNOWN_BREAKERS.contains(&breaker.breaker.as_str()) {
        return Err((
            ReasonCode::InvalidField,
            "breaker",
            format!("unknown breaker `{}`; known: {}", clip(&breaker.breaker, ATTR_CAP), KNOWN_BREAKERS.join(", ")),
        ));
    }
    required_text("rationale", &breaker.rationale)
}

fn check_emergency(emergency: &EmergencyCommand) -> Check {
    if emergency.include_teacher && !emergency.cleanup {
        return Err((
            ReasonCode::InvalidField,
            "include_teacher",
            "include_teacher extends cleanup; it is meaningless with cleanup=false".to_owned(),
        ));
    }
    Ok(())
}

fn check_pruning(_pruning: &StructuralPruningCommand) -> Check {
    Err((
        ReasonCode::UnsupportedCommand,
        "command_type",
        "STRUCTURAL_PRUNING is not supported by this host: Kasmina grows seeds and does not remove host structure"
            .to_owned(),
    ))
}
