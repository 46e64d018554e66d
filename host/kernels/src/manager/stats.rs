//! Kernel cache statistics, cumulative and per interval.
//!
//! Counters are cumulative atomics (one `fetch_add` per event on the hot
//! path); an interval view is the difference from a baseline taken at the
//! last `snapshot_and_reset`, so telemetry reports what the
//! cache is doing now rather than averaged over the whole run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use leyline::Metric;

/// Counts over some period (the whole run, or one interval).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that found no fresh entry (whether they loaded or waited for
    /// a concurrent load of the same kernel).
    pub misses: u64,
    /// Kernels fetched, verified, loaded and prewarmed.
    pub loads: u64,
    /// Fetches or loads that failed (each one is also a breaker failure).
    pub load_failures: u64,
    /// Fetches refused because the fetch breaker was open.
    pub breaker_refusals: u64,
    /// Entries evicted for size (entry count or bytes).
    pub evictions: u64,
    /// Entries dropped because their TTL passed.
    pub expirations: u64,
    /// Sum of successful load latencies, µs.
    pub load_latency_total_us: u64,
    /// Largest successful load latency, µs.
    pub load_latency_max_us: u64,
}

impl CacheStats {
    /// Hits / (hits + misses), or 0 with no lookups.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 { 0.0 } else { self.hits as f64 / total as f64 }
    }

    /// Mean successful load latency, µs (0 with no loads).
    pub fn load_latency_mean_us(&self) -> u64 {
        self.load_latency_total_us.checked_div(self.loads).unwrap_or(0)
    }

    /// These counts as telemetry metrics, labelled `scope` (`cumulative` or `interval`).
    pub fn metrics(&self, scope: &str) -> Vec<Metric> {
        let labels: BTreeMap<String, String> = [("scope".to_owned(), scope.to_owned())].into();
        let m = |name: &str, value: f64, unit: &str| Metric {
            name: format!("kasmina.kernel.cache.{name}"),
            value,
            unit: unit.to_owned(),
            labels: labels.clone(),
        };
        vec![
            m("hits", self.hits as f64, "count"),
            m("misses", self.misses as f64, "count"),
            m("hit_rate", self.hit_rate(), "ratio"),
            m("loads", self.loads as f64, "count"),
            m("load_failures", self.load_failures as f64, "count"),
            m("breaker_refusals", self.breaker_refusals as f64, "count"),
            m("evictions", self.evictions as f64, "count"),
            m("expirations", self.expirations as f64, "count"),
            m("load_latency_mean", self.load_latency_mean_us() as f64, "us"),
            m("load_latency_max", self.load_latency_max_us as f64, "us"),
        ]
    }

    fn minus(self, base: CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits.saturating_sub(base.hits),
            misses: self.misses.saturating_sub(base.misses),
            loads: self.loads.saturating_sub(base.loads),
            load_failures: self.load_failures.saturating_sub(base.load_failures),
            breaker_refusals: self.breaker_refusals.saturating_sub(base.breaker_refusals),
            evictions: self.evictions.saturating_sub(base.evictions),
            expirations: self.expirations.saturating_sub(base.expirations),
            load_latency_total_us: self.load_latency_total_us.saturating_sub(base.load_latency_total_us),
            load_latency_max_us: 0,
        }
    }
}

impl std::fmt::Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hits {} misses {} (hit rate {:.3}) loads {} failures {} refused {} evictions {} expirations {} load mean {} us max {} us",
            self.hits,
            self.misses,
            self.hit_rate(),
            self.loads,
            self.load_failures,
            self.breaker_refusals,
            self.evictions,
            self.expirations,
            self.load_latency_mean_us(),
            self.load_latency_max_us
        )
    }
}

/// Both views at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Since the manager started.
    pub cumulative: CacheStats,
    /// Since the previous `snapshot_and_reset`.
    pub interval: CacheStats,
    /// Start of the interval (injected clock, ms).
    pub interval_started_ms: u64,
    /// End of the interval (injected clock, ms).
    pub taken_at_ms: u64,
}

/// The live counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub loads: AtomicU64,
    pub load_failures: AtomicU64,
    pub breaker_refusals: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    load_latency_total_us: AtomicU64,
    load_latency_max_us: AtomicU64,
    interval_max_us: AtomicU64,
    baseline: Mutex<(CacheStats, u64)>,
}

impl StatsCounters {
    pub(crate) fn new(now_ms: u64) -> Self {
        StatsCounters { baseline: Mutex::new((CacheStats::default(), now_ms)), ..Default::default() }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_load(&self, latency_us: u64) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.load_latency_total_us.fetch_add(latency_us, Ordering::Relaxed);
        self.load_latency_max_us.fetch_max(latency_us, Ordering::Relaxed);
        self.interval_max_us.fetch_max(latency_us, Ordering::Relaxed);
    }

    pub(crate) fn cumulative(&self) -> CacheStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: r(&self.hits),
            misses: r(&self.misses),
            loads: r(&self.loads),
            load_failures: r(&self.load_failures),
            breaker_refusals: r(&self.breaker_refusals),
            evictions: r(&self.evictions),
            expirations: r(&self.expirations),
            load_latency_total_us: r(&self.load_latency_total_us),
            load_latency_max_us: r(&self.load_latency_max_us),
        }
    }

    /// Both views without resetting the interval.
    pub(crate) fn snapshot(&self, now_ms: u64) -> StatsSnapshot {
        let base = self.lock();
        let cumulative = self.cumulative();
        let mut interval = cumulative.minus(base.0);
        interval.load_latency_max_us = self.interval_max_us.load(Ordering::Relaxed);
        StatsSnapshot { cumulative, interval, interval_started_ms: base.1, taken_at_ms: now_ms }
    }

    /// Both views, then starts a new interval.
    pub(crate) fn snapshot_and_reset(&self, now_ms: u64) -> StatsSnapshot {
        let mut base = self.lock();
        let cumulative = self.cumulative();
        let mut interval = cumulative.minus(base.0);
        interval.load_latency_max_us = self.interval_max_us.swap(0, Ordering::Relaxed);
        let snap = StatsSnapshot { cumulative, interval, interval_started_ms: base.1, taken_at_ms: now_ms };
        *base = (cumulative, now_ms);
        snap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (CacheStats, u64)> {
        // Plain counters: consistent even if a holder panicked.
        self.baseline.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_the_difference_since_the_last_reset() {
        let s = StatsCounters::new(100);
        StatsCounters::bump(&s.hits);
        StatsCounters::bump(&s.misses);
        s.record_load(40);
        let first = s.snapshot_and_reset(200);
        assert_eq!((first.interval.hits, first.interval.loads, first.interval.load_latency_max_us), (1, 1, 40));
        assert_eq!((first.interval_started_ms, first.taken_at_ms), (100, 200));
        StatsCounters::bump(&s.hits);
        s.record_load(10);
        let second = s.snapshot_and_reset(300);
        assert_eq!(second.interval.hits, 1);
        assert_eq!(second.interval.misses, 0);
        assert_eq!(second.interval.load_latency_max_us, 10, "interval max restarts each interval");
        assert_eq!(second.cumulative.hits, 2);
        assert_eq!(second.cumulative.load_latency_max_us, 40);
        assert_eq!(second.interval_started_ms, 200);
        assert!((second.cumulative.hit_rate() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn metrics_are_labelled_by_scope() {
        let m = CacheStats { hits: 3, ..Default::default() }.metrics("interval");
        let hits =
            m.iter().find(|m| m.name == "kasmina.kernel.cache.hits").map(|m| (m.value, m.labels["scope"].clone()));
        assert_eq!(hits, Some((3.0, "interval".to_owned())));
    }
}
