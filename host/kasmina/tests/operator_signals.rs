//! Issue 16, "Severities" and "Hidden causes": a gate that fails for want
//! of a kernel names why the kernel never came, and the failures that mean
//! a seed ran on something other than its verified kernel or missed its
//! budget are CRITICAL (SPEC.md §12). Real plugins, real Urza files, real
//! libtorch loads.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Harness, harness};
use kasmina_kernels::UrzaLibrary;
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::prefetch::PrefetchErrorKind;
use leyline::{SeedStage, TelemetryEvent, TelemetryLevel};

/// The first failed gate verdict event of `seed`.
fn failed_verdict(events: &[TelemetryEvent], seed: &str) -> TelemetryEvent {
    events
        .iter()
        .find(|e| {
            e.name == "kasmina.gate.verdict"
                && e.seed_id.as_deref() == Some(seed)
                && e.attributes.get("passed").map(ToString::to_string).as_deref() == Some("false")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no failed gate verdict for {seed} in {events:#?}"))
}

fn attr(e: &TelemetryEvent, key: &str) -> String {
    e.attributes.get(key).map(ToString::to_string).unwrap_or_default()
}

/// The artifact file of `blueprint` in the harness's Urza library.
fn artifact(h: &Harness, blueprint: &str) -> std::path::PathBuf {
    let urza = UrzaLibrary::open(h.dir.path().join("urza")).expect("urza");
    let entry = urza.entry(blueprint).expect("published");
    urza.artifact_path(&entry)
}

/// Germinates `seed-a` and runs until it is embargoed; all events.
fn germinate_and_cull(h: &mut Harness) -> Vec<TelemetryEvent> {
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    let mut events = Vec::new();
    for _ in 0..12 {
        if h.state("seed-a").stage == SeedStage::Embargoed {
            break;
        }
        h.step();
        events.extend(h.events());
    }
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed, "{events:#?}");
    events
}

#[test]
fn hidden_causes_a_digest_mismatch_is_the_g1_reason_and_critical() {
    let mut h = harness();
    let path = artifact(&h, MLP_ADAPTER_64);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // same length, different digest
    std::fs::write(&path, bytes).unwrap();
    let events = germinate_and_cull(&mut h);
    let v = failed_verdict(&events, "seed-a");
    assert_eq!((attr(&v, "gate").as_str(), attr(&v, "reason").as_str()), ("G1", "kernel_digest_mismatch"));
    assert_eq!(attr(&v, "verdict.plugin_reason"), "kernel_not_attached");
    assert_eq!(v.level, TelemetryLevel::Critical, "{v:?}");
    let unavailable = events.iter().find(|e| e.name == "kasmina.kernel.unavailable").expect("unavailable event");
    assert_eq!(unavailable.level, TelemetryLevel::Critical);
    assert_eq!(attr(unavailable, "cause"), "kernel_digest_mismatch");
}

#[test]
fn hidden_causes_a_missing_artifact_is_the_g1_reason() {
    let mut h = harness();
    std::fs::remove_file(artifact(&h, MLP_ADAPTER_64)).unwrap();
    let events = germinate_and_cull(&mut h);
    let v = failed_verdict(&events, "seed-a");
    assert_eq!((attr(&v, "gate").as_str(), attr(&v, "reason").as_str()), ("G1", "artifact_missing"));
    assert_eq!(attr(&v, "verdict.plugin_reason"), "kernel_not_attached");
    assert_eq!(v.level, TelemetryLevel::Warning, "a missing file is a fault to fix, not a seed on a wrong kernel");
}

#[test]
fn severities_latency_over_budget_is_critical() {
    let mut h = harness();
    h.trainer.m.latency_us = 10_000_000; // the harness's budget is 50 ms
    let events = germinate_and_cull(&mut h);
    let v = failed_verdict(&events, "seed-a");
    assert_eq!(attr(&v, "reason"), "latency_over_budget", "{v:?}");
    assert_eq!(v.level, TelemetryLevel::Critical);
}

#[test]
fn severities_g4_failure_on_a_fallback_is_critical() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Shadowing, 30));
    let _ = h.events();
    h.trainer.m.fallback_used = true;
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    let v = failed_verdict(&h.events(), "seed-a");
    assert_eq!(attr(&v, "gate"), "G4", "{v:?}");
    assert!(["fallback_used", "performance_fallback"].contains(&attr(&v, "reason").as_str()), "{v:?}");
    assert_eq!(v.level, TelemetryLevel::Critical);
}

#[test]
fn severities_a_prefetch_timeout_is_the_gate_reason_and_critical() {
    // The manager's own `kasmina.kernel.prefetch_timeout` event is CRITICAL
    // (host/kernels tests); here the cause and level the gate carries.
    assert_eq!(kasmina::gates::kernel_failure_cause(PrefetchErrorKind::TimedOut), "prefetch_timeout");
    assert_eq!(kasmina::gates::kernel_failure_level(PrefetchErrorKind::TimedOut), TelemetryLevel::Critical);
    assert!(kasmina::gates::CRITICAL_GATE_REASONS.contains(&"prefetch_timeout"));
}
