"""Errors raised by kasmina. Every one is a :class:`KasminaError` with a
machine-readable ``code`` (a reason code of the contract, or one of the
codes listed on each class), so callers can branch on ``err.code`` rather
than on message text. The native module instantiates these classes; they
live in Python so they read, subclass and pickle like any exception.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "KasminaError",
    "ApiError",
    "BadRequestError",
    "NotFoundError",
    "KernelUnavailableError",
    "NotRegisteredError",
    "TransportError",
    "ShuttingDownError",
    "InternalError",
    "JournalUnavailableError",
    "HmacKeyError",
    "BlendSpecError",
    "CommandRejected",
    "GraftError",
    "ConfigError",
    "StepOrderError",
    "RankError",
]


class KasminaError(Exception):
    """Base class. ``code`` is machine-readable; ``message`` says what to do."""

    #: The code an instance carries when none is given.
    default_code = "kasmina_error"
    code: str
    message: str

    def __init__(self, message: str, code: Optional[str] = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        for key, value in extra.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __reduce__(self):  # keep code and extras across pickling (multiprocessing)
        extra = {k: v for k, v in self.__dict__.items() if k not in ("message", "code")}
        return (_rebuild, (type(self), self.message, self.code, extra))


def _rebuild(cls, message, code, extra):
    return cls(message, code, **extra)


class ApiError(KasminaError):
    """The control plane could not answer (codes: the ``ApiErrorCode`` names)."""

    default_code = "api_error"


class BadRequestError(ApiError):
    """``bad_request``: malformed request, or not allowed for this role/state."""

    default_code = "bad_request"


class NotFoundError(ApiError):
    """``not_found``: the named thing does not exist."""

    default_code = "not_found"


class KernelUnavailableError(ApiError):
    """``kernel_unavailable``: the kernel could not be supplied (see message)."""

    default_code = "kernel_unavailable"


class NotRegisteredError(ApiError):
    """``not_registered``: no model is registered yet."""

    default_code = "not_registered"


class TransportError(ApiError):
    """``transport`` (connection lost, daemon gone, closed client) or
    ``refused`` (the daemon refused the handshake)."""

    default_code = "transport"


class ShuttingDownError(ApiError):
    """``shutting_down``: the daemon is stopping."""

    default_code = "shutting_down"


class InternalError(ApiError):
    """``internal``: a bug on the host side."""

    default_code = "internal"


class JournalUnavailableError(ApiError):
    """``journal_unavailable``: the daemon cannot write its decision journal
    (disk full, failing writes or fsyncs). Nothing of the call was applied,
    or, after a failed fsync, its outcome is unknown (the message says
    which). The daemon retries its journal on later calls; retry once it has
    room."""

    default_code = "journal_unavailable"


class HmacKeyError(KasminaError):
    """``key``: the HMAC key could not be loaded (never shows key material)."""

    default_code = "key"


class BlendSpecError(KasminaError):
    """``invalid_blend``: a blend spec breaks a contract rule; ``key`` names
    the annotation key at fault (``gate_k``, ``alpha_vec`` …)."""

    default_code = "invalid_blend"

    key: str


class CommandRejected(KasminaError):
    """The host rejected a command. ``code`` is the reason code
    (``invalid_signature``, ``nonce_replayed`` …); ``outcome`` the answer."""

    default_code = "rejected"

    outcome: Any


class GraftError(KasminaError):
    """A directive could not be applied to the model; the model is left
    with the host output at that site (no half-attached seed). Codes:
    ``digest_mismatch`` (the artifact is not the one the directive names),
    ``kernel_load_failed``, ``unknown_site``, ``unknown_slot``,
    ``unknown_seed``, ``invalid_blend``, ``invalid_directive``,
    ``fetch_failed`` (with ``cause`` the API error)."""

    default_code = "graft_failed"

    seed_id: Optional[str]


class ConfigError(KasminaError):
    """``config``: the caller's own set-up is unusable (names what is wrong).
    Knowledge distillation refines the code: ``teacher_over_budget`` (with
    ``needed`` and ``budget``, bytes), ``teacher_shares_parameters``, and
    for :func:`kasmina.torch.kd_loss` the Rust tensor plane's
    ``invalid_parameter``, ``wrong_rank``, ``shape_mismatch``."""

    default_code = "config"


class StepOrderError(KasminaError):
    """``step_order``: ``step()`` must be called once per step, in order."""

    default_code = "step_order"


class RankError(KasminaError):
    """Data-parallel ranks are out of step (``kasmina.torch`` distributed
    layer), raised on every rank together so that none hangs in a
    collective. Codes: ``not_in_lockstep`` (ranks at different steps),
    ``effective_step`` (a directive stamped for another step),
    ``trainable_mismatch`` (ranks would wrap different parameter sets),
    ``rank_protocol`` (undecodable control bytes), ``rank_failed`` (another
    rank failed before the exchange), ``control_group`` (the control group's
    collective failed or timed out)."""

    default_code = "ranks"
