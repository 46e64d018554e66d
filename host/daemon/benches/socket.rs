//! Daemon transport numbers over a real Unix socket, against the test
//! support's in-memory control plane (so only the transport is measured):
//! - `step_report_round_trip`: one blocking `DaemonClient::step_report`
//!   (goal: p50 ≤ 25 µs; criterion's median is the p50);
//! - `pipelined_messages/{1,8}_clients`: requests per second with each
//!   client writing ahead of its reader (goal ≥ 40 000/s).
//!
//! Run: `cargo bench -p kasmina-daemon --bench socket`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leyline::api::KasminaApi;
use leyline::protocol::{ClientFrame, RequestBody, Role, ServerFrame};
use support::{RawConn, TestServer, registration, settings, step, transport_api};

const BATCH: u64 = 2_000;

fn round_trip(c: &mut Criterion) {
    let server = TestServer::start(transport_api(), settings());
    let trainer = server.client(Role::Trainer);
    trainer.register_host(registration()).unwrap();
    let mut n = 0;
    c.bench_function("step_report_round_trip", |b| {
        b.iter(|| {
            n += 1;
            black_box(trainer.step_report(step(n)).unwrap())
        })
    });
}

/// Sends `iters × BATCH` pipelined step reports on each of `conns` and
/// waits for every answer.
fn pipelined(conns: &mut [RawConn], iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for conn in conns.iter_mut() {
            let mut tx = conn.try_clone();
            s.spawn(move || {
                for id in 0..iters * BATCH {
                    tx.send(&ClientFrame::Request { correlation_id: id, body: RequestBody::StepReport(step(id)) });
                }
            });
            s.spawn(move || {
                for id in 0..iters * BATCH {
                    match conn.recv().unwrap() {
                        ServerFrame::Response { correlation_id, .. } => assert_eq!(correlation_id, id),
                        other => panic!("{other:?}"),
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let server = TestServer::start(transport_api(), settings());
    server.client(Role::Trainer).register_host(registration()).unwrap();
    let mut group = c.benchmark_group("pipelined_messages");
    for clients in [1usize, 8] {
        let mut conns: Vec<RawConn> = (0..clients).map(|_| RawConn::hello(&server.path, Role::Trainer)).collect();
        group.throughput(Throughput::Elements(BATCH * clients as u64));
        group.bench_function(format!("{clients}_clients"), |b| b.iter_custom(|iters| pipelined(&mut conns, iters)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = round_trip, throughput
}
criterion_main!(benches);
