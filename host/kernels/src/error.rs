//! The kernel load manager's error: why a seed gets no kernel.

use leyline::prefetch::PrefetchErrorKind;

use crate::urza::FetchError;

/// Why a kernel could not be supplied. There is no fallback: the caller gets
/// this error and the seed gets no kernel.
///
/// `Clone` because concurrent requests for one blueprint share one load, and
/// every waiter receives the same failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KernelError {
    /// The strict fetch failed (unknown id, missing, quarantined, truncated,
    /// digest mismatch, unreadable).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The kernel does not accept its declared inputs or does not produce its
    /// declared outputs (shape, count or dtype).
    #[error("kernel {blueprint_id}: interface mismatch: {detail}")]
    InterfaceMismatch {
        /// The blueprint.
        blueprint_id: String,
        /// What differed.
        detail: String,
    },
    /// The verified bytes could not be loaded: refused by the archive
    /// check or by libtorch (not TorchScript, wrong version …), or the
    /// kernel's code passed the prewarm memory cap.
    #[error("kernel {blueprint_id} could not be loaded: {detail}")]
    LoadFailed {
        /// The blueprint.
        blueprint_id: String,
        /// What refused it, and why.
        detail: String,
    },
    /// The fetch circuit breaker is open: recent fetches kept failing.
    #[error("fetch circuit breaker is open; retry in {remaining_cooldown_ms} ms")]
    BreakerOpen {
        /// Milliseconds until the breaker probes again.
        remaining_cooldown_ms: u64,
    },
    /// A prefetch request is incomplete or out of bounds (never repaired).
    #[error("invalid prefetch request: {detail}")]
    InvalidRequest {
        /// What is wrong with it.
        detail: String,
    },
    /// Too many prefetches are in flight; the request was not started.
    #[error("prefetch refused: {cap} requests already in flight")]
    PrefetchQueueFull {
        /// The in-flight cap.
        cap: usize,
    },
    /// The manager's configuration is out of range (never defaulted).
    #[error("invalid kernel manager configuration: {detail}")]
    InvalidConfig {
        /// What is wrong.
        detail: String,
    },
    /// The prefetch runtime could not be started.
    #[error("prefetch runtime failed to start: {detail}")]
    RuntimeStart {
        /// The OS / tokio error.
        detail: String,
    },
    /// The manager has been shut down.
    #[error("kernel load manager is shut down")]
    ShutDown,
}

impl KernelError {
    /// The contract's error kind, for `PrefetchError` events.
    ///
    /// `PrefetchQueueFull` and `ShutDown` map to `Cancelled`: the request was
    /// refused before any work started (the contract has no "overloaded" kind).
    pub fn kind(&self) -> PrefetchErrorKind {
        match self {
            KernelError::Fetch(f) => match f {
                FetchError::UnknownBlueprint { .. } => PrefetchErrorKind::UnknownBlueprint,
                FetchError::ArtifactMissing { .. } | FetchError::ArtifactQuarantined { .. } | FetchError::Io { .. } => {
                    PrefetchErrorKind::ArtifactMissing
                }
                FetchError::SizeMismatch { .. } => PrefetchErrorKind::Truncated,
                FetchError::DigestMismatch { .. } => PrefetchErrorKind::DigestMismatch,
            },
            KernelError::InterfaceMismatch { .. } => PrefetchErrorKind::InterfaceMismatch,
            KernelError::LoadFailed { .. } => PrefetchErrorKind::LoadFailed,
            KernelError::BreakerOpen { .. } => PrefetchErrorKind::BreakerOpen,
            KernelError::InvalidRequest { .. } | KernelError::InvalidConfig { .. } => PrefetchErrorKind::InvalidRequest,
            KernelError::PrefetchQueueFull { .. } | KernelError::ShutDown | KernelError::RuntimeStart { .. } => {
                PrefetchErrorKind::Cancelled
            }
        }
    }

    /// Machine-readable reason code (telemetry attribute `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            KernelError::Fetch(f) => f.reason(),
            KernelError::InterfaceMismatch { .. } => "interface_mismatch",
            KernelError::LoadFailed { .. } => "load_failed",
            KernelError::BreakerOpen { .. } => "breaker_open",
            KernelError::InvalidRequest { .. } => "invalid_request",
            KernelError::PrefetchQueueFull { .. } => "prefetch_queue_full",
            KernelError::InvalidConfig { .. } => "invalid_config",
            KernelError::RuntimeStart { .. } => "runtime_start",
            KernelError::ShutDown => "shut_down",
        }
    }
}
