"""``DistributedGrafter``: data-parallel ranks on ``torch.distributed``
(SPEC §10). Every rank applies the same directives at the same step, and
DistributedDataParallel is re-wrapped the same way on every rank whenever
the set of trainable parameters changes.

Launch with ``torchrun``; every rank runs the same code::

    dist.init_process_group("nccl" or "gloo")
    grafter = DistributedGrafter.connect("kasminad.sock", run_id="run-1")   # only rank 0 connects
    grafter.register(model, sites={"hidden": "fc1"}, slots={"seed-a": "hidden"},
                     example_input=x[:2])
    grafter.bind(optimizer)
    for step in range(1, steps + 1):
        loss = criterion(grafter.ddp(x), y)        # the current DDP wrapper, every step
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        grafter.step(step, loss)                   # exchange, report (rank 0), directives

How a step goes, over a CPU (gloo) control group with a bounded timeout,
so control traffic never syncs a device:

1. every rank builds its own step report (its measurements, what it
   applied) and the ranks all-gather them as postcard bytes;
2. rank 0 merges them (``leyline::ranks``: loss mean, outputs finite on
   every rank, violations summed, cosine and latency max, and a digest of
   each seed's stage, α and kernel per rank), reports, fetches the kernel of
   every Attach, and broadcasts the answer stamped with the step it takes
   effect at — or the error it got, which every rank then raises;
3. every rank checks the stamp, applies the directives in order (each
   kernel's SHA-256 checked on each rank), sets ``requires_grad`` so that
   only seeds that run are trainable, checks that all ranks hold the same
   trainable parameters, and re-wraps DDP when that set changed.

No pickle crosses the control group: reports, directives, kernels and
settings are the contract's own postcard bytes; errors are their class
name, code and message.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import struct
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import kasmina
from kasmina import (
    Client,
    ConfigError,
    GraftError,
    KasminaError,
    RankBroadcast,
    RankError,
    RankSummary,
    Role,
    StepReport,
    TrainerSettings,
)
from kasmina.torch._grafter import Grafter
from kasmina.torch._slot import SeedSlot
from kasmina.torch._types import StepResult

__all__ = ["DistributedGrafter", "DEFAULT_CONTROL_TIMEOUT_S", "CONTROL_SLOT_BYTES"]

#: Seconds a control-group collective may wait for the other ranks (a rank
#: that died or hangs fails the others after this, instead of forever).
DEFAULT_CONTROL_TIMEOUT_S = 120.0
#: Bytes each rank sends in the first round of an exchange; a larger
#: message (a kernel, many seeds) costs one more round on that step only.
CONTROL_SLOT_BYTES = 4096

_OK = 0
_FAILED = 1
_HEADER = struct.Struct("<qqq")  # status, step, length


class _ControlGroup:
    """Byte exchange over a gloo group: all-gather from every rank, and
    broadcast from rank 0. Each is one collective while the message fits
    :data:`CONTROL_SLOT_BYTES`, two otherwise."""

    def __init__(self, timeout_s: float) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))

    def _collective(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, group=self.group, **kwargs)
        except RuntimeError as err:  # gloo reports timeouts and lost peers as RuntimeError
            raise RankError(
                f"the control group's {what} failed on rank {self.rank} (a rank died, hangs or is out of step): {err}",
                "control_group",
            ) from err

    def barrier(self) -> None:
        self._collective("barrier", dist.barrier)

    def destroy(self) -> None:
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None

    def all_gather(self, data: bytes) -> List[bytes]:
        slot, view = _buffer(8 + CONTROL_SLOT_BYTES)
        struct.pack_into("<q", slot, 0, len(data))
        if len(data) <= CONTROL_SLOT_BYTES:
            slot[8 : 8 + len(data)] = data
        out = [_buffer(len(slot)) for _ in range(self.world_size)]
        self._collective("all_gather", dist.all_gather, [t for _, t in out], view)
        lengths = [struct.unpack_from("<q", b, 0)[0] for b, _ in out]
        longest = max(lengths)
        if longest <= CONTROL_SLOT_BYTES:
            return [bytes(b[8 : 8 + n]) for (b, _), n in zip(out, lengths)]
        big, big_view = _buffer(longest)
        big[: len(data)] = data
        out = [_buffer(longest) for _ in range(self.world_size)]
        self._collective("all_gather", dist.all_gather, [t for _, t in out], big_view)
        return [bytes(b[:n]) for (b, _), n in zip(out, lengths)]

    def broadcast(self, status: int, step: int, data: bytes) -> Tuple[int, int, bytes]:
        """Rank 0's ``(status, step, data)`` on every rank (others pass anything)."""
        slot, view = _buffer(_HEADER.size + CONTROL_SLOT_BYTES)
        if self.rank == 0:
            _HEADER.pack_into(slot, 0, status, step, len(data))
            if len(data) <= CONTROL_SLOT_BYTES:
                slot[_HEADER.size : _HEADER.size + len(data)] = data
        self._collective("broadcast", dist.broadcast, view, src=0)
        status, step, length = _HEADER.unpack_from(slot, 0)
        if length <= CONTROL_SLOT_BYTES:
            return status, step, bytes(slot[_HEADER.size : _HEADER.size + length])
        big, big_view = _buffer(length)
        if self.rank == 0:
            big[:] = data
        self._collective("broadcast", dist.broadcast, big_view, src=0)
        return status, step, bytes(big)


def _buffer(size: int) -> Tuple[bytearray, torch.Tensor]:
    """A byte buffer and a uint8 tensor over the same memory: collectives
    write into the tensor, Python reads the bytes (no NumPy needed)."""
    buf = bytearray(size)
    return buf, torch.frombuffer(buf, dtype=torch.uint8)


def _encode_error(err: BaseException) -> bytes:
    if isinstance(err, KasminaError):
        name, code, message = type(err).__name__, err.code, err.message
    else:
        name, code, message = "RankError", "rank_failed", f"rank 0 failed: {type(err).__name__}: {err}"
    return f"{name}\n{code}\n{message}".encode("utf-8", "replace")


def _decode_error(data: bytes) -> KasminaError:
    name, code, message = (data.decode("utf-8", "replace").split("\n", 2) + ["", ""])[:3]
    cls = getattr(kasmina._errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, KasminaError)):
        cls = RankError
    return cls(f"{message} (raised on rank 0, broadcast to every rank)", code)


class _RankLink:
    """What the grafter calls its client, on every rank: rank 0 holds the
    real connection; every call is a collective over the control group that
    ends with rank 0's answer (or its error) on every rank."""

    def __init__(self, group: _ControlGroup, client: Optional[Client]) -> None:
        self.group = group
        self.client = client
        self.broadcast: Optional[RankBroadcast] = None
        self.summary: Optional[RankSummary] = None

    def _answer(self, step: int, produce) -> bytes:
        """Rank 0 runs ``produce()``; its bytes, or its error, reach every rank."""
        failure: Optional[BaseException] = None
        payload = b""
        if self.group.rank == 0:
            try:
                payload = produce()
            except Exception as err:  # noqa: BLE001 — any failure must reach the other ranks
                failure = err
                payload = _encode_error(err)
        status, _, data = self.group.broadcast(_FAILED if failure else _OK, step, payload)
        if failure is not None:
            raise failure
        if status != _OK:
            raise _decode_error(data)
        return data

    def register_host(self, registration: kasmina.HostRegistration) -> TrainerSettings:
        def produce() -> bytes:
            declared = kasmina.HostRegistration(
                registration.training_run_id,
                registration.sites,
                registration.slots,
                registration.held,
                registration.checkpoints,
                world_size=self.group.world_size,
            )
            return self.client.register_host(declared).to_bytes()

        return TrainerSettings.from_bytes(self._answer(-1, produce))

    def step_report(self, report: StepReport) -> List[Any]:
        parts = self.group.all_gather(report.to_bytes())
        data = self._answer(report.step, lambda: self.client.rank_step(parts))
        broadcast = RankBroadcast.from_bytes(data)
        if broadcast.step != report.step or broadcast.effective_step != report.step + 1:
            raise RankError(
                f"rank {self.group.rank} is at step {report.step} but rank 0 answered step {broadcast.step} "
                f"with directives for step {broadcast.effective_step}",
                "effective_step",
            )
        self.broadcast = broadcast
        self.summary = broadcast.summary
        return broadcast.directives

    def fetch_kernel(self, blueprint_id: str) -> kasmina.KernelArtifact:
        if self.broadcast is None:
            raise RankError("no rank broadcast yet: kernels arrive with a step's directives", "rank_protocol")
        return self.broadcast.kernel(blueprint_id)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class _ZeroGradTie(torch.autograd.Function):
    """Returns ``h`` unchanged and gives each of ``params`` a zero gradient.

    A seed that fails on one rank only (a NaN there) still takes part in
    DDP's gradient reduction on that rank — with zeros — so that every rank
    reduces the same buckets and none waits for a gradient that never
    comes (``find_unused_parameters`` stays off)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.specs = [(p.shape, p.dtype, p.device) for p in params]
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return (grad, *[torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.specs])


def tie_zero_grads(h: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``h``, with a zero-gradient dependency on each trainable ``param``."""
    live = [p for p in params if p.requires_grad]
    return _ZeroGradTie.apply(h, *live) if live else h


class DistributedGrafter(Grafter):
    """A :class:`Grafter` for a job of several data-parallel ranks.

    Build it on every rank after ``torch.distributed.init_process_group``;
    only global rank 0 connects to the control plane. Use :attr:`ddp` (the
    current ``DistributedDataParallel`` wrapper, replaced whenever the
    trainable parameters change) for every forward pass, and
    :meth:`no_sync` for gradient accumulation.

    ``apply_every``: exchange, report and apply directives only every that
    many steps (a step whose number is a multiple of it); the steps between
    only measure, and the control plane counts each exchange as one step of
    its lifecycle. ``ddp_options``: keyword arguments for every
    ``DistributedDataParallel`` built (``find_unused_parameters`` and
    ``mixed_precision`` are refused: the first is not needed, the second
    adds module hooks that a re-wrap cannot take back).
    """

    def __init__(
        self,
        client: Optional[Client],
        run_id: str,
        *,
        control_timeout: float = DEFAULT_CONTROL_TIMEOUT_S,
        apply_every: int = 1,
        ddp_options: Optional[Mapping[str, Any]] = None,
        **options: Any,
    ) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError(
                "torch.distributed is not initialised: call dist.init_process_group() on every rank first "
                "(torchrun sets the environment it reads)",
                "config",
            )
        if int(apply_every) < 1:
            raise ConfigError(f"apply_every = {apply_every}: must be at least 1", "config")
        ddp_options = dict(ddp_options or {})
        for refused in ("find_unused_parameters", "mixed_precision"):
            if ddp_options.get(refused):
                raise ConfigError(f"ddp_options: {refused} is not supported with seeds (see the class docs)", "config")
        group = _ControlGroup(control_timeout)
        if client is not None and group.rank != 0:
            raise ConfigError(f"rank {group.rank} was given a client: only rank 0 talks to the control plane", "config")
        super().__init__(_RankLink(group, client), run_id, **options)  # type: ignore[arg-type]
        self._group = group
        self._apply_every = int(apply_every)
        self._ddp_options = ddp_options
        self._ddp: Optional[DistributedDataParallel] = None
        self._wrapped: List[torch.Tensor] = []
        self._wrapped_key: Optional[bytes] = None
        self._accumulating = 0
        self._wraps = 0
        #: Re-wrap DDP when the trainable set changes. Only the test suite's
        #: negative control turns it off, to show that replicas then diverge.
        self._rewrap_enabled = True

    @classmethod
    def connect(  # type: ignore[override]
        cls,
        socket: Union[str, os.PathLike],
        run_id: str,
        *,
        name: str = "kasmina-torch",
        timeout: Optional[float] = 60.0,
        **options: Any,
    ) -> "DistributedGrafter":
        """On every rank: rank 0 connects to ``kasmina serve`` on ``socket``
        (a node-local socket), the other ranks connect to nothing. If rank
        0 cannot connect, every rank raises its error. ``options``:
        ``control_timeout``, ``apply_every``, ``ddp_options``, ``device``,
        ``checkpoint_dir`` (each rank adds ``rank-<n>``), ``max_checkpoints``."""
        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError("torch.distributed is not initialised: call dist.init_process_group() first", "config")
        rank = dist.get_rank()
        client: Optional[Client] = None
        failure: Optional[BaseException] = None
        if rank == 0:
            try:
                client = Client.connect(str(socket), Role.TRAINER, name, timeout=timeout)
            except KasminaError as err:
                failure = err
        if options.get("checkpoint_dir") is not None:
            options["checkpoint_dir"] = os.path.join(os.fspath(options["checkpoint_dir"]), f"rank-{rank}")
        grafter = cls.__new__(cls)
        # The group is built before anything can fail, so a failure reaches every rank.
        try:
            cls.__init__(grafter, client, run_id, **options)
        except BaseException:
            if client is not None:
                client.close()
            raise

        def connected() -> bytes:
            if failure is not None:
                raise failure
            return b""

        grafter._link()._answer(-1, connected)
        return grafter

    # ------------------------------------------------------------------ properties

    @property
    def rank(self) -> int:
        """This process's global rank."""
        return self._group.rank

    @property
    def world_size(self) -> int:
        """Ranks in the job."""
        return self._group.world_size

    @property
    def client(self) -> Client:
        """The control-plane connection (rank 0 only)."""
        link = self._link()
        if link.client is None:
            raise ConfigError(f"rank {self.rank} holds no control-plane client: only rank 0 talks to it", "config")
        return link.client

    @property
    def ddp(self) -> DistributedDataParallel:
        """The current DDP wrapper of the model: call it for every forward
        pass. It is replaced (same on every rank) when seeds start or stop
        training; do not keep it across :meth:`step`."""
        if self._ddp is None:
            raise ConfigError("register() the model first: the DDP wrapper is built then", "config")
        return self._ddp

    @property
    def wrapped_parameters(self) -> int:
        """Elements of the parameters the current DDP wrapper reduces."""
        return sum(p.numel() for p in self._wrapped)

    @property
    def wraps(self) -> int:
        """How many DDP wrappers were built (1 at registration, +1 per change)."""
        return self._wraps

    @property
    def rank_summary(self) -> Optional[RankSummary]:
        """What every rank applied before the last exchange, as rank 0
        reported it (``agreed`` is False if any seed differed)."""
        return self._link().summary

    def _link(self) -> _RankLink:
        return self._client  # type: ignore[return-value]

    # ------------------------------------------------------------------ set-up

    def register(self, model: nn.Module, *args: Any, **kwargs: Any) -> TrainerSettings:
        """As :meth:`Grafter.register`, on every rank with the same model,
        sites, slots and (to resume) the same ``state_dict``; rank 0
        registers with ``world_size``. Then builds the first DDP wrapper."""
        settings = super().register(model, *args, **kwargs)
        for site in self._sites.values():
            site.tie_host = self._tie_host
        self._sync_requires_grad()
        self._check_trainable_agree()
        self._wrap()
        return settings

    def reconnect(self, *args: Any, **kwargs: Any) -> TrainerSettings:
        raise ConfigError(
            "reconnect() is not supported for data-parallel ranks yet: restart the job and register with the "
            "state_dict on every rank",
            "config",
        )

    def close(self) -> None:
        """On every rank together: waits for the other ranks (so that none
        tears down the control group while another still uses it), closes
        rank 0's connection and the control group."""
        try:
            self._group.barrier()
        finally:
            super().close()
            self._group.destroy()

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Gradient accumulation: DDP's ``no_sync`` on the current wrapper.
        :meth:`step` refuses to run inside it, so a re-wrap never splits an
        accumulation."""
        self._accumulating += 1
        try:
            with self.ddp.no_sync():
                yield
        finally:
            self._accumulating -= 1

    # ------------------------------------------------------------------ the step

    def step(self, step: int, loss: Union[float, torch.Tensor], metric: Optional[float] = None) -> StepResult:
        """Ends training step ``step`` on every rank together (see the module
        docs). Call it on every rank, after ``optimizer.step()``, outside
        :meth:`no_sync`. Between exchanges (``apply_every``) it only
        measures gradient isolation."""
        if self._accumulating:
            raise ConfigError("step() inside no_sync(): finish the gradient accumulation first", "config")
        if self._ddp is None:
            raise ConfigError("register() the model before the first step", "config")
        if int(step) % self._apply_every != 0:
            self._check_optimizer_bound()
            self._measure_isolation()
            return StepResult()
        failure: Optional[GraftError] = None
        try:
            result = super().step(step, loss, metric)
        except GraftError as err:
            # Applied what could be applied; every rank re-wraps the same way before raising.
            failure = err
            result = StepResult(list(self._link().broadcast.directives) if self._link().broadcast else [], err.events)
        if result.directives:
            self._sync_requires_grad()
            self._check_trainable_agree()
            if self._rewrap_enabled and self._trainable_key() != self._wrapped_key:
                self._wrap()
        if failure is not None:
            raise failure
        return result

    # ------------------------------------------------------------------ internals

    def _tie_host(self, site: Any, h: torch.Tensor) -> torch.Tensor:
        """While a seed blends, the site's output carries no gradient back to
        the host (SPEC §5: the host branch is detached), so the host
        parameters before the site would miss DDP's reduction on this step:
        they get a zero gradient instead."""
        if any(slot.detaches_host() for slot in site.slots.values()):
            return tie_zero_grads(h, self._host_params)
        return h

    def _graft(self, *args: Any, **kwargs: Any) -> SeedSlot:
        slot = super()._graft(*args, **kwargs)
        slot.tie_grads = tie_zero_grads
        return slot

    def _sync_requires_grad(self) -> None:
        """Only seeds that run this step are trainable: DDP then expects a
        gradient from exactly the parameters that get one."""
        for slot, _module in self._slots().values():
            running = slot.is_running()
            for p in slot.trainable:
                p.requires_grad_(running)

    def _trainable(self) -> List[Tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in self._model.named_parameters() if p.requires_grad]

    def _trainable_key(self) -> bytes:
        h = hashlib.sha256()
        for name, p in self._trainable():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}\n".encode())
        return h.digest()

    def _check_trainable_agree(self) -> None:
        """Every rank must wrap the same parameters, or DDP's collectives
        would pair different buckets: checked before any wrapper is built."""
        keys = self._group.all_gather(self._trainable_key())
        if any(k != keys[0] for k in keys):
            differ = [r for r, k in enumerate(keys) if k != keys[0]]
            raise RankError(
                f"ranks {differ} hold other trainable parameters than rank 0 after applying the same directives; "
                "no DDP wrapper was built",
                "trainable_mismatch",
            )

    def _wrap(self) -> None:
        old, self._ddp = self._ddp, None
        if old is not None and hasattr(old, "_remove_autograd_hooks"):
            # The old reducer's hooks would otherwise still fire on the parameters.
            old._remove_autograd_hooks()
        del old
        self._ddp = DistributedDataParallel(self._model, **self._ddp_options)
        self._wrapped = [p for _, p in self._trainable()]
        self._wrapped_key = self._trainable_key()
        self._wraps += 1

