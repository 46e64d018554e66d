//! Counters with a cumulative total and a per-interval part that is taken
//! (snapshot-and-reset) by whoever reports, so a long run shows current
//! behaviour as well as its history.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use leyline::ReasonCode;

/// One counter: cumulative and since the last [`IntervalCounter::take_interval`].
#[derive(Debug, Default)]
pub struct IntervalCounter {
    total: AtomicU64,
    interval: AtomicU64,
}

impl IntervalCounter {
    /// A zeroed counter.
    pub const fn new() -> Self {
        IntervalCounter { total: AtomicU64::new(0), interval: AtomicU64::new(0) }
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        self.interval.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn incr(&self) {
        self.add(1);
    }

    /// Total since creation.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Count since the last take, without resetting it.
    pub fn interval(&self) -> u64 {
        self.interval.load(Ordering::Relaxed)
    }

    /// Count since the last take; resets the interval part.
    pub fn take_interval(&self) -> u64 {
        self.interval.swap(0, Ordering::Relaxed)
    }
}

/// Rejection counts keyed by reason. Rejections are the cold path, so a
/// mutex-guarded ordered map is fine and stays exhaustive as reasons grow.
#[derive(Debug, Default)]
pub struct ReasonCounters {
    inner: Mutex<BTreeMap<ReasonCode, (u64, u64)>>,
}

impl ReasonCounters {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one rejection for `reason`.
    pub fn incr(&self, reason: ReasonCode) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(reason).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += 1;
    }

    /// Total for one reason.
    pub fn total(&self, reason: ReasonCode) -> u64 {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).get(&reason).map_or(0, |c| c.0)
    }

    /// Totals of every reason seen.
    pub fn totals(&self) -> BTreeMap<ReasonCode, u64> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(r, c)| (*r, c.0)).collect()
    }

    /// Counts since the last take (reasons with zero left out); resets them.
    pub fn take_interval(&self) -> BTreeMap<ReasonCode, u64> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter_mut().filter(|(_, c)| c.1 > 0).map(|(r, c)| (*r, std::mem::take(&mut c.1))).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn interval_resets_total_does_not() {
        let c = IntervalCounter::new();
        c.add(3);
        assert_eq!(c.take_interval(), 3);
        c.incr();
        assert_eq!(c.interval(), 1);
        assert_eq!(c.total(), 4);
        assert_eq!(c.take_interval(), 1);
        assert_eq!(c.take_interval(), 0);
    }

    #[test]
    fn reasons_count_per_interval() {
        let r = ReasonCounters::new();
        r.incr(ReasonCode::StaleCommand);
        r.incr(ReasonCode::StaleCommand);
        r.incr(ReasonCode::NonceReplayed);
        assert_eq!(r.take_interval().get(&ReasonCode::StaleCommand), Some(&2));
        r.incr(ReasonCode::NonceReplayed);
        let interval = r.take_interval();
        assert_eq!(interval.len(), 1);
        assert_eq!(interval.get(&ReasonCode::NonceReplayed), Some(&1));
        assert_eq!(r.total(ReasonCode::StaleCommand), 2);
        assert_eq!(r.totals().get(&ReasonCode::NonceReplayed), Some(&2));
    }
}
