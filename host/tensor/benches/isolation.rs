//! Isolation monitor overhead against the backward pass of a small CNN.
//!
//! Run: `cargo bench -p kasmina-tensor --bench isolation -- --warm-up-time 1 --measurement-time 3`
//!
//! The CNN (conv 3→32 → conv 32→64 → conv 64→64 → linear 64→10, batch 64 of
//! 3×32×32) carries a seed (conv 64→64 adapter) fed the detached site
//! features. `backward` times `loss.backward()` alone (forward in the
//! untimed setup); `monitor_check` times one isolation check over all host
//! and seed parameters with k = 256. Overhead = monitor / backward.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kasmina_tensor::isolation::sampled_cosine;
use tch::nn::{self, ConvConfig, Module};
use tch::{Device, Kind, Tensor};

struct Net {
    c1: nn::Conv2D,
    c2: nn::Conv2D,
    c3: nn::Conv2D,
    fc: nn::Linear,
    seed: nn::Conv2D,
}

impl Net {
    fn loss(&self, x: &Tensor) -> Tensor {
        let h = x.apply(&self.c1).relu().max_pool2d_default(2).apply(&self.c2).relu().max_pool2d_default(2);
        let site = h.apply(&self.c3).relu();
        let s = self.seed.forward(&site.detach());
        // Incubator: value = host, seed learns straight-through.
        let blended = &site + (&s - s.detach());
        blended.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc).pow_tensor_scalar(2).mean(Kind::Float)
    }
}

fn bench_isolation(c: &mut Criterion) {
    tch::set_num_threads(2);
    let host_vs = nn::VarStore::new(Device::Cpu);
    let seed_vs = nn::VarStore::new(Device::Cpu);
    let cfg = ConvConfig { padding: 1, ..Default::default() };
    let r = host_vs.root();
    let net = Net {
        c1: nn::conv2d(&r / "c1", 3, 32, 3, cfg),
        c2: nn::conv2d(&r / "c2", 32, 64, 3, cfg),
        c3: nn::conv2d(&r / "c3", 64, 64, 3, cfg),
        fc: nn::linear(&r / "fc", 64, 10, Default::default()),
        seed: nn::conv2d(seed_vs.root() / "adapter", 64, 64, 3, cfg),
    };
    let x = Tensor::randn([64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let host_params = host_vs.trainable_variables();
    let seed_params = seed_vs.trainable_variables();
    net.loss(&x).backward();

    let mut g = c.benchmark_group("isolation_small_cnn");
    g.sample_size(20);
    g.bench_function("backward", |b| b.iter_batched(|| net.loss(&x), |loss| loss.backward(), BatchSize::PerIteration));
    g.bench_function("monitor_check_k256", |b| b.iter(|| sampled_cosine(&host_params, &seed_params, 256).unwrap()));
    g.finish();
}

criterion_group!(benches, bench_isolation);
criterion_main!(benches);
