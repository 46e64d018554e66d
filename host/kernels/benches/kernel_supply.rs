//! Kernel supply benchmarks (issue 4 goals):
//! - `verify/*`: SHA-256 over a 64 MiB buffer, over 16 KiB cache-resident
//!   blocks (OpenSSL `speed`'s method), and a strict Urza fetch of a 64 MiB
//!   artifact (goal ≥ 1.5 GB/s);
//! - `cache/hit_under_2_thread_contention`: a cache hit while a second thread
//!   hits the same kernel in a loop (goal p99 ≤ 1 µs; the p50/p99 of
//!   individually timed hits are printed, criterion reports the mean);
//! - `cold_100mb/*`: fetch + verify + load + prewarm of a ~100 MB TorchScript
//!   kernel through the manager vs. read + hash + `CModule::load_data` alone
//!   (goal ≤ 1.3×). The kernel is generated at bench time by tracing a Rust
//!   closure with a 100 MB constant (tch's `create_by_tracing` + `save`).
//!
//! Run: `cargo bench -p kasmina-kernels --bench kernel_supply -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kasmina_core::{BreakerConfig, CircuitBreaker, MemorySink, SystemClock};
use kasmina_kernels::{KernelLoadManager, KernelManagerConfig, UrzaLibrary, fixtures};
use leyline::{BlueprintDescriptor, BlueprintTier, DType, Dim, KernelInterface, TensorSpec};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

const MIB: usize = 1 << 20;

fn config() -> KernelManagerConfig {
    KernelManagerConfig {
        cache_max_entries: 128,
        cache_max_bytes: 1 << 30,
        cache_ttl_ms: 3_600_000,
        prefetch_timeout_ms: 30_000,
        prefetch_max_in_flight: 8,
        shutdown_timeout_ms: 2_000,
        prewarm_runs: 3,
        prewarm_memory_bytes: 1 << 30,
        device: Device::Cpu,
    }
}

fn manager(urza: Arc<UrzaLibrary>) -> KernelLoadManager {
    let clock = Arc::new(SystemClock);
    let sink = Arc::new(MemorySink::new(64));
    let cfg = BreakerConfig { failure_threshold: 5, cooldown_ms: 30_000, half_open_successes: 2 };
    let breaker = Arc::new(CircuitBreaker::new("fetch", cfg, clock.clone(), sink.clone()));
    KernelLoadManager::new(urza, config(), breaker, sink, clock).unwrap().0
}

fn descriptor(id: &str, width: u64) -> BlueprintDescriptor {
    let spec = TensorSpec { shape: vec![Dim::Batch, Dim::Fixed(width)], dtype: DType::F32 };
    BlueprintDescriptor {
        blueprint_id: id.to_owned(),
        name: id.to_owned(),
        tier: BlueprintTier::Safe,
        parameter_bounds: Default::default(),
        risk: 0.1,
        quarantine_only: false,
        approval_required: false,
        interface: KernelInterface { inputs: vec![spec.clone()], outputs: vec![spec] },
    }
}

fn bench_verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    let buf: Vec<u8> = (0..64 * MIB).map(|i| (i * 31 % 251) as u8).collect();
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.sample_size(10);
    g.bench_function("sha256_64mib", |b| b.iter(|| black_box(Sha256::digest(black_box(&buf)))));
    // `openssl speed -evp sha256`'s method: 16 KiB blocks, cache-resident.
    g.bench_function("sha256_16kib_blocks_hot", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            for _ in 0..4096 {
                h.update(black_box(&buf[..16 * 1024]));
            }
            black_box(h.finalize())
        })
    });

    // The same bytes as an artifact: strict fetch = read once + hash + checks.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &buf).unwrap();
    let urza = UrzaLibrary::open(dir.path().join("urza")).unwrap();
    urza.publish(descriptor("blob", 32), &src).unwrap();
    g.bench_function("strict_fetch_64mib", |b| b.iter(|| black_box(urza.fetch("blob").unwrap().bytes.len())));
    g.finish();
}

fn bench_cache_hit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let urza = Arc::new(UrzaLibrary::open(dir.path()).unwrap());
    fixtures::publish_all(&urza).unwrap();
    let mgr = Arc::new(manager(urza));
    mgr.get(fixtures::MLP_ADAPTER, None).unwrap();

    let solo = hit_percentiles(&mgr);
    eprintln!("cache hit, one thread: p50 {} ns, p99 {} ns, p99.9 {} ns", solo.0, solo.1, solo.2);

    let stop = Arc::new(AtomicBool::new(false));
    let rival = {
        let (mgr, stop) = (mgr.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(mgr.get(fixtures::MLP_ADAPTER, None).unwrap());
            }
        })
    };
    let mut g = c.benchmark_group("cache");
    g.bench_function("hit_under_2_thread_contention", |b| {
        b.iter(|| black_box(mgr.get(fixtures::MLP_ADAPTER, None).unwrap()))
    });
    g.finish();

    let contended = hit_percentiles(&mgr);
    stop.store(true, Ordering::Relaxed);
    rival.join().unwrap();
    eprintln!(
        "cache hit under 2-thread contention: p50 {} ns, p99 {} ns, p99.9 {} ns",
        contended.0, contended.1, contended.2
    );
}

/// p50 / p99 / p99.9 of individually timed hits (Instant overhead, ~20-30 ns, included).
fn hit_percentiles(mgr: &KernelLoadManager) -> (u64, u64, u64) {
    let mut samples: Vec<u64> = (0..200_000)
        .map(|_| {
            let t = Instant::now();
            black_box(mgr.get(fixtures::MLP_ADAPTER, None).unwrap());
            u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
        })
        .collect();
    samples.sort_unstable();
    let at = |per_mille: usize| samples[(samples.len() * per_mille / 1000).min(samples.len() - 1)];
    (at(500), at(990), at(999))
}

fn bench_cold_100mb(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("big.pt");
    {
        // 25 M f32 = 100 MB baked into the traced graph as a constant.
        let big = Tensor::arange(25_000_000i64, (Kind::Float, Device::Cpu)) / 25_000_000.0;
        let x = Tensor::zeros([2, 32], (Kind::Float, Device::Cpu));
        let mut f = |inputs: &[Tensor]| vec![&inputs[0] + big.narrow(0, 0, 32)];
        let module = tch::CModule::create_by_tracing("Big", "forward", &[x], &mut f).unwrap();
        module.save(&pt).unwrap();
    }
    let size = std::fs::metadata(&pt).unwrap().len();
    eprintln!("generated TorchScript kernel: {size} bytes");
    let urza = Arc::new(UrzaLibrary::open(dir.path().join("urza")).unwrap());
    urza.publish(descriptor("big", 32), &pt).unwrap();
    let entry = urza.show("big").unwrap();
    let artifact = urza.artifact_path(&entry);
    let mgr = manager(urza.clone());

    let mut g = c.benchmark_group("cold_100mb");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Bytes(size));
    g.bench_function("baseline_read_hash_cmodule_load", |b| {
        b.iter(|| {
            let bytes = std::fs::read(&artifact).unwrap();
            let digest = hex::encode(Sha256::digest(&bytes));
            assert_eq!(digest, entry.artifact_sha256);
            black_box(tch::CModule::load_data(&mut bytes.as_slice()).unwrap())
        })
    });
    g.bench_function("manager_fetch_verify_load_prewarm", |b| {
        b.iter(|| {
            mgr.clear_cache();
            black_box(mgr.get("big", None).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_verify, bench_cache_hit, bench_cold_100mb);
criterion_main!(benches);
