"""Kasmina for Python.

Two layers, as in the Rust workspace:

* the contract and the control-plane client (the native module
  ``kasmina._native`` over the Rust crate ``kasmina-client``): typed contract
  objects, :class:`Client` (a blocking socket client for ``kasmina serve``;
  the GIL is released for every round trip), :class:`Command` and
  :class:`HmacKey` for controllers that sign commands with the same
  canonical bytes as Rust;
* :mod:`kasmina.torch`, a torch-native grafter (plain Python over the
  client) that grows seeds in a running PyTorch model.

Errors are :class:`KasminaError` subclasses carrying a machine-readable
``code``.
"""

from kasmina import _errors
from kasmina._errors import (
    ApiError,
    BadRequestError,
    BlendSpecError,
    CommandRejected,
    ConfigError,
    GraftError,
    HmacKeyError,
    InternalError,
    JournalUnavailableError,
    KasminaError,
    RankError,
    KernelUnavailableError,
    NotFoundError,
    NotRegisteredError,
    ShuttingDownError,
    StepOrderError,
    TransportError,
)
from kasmina._native import (
    CONTRACT_VERSION,
    MAX_ALPHA_VEC_LEN,
    PROTOCOL_VERSION,
    AdaptationCommand,
    RankBroadcast,
    RankDigest,
    RankSeedDigest,
    RankSummary,
    BlendMode,
    BlendReport,
    BlendSpec,
    BlueprintDescriptor,
    BlueprintTier,
    BreakerState,
    CheckpointAction,
    CheckpointEvent,
    Client,
    Command,
    DistillationPolicy,
    DistillationReport,
    DType,
    GraftDirective,
    HealthStatus,
    HeldSeed,
    HmacKey,
    HostRegistration,
    HostStatus,
    IsolationPolicy,
    KernelArtifact,
    Outcome,
    ReasonCode,
    Role,
    SeedOperation,
    SeedStage,
    SeedState,
    SeedStepReport,
    SiteSpec,
    SlotSpec,
    StepReport,
    TelemetryEvent,
    TelemetryLevel,
    TensorSpec,
    TrainerSettings,
    can_transition,
)

__all__ = [
    # errors: one list, kept in kasmina._errors
    *_errors.__all__,
    # constants
    "CONTRACT_VERSION",
    "PROTOCOL_VERSION",
    "MAX_ALPHA_VEC_LEN",
    # enums
    "SeedStage",
    "BlendMode",
    "ReasonCode",
    "Role",
    "SeedOperation",
    "TelemetryLevel",
    "HealthStatus",
    "BreakerState",
    "BlueprintTier",
    "DType",
    "CheckpointAction",
    # contract
    "SiteSpec",
    "SlotSpec",
    "HeldSeed",
    "HostRegistration",
    "IsolationPolicy",
    "DistillationPolicy",
    "TrainerSettings",
    "BlendSpec",
    "BlendReport",
    "SeedStepReport",
    "DistillationReport",
    "StepReport",
    "RankSummary",
    "RankSeedDigest",
    "RankDigest",
    "RankBroadcast",
    "TensorSpec",
    "BlueprintDescriptor",
    "KernelArtifact",
    "SeedState",
    "HostStatus",
    "Outcome",
    "TelemetryEvent",
    "GraftDirective",
    "CheckpointEvent",
    "can_transition",
    # client and controllers
    "Client",
    "Command",
    "HmacKey",
    "AdaptationCommand",
]

__version__ = "0.1.0"
