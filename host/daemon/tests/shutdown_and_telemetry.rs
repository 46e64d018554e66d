//! Graceful shutdown answers what was already read and is bounded; CRITICAL
//! telemetry reaches observers ahead of normal events.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kasmina_client::{ClientError, FrameError};
use kasmina_daemon::ServerSettings;
use leyline::api::{ApiErrorCode, KasminaApi};
use leyline::protocol::{ClientFrame, RequestBody, ResponseBody, Role, ServerFrame};
use leyline::{SeedOperation, TelemetryLevel};
use support::{GatedApi, RawConn, TestServer, command, registration, settings, test_api};

fn gated() -> (Arc<GatedApi>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let api =
        Arc::new(GatedApi { inner: test_api(), entered: Mutex::new(entered_tx), release: Mutex::new(release_rx) });
    (api, entered_rx, release_tx)
}

#[test]
fn shutdown_answers_in_flight_requests_then_says_why_it_closes() {
    let (api, entered, release) = gated();
    let mut server = TestServer::start(api, settings());
    let mut conn = RawConn::hello(&server.path, Role::Observer);
    conn.send(&ClientFrame::Request { correlation_id: 41, body: RequestBody::Status });
    entered.recv_timeout(Duration::from_secs(10)).expect("request reached the host");
    server.trigger_shutdown();
    release.send(()).unwrap();
    match conn.recv().unwrap() {
        ServerFrame::Response { correlation_id: 41, body: Ok(ResponseBody::Status(_)) } => {}
        other => panic!("in-flight request must be answered, got {other:?}"),
    }
    match conn.recv().unwrap() {
        ServerFrame::Closing(err) => assert_eq!(err.code, ApiErrorCode::ShuttingDown),
        other => panic!("expected Closing, got {other:?}"),
    }
    assert!(matches!(conn.recv(), Err(FrameError::Eof)));
    assert_eq!(server.join().aborted_connections, 0);
}

#[test]
fn shutdown_is_bounded_when_a_host_call_never_returns() {
    let (api, entered, release) = gated();
    let grace = Duration::from_millis(300);
    let mut server = TestServer::start(api, ServerSettings { shutdown_grace: grace, ..settings() });
    let mut conn = RawConn::hello(&server.path, Role::Observer);
    conn.send(&ClientFrame::Request { correlation_id: 1, body: RequestBody::Status });
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    server.trigger_shutdown();
    let report = server.join();
    let took = started.elapsed();
    assert_eq!(report.aborted_connections, 1);
    assert!(took >= grace && took < grace + Duration::from_secs(5), "shutdown took {took:?}");
    release.send(()).unwrap(); // let the stuck host call finish
}

#[test]
fn critical_events_reach_observers_first_and_levels_filter() {
    let server = TestServer::start(test_api(), settings());
    // Registered before anyone listens: its events are not part of this test.
    let trainer = server.client(Role::Trainer);
    trainer.register_host(registration()).unwrap();
    let (tx_all, rx_all) = mpsc::channel();
    let (tx_crit, rx_crit) = mpsc::channel();
    for (level, tx) in [(TelemetryLevel::Info, tx_all), (TelemetryLevel::Critical, tx_crit)] {
        let stream = server.client(Role::Observer).subscribe_telemetry(level).unwrap();
        std::thread::spawn(move || {
            for event in stream {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
    }
    let controller = server.client(Role::Controller);
    // Unsigned: the envelope check refuses it with a CRITICAL event.
    let outcome = controller.submit_command(command("c1", "hidden-0", SeedOperation::Germinate, false)).unwrap();
    assert!(!outcome.accepted);
    let next = |rx: &mpsc::Receiver<Result<leyline::TelemetryEvent, ClientError>>| {
        rx.recv_timeout(Duration::from_secs(10)).expect("event delivered").expect("stream healthy")
    };
    let first: leyline::TelemetryEvent = next(&rx_all);
    assert_eq!((first.level, first.name.as_str()), (TelemetryLevel::Critical, "kasmina.security.command_rejected"));

    assert!(controller.submit_command(command("c2", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    // Normal events are pushed as they are emitted (the step report drives G1).
    trainer.step_report(support::step(1)).unwrap();
    let mut names = Vec::new();
    while !names.iter().any(|n| n == "kasmina.command.executed") {
        let event = next(&rx_all);
        assert_ne!(event.level, TelemetryLevel::Critical, "{event:?}");
        names.push(event.name);
    }
    assert!(names.iter().any(|n| n == "kasmina.gate.verdict"), "{names:?}");

    // The CRITICAL-only observer saw exactly the one critical event.
    let only: leyline::TelemetryEvent = next(&rx_crit);
    assert_eq!(only.name, "kasmina.security.command_rejected");
    assert!(rx_crit.try_recv().is_err());
}

#[test]
fn trainers_may_not_subscribe_but_may_drain() {
    let server = TestServer::start(test_api(), settings());
    let trainer = server.client(Role::Trainer);
    let err = trainer.subscribe_telemetry(TelemetryLevel::Info).unwrap_err();
    assert_eq!(err.code, ApiErrorCode::BadRequest);
    let trainer = server.client(Role::Trainer);
    trainer.register_host(registration()).unwrap();
    let outcome =
        server.client(Role::Controller).submit_command(command("c1", "hidden-0", SeedOperation::Cull, true)).unwrap();
    assert_eq!(outcome.reason, Some(leyline::ReasonCode::InvalidStage), "a dormant seed cannot be culled");
    trainer.step_report(support::step(1)).unwrap();
    let events = trainer.drain_telemetry().unwrap();
    assert!(events.iter().any(|e| e.name == "kasmina.command.rejected"), "{events:?}");
}

/// Telemetry is pushed, not pulled: with no trainer connected (so no step
/// report ever finalizes a step), a WARNING for a refused command reaches a
/// subscribed observer at once, against the real host.
#[test]
fn a_rejection_reaches_observers_with_no_trainer_connected() {
    let server = TestServer::start(test_api(), settings());
    let stream = server.client(Role::Observer).subscribe_telemetry(TelemetryLevel::Info).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for event in stream {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    // A fresh GERMINATE for a seed no trainer registered: refused (WARNING).
    let outcome =
        server.client(Role::Controller).submit_command(command("np-1", "hidden-0", SeedOperation::Germinate, true));
    assert!(!outcome.unwrap().accepted);
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(event)) if event.name == "kasmina.command.rejected" => break event,
            Ok(Ok(_)) => continue,
            Ok(Err(err)) => panic!("the stream failed: {err}"),
            Err(_) => panic!("the rejection never reached the observer"),
        }
    };
    assert_eq!(seen.level, TelemetryLevel::Warning, "{seen:?}");
}

/// The daemon's host keeps no outbox: its connections have their own
/// queues, and an outbox nothing drained filled to 65 536 events (~70 MiB)
/// and then counted every later event as dropped. Telemetry still reaches
/// a subscriber; draining the host itself is refused, naming what to do.
#[test]
fn the_daemon_host_pushes_telemetry_and_keeps_no_outbox() {
    let dir = tempfile::tempdir().unwrap();
    support::urza(dir.path());
    let mut options = kasmina_daemon::StartOptions::new(support::test_settings(""));
    options.key = Some(support::key());
    options.urza_dir = Some(dir.path().join("urza"));
    let (host, _) = kasmina_daemon::DaemonHost::start(options).unwrap();
    let telemetry = support::collect(&host);
    host.register_host(registration()).unwrap();
    let unsigned = host.submit_command(command("c1", "hidden-0", SeedOperation::Germinate, false)).unwrap();
    assert!(!unsigned.accepted);
    let events = telemetry.take();
    assert!(events.iter().any(|e| e.name == "kasmina.security.command_rejected"), "{events:?}");
    let err = host.drain_telemetry().unwrap_err();
    assert_eq!(err.code, ApiErrorCode::BadRequest);
    assert!(err.message.contains("subscribe_telemetry"), "{err:?}");
    assert_eq!(host.host().telemetry_dropped(), 0);
}
