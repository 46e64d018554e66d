//! The nonce ledger: command ids seen within their TTL (SPEC.md §3).
//!
//! Every operation is O(log n): a hash map from id to its expiry, and an
//! ordered index by (expiry, insertion sequence) so the earliest-expiring
//! entry is found without a scan. The prototype scanned for it, which made
//! verification 80× slower as the ledger filled; this one stays flat.
//!
//! The ledger is bounded: at capacity the earliest-expiring entry is evicted
//! and counted (`truncations`). It is purged of expired entries on every
//! insert and, via [`super::purger::NoncePurger`], on a timer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Longest command id the ledger stores; longer ids are the caller's bug
/// (the verifier refuses them before they get here).
pub const MAX_NONCE_BYTES: usize = 256;

/// Why an id was not inserted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// The id is live in the ledger: a replay.
    #[error("nonce seen before; it expires in {expires_in_ms} ms")]
    Replayed {
        /// Time until the stored entry expires.
        expires_in_ms: u64,
    },
    /// The id is empty or longer than [`MAX_NONCE_BYTES`].
    #[error("nonce length {len} is outside 1..={MAX_NONCE_BYTES}")]
    BadLength {
        /// Its length in bytes.
        len: usize,
    },
}

/// Why [`NonceLedger::check_and_insert_if`] recorded nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused<E> {
    /// The ledger refused the id (a replay, or a bad length).
    Nonce(NonceError),
    /// The caller's check refused the command.
    Check(E),
}

/// What an accepted insert did besides inserting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertReport {
    /// Expired entries purged by this insert.
    pub purged: usize,
    /// Live entry evicted to make room, with the time it was inserted (ms).
    pub evicted_inserted_at_ms: Option<u64>,
}

/// Counters and size of the ledger at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerStats {
    /// Live entries (some may have expired since the last purge).
    pub len: usize,
    /// Capacity.
    pub capacity: usize,
    /// TTL, ms.
    pub ttl_ms: u64,
    /// Live entries evicted because the ledger was full, cumulative.
    pub truncations: u64,
    /// Expired entries purged (on insert or by timer), cumulative.
    pub purged: u64,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<Arc<str>, (u64, u64)>,
    by_expiry: BTreeMap<(u64, u64), Arc<str>>,
    next_seq: u64,
}

impl Inner {
    fn purge(&mut self, now_ms: u64) -> usize {
        let mut purged = 0;
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let id = entry.remove();
            self.by_id.remove(&id);
            purged += 1;
        }
        purged
    }
}

/// A bounded, TTL'd set of command ids. Thread-safe; share it in an `Arc`.
#[derive(Debug)]
pub struct NonceLedger {
    ttl_ms: u64,
    capacity: usize,
    inner: Mutex<Inner>,
    truncations: AtomicU64,
    purged: AtomicU64,
}

impl NonceLedger {
    /// A ledger holding ids for `ttl_ms` (≥ 1) and at most `capacity` (≥ 1)
    /// of them. Zeros are raised to 1; settings validation refuses them first.
    pub fn new(ttl_ms: u64, capacity: usize) -> Self {
        NonceLedger {
            ttl_ms: ttl_ms.max(1),
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            truncations: AtomicU64::new(0),
            purged: AtomicU64::new(0),
        }
    }

    /// The TTL, ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Time until `id` expires if it is live at `now_ms`; `None` if unseen or expired. Changes nothing.
    pub fn expires_in(&self, id: &str, now_ms: u64) -> Option<u64> {
        let inner = self.lock();
        match inner.by_id.get(id) {
            Some(&(expiry, _)) if expiry > now_ms => Some(expiry - now_ms),
            _ => None,
        }
    }

    /// Atomically checks `id` and records it until `now_ms + ttl`. A live id
    /// is refused and changes nothing; an expired one is replaced.
    pub fn check_and_insert(&self, id: &str, now_ms: u64) -> Result<InsertReport, NonceError> {
        match self.check_and_insert_if(id, now_ms, || Ok::<(), std::convert::Infallible>(())) {
            Ok(report) => Ok(report),
            Err(Refused::Nonce(err)) => Err(err),
            Err(Refused::Check(never)) => match never {},
        }
    }

    /// [`check_and_insert`](Self::check_and_insert) with `admit` asked after
    /// the replay check and before the insert, under the same lock: a live
    /// id is refused first; then `admit` may refuse, and nothing is
    /// recorded; only then is the id inserted. The verifier's last checks
    /// (timestamps) go here, so a command takes the ledger lock once.
    pub fn check_and_insert_if<E>(
        &self,
        id: &str,
        now_ms: u64,
        admit: impl FnOnce() -> Result<(), E>,
    ) -> Result<InsertReport, Refused<E>> {
        if id.is_empty() || id.len() > MAX_NONCE_BYTES {
            return Err(Refused::Nonce(NonceError::BadLength { len: id.len() }));
        }
        // Allocated before the lock, which every command takes.
        let key: Arc<str> = Arc::from(id);
        let mut inner = self.lock();
        let expired = match inner.by_id.get(id) {
            Some(&(expiry, _)) if expiry > now_ms => {
                return Err(Refused::Nonce(NonceError::Replayed { expires_in_ms: expiry - now_ms }));
            }
            Some(&(expiry, seq)) => Some((expiry, seq)),
            None => None,
        };
        admit().map_err(Refused::Check)?;
        if let Some((expiry, seq)) = expired {
            inner.by_expiry.remove(&(expiry, seq));
            inner.by_id.remove(id);
        }
        let purged = inner.purge(now_ms);
        let mut report = InsertReport { purged, evicted_inserted_at_ms: None };
        if inner.by_id.len() >= self.capacity
            && let Some(((expiry, _), evicted)) = inner.by_expiry.pop_first()
        {
            inner.by_id.remove(&evicted);
            report.evicted_inserted_at_ms = Some(expiry.saturating_sub(self.ttl_ms));
            self.truncations.fetch_add(1, Ordering::Relaxed);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let expiry = now_ms.saturating_add(self.ttl_ms);
        inner.by_expiry.insert((expiry, seq), Arc::clone(&key));
        inner.by_id.insert(key, (expiry, seq));
        drop(inner);
        if purged > 0 {
            self.purged.fetch_add(purged as u64, Ordering::Relaxed);
        }
        Ok(report)
    }

    /// Every live entry at `now_ms` as `(id, expires_at_ms)`, soonest expiry
    /// first (what a journal snapshot keeps so replay protection survives a
    /// restart). Bounded by the ledger's capacity.
    pub fn live(&self, now_ms: u64) -> Vec<(String, u64)> {
        let inner = self.lock();
        inner
            .by_expiry
            .iter()
            .filter(|((expiry, _), _)| *expiry > now_ms)
            .map(|((expiry, _), id)| (id.to_string(), *expiry))
            .collect()
    }

    /// Puts back an entry recorded before a restart with its original
    /// expiry; `false` (and nothing changes) if it already expired at
    /// `now_ms`, is malformed, or is live already.
    pub fn restore(&self, id: &str, expires_at_ms: u64, now_ms: u64) -> bool {
        if expires_at_ms <= now_ms || id.is_empty() || id.len() > MAX_NONCE_BYTES {
            return false;
        }
        let mut inner = self.lock();
        if inner.by_id.get(id).is_some_and(|&(expiry, _)| expiry > now_ms) {
            return false;
        }
        if let Some((expiry, seq)) = inner.by_id.remove(id) {
            inner.by_expiry.remove(&(expiry, seq));
        }
        if inner.by_id.len() >= self.capacity
            && let Some((_, evicted)) = inner.by_expiry.pop_first()
        {
            inner.by_id.remove(&evicted);
            self.truncations.fetch_add(1, Ordering::Relaxed);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let key: Arc<str> = Arc::from(id);
        inner.by_expiry.insert((expires_at_ms, seq), Arc::clone(&key));
        inner.by_id.insert(key, (expires_at_ms, seq));
        true
    }

    /// Removes every entry expired at `now_ms`; returns how many.
    pub fn purge_expired(&self, now_ms: u64) -> usize {
        let purged = self.lock().purge(now_ms);
        self.purged.fetch_add(purged as u64, Ordering::Relaxed);
        purged
    }

    /// Entries held (expired ones linger until the next purge).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether the ledger holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live entries evicted because the ledger was full, cumulative (the
    /// counter alone, without taking the lock as [`stats`](Self::stats) does).
    pub fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::Relaxed)
    }

    /// Counters and size now.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            len: self.len(),
            capacity: self.capacity,
            ttl_ms: self.ttl_ms,
            truncations: self.truncations.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation keeps both indexes consistent before it can panic
        // (allocation failure aborts), so a poisoned lock is still coherent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn replay_within_ttl_is_refused_and_accepted_after() {
        let ledger = NonceLedger::new(1_000, 10);
        assert!(ledger.check_and_insert("a", 0).is_ok());
        assert_eq!(ledger.check_and_insert("a", 999), Err(NonceError::Replayed { expires_in_ms: 1 }));
        assert_eq!(ledger.expires_in("a", 500), Some(500));
        assert!(ledger.check_and_insert("a", 1_000).is_ok());
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn live_entries_round_trip_through_restore_with_their_expiry() {
        let ledger = NonceLedger::new(1_000, 10);
        ledger.check_and_insert("a", 0).expect("fresh");
        ledger.check_and_insert("b", 500).expect("fresh");
        assert_eq!(ledger.live(600), vec![("a".to_owned(), 1_000), ("b".to_owned(), 1_500)]);
        assert_eq!(ledger.live(1_000), vec![("b".to_owned(), 1_500)], "expired entries are not kept");
        let restarted = NonceLedger::new(1_000, 10);
        for (id, expiry) in ledger.live(600) {
            assert!(restarted.restore(&id, expiry, 700));
        }
        assert_eq!(restarted.check_and_insert("a", 800), Err(NonceError::Replayed { expires_in_ms: 200 }));
        assert!(restarted.check_and_insert("a", 1_000).is_ok(), "the original expiry holds, not a fresh TTL");
        assert!(!restarted.restore("c", 900, 900), "already expired");
        assert!(!restarted.restore("b", 1_500, 900), "already live");
    }

    #[test]
    fn refused_replay_changes_nothing() {
        let ledger = NonceLedger::new(1_000, 10);
        ledger.check_and_insert("a", 0).expect("fresh");
        let before = ledger.stats();
        assert!(ledger.check_and_insert("a", 10).is_err());
        assert_eq!(ledger.stats(), before);
        assert_eq!(ledger.expires_in("a", 10), Some(990), "expiry not extended by the replay");
    }

    #[test]
    fn full_ledger_evicts_earliest_expiry_and_counts() {
        let ledger = NonceLedger::new(1_000, 3);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            ledger.check_and_insert(id, i as u64).expect("fresh");
        }
        let report = ledger.check_and_insert("d", 5).expect("fresh");
        assert_eq!(report.evicted_inserted_at_ms, Some(0));
        assert_eq!(ledger.len(), 3);
        assert_eq!(ledger.expires_in("a", 5), None, "earliest expiry evicted");
        assert!(ledger.expires_in("b", 5).is_some());
        assert_eq!(ledger.stats().truncations, 1);
    }

    #[test]
    fn insert_purges_expired_before_evicting() {
        let ledger = NonceLedger::new(100, 2);
        ledger.check_and_insert("a", 0).expect("fresh");
        ledger.check_and_insert("b", 50).expect("fresh");
        let report = ledger.check_and_insert("c", 120).expect("fresh");
        assert_eq!(report.purged, 1);
        assert_eq!(report.evicted_inserted_at_ms, None);
        assert_eq!(ledger.stats().truncations, 0);
    }

    #[test]
    fn purge_expired_counts_and_removes_both_indexes() {
        let ledger = NonceLedger::new(100, 100);
        for i in 0..10u64 {
            ledger.check_and_insert(&format!("n{i}"), i * 10).expect("fresh");
        }
        assert_eq!(ledger.purge_expired(149), 5);
        assert_eq!(ledger.len(), 5);
        assert_eq!(ledger.purge_expired(149), 0);
        assert_eq!(ledger.stats().purged, 5);
        assert!(ledger.check_and_insert("n0", 149).is_ok(), "purged id may be reused");
    }

    #[test]
    fn bad_lengths_are_refused() {
        let ledger = NonceLedger::new(100, 100);
        assert_eq!(ledger.check_and_insert("", 0), Err(NonceError::BadLength { len: 0 }));
        let long = "x".repeat(MAX_NONCE_BYTES + 1);
        assert!(matches!(ledger.check_and_insert(&long, 0), Err(NonceError::BadLength { .. })));
        assert!(ledger.is_empty());
    }
}
