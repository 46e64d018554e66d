//! Per-seed isolation breakers (SPEC.md §6): each seed has its own breaker;
//! `violations_to_trip` isolation violations within `window_steps` steps of
//! that seed open it (CRITICAL telemetry). After the breaker cooldown it
//! goes HALF_OPEN, and each step the seed then reports without a violation
//! is a probe success (with its event); `half_open_successes` of them close
//! it. A violation while probing opens it again.
//!
//! One seed's violations never touch another seed: the old global breaker
//! turned every active seed CRITICAL after three violations anywhere in a
//! run and never recovered.
//!
//! The breakers are [`CircuitBreaker`]s named `isolation/<seed_id>` (so
//! their journal snapshots and rollback captures restore by name); the
//! window of recent violations lives here, beside them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kasmina_core::{BreakerConfig, CircuitBreaker, Clock, TelemetrySink};
use leyline::BreakerState;
use leyline::journal::BreakerSnapshot;

/// Prefix of every isolation breaker's name; the seed id follows.
pub const NAME_PREFIX: &str = "isolation/";

/// Thresholds of the isolation breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationConfig {
    /// Violations within the window that open a seed's breaker (≥ 1).
    pub violations_to_trip: u32,
    /// Window length in that seed's reported steps (≥ 1).
    pub window_steps: u64,
    /// How long an open breaker waits before probing, ms.
    pub cooldown_ms: u64,
    /// Clean steps in HALF_OPEN that close it (≥ 1).
    pub half_open_successes: u32,
}

struct SeedBreaker {
    breaker: Arc<CircuitBreaker>,
    /// Steps with violations inside the window: (step, violations).
    recent: VecDeque<(u64, u64)>,
}

/// Every seed's isolation breaker, created on first use.
pub struct IsolationBreakers {
    config: IsolationConfig,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TelemetrySink>,
    seeds: Mutex<BTreeMap<String, SeedBreaker>>,
}

impl std::fmt::Debug for IsolationBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolationBreakers").field("config", &self.config).finish_non_exhaustive()
    }
}

impl IsolationBreakers {
    /// No breakers yet; each seed gets one when first seen.
    pub fn new(config: IsolationConfig, clock: Arc<dyn Clock>, sink: Arc<dyn TelemetrySink>) -> Self {
        IsolationBreakers { config, clock, sink, seeds: Mutex::new(BTreeMap::new()) }
    }

    /// Records one reported step of `seed_id` with `violations` isolation
    /// violations, and moves its breaker: opens it when the window holds
    /// enough violations, probes it once the cooldown is over.
    pub fn record_step(&self, seed_id: &str, step: u64, violations: u64) {
        let breaker = {
            let mut seeds = self.lock();
            let entry = self.entry(&mut seeds, seed_id);
            if violations > 0 {
                entry.recent.push_back((step, violations));
            }
            let oldest = step.saturating_sub(self.config.window_steps.saturating_sub(1));
            while entry.recent.front().is_some_and(|(s, _)| *s < oldest) {
                entry.recent.pop_front();
            }
            let in_window: u64 = entry.recent.iter().map(|(_, n)| n).sum();
            let breaker = Arc::clone(&entry.breaker);
            match breaker.state() {
                BreakerState::Closed if in_window >= u64::from(self.config.violations_to_trip) => {
                    // Counted once: the next trip needs a fresh window.
                    entry.recent.clear();
                    drop(seeds);
                    breaker.record_failure(&format!(
                        "{in_window} isolation violations within {} steps",
                        self.config.window_steps
                    ));
                    return;
                }
                BreakerState::Closed => return,
                BreakerState::Open | BreakerState::HalfOpen => breaker,
            }
        };
        // OPEN: asks to probe (moves to HALF_OPEN once the cooldown is
        // over); a probing step reports its result.
        if breaker.allow().may_proceed() {
            if violations == 0 {
                breaker.record_success();
                if breaker.state() == BreakerState::Closed
                    && let Some(entry) = self.lock().get_mut(seed_id)
                {
                    entry.recent.clear();
                }
            } else {
                breaker.record_failure("isolation violation while probing");
            }
        }
    }

    /// Whether `seed_id`'s breaker is anything but CLOSED (a probing seed
    /// has not shown it is isolated again yet).
    pub fn is_tripped(&self, seed_id: &str) -> bool {
        self.lock().get(seed_id).is_some_and(|e| e.breaker.state() != BreakerState::Closed)
    }

    /// The breaker of `seed_id` (created CLOSED when new).
    pub fn breaker(&self, seed_id: &str) -> Arc<CircuitBreaker> {
        let mut seeds = self.lock();
        Arc::clone(&self.entry(&mut seeds, seed_id).breaker)
    }

    /// Every seed's breaker, in seed-id order.
    pub fn all(&self) -> Vec<Arc<CircuitBreaker>> {
        self.lock().values().map(|e| Arc::clone(&e.breaker)).collect()
    }

    /// Snapshots of every seed's breaker.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        self.all().iter().map(|b| b.snapshot()).collect()
    }

    /// Puts back a recorded snapshot named `isolation/<seed_id>` (creating
    /// the breaker); false for any other name.
    pub fn restore(&self, snapshot: &BreakerSnapshot) -> bool {
        let Some(seed_id) = snapshot.name.strip_prefix(NAME_PREFIX) else { return false };
        let breaker = self.breaker(seed_id);
        if let Some(entry) = self.lock().get_mut(seed_id) {
            entry.recent.clear();
        }
        breaker.restore(snapshot)
    }

    /// A slot reset (G5 passed): the next seed in the slot starts CLOSED
    /// with an empty window.
    pub fn reset_seed(&self, seed_id: &str) {
        let breaker = {
            let mut seeds = self.lock();
            let Some(entry) = seeds.get_mut(seed_id) else { return };
            entry.recent.clear();
            Arc::clone(&entry.breaker)
        };
        if breaker.state() != BreakerState::Closed {
            breaker.force_state(BreakerState::Closed, "slot reset: a new seed starts isolated");
        }
    }

    fn entry<'a>(&self, seeds: &'a mut BTreeMap<String, SeedBreaker>, seed_id: &str) -> &'a mut SeedBreaker {
        seeds.entry(seed_id.to_owned()).or_insert_with(|| {
            let config = BreakerConfig {
                // The window decides when to trip; one reported failure opens.
                failure_threshold: 1,
                cooldown_ms: self.config.cooldown_ms,
                half_open_successes: self.config.half_open_successes,
            };
            SeedBreaker {
                breaker: Arc::new(CircuitBreaker::new(
                    format!("{NAME_PREFIX}{seed_id}"),
                    config,
                    Arc::clone(&self.clock),
                    Arc::clone(&self.sink),
                )),
                recent: VecDeque::new(),
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, SeedBreaker>> {
        // Plain counters and Arcs: consistent after a panic elsewhere.
        self.seeds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use kasmina_core::{ManualClock, MemorySink};
    use leyline::TelemetryLevel;

    use super::*;

    const COOLDOWN_MS: u64 = 1_000;

    fn breakers() -> (IsolationBreakers, Arc<ManualClock>, Arc<MemorySink>) {
        let clock = Arc::new(ManualClock::new(0));
        let sink = Arc::new(MemorySink::new(1_000));
        let config = IsolationConfig {
            violations_to_trip: 3,
            window_steps: 5,
            cooldown_ms: COOLDOWN_MS,
            half_open_successes: 2,
        };
        (IsolationBreakers::new(config, clock.clone(), sink.clone()), clock, sink)
    }

    fn state(b: &IsolationBreakers, seed: &str) -> BreakerState {
        b.breaker(seed).state()
    }

    #[test]
    fn three_violations_within_the_window_open_that_seed_only_with_a_critical_event() {
        let (b, _, sink) = breakers();
        for step in 1..=3 {
            b.record_step("a", step, 1);
            b.record_step("b", step, 0);
        }
        assert_eq!(state(&b, "a"), BreakerState::Open);
        assert!(b.is_tripped("a"));
        assert_eq!(state(&b, "b"), BreakerState::Closed, "seed b's breaker moved with seed a's violations");
        assert!(!b.is_tripped("b"));
        let opened = sink.named("kasmina.breaker.transition");
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].level, TelemetryLevel::Critical);
        assert_eq!(opened[0].attributes.get("breaker").map(ToString::to_string).as_deref(), Some("isolation/a"));
    }

    #[test]
    fn violations_spread_wider_than_the_window_never_trip() {
        let (b, _, _) = breakers();
        // One violation every 3 steps: never 3 within 5 steps.
        for step in 1..=30 {
            b.record_step("a", step, u64::from(step % 3 == 0));
        }
        assert_eq!(state(&b, "a"), BreakerState::Closed);
        // Negative control: the same count packed into the window trips.
        for step in 31..=33 {
            b.record_step("a", step, 1);
        }
        assert_eq!(state(&b, "a"), BreakerState::Open);
    }

    #[test]
    fn clean_steps_after_the_cooldown_close_it_through_half_open_with_success_events() {
        let (b, clock, sink) = breakers();
        for step in 1..=3 {
            b.record_step("a", step, 2);
        }
        assert_eq!(state(&b, "a"), BreakerState::Open);
        // Clean steps inside the cooldown do not probe.
        b.record_step("a", 4, 0);
        assert_eq!(state(&b, "a"), BreakerState::Open);
        clock.advance_ms(COOLDOWN_MS);
        b.record_step("a", 5, 0);
        assert_eq!(state(&b, "a"), BreakerState::HalfOpen);
        assert!(b.is_tripped("a"), "probing is not recovered yet");
        b.record_step("a", 6, 0);
        assert_eq!(state(&b, "a"), BreakerState::Closed);
        assert_eq!(sink.named("kasmina.breaker.half_open_success").len(), 2);
        let path: Vec<String> = sink
            .named("kasmina.breaker.transition")
            .iter()
            .map(|e| e.attributes.get("to").map(ToString::to_string).unwrap_or_default())
            .collect();
        assert_eq!(path, ["OPEN", "HALF_OPEN", "CLOSED"]);
        // Recovered with a fresh window: two violations do not re-open it.
        b.record_step("a", 7, 1);
        b.record_step("a", 8, 1);
        assert_eq!(state(&b, "a"), BreakerState::Closed);
    }

    #[test]
    fn a_violation_while_probing_opens_it_again() {
        let (b, clock, _) = breakers();
        for step in 1..=3 {
            b.record_step("a", step, 1);
        }
        clock.advance_ms(COOLDOWN_MS);
        b.record_step("a", 4, 0);
        assert_eq!(state(&b, "a"), BreakerState::HalfOpen);
        b.record_step("a", 5, 1);
        assert_eq!(state(&b, "a"), BreakerState::Open);
    }

    #[test]
    fn snapshots_restore_by_seed_and_a_reset_closes() {
        let (b, _, _) = breakers();
        for step in 1..=3 {
            b.record_step("a", step, 1);
        }
        let snaps = b.snapshots();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].name, "isolation/a");
        let (fresh, _, _) = breakers();
        assert!(fresh.restore(&snaps[0]));
        assert!(fresh.is_tripped("a"));
        let global = BreakerSnapshot { name: "isolation".to_owned(), ..snaps[0].clone() };
        assert!(!fresh.restore(&global), "a global snapshot must not apply to a seed");
        fresh.reset_seed("a");
        assert!(!fresh.is_tripped("a"));
    }
}
