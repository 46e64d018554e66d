//! Circuit breaker (SPEC.md §8): CLOSED → OPEN after consecutive failures,
//! OPEN → HALF_OPEN when the cooldown ends, HALF_OPEN → CLOSED after enough
//! probe successes, or back to OPEN on a probe failure.
//!
//! Every transition, every HALF_OPEN success and every `force_state` emits a
//! telemetry event, so recoveries and manual overrides are never hidden.

use std::sync::{Arc, Mutex};

use leyline::journal::BreakerSnapshot;
use leyline::{BreakerState, TelemetryEvent, TelemetryLevel};

use crate::{Clock, TelemetrySink};

/// Thresholds of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (≥ 1).
    pub failure_threshold: u32,
    /// How long it stays OPEN before probing, ms.
    pub cooldown_ms: u64,
    /// Probe successes in HALF_OPEN that close it (≥ 1).
    pub half_open_successes: u32,
}

/// What `allow()` decided. Never a bare bool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerDecision {
    /// CLOSED: go ahead.
    Allowed,
    /// OPEN: refused; retry after the remaining cooldown.
    Denied {
        /// Milliseconds until the breaker starts probing.
        remaining_cooldown_ms: u64,
    },
    /// HALF_OPEN: go ahead as a probe; report the result.
    Probing,
}

impl BreakerDecision {
    /// Whether the caller may proceed (allowed or probing).
    pub const fn may_proceed(self) -> bool {
        !matches!(self, BreakerDecision::Denied { .. })
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    half_open_successes: u32,
    /// Probes handed out in HALF_OPEN and not yet reported.
    probes_in_flight: u32,
    opened_at_ms: u64,
    transitions: u64,
}

/// A named circuit breaker. Thread-safe; cheap to share in an `Arc`.
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TelemetrySink>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").field("name", &self.name).field("state", &self.state()).finish()
    }
}

impl CircuitBreaker {
    /// A CLOSED breaker. Zero thresholds are raised to 1 (settings validation
    /// refuses zeros before they get here; this keeps the invariant local).
    pub fn new(
        name: impl Into<String>,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn TelemetrySink>,
    ) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            half_open_successes: config.half_open_successes.max(1),
            ..config
        };
        CircuitBreaker {
            name: name.into(),
            config,
            clock,
            sink,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                half_open_successes: 0,
                probes_in_flight: 0,
                opened_at_ms: 0,
                transitions: 0,
            }),
        }
    }

    /// The breaker's name (`fetch`, `isolation`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current state (an OPEN breaker whose cooldown has ended reports
    /// HALF_OPEN only once `allow()` has moved it there).
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Number of state transitions so far.
    pub fn transitions(&self) -> u64 {
        self.lock().transitions
    }

    /// Asks whether a call may go ahead. In HALF_OPEN at most
    /// `half_open_successes` probes are out at once; further callers are
    /// denied (with no cooldown left) until a probe reports back.
    pub fn allow(&self) -> BreakerDecision {
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        let decision = {
            let mut inner = self.lock();
            match inner.state {
                BreakerState::Closed => BreakerDecision::Allowed,
                BreakerState::HalfOpen => self.probe(&mut inner),
                BreakerState::Open => {
                    let elapsed = now.saturating_sub(inner.opened_at_ms);
                    if elapsed >= self.config.cooldown_ms {
                        events.push(self.transition(&mut inner, BreakerState::HalfOpen, "cooldown elapsed", now));
                        self.probe(&mut inner)
                    } else {
                        BreakerDecision::Denied { remaining_cooldown_ms: self.config.cooldown_ms - elapsed }
                    }
                }
            }
        };
        self.emit_all(events);
        decision
    }

    fn probe(&self, inner: &mut Inner) -> BreakerDecision {
        if inner.probes_in_flight >= self.config.half_open_successes {
            return BreakerDecision::Denied { remaining_cooldown_ms: 0 };
        }
        inner.probes_in_flight += 1;
        BreakerDecision::Probing
    }

    /// Reports a successful call.
    pub fn record_success(&self) {
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        {
            let mut inner = self.lock();
            inner.consecutive_failures = 0;
            if inner.state == BreakerState::HalfOpen {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                inner.half_open_successes += 1;
                events.push(
                    self.event("kasmina.breaker.half_open_success", TelemetryLevel::Info, "probe succeeded", now)
                        .attr("successes", u64::from(inner.half_open_successes))
                        .attr("needed", u64::from(self.config.half_open_successes)),
                );
                if inner.half_open_successes >= self.config.half_open_successes {
                    events.push(self.transition(&mut inner, BreakerState::Closed, "probes succeeded", now));
                }
            }
        }
        self.emit_all(events);
    }

    /// Reports a failed call.
    pub fn record_failure(&self, reason: &str) {
        let now = self.clock.now_ms();
        let event = {
            let mut inner = self.lock();
            inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
            match inner.state {
                BreakerState::Closed if inner.consecutive_failures >= self.config.failure_threshold => {
                    Some(self.transition(&mut inner, BreakerState::Open, reason, now))
                }
                BreakerState::HalfOpen => Some(self.transition(&mut inner, BreakerState::Open, reason, now)),
                // OPEN: a failure reported by a call admitted before opening just counts.
                _ => None,
            }
        };
        self.emit_all(event);
    }

    /// Forces a state (operator or controller override); always emits a
    /// WARNING event naming the rationale, even if the state is unchanged.
    pub fn force_state(&self, state: BreakerState, rationale: &str) {
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        {
            let mut inner = self.lock();
            let from = inner.state;
            events.push(
                self.event("kasmina.breaker.forced", TelemetryLevel::Warning, "breaker state forced", now)
                    .attr("from", from.as_str())
                    .attr("to", state.as_str())
                    .attr("rationale", rationale),
            );
            if from != state {
                events.push(self.transition(&mut inner, state, rationale, now));
            }
            inner.consecutive_failures = 0;
        }
        self.emit_all(events);
    }

    /// The state a restart must rebuild (journal snapshots, rollback points).
    pub fn snapshot(&self) -> BreakerSnapshot {
        let inner = self.lock();
        BreakerSnapshot {
            name: self.name.clone(),
            state: inner.state,
            consecutive_failures: inner.consecutive_failures,
            opened_at_ms: inner.opened_at_ms,
        }
    }

    /// Puts the breaker back into a recorded state (after a restart or a
    /// rollback): an OPEN breaker keeps its original cooldown; HALF_OPEN
    /// starts with no probes out. Always emits `kasmina.breaker.restored`;
    /// a snapshot of another breaker is refused (returns `false`, changes
    /// nothing) so a journal mix-up cannot rewire breakers silently.
    pub fn restore(&self, snapshot: &BreakerSnapshot) -> bool {
        if snapshot.name != self.name {
            return false;
        }
        let now = self.clock.now_ms();
        let event = {
            let mut inner = self.lock();
            let from = inner.state;
            if from != snapshot.state {
                inner.transitions += 1;
            }
            inner.state = snapshot.state;
            inner.consecutive_failures = snapshot.consecutive_failures;
            inner.opened_at_ms = snapshot.opened_at_ms;
            inner.half_open_successes = 0;
            inner.probes_in_flight = 0;
            let level =
                if snapshot.state == BreakerState::Closed { TelemetryLevel::Info } else { TelemetryLevel::Warning };
            self.event("kasmina.breaker.restored", level, format!("breaker {} restored", self.name), now)
                .attr("from", from.as_str())
                .attr("to", snapshot.state.as_str())
                .attr("consecutive_failures", u64::from(snapshot.consecutive_failures))
        };
        self.emit_all([event]);
        true
    }

    /// Applies a transition under the lock and returns its event; callers
    /// emit after unlocking, so a slow or re-entrant sink cannot stall or
    /// deadlock the breaker.
    fn transition(&self, inner: &mut Inner, to: BreakerState, reason: &str, now: u64) -> TelemetryEvent {
        let from = inner.state;
        inner.state = to;
        inner.transitions += 1;
        inner.half_open_successes = 0;
        inner.probes_in_flight = 0;
        if to == BreakerState::Open {
            inner.opened_at_ms = now;
        }
        if to == BreakerState::Closed {
            inner.consecutive_failures = 0;
        }
        // An opened breaker pages a human (SPEC.md §12).
        let level = if to == BreakerState::Open { TelemetryLevel::Critical } else { TelemetryLevel::Info };
        self.event(
            "kasmina.breaker.transition",
            level,
            format!("breaker {} {} -> {}", self.name, from.as_str(), to.as_str()),
            now,
        )
        .attr("from", from.as_str())
        .attr("to", to.as_str())
        .attr("reason", reason)
    }

    fn emit_all(&self, events: impl IntoIterator<Item = TelemetryEvent>) {
        for event in events {
            self.sink.emit(event);
        }
    }

    fn event(&self, name: &str, level: TelemetryLevel, message: impl Into<String>, now: u64) -> TelemetryEvent {
        TelemetryEvent::new(name, level, message, now).attr("breaker", self.name.as_str())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Inner holds plain counters: still consistent after a panic elsewhere.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemorySink};

    fn breaker() -> (CircuitBreaker, Arc<ManualClock>, Arc<MemorySink>) {
        let clock = Arc::new(ManualClock::new(0));
        let sink = Arc::new(MemorySink::new(100));
        let cfg = BreakerConfig { failure_threshold: 2, cooldown_ms: 1_000, half_open_successes: 2 };
        (CircuitBreaker::new("fetch", cfg, clock.clone(), sink.clone()), clock, sink)
    }

    #[test]
    fn opens_after_threshold_and_denies_with_remaining_cooldown() {
        let (b, clock, sink) = breaker();
        b.record_failure("digest_mismatch");
        assert_eq!(b.allow(), BreakerDecision::Allowed);
        b.record_failure("digest_mismatch");
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance_ms(400);
        assert_eq!(b.allow(), BreakerDecision::Denied { remaining_cooldown_ms: 600 });
        let t = sink.named("kasmina.breaker.transition");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].level, TelemetryLevel::Critical);
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let (b, _, _) = breaker();
        b.record_failure("x");
        b.record_success();
        b.record_failure("x");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_it_with_an_event_per_success() {
        let (b, clock, sink) = breaker();
        b.record_failure("x");
        b.record_failure("x");
        clock.advance_ms(1_000);
        assert_eq!(b.allow(), BreakerDecision::Probing);
        b.record_success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(sink.named("kasmina.breaker.half_open_success").len(), 2);
        // CLOSED->OPEN, OPEN->HALF_OPEN, HALF_OPEN->CLOSED
        assert_eq!(sink.named("kasmina.breaker.transition").len(), 3);
        assert_eq!(b.transitions(), 3);
    }

    #[test]
    fn half_open_limits_concurrent_probes() {
        let (b, clock, _) = breaker();
        b.record_failure("x");
        b.record_failure("x");
        clock.advance_ms(1_000);
        // half_open_successes = 2: two probes may be out, the third waits.
        assert_eq!(b.allow(), BreakerDecision::Probing);
        assert_eq!(b.allow(), BreakerDecision::Probing);
        assert_eq!(b.allow(), BreakerDecision::Denied { remaining_cooldown_ms: 0 });
        b.record_success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.allow(), BreakerDecision::Probing);
    }

    /// A sink that calls back into the breaker must not deadlock it.
    #[test]
    fn reentrant_sink_does_not_deadlock() {
        struct Reentrant(std::sync::OnceLock<Arc<CircuitBreaker>>);
        impl TelemetrySink for Reentrant {
            fn emit(&self, _event: TelemetryEvent) {
                if let Some(b) = self.0.get() {
                    let _ = b.state();
                }
            }
        }
        let sink = Arc::new(Reentrant(std::sync::OnceLock::new()));
        let cfg = BreakerConfig { failure_threshold: 1, cooldown_ms: 10, half_open_successes: 1 };
        let b = Arc::new(CircuitBreaker::new("fetch", cfg, Arc::new(ManualClock::new(0)), sink.clone()));
        assert!(sink.0.set(Arc::clone(&b)).is_ok());
        b.record_failure("boom");
        b.force_state(BreakerState::Closed, "drill");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn probe_failure_reopens() {
        let (b, clock, _) = breaker();
        b.record_failure("x");
        b.record_failure("x");
        clock.advance_ms(1_500);
        assert!(b.allow().may_proceed());
        b.record_failure("still broken");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow().may_proceed());
    }

    #[test]
    fn snapshot_and_restore_keep_state_failures_and_cooldown() {
        let (b, clock, sink) = breaker();
        b.record_failure("x");
        b.record_failure("x");
        clock.advance_ms(300);
        let snap = b.snapshot();
        assert_eq!((snap.state, snap.consecutive_failures, snap.opened_at_ms), (BreakerState::Open, 2, 0));
        let (fresh, fresh_clock, fresh_sink) = breaker();
        fresh_clock.advance_ms(300);
        assert!(fresh.restore(&snap));
        assert_eq!(fresh.state(), BreakerState::Open);
        // The cooldown runs from when it opened, not from the restore.
        assert_eq!(fresh.allow(), BreakerDecision::Denied { remaining_cooldown_ms: 700 });
        assert_eq!(fresh_sink.named("kasmina.breaker.restored").len(), 1);
        // Another breaker's snapshot is refused and changes nothing.
        let other = BreakerSnapshot { name: "isolation".to_owned(), ..snap };
        let (closed, _, _) = breaker();
        assert!(!closed.restore(&other));
        assert_eq!(closed.state(), BreakerState::Closed);
        assert!(sink.named("kasmina.breaker.restored").is_empty());
    }

    #[test]
    fn force_state_always_emits() {
        let (b, _, sink) = breaker();
        b.force_state(BreakerState::Closed, "no-op override");
        b.force_state(BreakerState::Open, "operator drill");
        assert_eq!(b.state(), BreakerState::Open);
        let forced = sink.named("kasmina.breaker.forced");
        assert_eq!(forced.len(), 2);
        assert_eq!(forced[1].attributes.get("rationale").map(ToString::to_string).as_deref(), Some("operator drill"));
    }
}
