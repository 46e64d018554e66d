"""One seed at one site: its stage, α, pause flag, blend and this step's
measurements, and the stage table of SPEC §5 (``host/tensor/src/slot.rs``):

======================================================= ================================================ ==================
stage                                                   output                                           seed learns?
======================================================= ================================================ ==================
UNKNOWN, DORMANT, GERMINATED, CULLED, EMBARGOED,         host                                             no
RESETTING (and TERMINATED unless fossilized)
TRAINING (incubator)                                    ``h + (s − s.detach())`` — value is the host's   yes, straight-through
BLENDING                                                blend with the α the control plane directed      yes
SHADOWING, PROBATIONARY                                 blend with α = 1                                 yes
FOSSILIZED (and TERMINATED after it)                    blend with α = 1, host *not* detached            as part of the host
any stage while paused (or suspended: no control plane)  host                                             no
======================================================= ================================================ ==================

Before fossilization the seed is fed ``h.detach()`` and the host branch of
every blend is detached: no gradient reaches the host from the seed's path.
A seed that fails (kernel error, wrong shape, missing logits, a non-finite
value) leaves the host output in place for that step and is reported; the
gates cull it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch

from kasmina.torch._blend import BlendParams, BlendStats, SeedFault, blend, incubate

__all__ = ["SeedSlot", "StepMeasure", "RUNNING_STAGES", "HOST_ONLY_STAGES"]

#: Stages in which the seed runs (and, unpaused, reports a loss).
RUNNING_STAGES = frozenset({"TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY", "FOSSILIZED"})
#: Stages in which the site returns the host output untouched.
HOST_ONLY_STAGES = frozenset({"UNKNOWN", "DORMANT", "GERMINATED", "CULLED", "EMBARGOED", "RESETTING", "TERMINATED"})
#: Stages in which the seed learns and gradient isolation is measured.
LEARNING_STAGES = frozenset({"TRAINING", "BLENDING"})

NON_FINITE = "non_finite"


@dataclass
class StepMeasure:
    """What the seed did during the current training step (reset per report)."""

    failure: Optional[str] = None  # NON_FINITE or an error message
    latency_us: int = 0
    violations: int = 0
    max_cosine: float = 0.0
    stats: Optional[BlendStats] = None
    ran_train: bool = False


@dataclass
class SeedSlot:
    """One grafted seed. The kernel module itself lives in the site's
    ``nn.ModuleDict`` (so ``model.state_dict()`` carries its weights); the
    slot is plain Python state."""

    seed_id: str
    site: str
    blueprint_id: str
    sha256: str
    params: BlendParams
    kernel: bytes = field(repr=False, default=b"")
    stage: str = "GERMINATED"
    blending_alpha: float = 0.0
    paused: bool = False
    #: Swapped out by the grafter itself because the control plane is gone
    #: (no gates without it); cleared when it reconnects.
    suspended: bool = False
    fossilized: bool = False
    measure: StepMeasure = field(default_factory=StepMeasure)
    #: The kernel's trainable parameters (fixed once grafted; isolation reads them every step).
    trainable: list = field(default_factory=list, repr=False)
    #: Data-parallel ranks: when the seed fails on this rank, the host output
    #: is returned through this (``h, trainable -> h``) so its parameters
    #: still get a (zero) gradient and DDP's reduction stays in step.
    tie_grads: Optional[Callable[[torch.Tensor, list], torch.Tensor]] = field(default=None, repr=False)

    # ------------------------------------------------------------------ stage

    def effective_stage(self) -> str:
        """FOSSILIZED for a fossil even after TERMINATED: it still runs."""
        return "FOSSILIZED" if self.fossilized else self.stage

    def alpha(self) -> float:
        """α of the next blend in the current stage (0 when not blended in)."""
        stage = self.effective_stage()
        if stage == "BLENDING":
            return self.blending_alpha
        if stage in ("SHADOWING", "PROBATIONARY", "FOSSILIZED"):
            return 1.0
        return 0.0

    def is_learning(self) -> bool:
        return not (self.paused or self.suspended) and self.stage in LEARNING_STAGES

    def detaches_host(self) -> bool:
        """Whether the site's output is cut off from the host's gradient
        (blending before fossilization: the host branch is detached)."""
        return self.is_running() and self.effective_stage() in ("BLENDING", "SHADOWING", "PROBATIONARY")

    def is_running(self) -> bool:
        return not (self.paused or self.suspended) and self.effective_stage() in RUNNING_STAGES

    def enter(self, stage: str) -> None:
        """Bookkeeping of a stage change (the table itself is checked by the caller)."""
        if stage == "BLENDING":
            self.blending_alpha = 0.0
        if stage == "FOSSILIZED":
            self.fossilized = True
        self.stage = stage

    # ------------------------------------------------------------------ forward

    def run(
        self, h: torch.Tensor, module: torch.nn.Module, train: bool, logits: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The slot's output for the host output ``h`` at the site."""
        if self.paused or self.suspended:
            return h
        stage = self.effective_stage()
        if stage in HOST_ONLY_STAGES:
            return h
        if stage == "TRAINING" and not train:
            # Inference skips the incubating seed: its value is not used.
            return h
        started = time.perf_counter_ns()
        failure: Optional[str] = None
        out = h
        stats: Optional[BlendStats] = None
        try:
            out, seed, stats = self._forward(h, module, stage, train, logits)
            if not all_finite(seed):
                out, stats, failure = h, None, NON_FINITE
        except SeedFault as fault:
            out, stats, failure = h, None, str(fault)
        if failure is not None and train and self.tie_grads is not None:
            out = self.tie_grads(h, self.trainable)
        elapsed_us = (time.perf_counter_ns() - started) // 1000
        if train:
            m = self.measure
            m.ran_train = True
            m.latency_us += elapsed_us
            if m.failure is None:
                m.failure = failure
            if stats is not None:
                # Inference blends (evaluation) are not this step's statistics.
                m.stats = stats
        return out

    def _forward(self, h: torch.Tensor, module: torch.nn.Module, stage: str, train: bool, logits):
        if self.params.logits_required and logits is None:
            # A trainer that hands over no logits fails from the first step
            # the seed runs, not only once blending starts.
            raise SeedFault("this CONFIDENCE seed requires the batch's logits (confidence_logits_required)")
        fossil = stage == "FOSSILIZED"
        # Before fossilization the seed sees detached features only.
        seed_in = h if fossil else h.detach()
        try:
            if train:
                seed = module(seed_in)
            else:
                with torch.no_grad():
                    seed = module(seed_in)
        except Exception as err:  # the kernel is foreign code: its failure is the seed's, not the run's
            raise SeedFault(f"kernel error: {_cause_line(err)}") from err
        if not isinstance(seed, torch.Tensor):
            raise SeedFault(f"kernel returned {type(seed).__name__}, not a tensor")
        if stage == "TRAINING":
            return incubate(h, seed), seed, None
        alpha = self.blending_alpha if stage == "BLENDING" else 1.0
        host_branch = h if fossil else h.detach()
        out, stats = blend(self.params, alpha, host_branch, seed, logits)
        return out, seed, stats

    # ------------------------------------------------------------------ state

    def state(self) -> Dict[str, Any]:
        """Plain-Python state for ``Grafter.state_dict`` and checkpoints."""
        p = self.params
        return {
            "site": self.site,
            "blueprint_id": self.blueprint_id,
            "sha256": self.sha256,
            "stage": self.stage,
            "alpha": self.blending_alpha,
            "paused": self.paused,
            "fossilized": self.fossilized,
            "blend": {
                "mode": p.mode,
                "alpha_vec": list(p.alpha_vec),
                "gate_k": p.gate_k,
                "gate_tau": p.gate_tau,
                "alpha_lo": p.alpha_lo,
                "alpha_hi": p.alpha_hi,
                "logits_required": p.logits_required,
            },
            "kernel": self.kernel,
        }


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite. A finite sum proves it (any
    NaN or infinity makes the sum non-finite) in one cheap reduction; only a
    non-finite sum — a bad value, or finite values that overflow when added
    — pays for the exact elementwise check."""
    t = t.detach()
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _cause_line(err: BaseException) -> str:
    # TorchScript errors carry the interpreter's traceback; the cause is the last line.
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
