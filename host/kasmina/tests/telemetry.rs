//! The telemetry hub: CRITICAL delivery under a saturated queue, packets per
//! seed per step plus a global packet, health, interval stats, and the hub
//! as the sink of real components (verifier, breaker).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use common::{T0, germinate, key};
use kasmina::security::{CommandVerifier, NonceLedger, VerifierConfig};
use kasmina::settings::Settings;
use kasmina::telemetry::{HubConfig, TelemetryError, TelemetryHub};
use kasmina_core::{BreakerConfig, CircuitBreaker, ManualClock, TelemetrySink};
use leyline::{HealthStatus, Metric, TelemetryEvent, TelemetryLevel};

fn hub(queue_capacity: usize, critical_capacity: usize) -> Arc<TelemetryHub> {
    let config = HubConfig { queue_capacity, critical_capacity, health_window_steps: 2, max_tracked_seeds: 100 };
    Arc::new(TelemetryHub::new(config, Arc::new(ManualClock::new(T0))))
}

fn event(name: &str, level: TelemetryLevel, seed: Option<&str>) -> TelemetryEvent {
    let e = TelemetryEvent::new(name, level, "m", T0);
    match seed {
        Some(s) => e.seed(s),
        None => e,
    }
}

fn metric(packet: &leyline::TelemetryPacket, name: &str) -> Option<f64> {
    packet.metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

#[test]
fn critical_events_arrive_even_when_the_normal_queue_is_saturated() {
    let hub = hub(8, 16);
    let mut rx = hub.subscribe_critical();
    for i in 0..20 {
        hub.emit(event(&format!("normal.{i}"), TelemetryLevel::Info, Some("seed-a")));
    }
    assert_eq!(hub.queued_len(), 8, "queue is bounded");
    assert_eq!(hub.stats().dropped, 12, "overflow is counted, not grown");

    hub.emit(event("kasmina.isolation.breaker_open", TelemetryLevel::Critical, Some("seed-a")));
    let got = rx.try_recv().expect("delivered immediately, before any finalize_step");
    assert_eq!(got.name, "kasmina.isolation.breaker_open");
    assert_eq!(hub.queued_len(), 8, "CRITICAL did not take a queue slot");
    assert_eq!(hub.stats().critical_delivered, 1);
    assert_eq!(hub.recent_critical().len(), 1);
    assert_eq!(hub.health("seed-a"), HealthStatus::Critical);

    let packets = hub.finalize_step(1).expect("first step");
    let seed = packets.iter().find(|p| p.seed_id.as_deref() == Some("seed-a")).expect("seed packet");
    assert!(seed.events.iter().all(|e| e.level != TelemetryLevel::Critical), "CRITICAL travels alone");
    assert_eq!(metric(seed, "kasmina.telemetry.critical_events"), Some(1.0));
    let global = packets.last().expect("global packet");
    assert_eq!(global.seed_id, None);
    assert_eq!(metric(global, "kasmina.telemetry.dropped"), Some(12.0));
}

#[test]
fn a_full_subscriber_loses_events_counted_without_blocking_others() {
    let hub = hub(8, 2);
    let mut slow = hub.subscribe_critical();
    let mut fast = hub.subscribe_critical();
    for i in 0..3 {
        hub.emit(event(&format!("c{i}"), TelemetryLevel::Critical, None));
        assert!(fast.try_recv().is_some(), "fast subscriber gets c{i}");
    }
    assert_eq!(hub.stats().critical_subscriber_full, 1);
    assert_eq!(slow.try_recv().map(|e| e.name).as_deref(), Some("c0"));
    assert_eq!(slow.try_recv().map(|e| e.name).as_deref(), Some("c1"));
    assert!(slow.try_recv().is_none());
    drop(slow);
    hub.emit(event("c3", TelemetryLevel::Critical, None));
    assert_eq!(hub.stats().critical_subscriber_full, 1, "dropped subscribers are forgotten, not counted as full");
    assert_eq!(hub.recent_critical().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["c2", "c3"]);
}

#[tokio::test]
async fn critical_receiver_works_in_async_code() {
    let hub = hub(8, 4);
    let mut rx = hub.subscribe_critical();
    hub.emit(event("async.critical", TelemetryLevel::Critical, None));
    assert_eq!(rx.recv().await.map(|e| e.name).as_deref(), Some("async.critical"));
}

#[test]
fn finalize_step_makes_one_packet_per_active_seed_and_a_global_one() {
    let hub = hub(100, 16);
    hub.emit(event("a.info", TelemetryLevel::Info, Some("seed-a")));
    hub.emit(event("b.warn", TelemetryLevel::Warning, Some("seed-b")));
    hub.emit(event("host.info", TelemetryLevel::Info, None));
    hub.record_metric(
        Some("seed-a"),
        Metric {
            name: "kasmina.blend.alpha_mean".to_owned(),
            value: 0.25,
            unit: "ratio".to_owned(),
            labels: Default::default(),
        },
    );
    let packets = hub.finalize_step(7).expect("first step");
    let seeds: Vec<_> = packets.iter().map(|p| p.seed_id.as_deref()).collect();
    assert_eq!(seeds, [Some("seed-a"), Some("seed-b"), None]);
    assert!(packets.iter().all(|p| p.step == 7));
    assert_eq!(packets[0].health, Some(HealthStatus::Healthy));
    assert_eq!(metric(&packets[0], "kasmina.blend.alpha_mean"), Some(0.25));
    assert_eq!(packets[1].health, Some(HealthStatus::Degraded));
    assert_eq!(packets[2].events.len(), 1);
    assert_eq!(packets[2].health, Some(HealthStatus::Degraded), "global health is the worst seed's");
    assert_eq!(metric(&packets[2], "kasmina.telemetry.queued"), Some(4.0));

    // Nothing happened: only the global packet; its counters are this step's.
    let quiet = hub.finalize_step(8).expect("increasing");
    assert_eq!(quiet.len(), 1);
    assert_eq!(metric(&quiet[0], "kasmina.telemetry.queued"), Some(0.0));
    assert_eq!(hub.finalize_step(8), Err(TelemetryError::StepNotIncreasing { step: 8, last: 8 }));
}

#[test]
fn health_reflects_recent_events_and_recovers_after_the_window() {
    let hub = hub(100, 16);
    hub.emit(event("e", TelemetryLevel::Error, Some("s")));
    assert_eq!(hub.health("s"), HealthStatus::Unhealthy);
    hub.finalize_step(1).expect("ok");
    assert_eq!(hub.health("s"), HealthStatus::Unhealthy);
    hub.finalize_step(2).expect("ok");
    assert_eq!(hub.health("s"), HealthStatus::Healthy, "window of 2 steps passed");
    hub.emit(event("w", TelemetryLevel::Warning, Some("s")));
    assert_eq!(hub.health("s"), HealthStatus::Degraded);
    hub.forget_seed("s");
    assert_eq!(hub.health("s"), HealthStatus::Healthy);
}

#[test]
fn interval_stats_snapshot_and_reset() {
    let hub = hub(2, 4);
    for _ in 0..3 {
        hub.emit(event("n", TelemetryLevel::Info, None));
    }
    let first = hub.take_interval_stats();
    assert_eq!((first.queued, first.dropped), (2, 1));
    let second = hub.take_interval_stats();
    assert_eq!((second.queued, second.dropped), (0, 0));
    assert_eq!(hub.stats().dropped, 1);
}

#[test]
fn components_report_through_the_hub() {
    let settings = Settings::default();
    let clock = Arc::new(ManualClock::new(T0));
    let hub = Arc::new(TelemetryHub::from_settings(&settings.telemetry, clock.clone()));
    let mut critical = hub.subscribe_critical();
    let sink: Arc<dyn TelemetrySink> = hub.clone();

    let verifier = CommandVerifier::new(
        key(),
        Arc::new(NonceLedger::new(300_000, 100)),
        VerifierConfig::from_settings(&settings.security),
        clock.clone(),
        sink.clone(),
    )
    .expect("valid");
    let _ = verifier.check(&germinate("forged", T0));
    let got = critical.try_recv().expect("missing signature is CRITICAL");
    assert_eq!(got.attributes.get("reason").map(ToString::to_string).as_deref(), Some("missing_signature"));

    let breaker = CircuitBreaker::new(
        "fetch",
        BreakerConfig { failure_threshold: 1, cooldown_ms: 1_000, half_open_successes: 1 },
        clock,
        sink,
    );
    breaker.record_failure("digest_mismatch");
    // An opened breaker pages a human: CRITICAL, on the priority channel.
    let opened = critical.try_recv().expect("breaker opening is CRITICAL");
    assert_eq!(opened.name, "kasmina.breaker.transition");
    assert_eq!(opened.attributes.get("to").map(ToString::to_string).as_deref(), Some("OPEN"));
}
