"""Type stubs of the native module ``kasmina._native`` (PyO3 over the Rust
crates ``kasmina-client`` and ``leyline``). Shapes use ``None`` for the
batch dimension: ``[None, 64]`` is ``[Batch, Fixed(64)]``."""

from __future__ import annotations

import os
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

CONTRACT_VERSION: int
PROTOCOL_VERSION: int
MAX_ALPHA_VEC_LEN: int

Shape = List[Optional[int]]

class _WireEnum:
    @property
    def name(self) -> str: ...
    def __int__(self) -> int: ...
    def __hash__(self) -> int: ...

class SeedStage(_WireEnum):
    UNKNOWN: ClassVar[SeedStage]
    DORMANT: ClassVar[SeedStage]
    GERMINATED: ClassVar[SeedStage]
    TRAINING: ClassVar[SeedStage]
    BLENDING: ClassVar[SeedStage]
    SHADOWING: ClassVar[SeedStage]
    PROBATIONARY: ClassVar[SeedStage]
    FOSSILIZED: ClassVar[SeedStage]
    CULLED: ClassVar[SeedStage]
    EMBARGOED: ClassVar[SeedStage]
    RESETTING: ClassVar[SeedStage]
    TERMINATED: ClassVar[SeedStage]
    @staticmethod
    def parse(text: str) -> SeedStage: ...
    @staticmethod
    def values() -> List[SeedStage]: ...

class BlendMode(_WireEnum):
    CONVEX: ClassVar[BlendMode]
    RESIDUAL: ClassVar[BlendMode]
    CHANNEL: ClassVar[BlendMode]
    CONFIDENCE: ClassVar[BlendMode]
    @staticmethod
    def parse(text: str) -> BlendMode: ...
    @staticmethod
    def values() -> List[BlendMode]: ...

class ReasonCode(_WireEnum):
    """``.name`` is the snake_case code (``invalid_signature``)."""

    MISSING_SIGNATURE: ClassVar[ReasonCode]
    INVALID_SIGNATURE: ClassVar[ReasonCode]
    MISSING_COMMAND_ID: ClassVar[ReasonCode]
    NONCE_REPLAYED: ClassVar[ReasonCode]
    MISSING_TIMESTAMP: ClassVar[ReasonCode]
    STALE_COMMAND: ClassVar[ReasonCode]
    ISSUED_IN_FUTURE: ClassVar[ReasonCode]
    UNKNOWN_COMMAND_TYPE: ClassVar[ReasonCode]
    UNSUPPORTED_COMMAND: ClassVar[ReasonCode]
    MISSING_FIELD: ClassVar[ReasonCode]
    INVALID_FIELD: ClassVar[ReasonCode]
    DEADLINE_EXCEEDED: ClassVar[ReasonCode]
    INVALID_STAGE: ClassVar[ReasonCode]
    GATE_FAILED: ClassVar[ReasonCode]
    BLUEPRINT_REFUSED: ClassVar[ReasonCode]
    PLUGIN_FAILURE: ClassVar[ReasonCode]
    KERNEL_UNAVAILABLE: ClassVar[ReasonCode]
    BREAKER_OPEN: ClassVar[ReasonCode]
    ROLLBACK_UNAVAILABLE: ClassVar[ReasonCode]
    JOURNAL_UNAVAILABLE: ClassVar[ReasonCode]
    INVALID_MESH: ClassVar[ReasonCode]
    @staticmethod
    def parse(text: str) -> ReasonCode: ...
    @staticmethod
    def values() -> List[ReasonCode]: ...

class Role(_WireEnum):
    CONTROLLER: ClassVar[Role]
    TRAINER: ClassVar[Role]
    OBSERVER: ClassVar[Role]
    @staticmethod
    def parse(text: str) -> Role: ...
    @staticmethod
    def values() -> List[Role]: ...

class SeedOperation(_WireEnum):
    GERMINATE: ClassVar[SeedOperation]
    START_TRAINING: ClassVar[SeedOperation]
    START_GRAFTING: ClassVar[SeedOperation]
    STABILIZE: ClassVar[SeedOperation]
    EVALUATE: ClassVar[SeedOperation]
    FINE_TUNE: ClassVar[SeedOperation]
    FOSSILIZE: ClassVar[SeedOperation]
    CULL: ClassVar[SeedOperation]
    CANCEL: ClassVar[SeedOperation]
    @staticmethod
    def parse(text: str) -> SeedOperation: ...
    @staticmethod
    def values() -> List[SeedOperation]: ...

class TelemetryLevel(_WireEnum):
    INFO: ClassVar[TelemetryLevel]
    WARNING: ClassVar[TelemetryLevel]
    ERROR: ClassVar[TelemetryLevel]
    CRITICAL: ClassVar[TelemetryLevel]
    @staticmethod
    def parse(text: str) -> TelemetryLevel: ...
    @staticmethod
    def values() -> List[TelemetryLevel]: ...

class HealthStatus(_WireEnum):
    HEALTHY: ClassVar[HealthStatus]
    DEGRADED: ClassVar[HealthStatus]
    UNHEALTHY: ClassVar[HealthStatus]
    CRITICAL: ClassVar[HealthStatus]
    @staticmethod
    def parse(text: str) -> HealthStatus: ...
    @staticmethod
    def values() -> List[HealthStatus]: ...

class BreakerState(_WireEnum):
    CLOSED: ClassVar[BreakerState]
    OPEN: ClassVar[BreakerState]
    HALF_OPEN: ClassVar[BreakerState]
    @staticmethod
    def parse(text: str) -> BreakerState: ...
    @staticmethod
    def values() -> List[BreakerState]: ...

class BlueprintTier(_WireEnum):
    SAFE: ClassVar[BlueprintTier]
    EXPERIMENTAL: ClassVar[BlueprintTier]
    HIGH_RISK: ClassVar[BlueprintTier]
    @staticmethod
    def parse(text: str) -> BlueprintTier: ...
    @staticmethod
    def values() -> List[BlueprintTier]: ...

class DType(_WireEnum):
    F32: ClassVar[DType]
    F16: ClassVar[DType]
    BF16: ClassVar[DType]
    F64: ClassVar[DType]
    @staticmethod
    def parse(text: str) -> DType: ...
    @staticmethod
    def values() -> List[DType]: ...

class CheckpointAction(_WireEnum):
    CAPTURE: ClassVar[CheckpointAction]
    RESTORE: ClassVar[CheckpointAction]
    @staticmethod
    def parse(text: str) -> CheckpointAction: ...
    @staticmethod
    def values() -> List[CheckpointAction]: ...

def can_transition(from_: SeedStage, to: SeedStage) -> bool:
    """Whether the lifecycle allows ``from → to`` (leyline's one table)."""

# ---------------------------------------------------------------- registration

class SiteSpec:
    name: str
    feature_shape: Shape
    def __init__(self, name: str, feature_shape: Sequence[Optional[int]]) -> None: ...

class SlotSpec:
    seed_id: str
    site: str
    def __init__(self, seed_id: str, site: str) -> None: ...

class HeldSeed:
    seed_id: str
    blueprint_id: str
    kernel_sha256: str
    stage: SeedStage
    alpha: float
    paused: bool
    def __init__(
        self, seed_id: str, blueprint_id: str, kernel_sha256: str, stage: SeedStage, alpha: float, paused: bool
    ) -> None: ...

class HostRegistration:
    training_run_id: str
    sites: List[SiteSpec]
    slots: List[SlotSpec]
    held: List[HeldSeed]
    checkpoints: List[str]
    def __init__(
        self,
        training_run_id: str,
        sites: Sequence[SiteSpec],
        slots: Sequence[SlotSpec],
        held: Sequence[HeldSeed] = ...,
        checkpoints: Sequence[str] = ...,
        world_size: int = 1,
    ) -> None: ...
    world_size: int

class IsolationPolicy:
    cosine_threshold: float
    samples_per_param: int
    violations_to_trip: int
    window_steps: int
    fail_fast: bool
    def __init__(
        self,
        cosine_threshold: float,
        samples_per_param: int,
        violations_to_trip: int,
        window_steps: int,
        fail_fast: bool,
    ) -> None: ...

class DistillationPolicy:
    weight: float
    temperature: float
    teacher_memory_bytes: int
    def __init__(self, weight: float, temperature: float, teacher_memory_bytes: int) -> None: ...

class TrainerSettings:
    contract_version: int
    isolation: IsolationPolicy
    distillation: DistillationPolicy
    def __init__(self, contract_version: int, isolation: IsolationPolicy, distillation: DistillationPolicy) -> None: ...
    def to_bytes(self) -> bytes:
        """Postcard bytes (what rank 0 broadcasts to the other ranks)."""
    @staticmethod
    def from_bytes(data: bytes) -> TrainerSettings: ...

# ---------------------------------------------------------------- blending and reports

class BlendSpec:
    mode: BlendMode
    alpha_vec: List[float]
    gate_k: float
    gate_tau: float
    alpha_lo: float
    alpha_hi: float
    confidence_logits_required: bool
    def __init__(
        self,
        mode: BlendMode,
        alpha_vec: Sequence[float] = ...,
        gate_k: float = 0.0,
        gate_tau: float = 0.0,
        alpha_lo: float = 0.0,
        alpha_hi: float = 1.0,
        confidence_logits_required: bool = False,
    ) -> None: ...
    @staticmethod
    def convex() -> BlendSpec: ...
    @staticmethod
    def residual() -> BlendSpec: ...
    @staticmethod
    def channel(alpha_vec: Sequence[float]) -> BlendSpec: ...
    @staticmethod
    def confidence(
        k: float, tau: float, alpha_lo: float, alpha_hi: float, logits_required: bool = False
    ) -> BlendSpec: ...
    def validate(self) -> None:
        """Raises ``BlendSpecError`` (``.key`` names the annotation key) on a broken rule."""

class BlendReport:
    mode: BlendMode
    alpha_mean: float
    alpha_p95: float
    clamped_fraction: float
    sparsity: Optional[float]
    gate_mean: Optional[float]
    kernel_us: float
    def __init__(
        self,
        mode: BlendMode,
        alpha_mean: float,
        alpha_p95: float,
        clamped_fraction: float = 0.0,
        sparsity: Optional[float] = None,
        gate_mean: Optional[float] = None,
        kernel_us: float = 0.0,
    ) -> None: ...

class SeedStepReport:
    seed_id: str
    stage: SeedStage
    kernel_attached: bool
    kernel_sha256: Optional[str]
    loss: Optional[float]
    outputs_finite: bool
    output_shape_ok: bool
    kernel_latency_us: int
    isolation_violations: int
    max_gradient_cosine: float
    fallback_used: bool
    alpha: float
    blend: Optional[BlendReport]
    def __init__(
        self,
        seed_id: str,
        stage: SeedStage,
        kernel_attached: bool,
        kernel_sha256: Optional[str] = None,
        loss: Optional[float] = None,
        outputs_finite: bool = True,
        output_shape_ok: bool = True,
        kernel_latency_us: int = 0,
        isolation_violations: int = 0,
        max_gradient_cosine: float = 0.0,
        fallback_used: bool = False,
        alpha: float = 0.0,
        blend: Optional[BlendReport] = None,
    ) -> None: ...

class DistillationReport:
    kd_loss: float
    weight: float
    teacher_memory_bytes: int
    def __init__(self, kd_loss: float, weight: float, teacher_memory_bytes: int) -> None: ...

class CheckpointEvent:
    """One class per variant: ``CheckpointEvent.Captured`` … (usable in ``match``)."""

    class Captured(CheckpointEvent):
        point_id: str
        durable: bool
        elapsed_us: int
        bytes: int
        def __init__(self, point_id: str, durable: bool, elapsed_us: int, bytes: int) -> None: ...

    class Restored(CheckpointEvent):
        point_id: str
        elapsed_us: int
        def __init__(self, point_id: str, elapsed_us: int) -> None: ...

    class Failed(CheckpointEvent):
        point_id: str
        action: CheckpointAction
        reason: str
        def __init__(self, point_id: str, action: CheckpointAction, reason: str) -> None: ...

    class Evicted(CheckpointEvent):
        point_id: str
        reason: str
        def __init__(self, point_id: str, reason: str) -> None: ...

class StepReport:
    step: int
    training_run_id: str
    task_loss: float
    global_metric: Optional[float]
    seeds: List[SeedStepReport]
    distillation: Optional[DistillationReport]
    checkpoints: List[CheckpointEvent]
    def __init__(
        self,
        step: int,
        training_run_id: str,
        task_loss: float,
        global_metric: Optional[float] = None,
        seeds: Sequence[SeedStepReport] = ...,
        distillation: Optional[DistillationReport] = None,
        checkpoints: Sequence[CheckpointEvent] = ...,
        ranks: Optional[RankSummary] = None,
    ) -> None: ...
    ranks: Optional[RankSummary]
    def to_bytes(self) -> bytes:
        """Postcard bytes (what each rank sends rank 0 over the control group)."""

# ---------------------------------------------------------------- data-parallel ranks

class RankDigest:
    rank: int
    digest: str
    def __init__(self, rank: int, digest: str) -> None: ...

class RankSeedDigest:
    seed_id: str
    digest: str
    divergent: List[RankDigest]
    def __init__(self, seed_id: str, digest: str, divergent: Sequence[RankDigest] = ...) -> None: ...

class RankSummary:
    """What every data-parallel rank applied this step, and whether they agreed."""

    world_size: int
    agreed: bool
    seeds: List[RankSeedDigest]
    def __init__(self, world_size: int, agreed: bool, seeds: Sequence[RankSeedDigest]) -> None: ...

class RankBroadcast:
    """Rank 0's answer to one step, decoded on any rank."""

    @staticmethod
    def from_bytes(data: bytes) -> RankBroadcast: ...
    @property
    def step(self) -> int: ...
    @property
    def effective_step(self) -> int: ...
    @property
    def summary(self) -> RankSummary: ...
    @property
    def directives(self) -> List[GraftDirective]: ...
    def kernel(self, blueprint_id: str) -> KernelArtifact:
        """The artifact rank 0 fetched; raises the error it got instead."""

class GraftDirective:
    """One class per variant: ``GraftDirective.Attach`` … (usable in ``match``)."""

    @property
    def target(self) -> Optional[str]:
        """The seed the directive concerns (None for DropTeacher, Optimizer, checkpoints)."""

    class Attach(GraftDirective):
        seed_id: str
        site: str
        blueprint_id: str
        artifact_sha256: str
        blend: BlendSpec
        def __init__(
            self, seed_id: str, site: str, blueprint_id: str, artifact_sha256: str, blend: BlendSpec
        ) -> None: ...

    class Stage(GraftDirective):
        seed_id: str
        stage: SeedStage
        alpha: float
        def __init__(self, seed_id: str, stage: SeedStage, alpha: float) -> None: ...

    class Detach(GraftDirective):
        seed_id: str
        reason: str
        def __init__(self, seed_id: str, reason: str) -> None: ...

    class DropTeacher(GraftDirective):
        def __init__(self) -> None: ...

    class Optimizer(GraftDirective):
        optimizer_id: str
        hyperparameters: Dict[str, float]
        def __init__(self, optimizer_id: str, hyperparameters: Mapping[str, float]) -> None: ...

    class Pause(GraftDirective):
        seed_id: str
        paused: bool
        def __init__(self, seed_id: str, paused: bool) -> None: ...

    class Checkpoint(GraftDirective):
        point_id: str
        durable: bool
        def __init__(self, point_id: str, durable: bool) -> None: ...

    class RestoreCheckpoint(GraftDirective):
        point_id: str
        def __init__(self, point_id: str) -> None: ...

# ---------------------------------------------------------------- kernels, state, outcomes

class TensorSpec:
    shape: Shape
    dtype: DType
    def __init__(self, shape: Sequence[Optional[int]], dtype: DType) -> None: ...

class BlueprintDescriptor:
    blueprint_id: str
    name: str
    tier: BlueprintTier
    parameter_bounds: Dict[str, Tuple[float, float]]
    risk: float
    quarantine_only: bool
    approval_required: bool
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    def __init__(
        self,
        blueprint_id: str,
        name: str,
        tier: BlueprintTier,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        parameter_bounds: Mapping[str, Tuple[float, float]] = ...,
        risk: float = 0.0,
        quarantine_only: bool = False,
        approval_required: bool = False,
    ) -> None: ...

class KernelArtifact:
    blueprint_id: str
    sha256: str
    descriptor: BlueprintDescriptor
    @property
    def bytes(self) -> bytes:
        """The TorchScript bytes (a copy)."""
    def __init__(self, blueprint_id: str, sha256: str, bytes: bytes, descriptor: BlueprintDescriptor) -> None: ...
    def __len__(self) -> int: ...

class SeedState:
    seed_id: str
    site: str
    stage: SeedStage
    blueprint_id: Optional[str]
    alpha: float
    epoch: int
    blend_mode: Optional[BlendMode]
    health: HealthStatus
    paused: bool
    blend: Optional[BlendReport]

class HostStatus:
    contract_version: int
    training_run_id: Optional[str]
    seeds: int
    commands_accepted: int
    commands_rejected: int
    last_step: Optional[int]

class Outcome:
    accepted: bool
    reason: Optional[ReasonCode]
    attributes: Dict[str, str]
    def raise_for_rejection(self) -> Outcome:
        """Raises ``CommandRejected`` (code = the reason code) if rejected."""

class TelemetryEvent:
    name: str
    level: TelemetryLevel
    seed_id: Optional[str]
    message: str
    timestamp_ms: int
    @property
    def attributes(self) -> Dict[str, Union[str, int, float, bool]]: ...
    def attr_text(self, key: str) -> str:
        """One attribute rendered as the Rust side renders it, ``""`` if absent."""

# ---------------------------------------------------------------- controllers

class HmacKey:
    @staticmethod
    def from_file(path: Union[str, os.PathLike]) -> HmacKey: ...
    @staticmethod
    def from_hex(text: str) -> HmacKey: ...
    @staticmethod
    def from_bytes(key: bytes) -> HmacKey: ...
    @staticmethod
    def from_env(var: str) -> HmacKey: ...
    def tag(self, data: bytes) -> bytes: ...
    def verify(self, data: bytes, signature: bytes) -> bool: ...

class AdaptationCommand:
    @property
    def version(self) -> int: ...
    @property
    def command_id(self) -> str: ...
    @property
    def target_seed_id(self) -> str: ...
    @property
    def execution_deadline_ms(self) -> Optional[int]: ...
    @property
    def issued_at_ms(self) -> Optional[int]: ...
    @property
    def issued_by(self) -> str: ...
    @property
    def command_type(self) -> str: ...
    @property
    def operation(self) -> Optional[SeedOperation]: ...
    @property
    def blueprint_id(self) -> Optional[str]: ...
    @property
    def parameters(self) -> Dict[str, float]: ...
    @property
    def annotations(self) -> Dict[str, str]: ...
    @property
    def signature(self) -> Optional[bytes]: ...
    def canonical_bytes(self) -> bytes:
        """The bytes the HMAC covers: the same bytes a Rust controller signs."""
    def verify(self, key: HmacKey) -> bool: ...
    def with_signature(self, signature: Optional[bytes]) -> AdaptationCommand: ...

class Command:
    """Immutable builder: every method returns a new ``Command``."""

    @staticmethod
    def seed(target_seed_id: str, operation: Union[SeedOperation, str], blueprint_id: str) -> Command: ...
    @staticmethod
    def rollback(target_seed_id: str, reason: str, rollback_point_id: Optional[str] = None) -> Command: ...
    @staticmethod
    def optimizer(target_seed_id: str, optimizer_id: str) -> Command: ...
    @staticmethod
    def circuit_breaker(
        target_seed_id: str, breaker: str, desired_state: Union[BreakerState, str], rationale: str
    ) -> Command: ...
    @staticmethod
    def pause(target_seed_id: str, resume: bool = False) -> Command: ...
    @staticmethod
    def emergency(target_seed_id: str, cleanup: bool = True, include_teacher: bool = False) -> Command: ...
    @staticmethod
    def structural_pruning(target_seed_id: str, target_layers: Sequence[str], ratio: float) -> Command: ...
    def command_id(self, command_id: str) -> Command: ...
    def command_id_prefix(self, prefix: str) -> Command: ...
    def version(self, version: int) -> Command: ...
    def issued_by(self, issued_by: str) -> Command: ...
    def issued_at_ms(self, issued_at_ms: Optional[int]) -> Command: ...
    def deadline_ms(self, deadline_ms: Optional[int]) -> Command: ...
    def deadline_in(self, seconds: float) -> Command: ...
    def annotation(self, key: str, value: str) -> Command: ...
    def annotations(self, pairs: Mapping[str, str]) -> Command: ...
    def parameter(self, name: str, value: float) -> Command: ...
    def build(self) -> AdaptationCommand: ...
    def sign(self, key: HmacKey) -> AdaptationCommand: ...

# ---------------------------------------------------------------- the client

class Client:
    """Blocking client for ``kasmina serve``; the GIL is released for every round trip."""

    @staticmethod
    def connect(
        socket: Union[str, os.PathLike],
        role: Union[Role, str],
        name: str = "kasmina-python",
        *,
        timeout: Optional[float] = 60.0,
        spin_wait_us: int = 200,
    ) -> Client: ...
    @staticmethod
    def connect_tcp(
        address: str,
        role: Union[Role, str],
        name: str = "kasmina-python",
        *,
        timeout: Optional[float] = 60.0,
        spin_wait_us: int = 200,
    ) -> Client: ...
    @property
    def role(self) -> Role: ...
    @property
    def server(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def submit_command(self, command: AdaptationCommand, *, check: bool = False) -> Outcome: ...
    def register_host(self, registration: HostRegistration) -> TrainerSettings: ...
    def fetch_kernel(self, blueprint_id: str) -> KernelArtifact: ...
    def step_report(self, report: StepReport) -> List[GraftDirective]: ...
    def rank_step(self, parts: Sequence[bytes]) -> bytes:
        """Rank 0: merge every rank's ``StepReport.to_bytes()``, report, fetch
        the kernels of every Attach; the bytes to broadcast."""
    def seed_states(self) -> List[SeedState]: ...
    def status(self) -> HostStatus: ...
    def drain_telemetry(self) -> List[TelemetryEvent]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(self, *exc: object) -> bool: ...
