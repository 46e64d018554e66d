"""``Grafter``: the trainer side of Kasmina for a PyTorch model, the Python
twin of the Rust ``kasmina-trainer`` (``host/trainer``).

One object, a handful of calls::

    grafter = Grafter.connect("kasminad.sock", run_id="run-1")
    grafter.register(model, sites={"hidden": "fc1"}, slots={"seed-a": "hidden"},
                     example_input=x[:2])
    grafter.bind(optimizer)
    for step in range(1, steps + 1):
        loss = criterion(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        grafter.step(step, loss, metric=val_acc)      # report + directives

The control plane decides; the grafter applies. What a seed does wrong
(kernel error, wrong shape, NaN) is measured and reported, never raised:
the gates cull it. What the grafter cannot apply (an artifact whose digest
is not the directive's, a directive for a site it never registered) raises
:class:`kasmina.GraftError` after every other directive of the step was
applied, with the model left on the host output at that site. Losing the
control plane raises :class:`kasmina.TransportError` and swaps every seed
that is not fossilized out of the model until :meth:`Grafter.reconnect`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import operator
import os
import tempfile
import warnings
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import kasmina
from kasmina import (
    BlendReport,
    Client,
    ConfigError,
    GraftError,
    HeldSeed,
    HostRegistration,
    KasminaError,
    Role,
    SeedStage,
    SeedStepReport,
    SiteSpec,
    SlotSpec,
    StepOrderError,
    StepReport,
    TrainerSettings,
    TransportError,
)
from kasmina.torch._blend import BlendParams
from kasmina.torch._isolation import sampled_cosine
from kasmina.torch._site import ForwardContext, SeedSite
from kasmina.torch._slot import NON_FINITE, RUNNING_STAGES, SeedSlot, StepMeasure

from kasmina.torch._checkpoints import _CheckpointMixin
from kasmina.torch._directives import _DirectiveMixin
from kasmina.torch._types import (
    _LOST,
    _STAGES,
    DEFAULT_MAX_CHECKPOINTS,
    SEED_GROUP_KEY,
    STATE_FORMAT,
    SeedView,
    StepResult,
    TrainerEvent,
)

__all__ = ["Grafter", "StepResult", "TrainerEvent", "SeedView", "STATE_FORMAT"]


class Grafter(_DirectiveMixin, _CheckpointMixin):
    """Grows seeds in a PyTorch model under the control of ``kasmina serve``.

    Build it with :meth:`connect` (or from an existing trainer-role
    :class:`kasmina.Client`), then :meth:`register` the model, :meth:`bind`
    the optimizer and call :meth:`step` once per training step.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        device: Optional[Union[str, torch.device]] = None,
        checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
        max_checkpoints: int = DEFAULT_MAX_CHECKPOINTS,
    ) -> None:
        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigError("the training run id is empty: pass the run's real id", "config")
        if max_checkpoints < 1:
            raise ConfigError(f"max_checkpoints = {max_checkpoints}: must be at least 1", "config")
        self._client = client
        self.run_id = run_id
        self._device = torch.device(device) if device is not None else None
        self._context = ForwardContext()
        self._model: Optional[nn.Module] = None
        self._sites: Dict[str, SeedSite] = {}
        self._site_specs: List[SiteSpec] = []
        self._slot_site: Dict[str, str] = {}
        self._slot_order: List[str] = []
        self._settings: Optional[TrainerSettings] = None
        self._host_params: List[torch.Tensor] = []
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._last_step: Optional[int] = None
        self._lost: Optional[str] = None
        self._checkpoint_dir = checkpoint_dir
        self._owned_checkpoint_dir: Optional[tempfile.TemporaryDirectory] = None
        self._max_checkpoints = max_checkpoints
        self._checkpoints: "OrderedDict[str, Tuple[bool, Any]]" = OrderedDict()
        self._checkpoint_events: List[Any] = []
        self._pending_joins: List[str] = []

    # ------------------------------------------------------------------ set-up

    @classmethod
    def connect(
        cls,
        socket: Union[str, os.PathLike],
        run_id: str,
        *,
        name: str = "kasmina-torch",
        timeout: Optional[float] = 60.0,
        **options: Any,
    ) -> "Grafter":
        """Connects to ``kasmina serve`` on ``socket`` as a trainer.
        ``options``: ``device``, ``checkpoint_dir``, ``max_checkpoints``."""
        client = Client.connect(os.fspath(socket), Role.TRAINER, name, timeout=timeout)
        return cls(client, run_id, **options)

    @property
    def client(self) -> Client:
        """The control-plane connection."""
        return self._client

    @property
    def settings(self) -> TrainerSettings:
        """The settings the host answered the registration with."""
        if self._settings is None:
            raise ConfigError("not registered yet: call register() first", "config")
        return self._settings

    @property
    def model(self) -> Optional[nn.Module]:
        return self._model

    @property
    def last_step(self) -> Optional[int]:
        return self._last_step

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
        self._settings = settings
        return settings

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

    # ------------------------------------------------------------------ forward helpers

    @contextlib.contextmanager
    def logits(self, logits: torch.Tensor) -> Iterator[None]:
        """This batch's classification logits ``[N, classes]`` for the
        forward pass run inside the block: what CONFIDENCE seeds gate on.

        ``with grafter.logits(host_logits): out = model(x)``
        """
        previous = self._context.logits
        self._context.logits = logits
        try:
            yield
        finally:
            self._context.logits = previous

    @contextlib.contextmanager
    def host_only(self) -> Iterator[None]:
        """Runs the block with every seed swapped out (the host model alone),
        e.g. to compute the host's own logits for CONFIDENCE gating."""
        previous = self._context.host_only
        self._context.host_only = True
        try:
            yield
        finally:
            self._context.host_only = previous

    # ------------------------------------------------------------------ the step

    def step(self, step: int, loss: Union[float, torch.Tensor], metric: Optional[float] = None) -> StepResult:
        """Ends training step ``step``: measures gradient isolation of every
        seed that learns, reports the step (task loss, optional metric such
        as validation accuracy, each seed's measurements and blend
        statistics, checkpoint events) and applies the directives that come
        back, in order.

        Call it once per step, after ``loss.backward()`` and before the next
        ``optimizer.zero_grad()`` (the isolation check reads ``.grad``).
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
            None,
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

    # ------------------------------------------------------------------ views

    def seeds(self) -> Dict[str, SeedView]:
        """Every grafted seed, by id."""
        views = {}
        for seed_id, (slot, module) in self._slots().items():
            views[seed_id] = SeedView(
                site=slot.site,
                stage=_STAGES[slot.stage],
                blueprint_id=slot.blueprint_id,
                sha256=slot.sha256,
                alpha=slot.alpha(),
                paused=slot.paused,
                parameters=sum(p.numel() for p in module.parameters()),
                suspended=slot.suspended,
            )
        return views

    def seed_stage(self, seed_id: str):
        """The stage the grafter runs ``seed_id`` in, or None if not grafted."""
        found = self._slots().get(seed_id)
        return _STAGES[found[0].stage] if found else None

    def seed_failure(self, seed_id: str) -> Optional[str]:
        """The failure recorded for ``seed_id`` in the current step, if any."""
        found = self._slots().get(seed_id)
        return found[0].measure.failure if found else None

    def fossilized_parameters(self) -> int:
        """Parameters of fossilized seeds: what growing added to the model."""
        return sum(v.parameters for v in self.seeds().values() if v.stage == SeedStage.FOSSILIZED)

    def close(self) -> None:
        """Closes the control-plane connection (the model keeps its seeds)."""
        self._client.close()
        if self._owned_checkpoint_dir is not None:
            self._owned_checkpoint_dir.cleanup()
            self._owned_checkpoint_dir = None

    def __enter__(self) -> "Grafter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        seeds = ", ".join(f"{k}:{v.stage.name}" for k, v in self.seeds().items())
        return (
            f"Grafter(run_id={self.run_id!r}, sites={list(self._sites)}, seeds=[{seeds}], last_step={self._last_step})"
        )

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


def _unique(params: List[torch.Tensor]) -> List[torch.Tensor]:
    seen = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
