"""The grafter's rollback checkpoints (a mixin of
:class:`kasmina.torch.Grafter`): capture in memory or as a verified file,
restore all or nothing. Split out of ``_grafter.py`` for size."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from typing import Any, Dict, Mapping, Tuple

import torch

from kasmina import CheckpointAction, CheckpointEvent
from kasmina.torch._types import TrainerEvent


class _CheckpointMixin:
    # ------------------------------------------------------------------ internals: checkpoints

    def _checkpoint_path(self, point_id: str) -> str:
        if self._checkpoint_dir is None:
            if self._owned_checkpoint_dir is None:
                self._owned_checkpoint_dir = tempfile.TemporaryDirectory(prefix="kasmina-checkpoints-")
            base = self._owned_checkpoint_dir.name
        else:
            base = os.fspath(self._checkpoint_dir)
            os.makedirs(base, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", point_id)
        return os.path.join(base, f"{safe}.kasmina-ckpt")

    def _snapshot(self) -> Dict[str, Any]:
        return {
            "model": {k: v.detach().clone() for k, v in self._model.state_dict().items()},
            "seeds": {seed_id: slot.state() for seed_id, (slot, _) in self._slots().items()},
            "optimizer_seeds": list(self._optimizer_seeds()),
        }

    def _capture(self, point_id: str, durable: bool) -> TrainerEvent:
        started = time.perf_counter_ns()
        try:
            snapshot = self._snapshot()
            if durable:
                path = self._checkpoint_path(point_id)
                tmp = path + ".tmp"
                with open(tmp, "wb") as f:
                    torch.save(snapshot, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                held: Tuple[bool, Any] = (True, path)
                size = os.path.getsize(path)
            else:
                held = (False, snapshot)
                size = sum(t.numel() * t.element_size() for t in snapshot["model"].values())
        except Exception as err:  # noqa: BLE001 — reported to the control plane, which makes the point unavailable
            self._checkpoint_events.append(CheckpointEvent.Failed(point_id, CheckpointAction.CAPTURE, str(err)))
            return TrainerEvent("checkpoint_failed", None, f"{point_id}: {err}")
        elapsed = (time.perf_counter_ns() - started) // 1000
        self._checkpoints.pop(point_id, None)
        self._checkpoints[point_id] = held
        self._checkpoint_events.append(CheckpointEvent.Captured(point_id, durable, elapsed, size))
        while len(self._checkpoints) > self._max_checkpoints:
            old, (old_durable, where) = self._checkpoints.popitem(last=False)
            if old_durable:
                with contextlib.suppress(OSError):
                    os.remove(where)
            reason = f"retention: at most {self._max_checkpoints} checkpoints are kept"
            self._checkpoint_events.append(CheckpointEvent.Evicted(old, reason))
        return TrainerEvent("checkpoint_captured", None, point_id)

    def _restore(self, point_id: str) -> TrainerEvent:
        started = time.perf_counter_ns()
        held = self._checkpoints.get(point_id)
        if held is None:
            reason = f"no checkpoint {point_id} is held by this trainer"
            self._checkpoint_events.append(CheckpointEvent.Failed(point_id, CheckpointAction.RESTORE, reason))
            return TrainerEvent("checkpoint_failed", None, reason)
        backup = self._snapshot()
        try:
            durable, where = held
            snapshot = torch.load(where, weights_only=True) if durable else where
            self._apply_snapshot(snapshot)
        except Exception as err:  # noqa: BLE001 — all or nothing: put the model back as it was
            self._apply_snapshot(backup)
            reason = f"restore failed, nothing changed: {err}"
            self._checkpoint_events.append(CheckpointEvent.Failed(point_id, CheckpointAction.RESTORE, reason))
            return TrainerEvent("checkpoint_failed", None, reason)
        elapsed = (time.perf_counter_ns() - started) // 1000
        self._checkpoint_events.append(CheckpointEvent.Restored(point_id, elapsed))
        return TrainerEvent("checkpoint_restored", None, point_id)

    def _apply_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        for seed_id in list(self._slots()):
            self._ungraft(seed_id)
        self._graft_saved(snapshot["seeds"], snapshot["optimizer_seeds"])
        self._model.load_state_dict(snapshot["model"], strict=True)
