"""The grafter's step (a mixin of :class:`kasmina.torch.Grafter`): the
order checks, gradient isolation of every seed that learns, the step
report (task loss, metric, each seed's measurements and blend statistics,
the KD term, checkpoint events), and the directives that come back,
applied in order."""

from __future__ import annotations

import operator
from typing import Any, List, Optional, Sequence, Union

import torch

import kasmina
from kasmina import (
    BlendReport,
    ConfigError,
    GraftError,
    KasminaError,
    SeedStepReport,
    StepOrderError,
    StepReport,
    TransportError,
)
from kasmina.torch._isolation import sampled_cosine
from kasmina.torch._slot import NON_FINITE, StepMeasure
from kasmina.torch._types import _LOST, _STAGES, StepResult, TrainerEvent


class _StepMixin:
    # ------------------------------------------------------------------ the step

    def step(self, step: int, loss: Union[float, torch.Tensor], metric: Optional[float] = None) -> StepResult:
        """Ends training step ``step``: measures gradient isolation of every
        seed that learns, reports the step (``loss``, the optional metric
        such as validation accuracy, each seed's measurements and blend
        statistics, the KD term of this step's :meth:`distill`, checkpoint
        events) and applies the directives that come back, in order.

        Call it once per step, after ``loss.backward()`` and before the next
        ``optimizer.zero_grad()`` (the isolation check reads ``.grad``).
        ``loss`` is the loss the model trained on (with distillation, what
        :meth:`distill` returned, as the Rust demo reports).
        """
        if self._model is None or self._settings is None:
            raise ConfigError("register() the model before the first step", "config")
        if self._lost is not None:
            raise TransportError(
                f"the control plane was lost ({self._lost}); seeds are swapped out until reconnect()", "transport"
            )
        try:
            step = operator.index(step)
        except TypeError:
            raise StepOrderError(f"step must be an integer, got {step!r}", "step_order") from None
        if step < 0:
            raise StepOrderError(f"step must be non-negative, got {step}", "step_order")
        if self._last_step is not None and step <= self._last_step:
            raise StepOrderError(
                f"step {step} reported after step {self._last_step}: call step() once per step, in order", "step_order"
            )
        task_loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self._check_optimizer_bound()
        self._measure_isolation()
        report = StepReport(
            step,
            self.run_id,
            task_loss,
            None if metric is None else float(metric),
            [self._seed_report(seed_id, task_loss) for seed_id in sorted(self._slots())],
            self._take_distillation(),
            self._checkpoint_events,
        )
        pending, self._checkpoint_events = self._checkpoint_events, []
        try:
            directives = self._client.step_report(report)
        except KasminaError as err:
            # Not delivered: the checkpoint results go with the next report.
            self._checkpoint_events = pending + self._checkpoint_events
            if isinstance(err, _LOST):
                self._lose_control_plane(err)
            raise
        self._last_step = step
        events = self.apply_directives(directives)
        return StepResult(list(directives), events)

    def apply_directives(self, directives: Sequence[Any]) -> List[TrainerEvent]:
        """Applies ``directives`` in order, as :meth:`step` does with the ones
        the control plane returns. Every directive is attempted; if any
        could not be applied, a :class:`GraftError` is raised afterwards
        (the first one, with ``.errors`` listing all and ``.events`` what
        was done). Losing the control plane midway raises
        :class:`TransportError` at once."""
        events: List[TrainerEvent] = []
        errors: List[GraftError] = []
        for directive in directives:
            try:
                events.extend(self._apply(directive))
            except GraftError as err:
                errors.append(err)
                events.append(TrainerEvent("refused", getattr(err, "seed_id", None), err.message))
            except _LOST as err:
                self._lose_control_plane(err)
                raise
        if errors:
            first = errors[0]
            first.errors = errors
            first.events = events
            raise first
        return events

    # ------------------------------------------------------------------ internals: measurement

    def _measure_isolation(self) -> None:
        iso = self._settings.isolation
        for seed_id, (slot, _module) in self._slots().items():
            m = slot.measure
            if not (slot.is_learning() and m.ran_train):
                continue
            seed_params = slot.trainable
            if m.failure is None and all(p.grad is None for p in seed_params):
                raise ConfigError(
                    f"seed {seed_id} ran this step but none of its parameters has a gradient: call "
                    "grafter.step() after loss.backward() and before optimizer.zero_grad()",
                    "config",
                )
            cosine, _shared = sampled_cosine(self._host_params, seed_params, int(iso.samples_per_param))
            m.violations += int(cosine > iso.cosine_threshold)
            m.max_cosine = max(m.max_cosine, cosine)

    def _seed_report(self, seed_id: str, task_loss: float) -> SeedStepReport:
        slot, _ = self._slots()[seed_id]
        m = slot.measure
        slot.measure = StepMeasure()
        running = slot.is_running()
        blend = None
        if m.stats is not None and m.failure is None:
            s = m.stats
            blend = BlendReport(
                kasmina.BlendMode.parse(s.mode),
                s.alpha_mean,
                s.alpha_p95,
                s.clamped_fraction,
                s.sparsity,
                s.gate_mean,
                s.kernel_us,
            )
        return SeedStepReport(
            seed_id,
            _STAGES[slot.stage],
            True,
            slot.sha256,
            # The seed learns from the task loss (straight-through while
            # incubating); a seed that did not run cleanly has no loss.
            task_loss if running and m.failure is None else None,
            m.failure != NON_FINITE,
            m.failure is None or m.failure == NON_FINITE,
            int(m.latency_us),
            int(m.violations),
            float(m.max_cosine),
            # Only the seed's own verified kernel ever runs here.
            False,
            slot.alpha(),
            blend,
        )


