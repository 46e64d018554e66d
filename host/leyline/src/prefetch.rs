//! Kernel prefetch messages (SPEC.md §7).

use serde::{Deserialize, Serialize};

/// Ask the kernel load manager to have a blueprint's kernel ready.
///
/// Every field is required: a prefetch without a real `training_run_id` is an
/// error, never given an invented one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchRequest {
    /// Unique id of this request.
    pub request_id: String,
    /// Seed the kernel is for.
    pub seed_id: String,
    /// Blueprint to fetch.
    pub blueprint_id: String,
    /// Training run the seed belongs to.
    pub training_run_id: String,
    /// When the request was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// The request is stale after this many ms.
    pub timeout_ms: u64,
}

/// The kernel is verified, loaded and prewarmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefetchReady {
    /// Request this answers.
    pub request_id: String,
    /// Seed the kernel is for.
    pub seed_id: String,
    /// Blueprint fetched.
    pub blueprint_id: String,
    /// SHA-256 (hex) of the verified artifact.
    pub artifact_sha256: String,
    /// Whether it came from the cache.
    pub cache_hit: bool,
    /// Time from request to ready, µs.
    pub latency_us: u64,
}

/// Why a prefetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrefetchErrorKind {
    /// The request itself was incomplete (e.g. no training run id).
    InvalidRequest,
    /// Urza does not know the blueprint.
    UnknownBlueprint,
    /// The artifact file is missing.
    ArtifactMissing,
    /// The artifact's bytes do not hash to the catalog digest.
    DigestMismatch,
    /// The artifact is shorter or longer than the catalog says.
    Truncated,
    /// The kernel's I/O does not match its declared interface.
    InterfaceMismatch,
    /// libtorch could not load the kernel.
    LoadFailed,
    /// The fetch circuit breaker is open.
    BreakerOpen,
    /// The request went stale before completing.
    TimedOut,
    /// The seed was retired or the manager shut down.
    Cancelled,
}

/// The kernel could not be supplied; the seed must not proceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchError {
    /// Request this answers.
    pub request_id: String,
    /// Seed the kernel was for.
    pub seed_id: String,
    /// Blueprint requested.
    pub blueprint_id: String,
    /// What went wrong.
    pub kind: PrefetchErrorKind,
    /// Detail for the operator.
    pub detail: String,
}
