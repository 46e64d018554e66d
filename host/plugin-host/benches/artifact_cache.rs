//! Compile vs load-from-cache for the default gate plugin: a cold
//! `Component::new` against loading the verified precompiled artifact from
//! the on-disk cache (what a restarted host does).
//!
//! Run: `cargo bench -p kasmina-plugin-host --bench artifact_cache -- --warm-up-time 1 --measurement-time 3`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kasmina_plugin_host::{CacheOutcome, PluginRuntime, RuntimeConfig};

fn bench(c: &mut Criterion) {
    let Ok(bytes) = std::fs::read(kasmina_plugin_artifacts::GATES) else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(runtime) = PluginRuntime::new(RuntimeConfig::new(dir.path())) else { return };
    assert!(matches!(runtime.load_through_disk_cache(&bytes), Ok(CacheOutcome::Compiled)));

    let mut group = c.benchmark_group("component_gates");
    group.sample_size(10);
    group.bench_function("compile", |b| b.iter(|| runtime.compile_uncached(black_box(&bytes)).is_ok()));
    group.bench_function("load_from_disk_cache", |b| {
        b.iter(|| matches!(runtime.load_through_disk_cache(black_box(&bytes)), Ok(CacheOutcome::Disk)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
