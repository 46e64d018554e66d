"""What the grafter and its directive/checkpoint halves share: constants
and the small result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from kasmina import SeedStage, ShuttingDownError, TransportError

#: ``state_dict()["format"]``; ``load_state_dict`` refuses any other.
STATE_FORMAT = "kasmina.torch.Grafter/1"
#: Checkpoints kept for rollback points before the oldest is evicted.
DEFAULT_MAX_CHECKPOINTS = 8
#: Optimizer param-group key that marks a seed's group.
SEED_GROUP_KEY = "kasmina_seed"
_LEARNING_RATE_KEYS = ("lr", "learning_rate")
_STAGES = {s.name: s for s in SeedStage.values()}
# Errors meaning the control plane is gone (as opposed to refusing something).
_LOST = (TransportError, ShuttingDownError)


@dataclass(frozen=True)
class TrainerEvent:
    """What applying one directive did. ``kind``: ``attached``,
    ``stage_changed``, ``detached``, ``paused``, ``teacher_dropped``,
    ``optimizer_applied``, ``checkpoint_captured``, ``checkpoint_restored``,
    ``checkpoint_failed``, ``checkpoint_evicted`` or ``refused``."""

    kind: str
    seed_id: Optional[str] = None
    detail: str = ""


@dataclass
class StepResult:
    """What one ``step()`` did: the directives received, in the order
    applied, and what applying them did."""

    directives: List[Any] = field(default_factory=list)
    events: List[TrainerEvent] = field(default_factory=list)


@dataclass(frozen=True)
class SeedView:
    """A read-only view of one grafted seed."""

    site: str
    stage: Any  # kasmina.SeedStage
    blueprint_id: str
    sha256: str
    alpha: float
    paused: bool
    parameters: int
    suspended: bool = False
