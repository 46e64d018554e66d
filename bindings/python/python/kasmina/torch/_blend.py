"""The blend kernels of SPEC §5 in PyTorch, op for op the Rust tensor plane's
(``host/tensor/src/blend/kernels.rs``), so values match it to the last bit on
the same libtorch; ``tests/test_blend_parity.py`` checks them against golden
vectors the Rust kernels produced.

=========== ============================================ =============================
mode        op                                           weight
=========== ============================================ =============================
CONVEX      ``torch.lerp(host, seed, α)``                 scalar
RESIDUAL    ``torch.addcmul(host, seed, α)``              0-d tensor
CHANNEL     ``torch.lerp(host, seed, w)``                 ``α·α_vec`` viewed [1, C, 1…]
CONFIDENCE  ``torch.lerp(host, seed, w)``                 ``clamp(α·g, lo, hi)`` [N, 1…]
=========== ============================================ =============================

``g = sigmoid(k·(top1 − top2 − τ))`` from the batch's classification logits
(detached: the gate is a control signal). The caller passes the host branch
already detached (or not, for a fossilized seed); no input is written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

__all__ = ["BlendParams", "BlendStats", "SeedFault", "blend", "incubate", "MAX_FEATURE_RANK"]

#: Most dimensions a CHANNEL/CONFIDENCE feature tensor may have ([N, C, D, H, W]).
MAX_FEATURE_RANK = 5

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class SeedFault(Exception):
    """A seed could not run this step (shape, dtype, missing logits, kernel
    error). Never escapes the grafter: the host output stands and the step
    report carries the failure, so the control plane's gates decide."""


@dataclass(frozen=True)
class BlendParams:
    """A validated blend spec as plain Python values (copyable, picklable)."""

    mode: str
    alpha_vec: Tuple[float, ...] = ()
    gate_k: float = 0.0
    gate_tau: float = 0.0
    alpha_lo: float = 0.0
    alpha_hi: float = 1.0
    logits_required: bool = False

    @classmethod
    def from_spec(cls, spec) -> "BlendParams":
        """From a :class:`kasmina.BlendSpec`, after the contract's own
        validation (raises :class:`kasmina.BlendSpecError` naming the key)."""
        spec.validate()
        mode = spec.mode.name
        return cls(
            mode=mode,
            alpha_vec=tuple(spec.alpha_vec),
            gate_k=spec.gate_k,
            gate_tau=spec.gate_tau,
            alpha_lo=spec.alpha_lo,
            alpha_hi=spec.alpha_hi,
            # Only CONFIDENCE reads logits; the flag means nothing elsewhere.
            logits_required=mode == "CONFIDENCE" and spec.confidence_logits_required,
        )

    def to_spec(self):
        from kasmina import BlendMode, BlendSpec

        return BlendSpec(
            BlendMode.parse(self.mode),
            list(self.alpha_vec),
            self.gate_k,
            self.gate_tau,
            self.alpha_lo,
            self.alpha_hi,
            self.logits_required,
        )


@dataclass
class BlendStats:
    """What one blend did (SPEC §5 telemetry). For CONVEX/RESIDUAL the
    effective α is the scalar α, so mean and p95 equal it."""

    mode: str
    alpha: float
    alpha_mean: float
    alpha_p95: float
    clamped_fraction: float = 0.0
    sparsity: Optional[float] = None
    gate_mean: Optional[float] = None
    kernel_us: float = 0.0
    extra: dict = field(default_factory=dict, repr=False)


def _sum(values: List[float]) -> float:
    """Left-to-right float sum, as Rust's ``Iterator::sum`` (Python ≥ 3.12's
    ``sum`` compensates rounding, which would differ in the last bits)."""
    total = 0.0
    for v in values:
        total += v
    return total


def p95(values: List[float]) -> float:
    """Nearest-rank 95th percentile; 0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(0.95 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def _check_compatible(what: str, host: torch.Tensor, other: torch.Tensor) -> None:
    if host.dtype not in _FLOATS:
        raise SeedFault(f"host dtype: expected a floating dtype, got {host.dtype}")
    if other.dtype != host.dtype:
        raise SeedFault(f"{what}: expected dtype {host.dtype}, got {other.dtype}")
    if other.device != host.device:
        raise SeedFault(f"{what}: expected device {host.device}, got {other.device}")


def _check_same_shape(host: torch.Tensor, seed: torch.Tensor) -> None:
    if host.shape != seed.shape:
        raise SeedFault(f"seed output vs host output: expected shape {list(host.shape)}, got {list(seed.shape)}")


def _check_rank(host: torch.Tensor, lo: int, expected: str) -> None:
    if not lo <= host.dim() <= MAX_FEATURE_RANK:
        raise SeedFault(f"features: expected rank {expected}, got {host.dim()}")


def incubate(host: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """The TRAINING output ``host + (seed − seed.detach())``: its value is the
    host's exactly, and the seed learns from the host output's gradient
    (straight-through)."""
    _check_same_shape(host, seed)
    _check_compatible("seed output vs host output", host, seed)
    return host + (seed - seed.detach())


def blend(
    params: BlendParams,
    alpha: float,
    host_branch: torch.Tensor,
    seed: torch.Tensor,
    logits: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, BlendStats]:
    """Blends ``seed`` into ``host_branch`` with runtime weight ``alpha``.

    ``host_branch`` is ``host.detach()`` for every stage but FOSSILIZED
    (then the host output itself). Raises :class:`SeedFault` on a foreign
    shape/dtype, an α outside [0, 1], or missing / wrong-rank / wrong-batch
    logits (CONFIDENCE).
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise SeedFault(f"alpha = {alpha} rejected: must be finite and in [0, 1]")
    alpha = float(alpha)
    host = host_branch
    _check_same_shape(host, seed)
    _check_compatible("seed output vs host output", host, seed)
    stats = BlendStats(mode=params.mode, alpha=alpha, alpha_mean=alpha, alpha_p95=alpha)
    mode = params.mode
    if mode == "CONVEX":
        start = time.perf_counter_ns()
        out = torch.lerp(host, seed, alpha)
    elif mode == "RESIDUAL":
        # On the host's device and dtype: a CPU scalar tensor is not accepted by every CUDA kernel.
        a = torch.scalar_tensor(alpha, dtype=host.dtype, device=host.device)
        start = time.perf_counter_ns()
        out = torch.addcmul(host, seed, a)
    elif mode == "CHANNEL":
        w = _channel_weight(params, alpha, host, stats)
        start = time.perf_counter_ns()
        out = torch.lerp(host, seed, w)
    elif mode == "CONFIDENCE":
        w = _confidence_weight(params, alpha, host, logits, stats)
        start = time.perf_counter_ns()
        out = torch.lerp(host, seed, w)
    else:  # BlendParams comes from a validated contract spec
        raise SeedFault(f"unknown blend mode {mode!r}")
    stats.kernel_us = (time.perf_counter_ns() - start) / 1e3
    return out, stats


def _channel_weight(params: BlendParams, alpha: float, host: torch.Tensor, stats: BlendStats) -> torch.Tensor:
    _check_rank(host, 2, "2 to 5 ([N, C, …])")
    channels = host.shape[1]
    if len(params.alpha_vec) != channels:
        raise SeedFault(f"alpha_vec has {len(params.alpha_vec)} entries but the features have {channels} channels")
    # f64 products, then f32, as the Rust kernel computes them.
    eff = [alpha * a for a in params.alpha_vec]
    stats.alpha_mean = _sum(eff) / len(eff)
    stats.alpha_p95 = p95(eff)
    stats.sparsity = sum(1 for a in eff if a == 0.0) / len(eff)
    shape = [1] * host.dim()
    shape[1] = channels
    return torch.tensor(eff, dtype=torch.float32).to(dtype=host.dtype, device=host.device).view(shape)


def _confidence_weight(
    params: BlendParams, alpha: float, host: torch.Tensor, logits: Optional[torch.Tensor], stats: BlendStats
) -> torch.Tensor:
    _check_rank(host, 1, "1 to 5 ([N, …])")
    if logits is None:
        raise SeedFault("CONFIDENCE blend needs this batch's classification logits [N, classes]; none were given")
    if logits.dim() != 2:
        raise SeedFault(f"logits: expected rank 2 ([N, classes]), got {logits.dim()}")
    n, classes = logits.shape
    batch = host.shape[0]
    if n != batch:
        raise SeedFault(f"logits are for {n} samples but the features for {batch}")
    if classes < 2:
        raise SeedFault(f"logits have {classes} class; the confidence gate needs at least 2")
    # The gate is a control signal, not a trainable path: logits are detached.
    lg = logits.detach().to(torch.float32)
    top = torch.topk(lg, 2, dim=1, largest=True, sorted=True).values
    margin = top.select(1, 0) - top.select(1, 1)
    g = torch.sigmoid((margin - params.gate_tau) * params.gate_k)
    raw = g * alpha
    eff = raw.clamp(params.alpha_lo, params.alpha_hi)
    # One small device→host copy of N gate values per step for the stats.
    g_host = g.to(device="cpu", dtype=torch.float64).tolist()
    raw_host = raw.to(device="cpu", dtype=torch.float64).tolist()
    lo, hi = params.alpha_lo, params.alpha_hi
    eff_host = [min(max(a, lo), hi) for a in raw_host]
    count = max(len(eff_host), 1)
    stats.gate_mean = _sum(g_host) / count
    stats.clamped_fraction = sum(1 for a in raw_host if a < lo or a > hi) / count
    stats.alpha_mean = _sum(eff_host) / count
    stats.alpha_p95 = p95(eff_host)
    shape = [1] * host.dim()
    shape[0] = batch
    return eff.to(dtype=host.dtype, device=host.device).view(shape)
