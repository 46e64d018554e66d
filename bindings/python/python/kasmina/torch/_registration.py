"""The grafter's registration (a mixin of :class:`kasmina.torch.Grafter`):
wrapping each seed site after probing its shape on an example input,
registering with the control plane, and resuming — ``state_dict``,
``load_state_dict``, ``reconnect`` — by declaring the seeds it holds."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from kasmina import (
    Client,
    ConfigError,
    HeldSeed,
    HostRegistration,
    KasminaError,
    Role,
    SiteSpec,
    SlotSpec,
    TrainerSettings,
)
from kasmina.torch._site import SeedSite
from kasmina.torch._types import _LOST, _STAGES, STATE_FORMAT


class _RegistrationMixin:
    # ------------------------------------------------------------------ set-up

    def register(
        self,
        model: nn.Module,
        sites: Mapping[str, str],
        slots: Mapping[str, str],
        example_input: Any,
        *,
        state_dict: Optional[Mapping[str, Any]] = None,
    ) -> TrainerSettings:
        """Wraps each seed site and registers the model with the control plane.

        ``sites`` maps a site name to the dotted path of the submodule whose
        output is the site (``{"hidden": "encoder.fc1"}``); that submodule is
        replaced by a :class:`SeedSite` keeping it as ``base_layer``.
        ``slots`` maps each seed id commands may target to its site.
        ``example_input`` (a tensor, or a tuple of positional arguments) is
        run once without gradients to learn each site's feature shape and
        the sites' forward order. ``state_dict`` resumes: the seeds it holds
        are grafted again and declared in the registration, so the control
        plane adopts them instead of starting over.
        """
        if self._model is not None:
            raise ConfigError("this grafter already registered a model; use a new Grafter", "config")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}", "config")
        if not sites:
            raise ConfigError("no seed sites: name at least one, e.g. sites={'hidden': 'fc1'}", "config")
        for seed_id, site in slots.items():
            if site not in sites:
                raise ConfigError(
                    f"slot {seed_id!r} names site {site!r}, which is not in sites ({sorted(sites)})", "config"
                )
            if not seed_id or "." in seed_id:
                raise ConfigError(f"seed id {seed_id!r}: must be non-empty and contain no '.'", "config")
        targets: Dict[str, nn.Module] = {}
        for site, path in sites.items():
            try:
                module = model.get_submodule(path)
            except AttributeError as err:
                raise ConfigError(f"site {site!r}: the model has no submodule {path!r} ({err})", "config") from err
            if module is model:
                raise ConfigError(f"site {site!r}: the whole model cannot be a seed site; name a submodule", "config")
            if isinstance(module, SeedSite):
                raise ConfigError(f"site {site!r}: {path!r} is already a seed site", "config")
            targets[site] = module
        shapes, order = self._probe(model, targets, example_input)
        self._host_params = _unique([p for p in model.parameters() if p.requires_grad])
        for site in order:
            path = sites[site]
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            wrapper = SeedSite(site, targets[site], [s for s, t in slots.items() if t == site], self._context)
            setattr(parent, child, wrapper)
            self._sites[site] = wrapper
        self._site_specs = [SiteSpec(site, shapes[site]) for site in order]
        self._slot_site = dict(slots)
        self._slot_order = list(slots)
        self._model = model
        held: List[HeldSeed] = []
        if state_dict is not None:
            self._restore_state(state_dict)
            held = self._held()
        return self._register(held)

    def _probe(self, model: nn.Module, targets: Mapping[str, nn.Module], example_input: Any):
        """Runs ``example_input`` once, recording each site's output shape and call order."""
        shapes: Dict[str, List[Optional[int]]] = {}
        order: List[str] = []
        hooks = []
        for site, module in targets.items():

            def hook(_module, _inputs, output, site=site):
                if site in shapes:
                    return
                if not isinstance(output, torch.Tensor):
                    raise ConfigError(
                        f"site {site!r}: the submodule returned {type(output).__name__}; a seed site must return one tensor",
                        "config",
                    )
                shapes[site] = [None] + [int(d) for d in output.shape[1:]]
                order.append(site)

            hooks.append(module.register_forward_hook(hook))
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                args = example_input if isinstance(example_input, tuple) else (example_input,)
                model(*args)
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        missing = [s for s in targets if s not in shapes]
        if missing:
            raise ConfigError(f"sites {missing} did not run on the example input; check their paths", "config")
        return shapes, order

    def _register(self, held: List[HeldSeed]) -> TrainerSettings:
        registration = HostRegistration(
            self.run_id,
            self._site_specs,
            [SlotSpec(s, self._slot_site[s]) for s in self._slot_order],
            held,
            list(self._checkpoints),
        )
        try:
            settings = self._client.register_host(registration)
        except _LOST as err:
            self._lose_control_plane(err)
            raise
        iso = settings.isolation
        if not (0.0 < iso.cosine_threshold <= 1.0) or iso.samples_per_param < 1:
            raise ConfigError(f"the host sent unusable isolation settings: {iso}", "config")
        self._check_distillation_settings(settings)
        self._settings = settings
        return settings

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> Dict[str, Any]:
        """What :meth:`load_state_dict` (or ``register(state_dict=...)``)
        needs to resume: every grafted seed's slot (stage, α, pause, blend,
        the verified kernel bytes and their digest), the last step, and the
        order of the seeds' optimizer groups. Seed *weights* are in
        ``model.state_dict()`` (the seeds are submodules); save both."""
        return {
            "format": STATE_FORMAT,
            "run_id": self.run_id,
            "last_step": self._last_step,
            "seeds": {seed_id: slot.state() for seed_id, (slot, _) in self._slots().items()},
            "optimizer_seeds": list(self._optimizer_seeds()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> TrainerSettings:
        """Resumes from :meth:`state_dict`: grafts the saved seeds again (each
        kernel verified against its digest), re-joins the bound optimizer in
        the saved group order, and re-registers declaring the seeds held, so
        the control plane adopts them. Then load ``model.state_dict()`` (seed
        weights) and the optimizer's state."""
        if self._model is None:
            raise ConfigError("register() the model before load_state_dict()", "config")
        self._restore_state(state)
        return self._register(self._held())

    def reconnect(
        self,
        socket: Optional[Union[str, os.PathLike]] = None,
        *,
        client: Optional[Client] = None,
        name: str = "kasmina-torch",
        timeout: Optional[float] = 60.0,
    ) -> TrainerSettings:
        """Re-registers over a new connection (a daemon that restarted, or the
        same one): declares the seeds this grafter still holds and the
        rollback checkpoints it keeps, so the control plane adopts them after
        checking each kernel's digest, and swaps suspended seeds back in.
        The resynchronising directives arrive with the next :meth:`step`."""
        if self._model is None:
            raise ConfigError("register() the model before reconnect()", "config")
        if (socket is None) == (client is None):
            raise ConfigError("reconnect() takes a socket or a client, one of them", "config")
        new = client if client is not None else Client.connect(os.fspath(socket), Role.TRAINER, name, timeout=timeout)
        old, self._client = self._client, new
        try:
            settings = self._register(self._held())
        except KasminaError:
            self._client = old
            raise
        old.close()
        self._lost = None
        for slot, _ in self._slots().values():
            slot.suspended = False
        return settings

    def _restore_state(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(
                f"not a grafter state (format {state.get('format')!r}, expected {STATE_FORMAT!r})", "config"
            )
        if state.get("run_id") != self.run_id:
            raise ConfigError(f"state is for run {state.get('run_id')!r}, this grafter runs {self.run_id!r}", "config")
        grafted = self._graft_saved(state["seeds"], state.get("optimizer_seeds", []))
        for seed_id in list(self._slots()):
            if seed_id not in grafted:
                self._ungraft(seed_id)
        self._last_step = state.get("last_step")

    def _held(self) -> List[HeldSeed]:
        return [
            HeldSeed(seed_id, slot.blueprint_id, slot.sha256, _STAGES[slot.stage], slot.alpha(), slot.paused)
            for seed_id, (slot, _) in sorted(self._slots().items())
        ]


def _unique(params: List[torch.Tensor]) -> List[torch.Tensor]:
    seen = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
