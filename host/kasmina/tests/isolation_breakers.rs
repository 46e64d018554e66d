//! Isolation breakers are per seed (SPEC.md §6), through the real control
//! plane: one seed's violations open its own breaker (CRITICAL), leave the
//! other seed healthy and advancing, and the breaker recovers through
//! HALF_OPEN after its cooldown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use harness::harness_with;
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::{BreakerState, HealthStatus, SeedStage, TelemetryLevel};

/// Long TRAINING so no gate runs while the breakers are exercised.
const SETTINGS: &str = r#"
[lifecycle]
embargo_s = 2
attach_timeout_steps = 3
training_steps = 12
blend_steps = 2
shadow_steps = 2
probation_steps = 2
[gates]
latency_budget_us = 50000
[plugins]
deadline_ms = 250
[isolation]
violations_to_trip = 3
window_steps = 10
[breaker]
cooldown_ms = 5000
half_open_successes = 2
"#;

fn breaker_state(h: &harness::Harness, seed: &str) -> BreakerState {
    let name = format!("isolation/{seed}");
    h.host.manager().breakers().iter().find(|b| b.name() == name).map_or(BreakerState::Closed, |b| b.state())
}

/// Both seeds TRAINING, then three steps in which only seed-a reports an
/// isolation violation.
fn seed_a_violates_three_times() -> harness::Harness {
    let mut h = harness_with(SETTINGS);
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.germinate("seed-b", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Training, 10));
    assert!(h.run_until("seed-b", SeedStage::Training, 10));
    h.trainer.m.violations_by_seed.insert("seed-a".to_owned(), 1);
    for _ in 0..3 {
        h.step();
    }
    h
}

#[test]
fn one_seeds_violations_trip_only_its_breaker_which_recovers_after_the_cooldown() {
    let mut h = seed_a_violates_three_times();
    assert_eq!(breaker_state(&h, "seed-a"), BreakerState::Open);
    assert_eq!(breaker_state(&h, "seed-b"), BreakerState::Closed, "seed-b's breaker moved with seed-a's violations");
    assert_eq!(h.state("seed-a").health, HealthStatus::Critical);
    assert_ne!(h.state("seed-b").health, HealthStatus::Critical, "a healthy seed was marked CRITICAL");
    let opened: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| e.name == "kasmina.breaker.transition" && e.level == TelemetryLevel::Critical)
        .collect();
    assert_eq!(opened.len(), 1, "{opened:?}");

    // Clean steps: nothing probes before the cooldown ends.
    h.trainer.m.violations_by_seed.clear();
    h.step();
    assert_eq!(breaker_state(&h, "seed-a"), BreakerState::Open);
    h.clock.advance_ms(5_000);
    h.step();
    assert_eq!(breaker_state(&h, "seed-a"), BreakerState::HalfOpen);
    h.step();
    assert_eq!(breaker_state(&h, "seed-a"), BreakerState::Closed);
    assert_eq!(h.events().iter().filter(|e| e.name == "kasmina.breaker.half_open_success").count(), 2);

    // Recovered: the seed is no longer CRITICAL. (Its violations still
    // fail its next gate — SPEC.md §2 — the breaker is what pages.)
    assert_ne!(h.state("seed-a").health, HealthStatus::Critical);
    assert!(h.run_until("seed-b", SeedStage::Probationary, 40), "{:?}", h.state("seed-b"));
}

#[test]
fn the_other_seed_passes_its_gates_while_one_seeds_breaker_is_open() {
    // With the old global breaker, seed-b's G2–G4 saw an open breaker
    // (performance CRITICAL) and culled it too.
    let mut h = seed_a_violates_three_times();
    h.trainer.m.violations_by_seed.clear();
    // No cooldown passes: seed-a's breaker stays open meanwhile.
    assert!(h.run_until("seed-b", SeedStage::Probationary, 40), "{:?}", h.state("seed-b"));
    let a = h.state("seed-a");
    assert_eq!(breaker_state(&h, "seed-a"), BreakerState::Open);
    assert!(
        matches!(a.stage, SeedStage::Embargoed | SeedStage::Culled),
        "seed-a passed a gate after violations: {a:?}"
    );
}
