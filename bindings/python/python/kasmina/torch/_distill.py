"""Knowledge distillation (SPEC §8), op for op the Rust tensor plane's
(``host/tensor/src/kd.rs``): an optional frozen teacher within the host's
memory budget, the loss ``T²·KL(softmax(teacher/T) ‖ softmax(student/T))``
averaged over the batch, and its mix with the task loss
``(1 − w)·task + w·kd``. The grafter's half (a mixin of
:class:`kasmina.torch.Grafter`) takes ``w``, ``T`` and the budget from the
answer to its registration and reports the KD term with the step.

The teacher runs under ``no_grad`` and its logits are detached, so no
gradient ever reaches it; its parameters are frozen when it is installed
(``requires_grad`` off, eval mode) and it may not share storage with the
model being grown (the Rust parameter registry's ``teacher_parameter`` rule).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any, Optional, Set

import torch
from torch import nn

from kasmina import ConfigError, DistillationReport

__all__ = ["kd_loss", "mix_losses", "teacher_memory_bytes", "Teacher"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T²·KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the
    batch (a scalar). Both logits ``[N, classes]``, ``N > 0``; gradients
    flow to the student only. Refusals (:class:`kasmina.ConfigError`) carry
    the Rust error's name as code: ``invalid_parameter``, ``wrong_rank``,
    ``shape_mismatch``."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ConfigError(f"kd_temperature = {temperature!r}: must be a number", "invalid_parameter")
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ConfigError(f"kd_temperature = {temperature}: must be finite and > 0", "invalid_parameter")
    if student_logits.dim() != 2:
        raise ConfigError(
            f"student logits must have 2 ([N, classes]) dimensions, got {student_logits.dim()}", "wrong_rank"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(
            f"shape mismatch in teacher logits vs student logits: expected {list(student_logits.shape)}, "
            f"got {list(teacher_logits.shape)}",
            "shape_mismatch",
        )
    n = student_logits.shape[0]
    if n == 0:
        raise ConfigError(
            "shape mismatch in student logits batch: expected [1], got [0] (an empty batch)", "shape_mismatch"
        )
    # The same ops as kd.rs: log_softmax computed in float32, then
    # kl_div(input = log q, target = log p, log_target) = Σ p·(log p − log q).
    log_p_student = (student_logits / temperature).log_softmax(1, dtype=torch.float32)
    log_p_teacher = (teacher_logits.detach() / temperature).log_softmax(1, dtype=torch.float32)
    kl = nn.functional.kl_div(log_p_student, log_p_teacher, reduction="sum", log_target=True)
    return kl * (temperature * temperature / n)


def mix_losses(task_loss: torch.Tensor, kd: torch.Tensor, weight: float) -> torch.Tensor:
    """``(1 − weight)·task + weight·kd``; ``weight`` in [0, 1]."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0.0 <= weight <= 1.0):
        raise ConfigError(f"kd_weight = {weight!r}: must be in [0, 1]", "invalid_parameter")
    return task_loss * (1.0 - weight) + kd * weight


def teacher_memory_bytes(module: nn.Module) -> int:
    """What the teacher holds, measured as the Rust side does: its
    parameters' bytes; a module without parameters (a frozen TorchScript
    module keeps its weights as constants) by its serialized size, so that
    it is not reported as 0 bytes — or, for a plain ``nn.Module``, by its
    buffers."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    if total:
        return int(total)
    if isinstance(module, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # TorchScript is the contract's artifact format; its deprecation notice is not the user's to act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, buffer)
        return buffer.getbuffer().nbytes
    return int(sum(b.numel() * b.element_size() for b in module.buffers()))


def _storages(params: Any) -> Set[int]:
    return {p.untyped_storage().data_ptr() for p in params if p.untyped_storage().data_ptr() != 0}


class Teacher:
    """A frozen teacher within its memory budget (the twin of
    ``kasmina_tensor::Teacher``). Refused over the budget before anything
    about the module changes; once installed, every parameter has
    ``requires_grad`` off and the module is in eval mode."""

    def __init__(self, module: nn.Module, budget_bytes: int) -> None:
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"the teacher must be a torch.nn.Module or a TorchScript module, got {type(module).__name__}", "config"
            )
        memory = teacher_memory_bytes(module)
        if memory > budget_bytes:
            raise ConfigError(
                f"the teacher needs {memory} bytes, over the host's budget of {budget_bytes} bytes "
                "(distillation.teacher_memory_bytes in the daemon's settings); no teacher was installed",
                "teacher_over_budget",
                needed=memory,
                budget=budget_bytes,
            )
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self.memory_bytes = memory

    def logits(self, inputs: Any) -> torch.Tensor:
        """Teacher logits for ``inputs`` (a tensor, or a tuple of positional
        arguments), under ``no_grad``, detached."""
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        with torch.no_grad():
            out = self.module(*args)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"the teacher returned {type(out).__name__}; it must return one logits tensor", "config")
        return out.detach()


class _DistillMixin:
    """The grafter's KD: ``set_teacher``, ``distill``, the step's report
    and ``DropTeacher``. Uses the grafter's own state (``_teacher``,
    ``_distillation``, ``_model``, ``settings``)."""

    def set_teacher(self, module: nn.Module) -> int:
        """Installs ``module`` (a ``torch.nn.Module`` or TorchScript module)
        as the distillation teacher, replacing any earlier one, if its
        memory fits the host's ``distillation.teacher_memory_bytes``;
        returns that memory in bytes. Refused with
        :class:`kasmina.ConfigError` ``teacher_over_budget`` (``needed``,
        ``budget``) over the budget, ``teacher_shares_parameters`` when it
        shares parameter storage with the registered model (pass a copy:
        ``copy.deepcopy(model)``). The module is frozen in place."""
        settings = self.settings
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"the teacher must be a torch.nn.Module or a TorchScript module, got {type(module).__name__}", "config"
            )
        shared = _storages(module.parameters()) & _storages(self._model.parameters())
        if shared:
            raise ConfigError(
                f"the teacher shares {len(shared)} parameter storage(s) with the model being grown; a teacher is "
                "immutable and must not be trained: pass a copy (copy.deepcopy) or a TorchScript export",
                "teacher_shares_parameters",
            )
        teacher = Teacher(module, int(settings.distillation.teacher_memory_bytes))
        self._teacher = teacher
        return teacher.memory_bytes

    @property
    def has_teacher(self) -> bool:
        """Whether a distillation teacher is installed."""
        return self._teacher is not None

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The installed teacher module (frozen), if any."""
        return None if self._teacher is None else self._teacher.module

    def distill(self, task_loss: torch.Tensor, student_logits: torch.Tensor, inputs: Any) -> torch.Tensor:
        """The training loss: ``task_loss`` itself without a teacher, else
        ``(1 − w)·task_loss + w·kd_loss(student_logits, teacher(inputs), T)``
        with ``w`` and ``T`` from the host's settings (SPEC §8). The KD term,
        ``w`` and the teacher's memory go with the next :meth:`step`'s
        report. Call it once per step, before ``backward()``."""
        teacher = self._teacher
        if teacher is None:
            self._distillation = None
            return task_loss
        kd_settings = self.settings.distillation
        kd = kd_loss(student_logits, teacher.logits(inputs), float(kd_settings.temperature))
        loss = mix_losses(task_loss, kd, float(kd_settings.weight))
        self._distillation = DistillationReport(float(kd.detach()), float(kd_settings.weight), teacher.memory_bytes)
        return loss

    def _drop_teacher(self) -> Optional[Teacher]:
        """``DropTeacher`` (EMERGENCY with ``include_teacher``): forget the
        teacher, so the grafter holds no reference to it and its memory
        can be freed, and stop reporting a KD term."""
        dropped, self._teacher = self._teacher, None
        self._distillation = None
        return dropped

    def _take_distillation(self) -> Optional[DistillationReport]:
        report, self._distillation = self._distillation, None
        return report

    @staticmethod
    def _check_distillation_settings(settings: Any) -> None:
        kd = settings.distillation
        if not (0.0 <= kd.weight <= 1.0 and math.isfinite(kd.temperature) and kd.temperature > 0.0):
            raise ConfigError(f"the host sent unusable distillation settings: {kd}", "config")
