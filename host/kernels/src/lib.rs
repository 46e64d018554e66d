//! Kernel supply (SPEC.md §7): a seed runs the exact verified artifact its
//! catalog entry names, or it gets no kernel and an error that says why.
//! There is no substitute kernel of any kind in this crate.
//!
//! Module map, in the order a kernel travels:
//! - [`urza`]: the blueprint library on disk — [`urza::catalog`] (descriptors,
//!   digests, atomic catalog writes, size caps), [`urza::fetch`] (strict
//!   read: one pass, hashed as read, length and SHA-256 checked),
//!   [`urza::verify`] (re-hash all, quarantine the corrupt); `publish`,
//!   `list`, `show`, `verify_all` back the `kasmina urza …` CLI verbs;
//! - [`archive_check`]: what the archive's pickles declare must fit in the
//!   archive, checked before libtorch reads it (its loader reserves first);
//! - [`kernel`]: verified bytes → `tch::CModule` (inference, shared) or a
//!   per-seed `TrainableCModule`, and the prewarm probe that checks the
//!   declared interface and measures p50/p95 latency (gates G2/G3);
//! - [`alloc_cap`]: the CPU memory cap each prewarm forward pass of the
//!   kernel's own code runs under (a libtorch allocator wrapper in C++);
//! - [`manager`]: the [`KernelLoadManager`] — moka cache (entries + bytes +
//!   TTL, one load per kernel however many callers), fetch breaker,
//!   telemetry, quarantine, cumulative/interval [`manager::stats`], and
//!   [`manager::prefetch`] on a small owned tokio runtime (timeouts, seed
//!   cancellation, bounded shutdown);
//! - [`error`]: [`KernelError`], the one error a caller of the manager sees;
//! - [`fixtures`]: the committed TorchScript blueprints for tests and demos.

pub mod alloc_cap;
pub mod archive_check;
pub mod archive_storage;
pub mod error;
pub mod fixtures;
pub mod kernel;
pub mod manager;
pub mod urza;

pub use error::KernelError;
pub use kernel::{LoadedKernel, PROBE_BATCH, PrewarmLimits, PrewarmReport};
pub use manager::{
    CacheStats, KernelLoadManager, KernelManagerConfig, PrefetchEvent, PrefetchEvents, RecvError, ShutdownReport,
    StatsSnapshot,
};
pub use urza::{CatalogEntry, FetchError, UrzaError, UrzaLibrary, VerifiedArtifact, VerifyOutcome, VerifyReport};
