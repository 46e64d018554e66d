//! Spans follow the `kasmina.<area>.<action>` convention and telemetry events
//! reach `tracing`: a recording subscriber watches real calls.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{T0, germinate, rig, signed};
use kasmina::rollback::{RollbackKind, RollbackLedger, RollbackReason};
use kasmina::settings::Settings;
use kasmina::telemetry::TelemetryHub;
use kasmina::validator::CommandValidator;
use kasmina_core::{ManualClock, MemorySink, TelemetrySink};
use leyline::{SeedStage, TelemetryEvent, TelemetryLevel};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records the names of spans created and the number of events seen.
#[derive(Default)]
struct Recorder {
    spans: Mutex<Vec<&'static str>>,
    events: AtomicU64,
    next_id: AtomicU64,
}

struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        self.0.spans.lock().unwrap().push(attrs.metadata().name());
        Id::from_u64(self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn every_area_opens_a_named_span_and_hub_events_reach_tracing() {
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::with_default(Shared(recorder.clone()), || {
        let r = rig(100);
        assert!(r.verifier.check(&signed(germinate("span-1", T0))).accepted);

        let clock = Arc::new(ManualClock::new(T0));
        let sink = Arc::new(MemorySink::new(10));
        let validator = CommandValidator::new(&Settings::default().annotations, clock.clone(), sink.clone());
        assert!(validator.validate(&germinate("span-2", T0)).accepted);

        let hub = TelemetryHub::from_settings(&Settings::default().telemetry, clock.clone());
        hub.emit(TelemetryEvent::new("kasmina.test.event", TelemetryLevel::Info, "hello", T0));
        hub.finalize_step(1).expect("first step");

        let ledger: RollbackLedger<()> = RollbackLedger::from_settings(&Settings::default().rollback, clock, sink);
        ledger
            .record(&["s1"], SeedStage::Training, RollbackReason::Culled, RollbackKind::Fast, || Ok::<(), String>(()))
            .expect("recorded");
    });
    let spans = recorder.spans.lock().unwrap().clone();
    for name in [
        "kasmina.security.verify",
        "kasmina.command.validate",
        "kasmina.telemetry.finalize_step",
        "kasmina.rollback.record",
    ] {
        assert!(spans.contains(&name), "missing span {name}: {spans:?}");
    }
    assert!(spans.iter().all(|s| s.starts_with("kasmina.") && s.split('.').count() == 3), "{spans:?}");
    assert!(recorder.events.load(Ordering::Relaxed) >= 1, "hub event not written to tracing");
}
