//! The rollback ledger: a point is pending until the trainer confirms its
//! half; readiness (control plane + trainer capture) and restore latency are
//! counted against the fast and full budgets; unrestorable points are
//! refused with their reason; lookups and bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use kasmina::rollback::{PointStatus, RollbackError, RollbackKind, RollbackLedger, RollbackReason, RollbackSla};
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

fn record(l: &RollbackLedger<Snapshot>, seed: &str, kind: RollbackKind, alpha: f64) -> String {
    l.record(&[seed], SeedStage::Blending, RollbackReason::Culled, kind, || ok(alpha)).expect("recorded").id.clone()
}

#[test]
fn readiness_counts_only_once_the_trainer_confirms_and_is_measured_against_each_budget() {
    let (l, _, sink) = ledger(10);
    let fast = record(&l, "s1", RollbackKind::Fast, 0.2);
    assert_eq!(l.stats().fast.within + l.stats().fast.over, 0, "nothing is ready before the trainer confirms");
    assert_eq!(l.stats().pending, 1);
    assert!(matches!(l.resolve("s1", None), Err(RollbackError::NotReady { .. })));

    // The trainer's capture took 120 ms: within 500 ms.
    let status = l.confirm_capture(&fast, 120_000, 4_096).unwrap();
    let PointStatus::Ready { readiness_us, within_sla, bytes } = status else { panic!("{status:?}") };
    assert!(within_sla && bytes == 4_096);
    assert!(readiness_us > 120_000, "readiness adds the control plane's own capture: {readiness_us}");
    assert_eq!(l.resolve("s1", None).unwrap().state, Snapshot { alpha: 0.2 });

    // 501 ms is over the fast budget; the point is still usable.
    let slow = record(&l, "s1", RollbackKind::Fast, 0.3);
    assert!(matches!(l.confirm_capture(&slow, 501_000, 1).unwrap(), PointStatus::Ready { within_sla: false, .. }));
    assert!(l.resolve("s1", Some(&slow)).is_ok());
    // 11.9 s is inside the 12 s full budget.
    let full = record(&l, "s2", RollbackKind::Full, 1.0);
    assert!(matches!(l.confirm_capture(&full, 11_900_000, 1).unwrap(), PointStatus::Ready { within_sla: true, .. }));

    let stats = l.stats();
    assert_eq!((stats.fast.within, stats.fast.over, stats.fast.budget_ms), (1, 1, 500));
    assert!(stats.fast.last_latency_us >= 501_000);
    assert_eq!((stats.full.within, stats.full.over, stats.full.budget_ms), (1, 0, 12_000));
    let metrics = l.metrics();
    let value = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
    assert_eq!(value("kasmina.rollback.fast.over_sla"), Some(1.0));
    assert_eq!(value("kasmina.rollback.full.within_sla"), Some(1.0));
    assert!(value("kasmina.rollback.fast.last_latency").is_some_and(|ms| ms >= 501.0));

    let exceeded = sink.named("kasmina.rollback.sla_exceeded");
    assert_eq!(exceeded.len(), 1);
    assert_eq!(exceeded[0].level, TelemetryLevel::Error);
    assert_eq!(sink.named("kasmina.rollback.recorded").len(), 2);
    // A second confirmation of the same point is refused.
    assert!(l.confirm_capture(&fast, 1, 1).is_err());
}

#[test]
fn restores_are_measured_and_failures_counted() {
    let (l, _, sink) = ledger(10);
    let id = record(&l, "s1", RollbackKind::Fast, 0.5);
    l.confirm_capture(&id, 10, 1).unwrap();
    assert!(l.record_restore(&id, 30, 200_000).unwrap(), "230 ms is within 500 ms");
    assert!(!l.record_restore(&id, 30, 600_000).unwrap(), "630 ms is not");
    l.restore_failed(&id, "checkpoint file missing");
    let stats = l.stats();
    assert_eq!((stats.fast_restore.within, stats.fast_restore.over, stats.restore_failures), (1, 1, 1));
    assert_eq!(stats.fast_restore.last_latency_us, 600_030);
    assert_eq!(sink.named("kasmina.rollback.restored").len(), 2);
    let failed = sink.named("kasmina.rollback.restore_failed");
    assert!(failed[0].message.contains("checkpoint file missing"), "{:?}", failed[0]);
}

#[test]
fn an_unrestorable_point_is_refused_with_its_reason_and_never_replaced_by_an_older_one() {
    let (l, _, sink) = ledger(10);
    let older = record(&l, "s1", RollbackKind::Fast, 0.1);
    l.confirm_capture(&older, 10, 1).unwrap();
    let latest = record(&l, "s1", RollbackKind::Fast, 0.2);
    l.mark_unavailable(&latest, "the trainer's capture failed: disk full", true).unwrap();
    let err = l.resolve("s1", None).unwrap_err();
    assert!(matches!(&err, RollbackError::Unavailable { id, reason } if *id == latest && reason.contains("disk full")));
    // The older point is still there, by id.
    assert!(l.resolve("s1", Some(&older)).is_ok());
    l.mark_unavailable(&older, "the trainer evicted it", false).unwrap();
    assert!(matches!(l.resolve("s1", Some(&older)), Err(RollbackError::Unavailable { .. })));
    let stats = l.stats();
    assert_eq!((stats.capture_failures, stats.unavailable), (1, 1));
    assert_eq!(sink.named("kasmina.rollback.capture_failed").len(), 1);
    assert_eq!(sink.named("kasmina.rollback.unavailable").len(), 1);
}

#[test]
fn lookups_by_id_seed_and_coverage() {
    let (l, clock, _) = ledger(10);
    let first = record(&l, "s1", RollbackKind::Fast, 0.1);
    clock.advance_ms(10);
    let both = l
        .record(&["s2", "s1"], SeedStage::Blending, RollbackReason::Emergency, RollbackKind::Fast, || ok(0.2))
        .unwrap();
    for id in [&first, &both.id] {
        l.confirm_capture(id, 1, 1).unwrap();
    }
    assert_ne!(first, both.id);
    assert_eq!(both.seed_id, "s2");
    assert_eq!(l.latest_for_seed("s1").unwrap().id, both.id, "an emergency point covers every seed it culled");
    assert_eq!(l.resolve("s1", Some(&first)).unwrap().state, Snapshot { alpha: 0.1 });
    assert!(matches!(l.resolve("s2", Some(&first)), Err(RollbackError::SeedMismatch { .. })));
    assert!(matches!(l.resolve("s3", None), Err(RollbackError::NoPointForSeed { .. })));
    assert!(matches!(l.get("rb-nope"), Err(RollbackError::NotFound { .. })));
    let _ = GateId::G2Stability;
}

#[test]
fn failed_capture_records_nothing_and_is_reported() {
    let (l, _, sink) = ledger(10);
    let err = l
        .record(&["s1"], SeedStage::Training, RollbackReason::Emergency, RollbackKind::Full, || {
            Err::<Snapshot, _>("state not capturable")
        })
        .unwrap_err();
    assert!(matches!(&err, RollbackError::CaptureFailed { detail, .. } if detail.contains("not capturable")));
    assert_eq!(l.stats().capture_failures, 1);
    assert_eq!(l.stats().points, 0);
    assert_eq!(sink.named("kasmina.rollback.capture_failed").len(), 1);
    assert_eq!(
        l.record(&[""], SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || ok(0.0)).unwrap_err(),
        RollbackError::EmptySeedId
    );
}

#[test]
fn the_ledger_is_bounded_and_evicts_the_oldest() {
    let (l, _, _) = ledger(2);
    let a = record(&l, "s1", RollbackKind::Fast, 0.0);
    record(&l, "s2", RollbackKind::Fast, 0.0);
    record(&l, "s3", RollbackKind::Fast, 0.0);
    let stats = l.stats();
    assert_eq!((stats.points, stats.evicted), (2, 1));
    assert!(matches!(l.get(&a), Err(RollbackError::NotFound { .. })));
    assert!(matches!(l.latest_for_seed("s1"), Err(RollbackError::NoPointForSeed { .. })));
    assert!(l.latest_for_seed("s3").is_ok());
}

#[test]
fn retired_points_take_the_full_path_and_the_rest_the_fast_one() {
    assert_eq!(RollbackReason::Retired.kind(), RollbackKind::Full);
    assert!(RollbackKind::Full.durable() && !RollbackKind::Fast.durable());
    for reason in [RollbackReason::Culled, RollbackReason::GateFailed(GateId::G3Interface), RollbackReason::Emergency] {
        assert_eq!(reason.kind(), RollbackKind::Fast);
    }
}
