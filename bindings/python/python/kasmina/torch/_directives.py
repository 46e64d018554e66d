"""The grafter applying ``GraftDirective``s (a mixin of
:class:`kasmina.torch.Grafter`): attach after the digest check, stage and
α, detach, pause, drop the KD teacher, optimizer hyperparameters. Split
out of ``_grafter.py`` for size; it uses the grafter's own state."""

from __future__ import annotations

import math
from typing import Any, List, Union

import kasmina
from kasmina import (
    BlendSpecError,
    GraftDirective,
    GraftError,
    KasminaError,
)
from kasmina.torch._blend import BlendParams
from kasmina.torch._slot import RUNNING_STAGES
from kasmina.torch._types import (
    _LEARNING_RATE_KEYS,
    _LOST,
    _STAGES,
    SEED_GROUP_KEY,
    TrainerEvent,
)


class _DirectiveMixin:
    # ------------------------------------------------------------------ internals: directives

    def _apply(self, d: Any) -> List[TrainerEvent]:
        if isinstance(d, GraftDirective.Attach):
            return self._attach(d)
        if isinstance(d, GraftDirective.Stage):
            return self._stage(d)
        if isinstance(d, GraftDirective.Detach):
            if self._ungraft(d.seed_id):
                return [TrainerEvent("detached", d.seed_id, d.reason)]
            return []
        if isinstance(d, GraftDirective.Pause):
            slot = self._slot(d.seed_id)
            if slot is None:
                raise GraftError(
                    f"pause for seed {d.seed_id}, which this trainer has not grafted", "unknown_seed", seed_id=d.seed_id
                )
            slot.paused = bool(d.paused)
            return [TrainerEvent("paused", d.seed_id, "paused" if d.paused else "resumed")]
        if isinstance(d, GraftDirective.DropTeacher):
            dropped = self._drop_teacher()
            if dropped is None:
                return [TrainerEvent("teacher_dropped", None, "no teacher was installed")]
            return [TrainerEvent("teacher_dropped", None, f"teacher dropped ({dropped.memory_bytes} bytes)")]
        if isinstance(d, GraftDirective.Optimizer):
            return [self._optimizer_directive(d)]
        if isinstance(d, GraftDirective.Checkpoint):
            return [self._capture(d.point_id, bool(d.durable))]
        if isinstance(d, GraftDirective.RestoreCheckpoint):
            return [self._restore(d.point_id)]
        raise GraftError(f"unknown directive {d!r}", "invalid_directive", seed_id=None)

    def _attach(self, d: Any) -> List[TrainerEvent]:
        seed_id, site = d.seed_id, d.site
        if site not in self._sites:
            raise GraftError(
                f"Attach of {d.blueprint_id} for seed {seed_id} names site {site!r}, which this trainer did not "
                f"register (sites: {sorted(self._sites)}); nothing was grafted",
                "unknown_site",
                seed_id=seed_id,
            )
        if self._slot_site.get(seed_id) != site:
            raise GraftError(
                f"Attach names seed {seed_id} at site {site!r}, but no such slot was registered; nothing was grafted",
                "unknown_slot",
                seed_id=seed_id,
            )
        try:
            params = BlendParams.from_spec(d.blend)
        except BlendSpecError as err:
            raise GraftError(
                f"seed {seed_id}: blend refused: {err.message}", "invalid_blend", seed_id=seed_id, key=err.key
            ) from err
        try:
            artifact = self._client.fetch_kernel(d.blueprint_id)
        except _LOST:
            raise
        except KasminaError as err:
            raise GraftError(
                f"seed {seed_id}: fetching kernel {d.blueprint_id} failed: {err}",
                "fetch_failed",
                seed_id=seed_id,
                cause=err,
            ) from err
        return self.attach_artifact(seed_id, site, d.artifact_sha256, params, artifact)

    def attach_artifact(
        self, seed_id: str, site: str, artifact_sha256: str, params: Union[BlendParams, Any], artifact: Any
    ) -> List[TrainerEvent]:
        """Grafts ``artifact`` (a :class:`kasmina.KernelArtifact`) for
        ``seed_id`` at ``site`` if and only if its bytes hash to
        ``artifact_sha256``. Used by Attach directives; public so that a
        verification failure can be exercised with real bytes."""
        if not isinstance(params, BlendParams):
            params = BlendParams.from_spec(params)
        data = artifact.bytes
        module = self._load_verified(seed_id, artifact.blueprint_id, artifact_sha256, artifact.sha256, data)
        self._graft(seed_id, site, artifact.blueprint_id, artifact_sha256, params, data, module)
        return [TrainerEvent("attached", seed_id, artifact.blueprint_id)]

    def _stage(self, d: Any) -> List[TrainerEvent]:
        seed_id = d.seed_id
        slot = self._slot(seed_id)
        if slot is None:
            raise GraftError(
                f"stage {d.stage.name} for seed {seed_id}, which this trainer has not grafted",
                "unknown_seed",
                seed_id=seed_id,
            )
        alpha = d.alpha
        if not (isinstance(alpha, float) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            self._ungraft(seed_id)
            raise GraftError(
                f"stage directive for seed {seed_id}: alpha {alpha} is outside [0, 1]; seed removed",
                "invalid_directive",
                seed_id=seed_id,
            )
        stage = d.stage.name
        events = []
        if slot.stage != stage:
            if not kasmina.can_transition(_STAGES[slot.stage], d.stage):
                previous = slot.stage
                self._ungraft(seed_id)
                raise GraftError(
                    f"seed {seed_id}: {previous} -> {stage} is not a lifecycle transition; seed removed",
                    "invalid_directive",
                    seed_id=seed_id,
                )
            slot.enter(stage)
            _, module = self._slots()[seed_id]
            module.train(slot.effective_stage() in RUNNING_STAGES)
            if stage == "TRAINING":
                self._join(seed_id)
            events.append(TrainerEvent("stage_changed", seed_id, stage))
        if stage == "BLENDING":
            slot.blending_alpha = alpha
        return events

    def _optimizer_directive(self, d: Any) -> TrainerEvent:
        applied = None
        not_applied = []
        for name, value in d.hyperparameters.items():
            if name in _LEARNING_RATE_KEYS and math.isfinite(value) and value > 0 and self._optimizer is not None:
                for group in self._optimizer.param_groups:
                    if SEED_GROUP_KEY in group:
                        group["lr"] = value
                applied = value
            else:
                not_applied.append(name)
        detail = f"{d.optimizer_id}: lr={applied} applied to seed groups; not applied: {not_applied}"
        return TrainerEvent("optimizer_applied", None, detail)
