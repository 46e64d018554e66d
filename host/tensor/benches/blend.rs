//! Blend kernels on 16 M f32 into a reused buffer, against `copy_` of the
//! same tensor and the naive three-op formula `α·seed + (1−α)·host`.
//!
//! Run: `cargo bench -p kasmina-tensor --bench blend -- --warm-up-time 1 --measurement-time 3`
//!
//! Throughput counts the bytes a single fused pass must move: 2 reads + 1
//! write for a blend (and for the naive formula, which moves far more in
//! reality), 1 read + 1 write for `copy_`. libtorch runs on 2 threads.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kasmina_tensor::blend::kernels::blend_into;
use kasmina_tensor::{BlendSpec, ConfidenceGate};
use tch::{Device, Kind, Tensor};

const SHAPE: [i64; 4] = [16, 64, 128, 128]; // 16 Mi elements, C = 64
const ALPHA: f64 = 0.37;

fn bench_blend(c: &mut Criterion) {
    tch::set_num_threads(2);
    let opts = (Kind::Float, Device::Cpu);
    let host = Tensor::randn(SHAPE, opts);
    let seed = Tensor::randn(SHAPE, opts);
    let logits = Tensor::randn([SHAPE[0], 10], opts);
    let n = host.numel() as u64;
    let mut out = Tensor::empty_like(&host);
    let alpha_vec: Vec<f32> = (0..SHAPE[1]).map(|i| i as f32 / SHAPE[1] as f32).collect();
    let specs = [
        ("convex", BlendSpec::convex()),
        ("residual", BlendSpec::residual()),
        ("channel", BlendSpec::channel(alpha_vec).unwrap()),
        (
            "confidence",
            BlendSpec::confidence(ConfidenceGate { k: 4.0, tau: 0.5, alpha_lo: 0.05, alpha_hi: 0.95 }).unwrap(),
        ),
    ];

    let mut g = c.benchmark_group("blend_16M_f32");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(8 * n));
    g.bench_function("copy_", |b| b.iter(|| out.copy_(&host)));
    g.throughput(Throughput::Bytes(12 * n));
    g.bench_function("naive_three_op", |b| b.iter(|| tch::no_grad(|| &seed * ALPHA + &host * (1.0 - ALPHA))));
    for (name, spec) in &specs {
        g.bench_function(*name, |b| b.iter(|| blend_into(spec, ALPHA, &host, &seed, Some(&logits), &mut out).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench_blend);
criterion_main!(benches);
