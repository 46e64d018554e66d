//! Signed GERMINATEs through the daemon's journaled control plane
//! (`DaemonHost`: plugins, decision, journal append and fsync) from 1 and
//! 4 controller threads, each to its own seeds (issue 13: "the daemon
//! serialises the apply-and-journal part of every state-changing call").
//!
//! Every accepted command is acknowledged only once its journal record is
//! durable, so one thread's throughput is bounded by the fsync time of the
//! disk the journal is on (here a temporary directory on the real file
//! system). With group commit, commands from several threads that finish
//! while one fsync runs share the next one; the `4` row over the `1` row
//! is what that buys.
//!
//! Plugins run in `reuse` isolation so that the journal, not wasmtime, is
//! what the rows compare. The host is built, the slots registered and the
//! kernel loaded (a warm-up GERMINATE on the last slot) outside the timed
//! part; a fresh host and journal every `SLOTS - 1` commands.
//!
//! Run: `cargo bench -p kasmina-daemon --bench journaled_commands -- --warm-up-time 1 --measurement-time 5`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kasmina::Settings;
use kasmina_daemon::{DaemonHost, StartOptions};
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec};
use leyline::{AdaptationCommand, Dim, SeedOperation};

const SLOTS: usize = 2_048;

struct Env {
    urza: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let urza = support::urza(dir.path());
    Env { urza, dir }
}

/// A fresh journaled host with the kernel loaded (warm-up on the last slot).
fn warm_host(env: &Env, round: usize) -> DaemonHost {
    let mut settings = Settings::from_toml("[plugins]\ndeadline_ms = 250\nisolation = \"reuse\"\n").unwrap();
    settings.plugins.cache_dir = Some(support::plugin_cache());
    let mut options = StartOptions::new(settings);
    options.key = Some(support::key());
    options.urza_dir = Some(env.urza.clone());
    options.journal_dir = Some(env.dir.path().join(format!("journal-{round}")));
    let (host, _) = DaemonHost::start(options).unwrap();
    host.register_host(registration()).unwrap();
    let outcome = host.submit_command(germinate(SLOTS - 1, round)).unwrap();
    assert!(outcome.accepted, "{outcome:?}");
    let kernels = host.host().manager().kernels();
    let deadline = Instant::now() + Duration::from_secs(900);
    while (kernels.cached(support::BLUEPRINT).is_none() || kernels.prefetches_in_flight() > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    host
}

fn registration() -> HostRegistration {
    HostRegistration::new(
        support::RUN,
        vec![SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..SLOTS).map(|i| SlotSpec { seed_id: format!("seed-{i}"), site: "hidden".to_owned() }).collect(),
    )
}

fn germinate(n: usize, round: usize) -> AdaptationCommand {
    support::command(&format!("bench-{round}-{n}"), &format!("seed-{n}"), SeedOperation::Germinate, true)
}

/// Submits `count` commands over `threads` threads to fresh hosts; returns
/// the time spent submitting. Panics on a refusal, so a broken pipeline
/// cannot measure as fast.
fn run(env: &Env, threads: usize, count: u64, round: &mut usize) -> Duration {
    let mut left = usize::try_from(count).unwrap();
    let mut total = Duration::ZERO;
    while left > 0 {
        let batch = left.min(SLOTS - 1);
        left -= batch;
        *round += 1;
        let host = warm_host(env, *round);
        let per_thread: Vec<Vec<AdaptationCommand>> = (0..threads)
            .map(|t| (0..batch).filter(|n| n % threads == t).map(|n| germinate(n, *round)).collect())
            .collect();
        let started = Instant::now();
        std::thread::scope(|s| {
            for commands in per_thread {
                let host = &host;
                s.spawn(move || {
                    for cmd in commands {
                        let outcome = host.submit_command(cmd).unwrap();
                        assert!(outcome.accepted, "{outcome:?}");
                    }
                });
            }
        });
        total += started.elapsed();
        let stats = host.recorder().unwrap().stats();
        SYNCS.fetch_add(stats.syncs.load(Relaxed), Relaxed);
        SYNC_US.fetch_add(stats.sync_us.load(Relaxed), Relaxed);
        COMMANDS.fetch_add(batch as u64 + 1, Relaxed);
        host.host().shutdown();
    }
    total
}

// Journal counters over every host of a row (warm-ups and start-up
// snapshots included), printed after it.
static SYNCS: AtomicU64 = AtomicU64::new(0);
static SYNC_US: AtomicU64 = AtomicU64::new(0);
static COMMANDS: AtomicU64 = AtomicU64::new(0);

fn bench(c: &mut Criterion) {
    let env = env();
    let mut round = 0;
    let mut group = c.benchmark_group("journaled_germinate_threads");
    group.throughput(Throughput::Elements(1)).sample_size(10);
    for threads in [1usize, 4] {
        let before = [SYNCS.load(Relaxed), SYNC_US.load(Relaxed), COMMANDS.load(Relaxed)];
        group.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &threads| {
            b.iter_custom(|iters| run(&env, threads, iters, &mut round));
        });
        let syncs = SYNCS.load(Relaxed) - before[0];
        let sync_us = SYNC_US.load(Relaxed) - before[1];
        let commands = COMMANDS.load(Relaxed) - before[2];
        println!(
            "{threads} threads: {commands} commands, {syncs} fsyncs ({:.2} per command, {:.0} µs each on average)",
            syncs as f64 / commands.max(1) as f64,
            sync_us as f64 / syncs.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
