"""``SeedSite``: the wrapper a seed site's submodule is replaced by, in the
manner of adapter libraries (PEFT's ``base_layer`` + ``ModuleDict`` of
adapters): the original layer stays as ``base_layer``; seeds live in
``seeds``, an ``nn.ModuleDict`` keyed by seed id, so ``model.state_dict()``
carries their weights and ``model.to(...)`` moves them. The forward is
``base_layer(...)`` followed by every grafted seed at this site, in slot
order (SPEC §5 stage table, :mod:`kasmina.torch._slot`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from kasmina.torch._slot import SeedSlot

__all__ = ["SeedSite", "ForwardContext"]


class ForwardContext:
    """Per-batch context shared by the grafter and its sites: this batch's
    classification logits (CONFIDENCE) and whether seeds are swapped out."""

    __slots__ = ("logits", "host_only")

    def __init__(self) -> None:
        self.logits: Optional[torch.Tensor] = None
        self.host_only: bool = False


class SeedSite(nn.Module):
    """A seed site: ``base_layer`` plus the seeds grafted after it.

    Users never build one: :meth:`kasmina.torch.Grafter.register` replaces
    the named submodule with it. Treat ``slots`` as read-only.
    """

    def __init__(self, site: str, base_layer: nn.Module, slot_order: List[str], context: ForwardContext) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.seeds = nn.ModuleDict()
        self.site = site
        self.slot_order = list(slot_order)
        self.slots: Dict[str, SeedSlot] = {}
        self._context = context
        #: Data-parallel ranks: applied to the site's training output, so
        #: that host parameters a blend cut off still get a (zero) gradient.
        self.tie_host: Optional[Callable[["SeedSite", torch.Tensor], torch.Tensor]] = None

    def forward(self, *args, **kwargs):
        h = self.base_layer(*args, **kwargs)
        if not self.slots or self._context.host_only:
            return h
        if not isinstance(h, torch.Tensor):
            raise TypeError(
                f"seed site {self.site!r}: {type(self.base_layer).__name__} returned {type(h).__name__}; "
                "a seed site must be a module that returns one tensor"
            )
        train = self.training and torch.is_grad_enabled()
        logits = self._context.logits
        for seed_id in self.slot_order:
            slot = self.slots.get(seed_id)
            if slot is not None:
                h = slot.run(h, self.seeds[seed_id], train, logits)
        if train and self.tie_host is not None:
            h = self.tie_host(self, h)
        return h

    def extra_repr(self) -> str:
        grafted = ", ".join(f"{sid}:{slot.effective_stage()}" for sid, slot in self.slots.items())
        return f"site={self.site!r}, seeds=[{grafted}]"
