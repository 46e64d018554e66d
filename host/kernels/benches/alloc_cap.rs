//! What the prewarm memory cap costs the rest of a process. Once a kernel
//! has been loaded, every CPU tensor allocation in the process (a trainer's
//! training steps included) goes through the wrapper in `cpp/alloc_cap.cpp`:
//! one more virtual call and a thread-local read when no cap is active.
//!
//! `tensor_alloc/before_install` and `tensor_alloc/after_install` time the
//! same allocate-and-free of a [64, 64] f32 tensor (16 KiB) and of a scalar
//! tensor, first with libtorch's own allocator, then, in the same process,
//! with the wrapper installed (it cannot be removed, so the order is fixed).
//! `tensor_alloc/capped` runs the same inside an active cap.
//!
//! Run: `cargo bench -p kasmina-kernels --bench alloc_cap -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kasmina_kernels::alloc_cap;
use tch::{Device, Kind, Tensor};

fn allocations(c: &mut Criterion, stage: &str) {
    let mut group = c.benchmark_group("tensor_alloc");
    group.bench_function(format!("{stage}/empty_64x64"), |b| {
        b.iter(|| black_box(Tensor::empty([64, 64], (Kind::Float, Device::Cpu))));
    });
    group.bench_function(format!("{stage}/scalar"), |b| {
        b.iter(|| black_box(Tensor::from(1.0f32)));
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(1);
    allocations(c, "before_install");
    alloc_cap::install().unwrap();
    allocations(c, "after_install");
    let mut group = c.benchmark_group("tensor_alloc");
    group.bench_function("capped/empty_64x64", |b| {
        b.iter(|| {
            alloc_cap::capped(1 << 30, || black_box(Tensor::empty([64, 64], (Kind::Float, Device::Cpu)))).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
