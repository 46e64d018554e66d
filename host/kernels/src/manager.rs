//! The kernel load manager: the one component that owns cache, strict fetch,
//! load, prewarm and prefetch (SPEC.md §7), so failure handling, concurrency
//! and telemetry live in one place.
//!
//! Lookup: the blueprint id is resolved in the Urza catalog to its entry; the
//! cache key is (artifact SHA-256, blueprint id) — the digest names the bytes,
//! the id names the declared interface prewarm checked them against. A hit
//! younger than the TTL (by the injected clock) is returned at once. A miss
//! goes through moka's `try_get_with`, so concurrent requests for one kernel
//! run one load and share its result, success or failure. The load checks the
//! fetch breaker, fetches strictly, loads, prewarms; a failure emits
//! telemetry, counts on the breaker, quarantines a corrupt artifact, and is
//! returned — there is no other kernel to hand out.
//!
//! Submodules: [`stats`] (cumulative + interval counters), [`prefetch`]
//! (tokio background prefetch with timeouts, cancellation, bounded shutdown).

pub mod prefetch;
pub mod stats;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kasmina_core::{BreakerDecision, CircuitBreaker, Clock, TelemetrySink};
use leyline::{TelemetryEvent, TelemetryLevel};
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use tch::Device;

use crate::KernelError;
use crate::kernel::{LoadedKernel, PrewarmLimits};
use crate::urza::{CatalogEntry, FetchError, UrzaLibrary};

pub use prefetch::{PrefetchEvent, PrefetchEvents, RecvError, ShutdownReport};
use stats::StatsCounters;
pub use stats::{CacheStats, StatsSnapshot};

/// Longest TTL accepted (moka refuses durations near 1000 years; a week is
/// already far past any training job's need to re-verify).
pub const MAX_CACHE_TTL_MS: u64 = 7 * 24 * 3_600 * 1_000;

/// Smallest prewarm memory cap accepted: below it hardly a kernel loads.
pub const MIN_PREWARM_MEMORY_BYTES: u64 = 1 << 20;

/// Everything the manager needs to know. There is no `Default`: the control
/// plane fills it from its settings (`KernelSettings`), where the defaults live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelManagerConfig {
    /// Most kernels the cache holds.
    pub cache_max_entries: u64,
    /// Most bytes the cache holds (see [`LoadedKernel::weight_bytes`]).
    pub cache_max_bytes: u64,
    /// A cached kernel older than this is reloaded (re-verified), ms.
    pub cache_ttl_ms: u64,
    /// Longest `timeout_ms` a prefetch request may ask for.
    pub prefetch_timeout_ms: u64,
    /// Most prefetches in flight at once; more are refused.
    pub prefetch_max_in_flight: usize,
    /// Bound on `shutdown()`, ms.
    pub shutdown_timeout_ms: u64,
    /// Timed prewarm runs per load.
    pub prewarm_runs: u32,
    /// CPU memory one prewarm forward pass of a kernel's code may ask for
    /// (see [`crate::alloc_cap`]).
    pub prewarm_memory_bytes: u64,
    /// Where kernels are loaded.
    pub device: Device,
}

impl KernelManagerConfig {
    /// Refuses zero or out-of-range values (never replaced by defaults).
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |detail: &str| Err(KernelError::InvalidConfig { detail: detail.to_owned() });
        if self.cache_max_entries == 0 {
            return bad("cache_max_entries must be >= 1");
        }
        if self.cache_max_bytes < 1024 {
            return bad("cache_max_bytes must be >= 1024");
        }
        if self.cache_ttl_ms == 0 || self.cache_ttl_ms > MAX_CACHE_TTL_MS {
            return bad("cache_ttl_ms must be in 1..=7 days");
        }
        if self.prefetch_timeout_ms == 0 || self.prefetch_max_in_flight == 0 || self.shutdown_timeout_ms == 0 {
            return bad("prefetch_timeout_ms, prefetch_max_in_flight and shutdown_timeout_ms must be >= 1");
        }
        if self.prewarm_runs == 0 || self.prewarm_runs > 1_000 {
            return bad("prewarm_runs must be in 1..=1000");
        }
        if self.prewarm_memory_bytes < MIN_PREWARM_MEMORY_BYTES {
            return bad("prewarm_memory_bytes must be >= 1 MiB (1048576)");
        }
        Ok(())
    }
}

/// Cache key: artifact digest + blueprint id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelKey {
    sha256: String,
    blueprint_id: String,
}

// Hash and Equivalent are written by hand so a borrowed `KeyRef` can look up
// an owned `KernelKey` on the hit path without allocating.
impl Hash for KernelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef { sha256: &self.sha256, blueprint_id: &self.blueprint_id }.hash(state);
    }
}

#[derive(Hash)]
struct KeyRef<'a> {
    sha256: &'a str,
    blueprint_id: &'a str,
}

impl moka::Equivalent<KernelKey> for KeyRef<'_> {
    fn equivalent(&self, key: &KernelKey) -> bool {
        self.sha256 == key.sha256 && self.blueprint_id == key.blueprint_id
    }
}

/// The state shared by the manager facade and its prefetch tasks.
pub(crate) struct Core {
    urza: Arc<UrzaLibrary>,
    config: KernelManagerConfig,
    breaker: Arc<CircuitBreaker>,
    sink: Arc<dyn TelemetrySink>,
    clock: Arc<dyn Clock>,
    cache: Cache<KernelKey, Arc<LoadedKernel>>,
    stats: Arc<StatsCounters>,
}

enum Probe {
    Unknown,
    Hit(Arc<LoadedKernel>),
    Stale(Arc<CatalogEntry>),
    Miss(Arc<CatalogEntry>),
}

impl Core {
    fn new(
        urza: Arc<UrzaLibrary>,
        config: KernelManagerConfig,
        breaker: Arc<CircuitBreaker>,
        sink: Arc<dyn TelemetrySink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let stats = Arc::new(StatsCounters::new(clock.now_ms()));
        let listener_stats = Arc::clone(&stats);
        // moka has one capacity; weights are KiB, and every entry weighs at
        // least capacity / max_entries, so the byte bound also bounds the
        // entry count (small kernels are over-charged, never under-charged).
        let capacity_kib = (config.cache_max_bytes / 1024).max(1);
        let min_weight_kib = (capacity_kib / config.cache_max_entries).max(1);
        let cache = Cache::builder()
            .name("kasmina.kernel.cache")
            .max_capacity(capacity_kib)
            .weigher(move |_k: &KernelKey, v: &Arc<LoadedKernel>| -> u32 {
                let kib = v.weight_bytes().div_ceil(1024).max(min_weight_kib);
                u32::try_from(kib).unwrap_or(u32::MAX)
            })
            // Reclaims idle entries; freshness on lookup is judged by the injected clock.
            .time_to_live(Duration::from_millis(config.cache_ttl_ms))
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Size => StatsCounters::bump(&listener_stats.evictions),
                RemovalCause::Expired => StatsCounters::bump(&listener_stats.expirations),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Core { urza, config, breaker, sink, clock, cache, stats }
    }

    fn is_stale(&self, kernel: &LoadedKernel, now_ms: u64) -> bool {
        now_ms.saturating_sub(kernel.loaded_at_ms()) >= self.config.cache_ttl_ms
    }

    fn probe(&self, blueprint_id: &str) -> Probe {
        let now = self.clock.now_ms();
        self.urza.with_entry(blueprint_id, |entry| {
            let Some(entry) = entry else { return Probe::Unknown };
            let key = KeyRef { sha256: &entry.artifact_sha256, blueprint_id };
            match self.cache.get(&key) {
                Some(k) if !self.is_stale(&k, now) => Probe::Hit(k),
                Some(_) => Probe::Stale(Arc::clone(entry)),
                None => Probe::Miss(Arc::clone(entry)),
            }
        })
    }

    /// The kernel for `blueprint_id`, and whether it was a cache hit.
    pub(crate) fn get(
        &self,
        blueprint_id: &str,
        seed_id: Option<&str>,
    ) -> Result<(Arc<LoadedKernel>, bool), KernelError> {
        let entry = match self.probe(blueprint_id) {
            Probe::Hit(k) => {
                StatsCounters::bump(&self.stats.hits);
                return Ok((k, true));
            }
            Probe::Unknown => {
                StatsCounters::bump(&self.stats.misses);
                let err = KernelError::Fetch(FetchError::UnknownBlueprint { blueprint_id: blueprint_id.to_owned() });
                self.fail(&err, blueprint_id, None, seed_id);
                return Err(err);
            }
            Probe::Stale(entry) => {
                self.expire(&entry);
                entry
            }
            Probe::Miss(entry) => entry,
        };
        StatsCounters::bump(&self.stats.misses);
        let span = tracing::info_span!("kasmina.kernel.fetch", blueprint_id, seed_id = seed_id.unwrap_or("-"));
        let _enter = span.enter();
        let key = KernelKey { sha256: entry.artifact_sha256.clone(), blueprint_id: blueprint_id.to_owned() };
        self.cache
            .try_get_with(key, || self.load(&entry, seed_id))
            .map(|k| (k, false))
            .map_err(|e| KernelError::clone(&e))
    }

    /// Removes an entry whose TTL passed, unless a concurrent caller already
    /// replaced it (the compute closure runs under moka's per-key lock).
    fn expire(&self, entry: &CatalogEntry) {
        let now = self.clock.now_ms();
        let key = KernelKey { sha256: entry.artifact_sha256.clone(), blueprint_id: entry.id().to_owned() };
        let result = self.cache.entry(key).and_compute_with(|e| match e {
            Some(e) if self.is_stale(e.value(), now) => Op::Remove,
            _ => Op::Nop,
        });
        if matches!(result, CompResult::Removed(_)) {
            StatsCounters::bump(&self.stats.expirations);
        }
    }

    /// One strict load; runs once per key however many callers wait on it.
    fn load(&self, entry: &CatalogEntry, seed_id: Option<&str>) -> Result<Arc<LoadedKernel>, KernelError> {
        let id = entry.id();
        if let BreakerDecision::Denied { remaining_cooldown_ms } = self.breaker.allow() {
            StatsCounters::bump(&self.stats.breaker_refusals);
            let err = KernelError::BreakerOpen { remaining_cooldown_ms };
            self.emit(
                self.event("kasmina.kernel.fetch_refused", TelemetryLevel::Warning, err.to_string(), id, seed_id)
                    .attr("reason", err.reason()),
            );
            return Err(err);
        }
        let started = Instant::now();
        let loaded = self.urza.fetch_entry(entry).map_err(KernelError::from).and_then(|artifact| {
            LoadedKernel::load(
                artifact,
                self.config.device,
                PrewarmLimits { runs: self.config.prewarm_runs, memory_bytes: self.config.prewarm_memory_bytes },
                self.clock.now_ms(),
            )
        });
        match loaded {
            Ok(kernel) => {
                let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.breaker.record_success();
                self.stats.record_load(latency_us);
                let p = kernel.prewarm();
                self.emit(
                    self.event(
                        "kasmina.kernel.loaded",
                        TelemetryLevel::Info,
                        "kernel verified, loaded and prewarmed",
                        id,
                        seed_id,
                    )
                    .attr("sha256", entry.artifact_sha256.as_str())
                    .attr("load_us", latency_us)
                    .attr("prewarm_p50_us", p.p50_us)
                    .attr("prewarm_p95_us", p.p95_us),
                );
                Ok(Arc::new(kernel))
            }
            Err(err) => {
                self.fail(&err, id, Some(entry), seed_id);
                Err(err)
            }
        }
    }

    /// Telemetry, breaker failure, stats and (for corrupt bytes) quarantine.
    fn fail(&self, err: &KernelError, blueprint_id: &str, entry: Option<&CatalogEntry>, seed_id: Option<&str>) {
        StatsCounters::bump(&self.stats.load_failures);
        self.breaker.record_failure(err.reason());
        let mut event = self
            .event("kasmina.kernel.fetch_failed", TelemetryLevel::Error, err.to_string(), blueprint_id, seed_id)
            .attr("reason", err.reason());
        if let Some(e) = entry {
            event = event.attr("sha256", e.artifact_sha256.as_str());
        }
        self.emit(event);
        if let (KernelError::Fetch(f), Some(e)) = (err, entry)
            && f.is_corrupt_artifact()
        {
            let event = match self.urza.quarantine(&e.artifact_sha256, &f.to_string()) {
                Ok(path) => self
                    .event(
                        "kasmina.kernel.artifact_quarantined",
                        TelemetryLevel::Critical,
                        "corrupt artifact quarantined",
                        blueprint_id,
                        seed_id,
                    )
                    .attr("path", path.display().to_string()),
                Err(q) => self
                    .event(
                        "kasmina.kernel.quarantine_failed",
                        TelemetryLevel::Critical,
                        "corrupt artifact could not be quarantined",
                        blueprint_id,
                        seed_id,
                    )
                    .attr("error", q.to_string()),
            };
            self.emit(event.attr("sha256", e.artifact_sha256.as_str()).attr("reason", f.reason()));
        }
    }

    fn event(
        &self,
        name: &str,
        level: TelemetryLevel,
        message: impl Into<String>,
        blueprint_id: &str,
        seed_id: Option<&str>,
    ) -> TelemetryEvent {
        let e = TelemetryEvent::new(name, level, message, self.clock.now_ms()).attr("blueprint_id", blueprint_id);
        match seed_id {
            Some(s) => e.seed(s),
            None => e,
        }
    }

    fn emit(&self, event: TelemetryEvent) {
        self.sink.emit(event);
    }
}

/// Owns the kernel cache, strict fetch, load, prewarm and prefetch.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct KernelLoadManager {
    core: Arc<Core>,
    prefetcher: prefetch::Prefetcher,
}

impl std::fmt::Debug for KernelLoadManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLoadManager").field("config", &self.core.config).finish()
    }
}

impl KernelLoadManager {
    /// Starts a manager (including its small prefetch runtime on its own
    /// thread) and returns it with the receiver of prefetch results.
    ///
    /// `fetch_breaker` is the control plane's "fetch" breaker: every failed
    /// fetch or load is recorded on it, and an open breaker refuses loads.
    pub fn new(
        urza: Arc<UrzaLibrary>,
        config: KernelManagerConfig,
        fetch_breaker: Arc<CircuitBreaker>,
        sink: Arc<dyn TelemetrySink>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, PrefetchEvents), KernelError> {
        config.validate()?;
        let core = Arc::new(Core::new(urza, config, fetch_breaker, sink, clock));
        let (prefetcher, events) = prefetch::Prefetcher::start(Arc::clone(&core))?;
        Ok((KernelLoadManager { core, prefetcher }, events))
    }

    /// The verified, loaded, prewarmed kernel for `blueprint_id` — from the
    /// cache or loaded now (concurrent callers share one load). `seed_id`
    /// only labels telemetry. On error the caller has no kernel.
    ///
    /// A miss does file I/O and a libtorch load on the calling thread: from
    /// async code use [`prefetch`](Self::prefetch) or `spawn_blocking`.
    pub fn get(&self, blueprint_id: &str, seed_id: Option<&str>) -> Result<Arc<LoadedKernel>, KernelError> {
        self.core.get(blueprint_id, seed_id).map(|(k, _)| k)
    }

    /// Like [`get`](Self::get), also saying whether it was a cache hit.
    pub fn get_traced(
        &self,
        blueprint_id: &str,
        seed_id: Option<&str>,
    ) -> Result<(Arc<LoadedKernel>, bool), KernelError> {
        self.core.get(blueprint_id, seed_id)
    }

    /// The cached kernel for `blueprint_id` if one is held (never loads,
    /// never counts as a lookup).
    pub fn cached(&self, blueprint_id: &str) -> Option<Arc<LoadedKernel>> {
        self.core.urza.with_entry(blueprint_id, |e| {
            e.and_then(|e| self.core.cache.get(&KeyRef { sha256: &e.artifact_sha256, blueprint_id }))
        })
    }

    /// Drops every cached kernel (emergency cleanup; SPEC.md §8).
    pub fn clear_cache(&self) -> u64 {
        let n = self.core.cache.entry_count();
        self.core.cache.invalidate_all();
        self.core.cache.run_pending_tasks();
        n
    }

    /// Runs moka's pending maintenance (evictions, listener calls) now.
    pub fn run_pending_tasks(&self) {
        self.core.cache.run_pending_tasks();
    }

    /// Entries held now: entries past their TTL are expired first and
    /// moka's pending maintenance runs, so a kernel loaded a moment ago is
    /// counted and one whose TTL passed is not (see [`settle`](Self::settle)).
    pub fn cache_entries(&self) -> u64 {
        self.settle();
        self.core.cache.entry_count()
    }

    /// Makes the cache's numbers current before they are read: removes
    /// every entry whose TTL has passed by the injected clock (counted as
    /// an expiration, as a lookup would) and runs moka's pending
    /// maintenance (its entry count lags inserts until then). Without it a
    /// gauge read right after a load said 0 and a TTL expiry was counted
    /// only at the next lookup of that kernel.
    pub fn settle(&self) {
        let now = self.core.clock.now_ms();
        let stale: Vec<KernelKey> = self
            .core
            .cache
            .iter()
            .filter(|(_, kernel)| self.core.is_stale(kernel, now))
            .map(|(key, _)| (*key).clone())
            .collect();
        for key in stale {
            let result = self.core.cache.entry(key).and_compute_with(|e| match e {
                Some(e) if self.core.is_stale(e.value(), now) => Op::Remove,
                _ => Op::Nop,
            });
            if matches!(result, CompResult::Removed(_)) {
                StatsCounters::bump(&self.core.stats.expirations);
            }
        }
        self.core.cache.run_pending_tasks();
    }

    /// Weight held, KiB (see [`LoadedKernel::weight_bytes`]).
    pub fn cache_weight_kib(&self) -> u64 {
        self.core.cache.weighted_size()
    }

    /// Cumulative and current-interval stats, without resetting; the cache
    /// is [settled](Self::settle) first so expirations are current.
    pub fn stats(&self) -> StatsSnapshot {
        self.settle();
        self.core.stats.snapshot(self.core.clock.now_ms())
    }

    /// Cumulative and current-interval stats; starts a new interval.
    pub fn snapshot_and_reset(&self) -> StatsSnapshot {
        self.core.stats.snapshot_and_reset(self.core.clock.now_ms())
    }

    /// Starts a background prefetch. Validation failures (empty seed id,
    /// blueprint id or training_run_id, missing timestamp, timeout out of
    /// range) are returned here, with telemetry, and never repaired; an
    /// accepted request delivers exactly one [`PrefetchEvent`]. Never blocks
    /// and never needs (or nests) a runtime: callable from sync or async code.
    pub fn prefetch(&self, request: leyline::prefetch::PrefetchRequest) -> Result<(), KernelError> {
        self.prefetcher.prefetch(request)
    }

    /// Cancels the in-flight prefetches of a retired seed (each delivers a
    /// `Cancelled` event); returns how many were cancelled.
    pub fn cancel_seed(&self, seed_id: &str) -> usize {
        self.prefetcher.cancel_seed(seed_id)
    }

    /// Prefetches in flight (accepted, result not yet queued for delivery).
    pub fn prefetches_in_flight(&self) -> usize {
        self.prefetcher.in_flight()
    }

    /// Stops every background task within `shutdown_timeout_ms` (plus a
    /// small hand-off margin); later prefetches get [`KernelError::ShutDown`].
    /// Blocks the calling thread up to that bound: from async code call it
    /// via `spawn_blocking` (dropping the manager instead signals the same
    /// shutdown without waiting). Idempotent.
    pub fn shutdown(&self) -> ShutdownReport {
        self.prefetcher.shutdown()
    }

    /// The Urza library this manager fetches from.
    pub fn urza(&self) -> &Arc<UrzaLibrary> {
        &self.core.urza
    }

    /// The configuration in force.
    pub fn config(&self) -> &KernelManagerConfig {
        &self.core.config
    }
}
