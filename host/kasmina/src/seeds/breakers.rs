//! The manager's circuit breakers as a set — the kernel fetch breaker and
//! every seed's isolation breaker: listed for metrics, snapshotted for the
//! journal and rollback points, and put back by name on restore.

use std::sync::Arc;

use kasmina_core::CircuitBreaker;
use leyline::journal::BreakerSnapshot;

use super::SeedManager;

impl SeedManager {
    /// The fetch breaker, then every seed's isolation breaker (state for
    /// metrics).
    pub fn breakers(&self) -> Vec<Arc<CircuitBreaker>> {
        let mut all = vec![Arc::clone(&self.fetch_breaker)];
        all.extend(self.isolation.all());
        all
    }

    /// Snapshots of every breaker (journal, rollback points).
    pub(super) fn breaker_snapshots(&self) -> Vec<BreakerSnapshot> {
        let mut all = vec![self.fetch_breaker.snapshot()];
        all.extend(self.isolation.snapshots());
        all
    }

    /// Puts one recorded breaker back, by name. A snapshot of the global
    /// isolation breaker older journals wrote matches nothing now (breakers
    /// are per seed): it is skipped with a warning, never applied to every
    /// seed.
    pub(super) fn restore_breaker(&self, snapshot: &BreakerSnapshot) -> bool {
        let restored = self.fetch_breaker.restore(snapshot) || self.isolation.restore(snapshot);
        if !restored {
            tracing::warn!(breaker = %snapshot.name, "kasmina.breaker.snapshot_skipped");
        }
        restored
    }
}
