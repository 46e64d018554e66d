"""``Grafter``: the trainer side of Kasmina for a PyTorch model, the Python
twin of the Rust ``kasmina-trainer`` (``host/trainer``).

One object, a handful of calls::

    grafter = Grafter.connect("kasminad.sock", run_id="run-1")
    grafter.register(model, sites={"hidden": "fc1"}, slots={"seed-a": "hidden"},
                     example_input=x[:2])
    grafter.bind(optimizer)
    grafter.set_teacher(teacher)                      # optional: knowledge distillation
    for step in range(1, steps + 1):
        logits = model(x)
        loss = grafter.distill(criterion(logits, y), logits, x)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        grafter.step(step, loss, metric=val_acc)      # report + directives

The control plane decides; the grafter applies. What a seed does wrong
(kernel error, wrong shape, NaN) is measured and reported, never raised:
the gates cull it. What the grafter cannot apply (an artifact whose digest
is not the directive's, a directive for a site it never registered) raises
:class:`kasmina.GraftError` after every other directive of the step was
applied, with the model left on the host output at that site. Losing the
control plane raises :class:`kasmina.TransportError` and swaps every seed
that is not fossilized out of the model until :meth:`Grafter.reconnect`.

The class is assembled from one mixin per concern, each in its own module
and each working on the state :meth:`Grafter.__init__` sets up:

- ``_registration``: ``register`` (site probing and wrapping), ``state_dict``,
  ``load_state_dict``, ``reconnect``;
- ``_seeds``: ``bind``, verified kernel loading, grafting and ungrafting,
  seed parameter groups in the optimizer;
- ``_step``: ``step`` (isolation, the report) and ``apply_directives``;
- ``_directives``: what each directive does;
- ``_distill``: ``set_teacher``, ``distill``, ``DropTeacher``;
- ``_checkpoints``: rollback checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

from kasmina import (
    Client,
    ConfigError,
    DistillationReport,
    Role,
    SeedStage,
    SiteSpec,
    TrainerSettings,
)
from kasmina.torch._checkpoints import _CheckpointMixin
from kasmina.torch._directives import _DirectiveMixin
from kasmina.torch._distill import Teacher, _DistillMixin
from kasmina.torch._registration import _RegistrationMixin
from kasmina.torch._seeds import _SeedsMixin
from kasmina.torch._site import ForwardContext, SeedSite
from kasmina.torch._step import _StepMixin
from kasmina.torch._types import (
    _STAGES,
    DEFAULT_MAX_CHECKPOINTS,
    STATE_FORMAT,
    SeedView,
    StepResult,
    TrainerEvent,
)

__all__ = ["Grafter", "StepResult", "TrainerEvent", "SeedView", "STATE_FORMAT"]


class Grafter(_StepMixin, _RegistrationMixin, _SeedsMixin, _DistillMixin, _DirectiveMixin, _CheckpointMixin):
    """Grows seeds in a PyTorch model under the control of ``kasmina serve``.

    Build it with :meth:`connect` (or from an existing trainer-role
    :class:`kasmina.Client`), then :meth:`register` the model, :meth:`bind`
    the optimizer and call :meth:`step` once per training step. To distil
    from a teacher, :meth:`set_teacher` once and pass each step's loss
    through :meth:`distill`.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        device: Optional[Union[str, torch.device]] = None,
        checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
        max_checkpoints: int = DEFAULT_MAX_CHECKPOINTS,
    ) -> None:
        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigError("the training run id is empty: pass the run's real id", "config")
        if max_checkpoints < 1:
            raise ConfigError(f"max_checkpoints = {max_checkpoints}: must be at least 1", "config")
        self._client = client
        self.run_id = run_id
        self._device = torch.device(device) if device is not None else None
        self._context = ForwardContext()
        self._model: Optional[nn.Module] = None
        self._sites: Dict[str, SeedSite] = {}
        self._site_specs: List[SiteSpec] = []
        self._slot_site: Dict[str, str] = {}
        self._slot_order: List[str] = []
        self._settings: Optional[TrainerSettings] = None
        self._host_params: List[torch.Tensor] = []
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._last_step: Optional[int] = None
        self._lost: Optional[str] = None
        self._checkpoint_dir = checkpoint_dir
        self._owned_checkpoint_dir: Optional[tempfile.TemporaryDirectory] = None
        self._max_checkpoints = max_checkpoints
        self._checkpoints: "OrderedDict[str, Tuple[bool, Any]]" = OrderedDict()
        self._checkpoint_events: List[Any] = []
        self._pending_joins: List[str] = []
        self._teacher: Optional[Teacher] = None
        self._distillation: Optional[DistillationReport] = None

    # ------------------------------------------------------------------ set-up

    @classmethod
    def connect(
        cls,
        socket: Union[str, os.PathLike],
        run_id: str,
        *,
        name: str = "kasmina-torch",
        timeout: Optional[float] = 60.0,
        **options: Any,
    ) -> "Grafter":
        """Connects to ``kasmina serve`` on ``socket`` as a trainer.
        ``options``: ``device``, ``checkpoint_dir``, ``max_checkpoints``."""
        client = Client.connect(os.fspath(socket), Role.TRAINER, name, timeout=timeout)
        return cls(client, run_id, **options)

    @property
    def client(self) -> Client:
        """The control-plane connection."""
        return self._client

    @property
    def settings(self) -> TrainerSettings:
        """The settings the host answered the registration with."""
        if self._settings is None:
            raise ConfigError("not registered yet: call register() first", "config")
        return self._settings

    @property
    def model(self) -> Optional[nn.Module]:
        return self._model

    @property
    def last_step(self) -> Optional[int]:
        return self._last_step

    # ------------------------------------------------------------------ forward helpers

    @contextlib.contextmanager
    def logits(self, logits: torch.Tensor) -> Iterator[None]:
        """This batch's classification logits ``[N, classes]`` for the
        forward pass run inside the block: what CONFIDENCE seeds gate on.

        ``with grafter.logits(host_logits): out = model(x)``
        """
        previous = self._context.logits
        self._context.logits = logits
        try:
            yield
        finally:
            self._context.logits = previous

    @contextlib.contextmanager
    def host_only(self) -> Iterator[None]:
        """Runs the block with every seed swapped out (the host model alone),
        e.g. to compute the host's own logits for CONFIDENCE gating."""
        previous = self._context.host_only
        self._context.host_only = True
        try:
            yield
        finally:
            self._context.host_only = previous

    # ------------------------------------------------------------------ views

    def seeds(self) -> Dict[str, SeedView]:
        """Every grafted seed, by id."""
        views = {}
        for seed_id, (slot, module) in self._slots().items():
            views[seed_id] = SeedView(
                site=slot.site,
                stage=_STAGES[slot.stage],
                blueprint_id=slot.blueprint_id,
                sha256=slot.sha256,
                alpha=slot.alpha(),
                paused=slot.paused,
                parameters=sum(p.numel() for p in module.parameters()),
                suspended=slot.suspended,
            )
        return views

    def seed_stage(self, seed_id: str):
        """The stage the grafter runs ``seed_id`` in, or None if not grafted."""
        found = self._slots().get(seed_id)
        return _STAGES[found[0].stage] if found else None

    def seed_failure(self, seed_id: str) -> Optional[str]:
        """The failure recorded for ``seed_id`` in the current step, if any."""
        found = self._slots().get(seed_id)
        return found[0].measure.failure if found else None

    def fossilized_parameters(self) -> int:
        """Parameters of fossilized seeds: what growing added to the model."""
        return sum(v.parameters for v in self.seeds().values() if v.stage == SeedStage.FOSSILIZED)

    def close(self) -> None:
        """Closes the control-plane connection (the model keeps its seeds)."""
        self._client.close()
        if self._owned_checkpoint_dir is not None:
            self._owned_checkpoint_dir.cleanup()
            self._owned_checkpoint_dir = None

    def __enter__(self) -> "Grafter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        seeds = ", ".join(f"{k}:{v.stage.name}" for k, v in self.seeds().items())
        return (
            f"Grafter(run_id={self.run_id!r}, sites={list(self._sites)}, seeds=[{seeds}], last_step={self._last_step})"
        )
