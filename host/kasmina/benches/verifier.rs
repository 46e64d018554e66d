//! Verified commands per second on one core (HMAC + nonce + freshness), and
//! proof that the nonce ledger stays flat as it fills.
//!
//! Run: `cargo bench -p kasmina --bench verifier` (pin to one core with
//! `taskset -c 0` for the "one core" figure).
//!
//! - `verify/ledger_N`: a signed GERMINATE verified against a ledger holding
//!   N live entries (0, 1 000, 10 000). The ledger is kept at N: the clock
//!   jumps one TTL after each command so the measured command's own entry
//!   has expired by the next one and is purged by that insert (which is
//!   part of what is timed, as in production); the N prefilled entries were
//!   inserted far in the future and stay live.
//! - `verify/evicting_10000`: the ledger is full at 10 000 and every insert
//!   evicts the earliest-expiring entry (and reports it).
//! - `nonce_ledger/*`: the ledger alone, same levels, without HMAC.
//! - `hmac/canonical_bytes+verify`: the HMAC part alone.
//!
//! The Python prototype: 9 µs at 0 entries, 160 µs at 10 000, 720 µs while
//! evicting (it scanned for the earliest expiry).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kasmina::security::{CommandVerifier, HmacKey, NonceLedger, VerifierConfig, sign_in_place};
use kasmina_core::{ManualClock, TelemetrySink};
use leyline::command::{SeedCommand, SeedOperation, canonical_bytes};
use leyline::{AdaptationCommand, CommandPayload, TelemetryEvent};

const T0: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 300_000;
const CAPACITY: usize = 10_000;
/// Prefilled entries are inserted this far ahead, so they outlive every
/// clock jump a sample makes.
const FAR_FUTURE_MS: u64 = 1 << 50;

/// Discards events: the bench measures the verifier, not a sink.
struct NullSink;
impl TelemetrySink for NullSink {
    fn emit(&self, event: TelemetryEvent) {
        black_box(event);
    }
}

fn key() -> HmacKey {
    HmacKey::from_bytes(&[0x5a; 32]).expect("32-byte key")
}

fn germinate(id: u64, issued_at_ms: u64, key: &HmacKey) -> AdaptationCommand {
    let mut command = AdaptationCommand {
        version: leyline::CONTRACT_VERSION,
        command_id: format!("cmd-{id:012}"),
        target_seed_id: "seed-a".to_owned(),
        execution_deadline_ms: Some(issued_at_ms + 60_000),
        issued_at_ms: Some(issued_at_ms),
        issued_by: "tamiyo".to_owned(),
        payload: CommandPayload::Seed(SeedCommand {
            operation: SeedOperation::Germinate,
            blueprint_id: "mlp-adapter".to_owned(),
            parameters: BTreeMap::from([("width".to_owned(), 64.0)]),
        }),
        annotations: BTreeMap::from([
            ("training_run_id".to_owned(), "run-42".to_owned()),
            ("mesh_layers".to_owned(), "block1,block2".to_owned()),
        ]),
        signature: None,
    };
    sign_in_place(&mut command, key);
    command
}

/// A verifier whose ledger holds `prefill` live entries.
fn verifier(prefill: usize, prefill_at_ms: u64) -> (CommandVerifier, Arc<ManualClock>) {
    let ledger = Arc::new(NonceLedger::new(TTL_MS, CAPACITY));
    for i in 0..prefill {
        ledger.check_and_insert(&format!("prefill-{i:08}"), prefill_at_ms).expect("unique");
    }
    let clock = Arc::new(ManualClock::new(T0));
    let config = VerifierConfig { freshness_window_ms: 60_000, future_skew_ms: 5_000 };
    let verifier = CommandVerifier::new(key(), ledger, config, clock.clone(), Arc::new(NullSink)).expect("valid");
    (verifier, clock)
}

/// Runs `measure` on `iters` inputs made by `make`, timing only `measure`;
/// inputs are made 1 024 at a time so memory stays bounded.
fn in_batches<T>(iters: u64, mut make: impl FnMut(u64) -> T, mut measure: impl FnMut(T)) -> Duration {
    const BATCH: u64 = 1_024;
    let mut elapsed = Duration::ZERO;
    let mut next = 0;
    while next < iters {
        let end = (next + BATCH).min(iters);
        let inputs: Vec<T> = (next..end).map(&mut make).collect();
        let started = Instant::now();
        for input in inputs {
            measure(input);
        }
        elapsed += started.elapsed();
        next = end;
    }
    elapsed
}

fn bench_verify(c: &mut Criterion) {
    let key = key();
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    for level in [0usize, 1_000, 10_000 - 1] {
        let label = if level == CAPACITY - 1 { 10_000 } else { level };
        group.bench_with_input(BenchmarkId::new("ledger", label), &level, |b, &level| {
            b.iter_custom(|iters| {
                let (verifier, clock) = verifier(level, T0 + FAR_FUTURE_MS);
                let elapsed = in_batches(
                    iters,
                    |i| germinate(i, T0 + i * TTL_MS, &key),
                    |command| {
                        black_box(verifier.verify(command).expect("accepted"));
                        clock.advance_ms(TTL_MS);
                    },
                );
                assert_eq!(verifier.ledger().len(), level + 1, "ledger level drifted");
                elapsed
            });
        });
    }
    group.bench_function("evicting_10000", |b| {
        b.iter_custom(|iters| {
            // All measured commands at T0 + 1: they outlive the prefilled
            // entries and each other's TTL, so every insert must evict.
            let (verifier, clock) = verifier(CAPACITY, T0);
            clock.advance_ms(1);
            let elapsed = in_batches(
                iters,
                |i| germinate(i, T0 + 1, &key),
                |command| {
                    black_box(verifier.verify(command).expect("accepted"));
                },
            );
            assert_eq!(verifier.ledger().stats().truncations, iters, "every insert evicted");
            elapsed
        });
    });
    group.finish();
}

fn bench_ledger(c: &mut Criterion) {
    let mut group = c.benchmark_group("nonce_ledger");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    for level in [0usize, 1_000, 10_000 - 1] {
        let label = if level == CAPACITY - 1 { 10_000 } else { level };
        group.bench_with_input(BenchmarkId::new("check_and_insert", label), &level, |b, &level| {
            b.iter_custom(|iters| {
                let ledger = NonceLedger::new(TTL_MS, CAPACITY);
                for i in 0..level {
                    ledger.check_and_insert(&format!("prefill-{i:08}"), FAR_FUTURE_MS).expect("unique");
                }
                in_batches(
                    iters,
                    |i| (i, format!("cmd-{i:012}")),
                    |(i, id)| {
                        black_box(ledger.check_and_insert(&id, i * TTL_MS).expect("fresh"));
                    },
                )
            });
        });
    }
    group.bench_function("check_and_insert/evicting_10000", |b| {
        b.iter_custom(|iters| {
            let ledger = NonceLedger::new(TTL_MS, CAPACITY);
            for i in 0..CAPACITY {
                ledger.check_and_insert(&format!("prefill-{i:08}"), 0).expect("unique");
            }
            let elapsed = in_batches(
                iters,
                |i| format!("cmd-{i:012}"),
                |id| {
                    black_box(ledger.check_and_insert(&id, 1).expect("fresh"));
                },
            );
            assert_eq!(ledger.stats().truncations, iters, "every insert evicted");
            elapsed
        });
    });
    group.finish();
}

fn bench_hmac(c: &mut Criterion) {
    let key = key();
    let command = germinate(1, T0, &key);
    let signature = command.signature.clone().expect("signed");
    let mut group = c.benchmark_group("hmac");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    group.bench_function("canonical_bytes+verify", |b| {
        b.iter(|| black_box(key.verify(&canonical_bytes(black_box(&command)), &signature)));
    });
    group.finish();
}

criterion_group!(benches, bench_verify, bench_ledger, bench_hmac);
criterion_main!(benches);
