//! Per-seed health from recent events (SPEC.md §9).
//!
//! A seed's health is the worst level it raised within the last
//! `window` finalized steps: CRITICAL → CRITICAL, ERROR → UNHEALTHY,
//! WARNING → DEGRADED, otherwise HEALTHY. Steps are counted as "finalize
//! epochs", so callers may number training steps however they like.

use std::collections::HashMap;

use leyline::{HealthStatus, TelemetryLevel};

#[derive(Debug, Default, Clone, Copy)]
struct SeedHealth {
    // Epoch in which each level was last seen: warning, error, critical.
    last_seen: [Option<u64>; 3],
    critical_this_epoch: u64,
}

/// Tracks recent levels per seed, bounded in the number of seeds.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    window: u64,
    max_seeds: usize,
    epoch: u64,
    seeds: HashMap<String, SeedHealth>,
    untracked: u64,
}

impl HealthTracker {
    pub(crate) fn new(window: u64, max_seeds: usize) -> Self {
        HealthTracker {
            window: window.max(1),
            max_seeds: max_seeds.max(1),
            epoch: 0,
            seeds: HashMap::new(),
            untracked: 0,
        }
    }

    /// Records an event of `level` for `seed`. Returns false when the seed
    /// could not be tracked (at the cap); the caller counts that.
    pub(crate) fn observe(&mut self, seed: &str, level: TelemetryLevel) -> bool {
        let slot = match level {
            TelemetryLevel::Info => None,
            TelemetryLevel::Warning => Some(0),
            TelemetryLevel::Error => Some(1),
            TelemetryLevel::Critical => Some(2),
        };
        let epoch = self.epoch;
        let record = |entry: &mut SeedHealth| {
            if let Some(slot) = slot {
                entry.last_seen[slot] = Some(epoch);
            }
            if level == TelemetryLevel::Critical {
                entry.critical_this_epoch += 1;
            }
        };
        // One lookup for a seed already tracked (every event hashes its id).
        if let Some(entry) = self.seeds.get_mut(seed) {
            record(entry);
            return true;
        }
        if self.seeds.len() >= self.max_seeds {
            self.untracked += 1;
            return false;
        }
        record(self.seeds.entry(seed.to_owned()).or_default());
        true
    }

    /// Health of `seed` now (in the epoch being accumulated).
    pub(crate) fn status(&self, seed: &str) -> HealthStatus {
        self.seeds.get(seed).map_or(HealthStatus::Healthy, |h| self.classify(h))
    }

    fn classify(&self, h: &SeedHealth) -> HealthStatus {
        let recent = |slot: usize| h.last_seen[slot].is_some_and(|e| e + self.window > self.epoch);
        if recent(2) {
            HealthStatus::Critical
        } else if recent(1) {
            HealthStatus::Unhealthy
        } else if recent(0) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// CRITICAL events for `seed` in the current epoch.
    pub(crate) fn critical_this_epoch(&self, seed: &str) -> u64 {
        self.seeds.get(seed).map_or(0, |h| h.critical_this_epoch)
    }

    /// Seeds with CRITICAL events in the current epoch.
    pub(crate) fn seeds_with_critical(&self) -> impl Iterator<Item = &str> {
        self.seeds.iter().filter(|(_, h)| h.critical_this_epoch > 0).map(|(s, _)| s.as_str())
    }

    /// Worst health across tracked seeds.
    pub(crate) fn worst(&self) -> HealthStatus {
        self.seeds.values().map(|h| self.classify(h)).max().unwrap_or(HealthStatus::Healthy)
    }

    /// Closes the current epoch: resets per-epoch counts and drops seeds
    /// whose events no longer fall inside the window.
    pub(crate) fn advance(&mut self) {
        self.epoch += 1;
        let (epoch, window) = (self.epoch, self.window);
        self.seeds.retain(|_, h| {
            h.critical_this_epoch = 0;
            h.last_seen.iter().flatten().any(|&e| e + window > epoch)
        });
    }

    /// Stops tracking a seed (reset or retired).
    pub(crate) fn forget(&mut self, seed: &str) {
        self.seeds.remove(seed);
    }

    /// Events for seeds that could not be tracked (cap reached), cumulative.
    pub(crate) fn untracked(&self) -> u64 {
        self.untracked
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn worst_recent_level_wins_and_fades_after_the_window() {
        let mut t = HealthTracker::new(2, 10);
        t.observe("s", TelemetryLevel::Warning);
        t.observe("s", TelemetryLevel::Error);
        assert_eq!(t.status("s"), HealthStatus::Unhealthy);
        t.advance();
        assert_eq!(t.status("s"), HealthStatus::Unhealthy, "still inside a 2-step window");
        t.advance();
        assert_eq!(t.status("s"), HealthStatus::Healthy);
        assert_eq!(t.status("never-seen"), HealthStatus::Healthy);
    }

    #[test]
    fn critical_dominates_and_counts_per_epoch() {
        let mut t = HealthTracker::new(3, 10);
        t.observe("s", TelemetryLevel::Critical);
        t.observe("s", TelemetryLevel::Warning);
        assert_eq!(t.status("s"), HealthStatus::Critical);
        assert_eq!(t.critical_this_epoch("s"), 1);
        assert_eq!(t.worst(), HealthStatus::Critical);
        t.advance();
        assert_eq!(t.critical_this_epoch("s"), 0);
        assert_eq!(t.status("s"), HealthStatus::Critical);
    }

    #[test]
    fn seed_cap_is_enforced_and_counted() {
        let mut t = HealthTracker::new(1, 1);
        assert!(t.observe("a", TelemetryLevel::Warning));
        assert!(!t.observe("b", TelemetryLevel::Warning));
        assert_eq!(t.untracked(), 1);
        t.advance();
        assert!(t.observe("b", TelemetryLevel::Warning), "a faded out and was pruned");
        t.forget("b");
        assert_eq!(t.status("b"), HealthStatus::Healthy);
    }
}
