//! Prefetch: from sync and async callers, strict requests, staleness,
//! seed cancellation and bounded shutdown.
//!
//! Loads that must stay in flight use an artifact replaced by a FIFO (open
//! blocks until a writer appears), so no test sleeps to "wait a bit".

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use kasmina_kernels::fixtures::{BOTTLENECK, MLP_ADAPTER, RESIDUAL_CONV};
use kasmina_kernels::{KernelError, PrefetchEvent, RecvError};
use leyline::prefetch::PrefetchErrorKind;

const WAIT: Duration = Duration::from_secs(30);

fn failed_kind(event: &PrefetchEvent) -> Option<PrefetchErrorKind> {
    match event {
        PrefetchEvent::Failed(e) => Some(e.kind),
        PrefetchEvent::Ready { .. } => None,
    }
}

#[test]
fn prefetch_from_synchronous_code_delivers_the_kernel() {
    let env = common::Env::new(100);
    let (mgr, mut events) = env.default_manager();
    mgr.prefetch(env.request("r1", "seed-a", RESIDUAL_CONV)).unwrap();
    let PrefetchEvent::Ready { ready, kernel } = events.recv_timeout(WAIT).unwrap() else { panic!("expected ready") };
    assert_eq!((ready.request_id.as_str(), ready.seed_id.as_str()), ("r1", "seed-a"));
    assert!(!ready.cache_hit);
    assert_eq!(ready.artifact_sha256, kernel.sha256());
    assert!(std::sync::Arc::ptr_eq(&kernel, &mgr.cached(RESIDUAL_CONV).unwrap()));

    mgr.prefetch(env.request("r2", "seed-b", RESIDUAL_CONV)).unwrap();
    let PrefetchEvent::Ready { ready, .. } = events.recv_timeout(WAIT).unwrap() else { panic!("expected ready") };
    assert!(ready.cache_hit);
    assert_eq!(events.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(mgr.prefetches_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_from_inside_an_async_runtime_does_not_nest_runtimes() {
    let env = common::Env::new(100);
    let (mgr, mut events) = env.default_manager();
    mgr.prefetch(env.request("r1", "seed-a", MLP_ADAPTER)).unwrap();
    let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(matches!(event, PrefetchEvent::Ready { .. }), "{event:?}");
    // The blocking receive refuses to run on an async worker instead of stalling it.
    assert_eq!(events.recv_timeout(Duration::from_millis(1)).unwrap_err(), RecvError::InsideRuntime);
    // Failures arrive the same way.
    mgr.prefetch(env.request("r2", "seed-a", "ghost")).unwrap();
    let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(failed_kind(&event), Some(PrefetchErrorKind::UnknownBlueprint));
    let report = tokio::task::spawn_blocking(move || mgr.shutdown()).await.unwrap();
    assert!(report.stopped_in_time);
    assert!(events.recv().await.is_none(), "channel closes once every task is gone");
}

#[test]
fn dropping_the_manager_inside_an_async_context_does_not_panic() {
    let env = common::Env::new(100);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (mgr, _events) = env.default_manager();
        mgr.prefetch(env.request("r1", "seed-a", MLP_ADAPTER)).unwrap();
        drop(mgr);
    });
}

#[test]
fn incomplete_requests_are_refused_never_completed() {
    let env = common::Env::new(100);
    let (mgr, mut events) = env.default_manager();
    type Mutation = Box<dyn Fn(&mut leyline::prefetch::PrefetchRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("training_run_id", Box::new(|r| r.training_run_id.clear())),
        ("seed_id", Box::new(|r| r.seed_id = "  ".into())),
        ("blueprint_id", Box::new(|r| r.blueprint_id.clear())),
        ("request_id", Box::new(|r| r.request_id.clear())),
        ("issued_at_ms", Box::new(|r| r.issued_at_ms = 0)),
        ("timeout_ms", Box::new(|r| r.timeout_ms = 0)),
        ("timeout_ms", Box::new(|r| r.timeout_ms = 30_001)),
        ("longer than", Box::new(|r| r.seed_id = "s".repeat(300))),
    ];
    for (what, mutate) in cases {
        let mut req = env.request("r", "seed-a", MLP_ADAPTER);
        mutate(&mut req);
        match mgr.prefetch(req) {
            Err(KernelError::InvalidRequest { detail }) => assert!(detail.contains(what), "{what}: {detail}"),
            other => panic!("{what}: expected InvalidRequest, got {other:?}"),
        }
    }
    assert_eq!(env.sink.named("kasmina.kernel.prefetch_rejected").len(), 8);
    assert_eq!(events.try_recv().unwrap_err(), RecvError::Empty, "nothing was started");
    assert!(mgr.cached(MLP_ADAPTER).is_none());
}

#[test]
fn stale_requests_time_out_with_telemetry_and_do_no_work() {
    let env = common::Env::new(100);
    let (mgr, mut events) = env.default_manager();
    let mut req = env.request("old", "seed-a", MLP_ADAPTER);
    req.issued_at_ms -= 5_000;
    req.timeout_ms = 5_000;
    mgr.prefetch(req).unwrap();
    let event = events.recv_timeout(WAIT).unwrap();
    assert_eq!(failed_kind(&event), Some(PrefetchErrorKind::TimedOut));
    let t = env.sink.named("kasmina.kernel.prefetch_timeout");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].level, leyline::TelemetryLevel::Critical, "a missed prefetch deadline pages (issue 16)");
    assert_eq!(t[0].seed_id.as_deref(), Some("seed-a"));
    assert_eq!(mgr.stats().cumulative.misses, 0, "a stale request never reaches the cache");
}

#[test]
fn a_load_that_outlives_its_deadline_times_out() {
    let env = common::Env::new(100);
    let (mgr, mut events) = env.default_manager();
    let fifo = env.make_artifact_hang(BOTTLENECK);
    let mut req = env.request("slow", "seed-a", BOTTLENECK);
    req.timeout_ms = 50; // real time: the load is stuck until the FIFO is released
    mgr.prefetch(req).unwrap();
    let event = events.recv_timeout(WAIT).unwrap();
    assert_eq!(failed_kind(&event), Some(PrefetchErrorKind::TimedOut));
    assert_eq!(env.sink.named("kasmina.kernel.prefetch_timeout").len(), 1);
    common::release_fifo(&fifo);
}

#[test]
fn retiring_a_seed_cancels_its_requests_only() {
    let env = common::Env::new(100);
    let (mgr, mut events) = env.default_manager();
    let fifo = env.make_artifact_hang(BOTTLENECK);
    mgr.prefetch(env.request("retired-1", "seed-old", BOTTLENECK)).unwrap();
    assert_eq!(mgr.prefetches_in_flight(), 1);
    assert_eq!(mgr.cancel_seed("seed-old"), 1);
    let event = events.recv_timeout(WAIT).unwrap();
    assert_eq!((event.request_id(), failed_kind(&event)), ("retired-1", Some(PrefetchErrorKind::Cancelled)));
    let c = env.sink.named("kasmina.kernel.prefetch_cancelled");
    assert_eq!(c[0].attributes.get("reason").map(ToString::to_string).as_deref(), Some("seed_retired"));

    assert_eq!(mgr.cancel_seed("seed-nobody"), 0);
    mgr.prefetch(env.request("live", "seed-new", MLP_ADAPTER)).unwrap();
    let event = events.recv_timeout(WAIT).unwrap();
    assert!(matches!(event, PrefetchEvent::Ready { .. }), "{event:?}");
    common::release_fifo(&fifo);
}

#[test]
fn the_in_flight_cap_refuses_extra_requests() {
    let env = common::Env::new(100);
    let mut cfg = common::config();
    cfg.prefetch_max_in_flight = 1;
    cfg.shutdown_timeout_ms = 300;
    let (mgr, _events) = env.manager(cfg);
    let fifo = env.make_artifact_hang(BOTTLENECK);
    mgr.prefetch(env.request("a", "seed-a", BOTTLENECK)).unwrap();
    assert!(matches!(
        mgr.prefetch(env.request("b", "seed-b", MLP_ADAPTER)),
        Err(KernelError::PrefetchQueueFull { cap: 1 })
    ));
    mgr.shutdown();
    common::release_fifo(&fifo);
}

#[test]
fn shutdown_stops_everything_within_its_bound_even_with_a_stuck_load() {
    let env = common::Env::new(100);
    let mut cfg = common::config();
    cfg.shutdown_timeout_ms = 300;
    let (mgr, mut events) = env.manager(cfg);
    let fifo = env.make_artifact_hang(BOTTLENECK);
    mgr.prefetch(env.request("stuck", "seed-a", BOTTLENECK)).unwrap();
    mgr.prefetch(env.request("stuck-2", "seed-b", BOTTLENECK)).unwrap();

    let started = Instant::now();
    let report = mgr.shutdown();
    let took = started.elapsed();
    assert!(report.stopped_in_time, "{report:?}");
    assert_eq!(report.cancelled_requests, 2);
    // Bound plus the hand-off margin; the stuck blocking read is abandoned, not awaited.
    assert!(took < Duration::from_millis(300 + 250 + 200), "shutdown took {took:?}");

    // Every task is gone: the channel drains and closes.
    let mut cancelled = 0;
    loop {
        match events.recv_timeout(WAIT) {
            Ok(e) => {
                assert_eq!(failed_kind(&e), Some(PrefetchErrorKind::Cancelled));
                cancelled += 1;
            }
            Err(RecvError::Closed) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(cancelled <= 2);
    assert!(matches!(mgr.prefetch(env.request("late", "seed-c", MLP_ADAPTER)), Err(KernelError::ShutDown)));
    assert!(mgr.shutdown().already_shut_down);
    common::release_fifo(&fifo);
}
