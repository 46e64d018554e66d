//! Rollback readiness: points recorded on gate failure and retire, latency
//! measured against the fast and full SLA on an injected clock, metrics,
//! restore lookup, bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use kasmina::rollback::{RollbackError, RollbackKind, RollbackLedger, RollbackReason, RollbackSla};
use kasmina::settings::Settings;
use kasmina_core::{ManualClock, MemorySink};
use leyline::{GateId, SeedStage, TelemetryLevel};

const T0: u64 = 1_700_000_000_000;

#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    alpha: f64,
}

fn ledger(capacity: usize) -> (RollbackLedger<Snapshot>, Arc<ManualClock>, Arc<MemorySink>) {
    let clock = Arc::new(ManualClock::new(T0));
    let sink = Arc::new(MemorySink::new(1_000));
    let sla = RollbackSla::from_settings(&Settings::default().rollback);
    (RollbackLedger::new(sla, capacity, clock.clone(), sink.clone()), clock, sink)
}

fn ok(alpha: f64) -> Result<Snapshot, String> {
    Ok(Snapshot { alpha })
}

#[test]
fn latency_is_measured_against_each_budget() {
    let (l, clock, sink) = ledger(10);
    let fast = l
        .record("s1", SeedStage::Training, RollbackReason::GateFailed(GateId::G2Stability), RollbackKind::Fast, || {
            clock.advance_ms(120);
            ok(0.0)
        })
        .expect("recorded");
    assert_eq!((fast.readiness_latency_ms, fast.within_sla), (120, true));

    let slow = l
        .record("s1", SeedStage::Blending, RollbackReason::GateFailed(GateId::G3Interface), RollbackKind::Fast, || {
            clock.advance_ms(501);
            ok(0.5)
        })
        .expect("recorded even when late: the point is still usable");
    assert!(!slow.within_sla);

    let full = l
        .record("s2", SeedStage::Fossilized, RollbackReason::Retired, RollbackKind::Full, || {
            clock.advance_ms(11_999);
            ok(1.0)
        })
        .expect("recorded");
    assert!(full.within_sla, "11.999 s is inside the 12 s full budget");

    let stats = l.stats();
    assert_eq!(
        (stats.fast.within, stats.fast.over, stats.fast.last_latency_ms, stats.fast.budget_ms),
        (1, 1, 501, 500)
    );
    assert_eq!((stats.full.within, stats.full.over, stats.full.budget_ms), (1, 0, 12_000));
    let metrics = l.metrics();
    let value = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
    assert_eq!(value("kasmina.rollback.fast.over_sla"), Some(1.0));
    assert_eq!(value("kasmina.rollback.full.within_sla"), Some(1.0));
    assert_eq!(value("kasmina.rollback.fast.last_latency"), Some(501.0));

    let exceeded = sink.named("kasmina.rollback.sla_exceeded");
    assert_eq!(exceeded.len(), 1);
    assert_eq!(exceeded[0].level, TelemetryLevel::Error);
    assert_eq!(exceeded[0].seed_id.as_deref(), Some("s1"));
    assert_eq!(sink.named("kasmina.rollback.recorded").len(), 2);
}

#[test]
fn restore_finds_by_id_or_latest_for_seed() {
    let (l, clock, _) = ledger(10);
    let first =
        l.record("s1", SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || ok(0.1)).expect("ok");
    clock.advance_ms(10);
    let second = l
        .record("s1", SeedStage::Blending, RollbackReason::GateFailed(GateId::G3Interface), RollbackKind::Fast, || {
            ok(0.2)
        })
        .expect("ok");
    assert_ne!(first.id, second.id);
    assert_eq!(l.latest_for_seed("s1").expect("found").id, second.id);
    assert_eq!(l.resolve("s1", None).expect("latest").state, Snapshot { alpha: 0.2 });
    assert_eq!(l.resolve("s1", Some(&first.id)).expect("by id").stage, SeedStage::Training);
    assert!(matches!(l.resolve("s2", Some(&first.id)), Err(RollbackError::SeedMismatch { .. })));
    assert!(matches!(l.resolve("s2", None), Err(RollbackError::NoPointForSeed { .. })));
    assert!(matches!(l.get("rb-nope"), Err(RollbackError::NotFound { .. })));
}

#[test]
fn failed_capture_records_nothing_and_is_reported() {
    let (l, _, sink) = ledger(10);
    let err = l
        .record("s1", SeedStage::Training, RollbackReason::Emergency, RollbackKind::Full, || {
            Err::<Snapshot, _>("checkpoint dir not writable")
        })
        .unwrap_err();
    assert!(matches!(&err, RollbackError::CaptureFailed { detail, .. } if detail.contains("not writable")));
    assert_eq!(l.stats().capture_failures, 1);
    assert_eq!(l.stats().points, 0);
    assert_eq!(sink.named("kasmina.rollback.capture_failed").len(), 1);
    assert_eq!(
        l.record("", SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || ok(0.0)).unwrap_err(),
        RollbackError::EmptySeedId
    );
}

#[test]
fn the_ledger_is_bounded_and_evicts_the_oldest() {
    let (l, _, _) = ledger(2);
    let a = l.record("s1", SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || ok(0.0)).expect("ok");
    l.record("s2", SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || ok(0.0)).expect("ok");
    l.record("s3", SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || ok(0.0)).expect("ok");
    let stats = l.stats();
    assert_eq!((stats.points, stats.evicted), (2, 1));
    assert!(matches!(l.get(&a.id), Err(RollbackError::NotFound { .. })));
    assert!(matches!(l.latest_for_seed("s1"), Err(RollbackError::NoPointForSeed { .. })));
    assert!(l.latest_for_seed("s3").is_ok());
}
