"""The grafter's seeds (a mixin of :class:`kasmina.torch.Grafter`): loading
a kernel only after its SHA-256 matches, grafting it into its site's
``SeedSite`` and taking it out again, swapping seeds out when the control
plane is lost, and seed parameter groups joining and leaving the bound
optimizer."""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from kasmina import ConfigError, GraftError, KasminaError
from kasmina.torch._blend import BlendParams
from kasmina.torch._slot import RUNNING_STAGES, SeedSlot
from kasmina.torch._types import SEED_GROUP_KEY


class _SeedsMixin:
    # ------------------------------------------------------------------ the optimizer

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Seeds' parameters join ``optimizer`` as their own param group when
        they start training and leave it when they are removed. The group
        takes the optimizer's defaults and the current learning rate of its
        first group; a schedule that sets every group's ``lr`` carries them
        along (LR schedulers built before a group joins do not know it)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(f"bind() takes a torch.optim.Optimizer, got {type(optimizer).__name__}", "config")
        if self._optimizer is not None and self._optimizer is not optimizer:
            for seed_id in list(self._optimizer_seeds()):
                self._leave(seed_id)
        self._optimizer = optimizer
        for seed_id in self._pending_joins:
            self._join(seed_id)
        self._pending_joins = []

    # ------------------------------------------------------------------ internals: seeds

    def _slots(self) -> Dict[str, Tuple[SeedSlot, nn.Module]]:
        out = {}
        for site in self._sites.values():
            for seed_id, slot in site.slots.items():
                out[seed_id] = (slot, site.seeds[seed_id])
        return out

    def _slot(self, seed_id: str) -> Optional[SeedSlot]:
        site = self._slot_site.get(seed_id)
        if site is None or site not in self._sites:
            return None
        return self._sites[site].slots.get(seed_id)

    def _load_verified(
        self, seed_id: str, blueprint_id: str, expected_sha: str, served_sha: str, data: bytes
    ) -> nn.Module:
        """The kernel, loaded only after its SHA-256 matches the directive."""
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha or served_sha != expected_sha:
            raise GraftError(
                f"seed {seed_id}: kernel {blueprint_id} has SHA-256 {digest} (served as {served_sha}), "
                f"not the {expected_sha} the directive names; it was not grafted",
                "digest_mismatch",
                seed_id=seed_id,
            )
        try:
            with warnings.catch_warnings():
                # TorchScript is the contract's artifact format; its deprecation notice is not the user's to act on.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=self._kernel_device(seed_id))
        except Exception as err:  # noqa: BLE001 — foreign bytes: any failure to load refuses the kernel
            raise GraftError(
                f"seed {seed_id}: kernel {blueprint_id} does not load: {err}", "kernel_load_failed", seed_id=seed_id
            ) from err
        if not any(p.requires_grad for p in module.parameters()):
            raise GraftError(
                f"seed {seed_id}: kernel {blueprint_id} has no trainable parameters (a seed that cannot learn is a placeholder)",
                "kernel_load_failed",
                seed_id=seed_id,
            )
        return module

    def _kernel_device(self, seed_id: str) -> torch.device:
        """Where a seed's kernel goes: the device given to the grafter, else
        the device of its site's layer now (the model may have moved since
        registration), else the CPU."""
        if self._device is not None:
            return self._device
        site = self._sites.get(self._slot_site.get(seed_id, ""))
        if site is not None:
            for t in list(site.base_layer.parameters()) + list(site.base_layer.buffers()):
                return t.device
        return torch.device("cpu")

    def _graft(
        self, seed_id: str, site: str, blueprint_id: str, sha: str, params: BlendParams, data: bytes, module: nn.Module
    ) -> SeedSlot:
        # A re-attach replaces whatever the slot held before.
        self._ungraft(seed_id)
        wrapper = self._sites[site]
        module.eval()
        wrapper.seeds[seed_id] = module
        slot = SeedSlot(seed_id=seed_id, site=site, blueprint_id=blueprint_id, sha256=sha, params=params, kernel=data)
        slot.trainable = [p for p in module.parameters() if p.requires_grad]
        wrapper.slots[seed_id] = slot
        return slot

    def _graft_saved(self, seeds: Mapping[str, Mapping[str, Any]], optimizer_order: Sequence[str]) -> List[str]:
        """Grafts saved slots (state_dict or checkpoint); all verified first."""
        loaded = []
        for seed_id, st in seeds.items():
            site = st["site"]
            if site not in self._sites or self._slot_site.get(seed_id) != site:
                raise ConfigError(f"saved seed {seed_id} at site {site!r} is not a slot of this registration", "config")
            b = st["blend"]
            params = BlendParams(
                mode=b["mode"],
                alpha_vec=tuple(b["alpha_vec"]),
                gate_k=b["gate_k"],
                gate_tau=b["gate_tau"],
                alpha_lo=b["alpha_lo"],
                alpha_hi=b["alpha_hi"],
                logits_required=b["logits_required"],
            )
            BlendParams.from_spec(params.to_spec())  # the contract's rules, again
            module = self._load_verified(seed_id, st["blueprint_id"], st["sha256"], st["sha256"], st["kernel"])
            loaded.append((seed_id, site, st, params, module))
        for seed_id, site, st, params, module in loaded:
            slot = self._graft(seed_id, site, st["blueprint_id"], st["sha256"], params, st["kernel"], module)
            slot.stage = st["stage"]
            slot.blending_alpha = float(st["alpha"])
            slot.paused = bool(st["paused"])
            slot.fossilized = bool(st["fossilized"])
            module.train(slot.effective_stage() in RUNNING_STAGES)
        trained = [sid for sid, _, st, _, _ in loaded if st["fossilized"] or st["stage"] in RUNNING_STAGES]
        for seed_id in list(optimizer_order) + [s for s in trained if s not in optimizer_order]:
            if seed_id in trained:
                self._join(seed_id)
        return [sid for sid, *_ in loaded]

    def _ungraft(self, seed_id: str) -> bool:
        """Removes a seed from the model and the optimizer. True if it was grafted."""
        self._leave(seed_id)
        for site in self._sites.values():
            if seed_id in site.slots:
                del site.slots[seed_id]
                del site.seeds[seed_id]
                return True
        return False

    def _lose_control_plane(self, err: KasminaError) -> None:
        """No control plane, no gates: every seed that is not fossilized is
        swapped out of the forward path (kept, so `reconnect` can declare it
        held and the control plane can adopt it)."""
        self._lost = f"{err.code}: {err.message}"
        for slot, _ in self._slots().values():
            if not slot.fossilized:
                slot.suspended = True

    # ------------------------------------------------------------------ internals: optimizer

    def _optimizer_seeds(self) -> List[str]:
        if self._optimizer is None:
            return []
        return [g[SEED_GROUP_KEY] for g in self._optimizer.param_groups if SEED_GROUP_KEY in g]

    def _join(self, seed_id: str) -> None:
        found = self._slots().get(seed_id)
        if found is None:
            return
        if self._optimizer is None:
            if seed_id not in self._pending_joins:
                self._pending_joins = self._pending_joins + [seed_id]
            return
        if seed_id in self._optimizer_seeds():
            return
        # The kernel's trainable parameters as grafted (a data-parallel grafter
        # may have switched requires_grad off while the seed does not run).
        params = list(found[0].trainable)
        group = {"params": params, SEED_GROUP_KEY: seed_id}
        if self._optimizer.param_groups:
            group["lr"] = self._optimizer.param_groups[0]["lr"]
        try:
            self._optimizer.add_param_group(group)
        except ValueError as err:  # a parameter already trained by another group: never train it twice
            raise GraftError(
                f"seed {seed_id}: its parameters cannot join the optimizer: {err}", "invalid_directive", seed_id=seed_id
            ) from err

    def _leave(self, seed_id: str) -> None:
        self._pending_joins = [s for s in self._pending_joins if s != seed_id]
        if self._optimizer is None:
            return
        groups = self._optimizer.param_groups
        for i, group in enumerate(groups):
            if group.get(SEED_GROUP_KEY) == seed_id:
                for p in group["params"]:
                    self._optimizer.state.pop(p, None)
                del groups[i]
                return

    def _check_optimizer_bound(self) -> None:
        if self._optimizer is None:
            learning = [sid for sid, (slot, _) in self._slots().items() if slot.effective_stage() in RUNNING_STAGES]
            if learning:
                raise ConfigError(
                    f"seeds {learning} train but no optimizer is bound: call grafter.bind(optimizer)", "config"
                )
