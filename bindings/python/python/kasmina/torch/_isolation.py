"""Gradient isolation (SPEC §6), as the Rust monitor measures it
(``host/tensor/src/isolation.rs``).

Host and seed gradients live on different parameters, so the common space
is the union of both parameter sets keyed by storage identity. For every
parameter ``k`` coordinates are sampled once and enter the host vector if
it is a host parameter, the seed vector if it is a seed's:

    cos = Σ_{p ∈ host ∩ seed} ‖g_p[idx]‖² / √(Σ_{p ∈ host} ‖g_p[idx]‖² · Σ_{p ∈ seed} ‖g_p[idx]‖²)

— 0 for isolated graphs whatever their width, approaching 1 as a shared
parameter dominates: normalised by both norms, so one threshold serves
every layer size. Sampling draws ``k`` indices per parameter with
replacement — O(k) memory, never a permutation of numel; parameters with
``numel ≤ k`` are taken whole. The indices of every sampled parameter come
from one ``torch.rand`` call (float64, scaled by each numel) and are
gathered with ``torch.take``; one fused ``torch._foreach_norm`` reduces
every sample and every whole gradient, and those norms are the only values
copied to the host (one sync per check): about one small op per parameter.
The union of the two parameter sets is worked out once per pair and reused
while no parameter moves.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch

__all__ = ["sampled_cosine"]


def _key(p: torch.Tensor) -> Tuple[int, int, torch.dtype]:
    return (p.data_ptr(), p.numel(), p.dtype)


_NUMELS: Dict[Tuple[Tuple[int, ...], str], torch.Tensor] = {}


def _numels(numels: Tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The sampled parameters' sizes as a [P, 1] float64 tensor (cached: the
    parameter set rarely changes)."""
    key = (numels, str(device))
    cached = _NUMELS.get(key)
    if cached is None:
        if len(_NUMELS) > 64:
            _NUMELS.clear()
        cached = torch.tensor(numels, dtype=torch.float64, device=device).view(-1, 1)
        _NUMELS[key] = cached
    return cached


class _Plan:
    """The union of one host/seed parameter pair, keyed by storage, worked
    out once: which parameters are host-only (role 0), seed-only (1) or
    shared (2), which are sampled and which taken whole."""

    __slots__ = ("params", "roles", "ptrs", "shared")

    def __init__(self, host_params: Sequence[torch.Tensor], seed_params: Sequence[torch.Tensor]) -> None:
        roles: Dict[Tuple[int, int, torch.dtype], List] = {}
        order: List[torch.Tensor] = []
        for is_seed, params in ((False, host_params), (True, seed_params)):
            for p in params:
                if p.numel() == 0:
                    continue
                key = _key(p)
                entry = roles.get(key)
                if entry is None:
                    entry = [False, False]
                    roles[key] = entry
                    order.append(p)
                entry[1 if is_seed else 0] = True
        self.params = order
        self.roles = [2 if h and s else (1 if s else 0) for h, s in roles.values()]
        self.ptrs = [p.data_ptr() for p in order]
        self.shared = sum(1 for r in self.roles if r == 2)

    def valid(self) -> bool:
        # A parameter moved (model.to(...)) re-keys the union.
        return all(p.data_ptr() == ptr for p, ptr in zip(self.params, self.ptrs))


_PLANS: Dict[Tuple[Tuple[int, ...], Tuple[int, ...]], _Plan] = {}


def _plan(host_params: Sequence[torch.Tensor], seed_params: Sequence[torch.Tensor]) -> _Plan:
    key = (tuple(map(id, host_params)), tuple(map(id, seed_params)))
    plan = _PLANS.get(key)
    if plan is None or not plan.valid():
        if len(_PLANS) > 64:
            _PLANS.clear()
        plan = _Plan(host_params, seed_params)
        _PLANS[key] = plan
    return plan


def sampled_cosine(
    host_params: Sequence[torch.Tensor], seed_params: Sequence[torch.Tensor], k: int
) -> Tuple[float, int]:
    """The identity-paired cosine and the number of shared parameters.
    Parameters without a gradient contribute nothing."""
    plan = _plan(host_params, seed_params)
    whole: List[torch.Tensor] = []
    whole_roles: List[int] = []
    sampled: List[torch.Tensor] = []
    sampled_roles: List[int] = []
    for p, role in zip(plan.params, plan.roles):
        g = p.grad
        if g is None:
            continue
        if g.numel() <= k:
            whole.append(g)
            whole_roles.append(role)
        else:
            sampled.append(g)
            sampled_roles.append(role)
    if not whole and not sampled:
        return 0.0, plan.shared
    parts: List[torch.Tensor] = []
    if sampled:
        device = sampled[0].device
        numels = _numels(tuple(g.numel() for g in sampled), device)
        draws = (torch.rand(len(sampled), k, dtype=torch.float64, device=device) * numels).long()
        # take() indexes the tensor as if flattened: one op per parameter.
        parts.extend(torch.take(g, idx) for g, idx in zip(sampled, draws.unbind(0)))
    parts.extend(whole)
    # One fused multi-tensor norm over every sample and every whole gradient.
    norms = torch._foreach_norm(parts)
    if len({n.dtype for n in norms}) > 1:
        norms = [n.to(torch.float64) for n in norms]
    values = torch.stack(norms).cpu().tolist()
    totals = [0.0, 0.0, 0.0]
    for role, norm in zip(sampled_roles + whole_roles, values):
        totals[role] += norm * norm
    host_only, seed_only, both = totals
    host = host_only + both
    seed = seed_only + both
    if not (math.isfinite(host) and math.isfinite(seed)):
        # Non-finite sampled gradients: the check cannot tell isolation from
        # overlap, so it reports the worst case (a violation the gates see)
        # rather than a number that means nothing.
        return 1.0, plan.shared
    denom = math.sqrt(host * seed)
    return (both / denom if denom > 0.0 else 0.0), plan.shared
