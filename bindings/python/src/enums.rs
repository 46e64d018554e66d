//! The contract's enums as Python enum classes.
//!
//! Each mirrors one `leyline` enum variant for variant (an exhaustive
//! `match` both ways, so a variant added to the contract fails this build
//! instead of vanishing), and carries the wire spelling as `.name`
//! (`SeedStage.BLENDING.name == "BLENDING"`, `ReasonCode.INVALID_SIGNATURE.name
//! == "invalid_signature"`), which is also its `str()`. `parse` accepts the
//! Python attribute name or the wire name, nothing looser.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use leyline::api::{ApiErrorCode as WApiErrorCode, CheckpointAction as WCheckpointAction};
use leyline::protocol::Role as WRole;
use leyline::{
    BlendMode as WBlendMode, BlueprintTier as WBlueprintTier, BreakerState as WBreakerState, DType as WDType,
    HealthStatus as WHealthStatus, ReasonCode as WReasonCode, SeedOperation as WSeedOperation, SeedStage as WSeedStage,
    TelemetryLevel as WTelemetryLevel,
};

macro_rules! mirror_enum {
    (
        $(#[$doc:meta])*
        $name:ident mirrors $wire:ident {
            $($variant:ident = $py:literal / $text:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[pyclass(eq, eq_int, frozen, hash, from_py_object, module = "kasmina._native")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[allow(missing_docs)]
                #[pyo3(name = $py)]
                $variant
            ),+
        }

        impl From<$wire> for $name {
            fn from(value: $wire) -> Self {
                match value {
                    $($wire::$variant => $name::$variant),+
                }
            }
        }

        impl From<$name> for $wire {
            fn from(value: $name) -> Self {
                match value {
                    $($name::$variant => $wire::$variant),+
                }
            }
        }

        impl $name {
            /// The wire spelling.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        #[pymethods]
        impl $name {
            /// The wire spelling of this value.
            #[getter]
            fn name(&self) -> &'static str {
                self.wire_name()
            }

            fn __str__(&self) -> &'static str {
                self.wire_name()
            }

            /// The value named `text` (Python attribute name or wire name).
            #[staticmethod]
            fn parse(text: &str) -> PyResult<Self> {
                $(
                    if text == $py || text == $text {
                        return Ok($name::$variant);
                    }
                )+
                let known: Vec<&str> = Self::ALL.iter().map(|v| v.wire_name()).collect();
                Err(PyValueError::new_err(format!(
                    "unknown {} {:?}; expected one of {}",
                    stringify!($name),
                    text,
                    known.join(", ")
                )))
            }

            /// Every value, in declaration order.
            #[staticmethod]
            fn values() -> Vec<Self> {
                Self::ALL.to_vec()
            }
        }
    };
}

mirror_enum! {
    /// Seed lifecycle stage (SPEC §2).
    SeedStage mirrors WSeedStage {
        Unknown = "UNKNOWN" / "UNKNOWN",
        Dormant = "DORMANT" / "DORMANT",
        Germinated = "GERMINATED" / "GERMINATED",
        Training = "TRAINING" / "TRAINING",
        Blending = "BLENDING" / "BLENDING",
        Shadowing = "SHADOWING" / "SHADOWING",
        Probationary = "PROBATIONARY" / "PROBATIONARY",
        Fossilized = "FOSSILIZED" / "FOSSILIZED",
        Culled = "CULLED" / "CULLED",
        Embargoed = "EMBARGOED" / "EMBARGOED",
        Resetting = "RESETTING" / "RESETTING",
        Terminated = "TERMINATED" / "TERMINATED",
    }
}

mirror_enum! {
    /// How a seed's output is blended with the host's (SPEC §5).
    BlendMode mirrors WBlendMode {
        Convex = "CONVEX" / "CONVEX",
        Residual = "RESIDUAL" / "RESIDUAL",
        Channel = "CHANNEL" / "CHANNEL",
        Confidence = "CONFIDENCE" / "CONFIDENCE",
    }
}

mirror_enum! {
    /// Why a command was rejected (SPEC §3); `.name` is the snake_case code.
    ReasonCode mirrors WReasonCode {
        MissingSignature = "MISSING_SIGNATURE" / "missing_signature",
        InvalidSignature = "INVALID_SIGNATURE" / "invalid_signature",
        MissingCommandId = "MISSING_COMMAND_ID" / "missing_command_id",
        NonceReplayed = "NONCE_REPLAYED" / "nonce_replayed",
        MissingTimestamp = "MISSING_TIMESTAMP" / "missing_timestamp",
        StaleCommand = "STALE_COMMAND" / "stale_command",
        IssuedInFuture = "ISSUED_IN_FUTURE" / "issued_in_future",
        UnknownCommandType = "UNKNOWN_COMMAND_TYPE" / "unknown_command_type",
        UnsupportedCommand = "UNSUPPORTED_COMMAND" / "unsupported_command",
        MissingField = "MISSING_FIELD" / "missing_field",
        InvalidField = "INVALID_FIELD" / "invalid_field",
        DeadlineExceeded = "DEADLINE_EXCEEDED" / "deadline_exceeded",
        InvalidStage = "INVALID_STAGE" / "invalid_stage",
        GateFailed = "GATE_FAILED" / "gate_failed",
        BlueprintRefused = "BLUEPRINT_REFUSED" / "blueprint_refused",
        PluginFailure = "PLUGIN_FAILURE" / "plugin_failure",
        KernelUnavailable = "KERNEL_UNAVAILABLE" / "kernel_unavailable",
        BreakerOpen = "BREAKER_OPEN" / "breaker_open",
        RollbackUnavailable = "ROLLBACK_UNAVAILABLE" / "rollback_unavailable",
        JournalUnavailable = "JOURNAL_UNAVAILABLE" / "journal_unavailable",
        InvalidMesh = "INVALID_MESH" / "invalid_mesh",
    }
}

mirror_enum! {
    /// What a connection may do.
    Role mirrors WRole {
        Controller = "CONTROLLER" / "controller",
        Trainer = "TRAINER" / "trainer",
        Observer = "OBSERVER" / "observer",
    }
}

mirror_enum! {
    /// Operations of a SEED command.
    SeedOperation mirrors WSeedOperation {
        Germinate = "GERMINATE" / "GERMINATE",
        StartTraining = "START_TRAINING" / "START_TRAINING",
        StartGrafting = "START_GRAFTING" / "START_GRAFTING",
        Stabilize = "STABILIZE" / "STABILIZE",
        Evaluate = "EVALUATE" / "EVALUATE",
        FineTune = "FINE_TUNE" / "FINE_TUNE",
        Fossilize = "FOSSILIZE" / "FOSSILIZE",
        Cull = "CULL" / "CULL",
        Cancel = "CANCEL" / "CANCEL",
    }
}

mirror_enum! {
    /// Severity of a telemetry event.
    TelemetryLevel mirrors WTelemetryLevel {
        Info = "INFO" / "INFO",
        Warning = "WARNING" / "WARNING",
        Error = "ERROR" / "ERROR",
        Critical = "CRITICAL" / "CRITICAL",
    }
}

mirror_enum! {
    /// Health of one seed.
    HealthStatus mirrors WHealthStatus {
        Healthy = "HEALTHY" / "HEALTHY",
        Degraded = "DEGRADED" / "DEGRADED",
        Unhealthy = "UNHEALTHY" / "UNHEALTHY",
        Critical = "CRITICAL" / "CRITICAL",
    }
}

mirror_enum! {
    /// Circuit-breaker state.
    BreakerState mirrors WBreakerState {
        Closed = "CLOSED" / "CLOSED",
        Open = "OPEN" / "OPEN",
        HalfOpen = "HALF_OPEN" / "HALF_OPEN",
    }
}

mirror_enum! {
    /// Which half of the checkpoint protocol a `CheckpointEvent.Failed` answers.
    CheckpointAction mirrors WCheckpointAction {
        Capture = "CAPTURE" / "capture",
        Restore = "RESTORE" / "restore",
    }
}

mirror_enum! {
    /// Risk tier of a blueprint.
    BlueprintTier mirrors WBlueprintTier {
        Safe = "SAFE" / "SAFE",
        Experimental = "EXPERIMENTAL" / "EXPERIMENTAL",
        HighRisk = "HIGH_RISK" / "HIGH_RISK",
    }
}

mirror_enum! {
    /// Element type of a declared kernel tensor.
    DType mirrors WDType {
        F32 = "F32" / "F32",
        F16 = "F16" / "F16",
        BF16 = "BF16" / "BF16",
        F64 = "F64" / "F64",
    }
}

/// The snake_case code of an API error category (what `KasminaError.code`
/// carries) and the Python exception class raised for it.
pub fn api_error_class(code: WApiErrorCode) -> (&'static str, &'static str) {
    match code {
        WApiErrorCode::BadRequest => ("BadRequestError", "bad_request"),
        WApiErrorCode::NotFound => ("NotFoundError", "not_found"),
        WApiErrorCode::KernelUnavailable => ("KernelUnavailableError", "kernel_unavailable"),
        WApiErrorCode::NotRegistered => ("NotRegisteredError", "not_registered"),
        WApiErrorCode::Transport => ("TransportError", "transport"),
        WApiErrorCode::ShuttingDown => ("ShuttingDownError", "shutting_down"),
        WApiErrorCode::Internal => ("InternalError", "internal"),
        WApiErrorCode::JournalUnavailable => ("JournalUnavailableError", "journal_unavailable"),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SeedStage>()?;
    m.add_class::<BlendMode>()?;
    m.add_class::<ReasonCode>()?;
    m.add_class::<Role>()?;
    m.add_class::<SeedOperation>()?;
    m.add_class::<TelemetryLevel>()?;
    m.add_class::<HealthStatus>()?;
    m.add_class::<BreakerState>()?;
    m.add_class::<BlueprintTier>()?;
    m.add_class::<DType>()?;
    m.add_class::<CheckpointAction>()?;
    Ok(())
}
