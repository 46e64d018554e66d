//! The kernel load manager: publish → fetch → load → prewarm, every failure
//! mode (no fallback), one load under concurrency, stats, bounds, TTL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};

use kasmina_kernels::fixtures::{self, BOTTLENECK, MLP_ADAPTER, MLP_ADAPTER_64, RESIDUAL_CONV, WRONG_IFACE};
use kasmina_kernels::{FetchError, KernelError};
use leyline::prefetch::PrefetchErrorKind;
use leyline::{BreakerState, TelemetryLevel};
use tch::{Kind, Tensor};

#[test]
fn publish_fetch_load_prewarm_and_run() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();
    let k = mgr.get(RESIDUAL_CONV, Some("seed-1")).unwrap();
    assert_eq!(k.blueprint_id(), RESIDUAL_CONV);
    assert_eq!(k.sha256(), env.urza.show(RESIDUAL_CONV).unwrap().artifact_sha256);
    let p = k.prewarm();
    assert!(p.outputs_match);
    assert_eq!(p.output_shapes, vec![vec![2, 8, 8, 8]]);
    assert_eq!(p.runs, 3);
    assert!(p.p50_us <= p.p95_us);

    let x = Tensor::ones([5, 8, 8, 8], (Kind::Float, tch::Device::Cpu));
    let y = k.forward(&[x]).unwrap();
    assert_eq!(y.size(), [5, 8, 8, 8]);
    // The fixture zero-initialises its last conv: a fresh graft starts as a no-op.
    assert_eq!(y.abs().sum(Kind::Float).double_value(&[]), 0.0);

    let loaded = env.sink.named("kasmina.kernel.loaded");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].seed_id.as_deref(), Some("seed-1"));
    let (again, hit) = mgr.get_traced(RESIDUAL_CONV, None).unwrap();
    assert!(hit && Arc::ptr_eq(&k, &again));
}

#[test]
fn trainable_instances_are_per_seed_and_learn() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();
    let k = mgr.get(MLP_ADAPTER, None).unwrap();
    let vs_a = tch::nn::VarStore::new(tch::Device::Cpu);
    let vs_b = tch::nn::VarStore::new(tch::Device::Cpu);
    let a = k.instantiate_trainable(vs_a.root()).unwrap();
    let _b = k.instantiate_trainable(vs_b.root()).unwrap();
    assert_eq!(vs_a.trainable_variables().len(), 4, "fc1/fc2 weight and bias");

    use tch::nn::OptimizerConfig;
    let mut opt = tch::nn::Sgd::default().build(&vs_a, 0.1).unwrap();
    let x = Tensor::ones([4, 32], (Kind::Float, tch::Device::Cpu));
    let loss = (a.forward_ts(&[&x]).unwrap() - 1.0).square().mean(Kind::Float);
    opt.backward_step(&loss);
    let loss_after = (a.forward_ts(&[&x]).unwrap() - 1.0).square().mean(Kind::Float);
    assert!(loss_after.double_value(&[]) < loss.double_value(&[]), "seed A learned");
    // B and the shared inference module are untouched by A's step.
    let shared = k.forward(&[x.shallow_clone()]).unwrap();
    assert_eq!(shared.abs().sum(Kind::Float).double_value(&[]), 0.0);
    let b_out =
        vs_b.trainable_variables().iter().map(|t| t.abs().sum(Kind::Float).double_value(&[])).collect::<Vec<_>>();
    assert!(b_out.iter().filter(|v| **v == 0.0).count() >= 2, "B's last layer still zero: {b_out:?}");
}

fn assert_failed(
    env: &common::Env,
    result: Result<Arc<kasmina_kernels::LoadedKernel>, KernelError>,
    kind: PrefetchErrorKind,
) -> KernelError {
    let err = result.expect_err("fetch must fail: there is no fallback kernel");
    assert_eq!(err.kind(), kind, "{err}");
    let failed = env.sink.named("kasmina.kernel.fetch_failed");
    assert!(
        failed.iter().any(|e| e.attributes.get("reason").map(ToString::to_string).as_deref() == Some(err.reason())),
        "{failed:?}"
    );
    err
}

#[test]
fn every_failure_mode_is_typed_reported_counted_and_leaves_no_kernel() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();

    assert_failed(&env, mgr.get("no_such_blueprint", Some("s")), PrefetchErrorKind::UnknownBlueprint);

    std::fs::remove_file(env.artifact_path(BOTTLENECK)).unwrap();
    assert_failed(&env, mgr.get(BOTTLENECK, Some("s")), PrefetchErrorKind::ArtifactMissing);

    let path = env.artifact_path(MLP_ADAPTER);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert_failed(&env, mgr.get(MLP_ADAPTER, Some("s")), PrefetchErrorKind::Truncated);
    assert!(env.urza.quarantine_path(&env.urza.show(MLP_ADAPTER).unwrap().artifact_sha256).exists());
    assert_eq!(env.sink.named("kasmina.kernel.artifact_quarantined")[0].level, TelemetryLevel::Critical);
    // Quarantined now: still no kernel, and the error says why.
    let err = mgr.get(MLP_ADAPTER, Some("s")).unwrap_err();
    assert!(matches!(err, KernelError::Fetch(FetchError::ArtifactQuarantined { .. })), "{err}");

    let path = env.artifact_path(RESIDUAL_CONV);
    let mut flipped = std::fs::read(&path).unwrap();
    flipped[10] ^= 0x5a;
    std::fs::write(&path, flipped).unwrap();
    assert_failed(&env, mgr.get(RESIDUAL_CONV, Some("s")), PrefetchErrorKind::DigestMismatch);
    assert!(!path.exists(), "corrupt artifact moved to quarantine");

    // A descriptor that lies about the output: [B,32] -> [B,16] declared as [B,32] -> [B,32].
    let fx = fixtures::get(WRONG_IFACE).unwrap();
    let mut liar = fixtures::get(MLP_ADAPTER).unwrap().descriptor;
    liar.blueprint_id = "liar".into();
    env.urza.publish(liar, &fx.path).unwrap();
    let err = assert_failed(&env, mgr.get("liar", Some("s")), PrefetchErrorKind::InterfaceMismatch);
    assert!(err.to_string().contains("[2, 16]"), "{err}");

    // Bytes that verify but are not TorchScript.
    let junk = env.dir.path().join("junk.pt");
    std::fs::write(&junk, b"definitely not a torchscript archive").unwrap();
    let mut d = fx.descriptor.clone();
    d.blueprint_id = "junk".into();
    env.urza.publish(d, &junk).unwrap();
    assert_failed(&env, mgr.get("junk", Some("s")), PrefetchErrorKind::LoadFailed);

    // None of them left anything in the cache; each counted once as a failure.
    mgr.run_pending_tasks();
    for id in ["no_such_blueprint", BOTTLENECK, MLP_ADAPTER, RESIDUAL_CONV, "liar", "junk"] {
        assert!(mgr.cached(id).is_none(), "{id} has no kernel");
    }
    assert_eq!(mgr.cache_entries(), 0);
    let stats = mgr.stats().cumulative;
    assert_eq!((stats.load_failures, stats.loads, stats.hits), (7, 0, 0));
}

#[test]
fn an_open_fetch_breaker_refuses_loads_but_not_verified_cache_hits() {
    let env = common::Env::new(2);
    let (mgr, _events) = env.default_manager();
    let cached = mgr.get(BOTTLENECK, None).unwrap();
    mgr.get("ghost-1", None).unwrap_err();
    mgr.get("ghost-2", None).unwrap_err();
    assert_eq!(env.breaker.state(), BreakerState::Open);

    let err = mgr.get(MLP_ADAPTER, Some("s")).unwrap_err();
    assert_eq!(err.kind(), PrefetchErrorKind::BreakerOpen);
    assert!(matches!(err, KernelError::BreakerOpen { remaining_cooldown_ms: 10_000 }));
    assert_eq!(env.sink.named("kasmina.kernel.fetch_refused").len(), 1);
    assert!(mgr.cached(MLP_ADAPTER).is_none());
    assert!(Arc::ptr_eq(&mgr.get(BOTTLENECK, None).unwrap(), &cached));
    assert_eq!(mgr.stats().cumulative.breaker_refusals, 1);

    // After the cooldown the breaker probes, the load succeeds and it closes.
    env.clock.advance_ms(10_000);
    mgr.get(MLP_ADAPTER, Some("s")).unwrap();
    assert_eq!(env.breaker.state(), BreakerState::Closed);
}

#[test]
fn concurrent_requests_for_one_blueprint_load_it_once() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();
    let mgr = Arc::new(mgr);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (mgr, barrier) = (mgr.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                mgr.get(MLP_ADAPTER_64, None).unwrap()
            })
        })
        .collect();
    let kernels: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(kernels.iter().all(|k| Arc::ptr_eq(k, &kernels[0])));
    let s = mgr.stats().cumulative;
    assert_eq!(s.loads, 1, "{s}");
    assert_eq!(s.hits + s.misses, n as u64);
    assert_eq!(env.sink.named("kasmina.kernel.loaded").len(), 1);
}

#[test]
fn concurrent_requests_share_one_failure() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();
    std::fs::write(env.artifact_path(BOTTLENECK), b"short").unwrap();
    let mgr = Arc::new(mgr);
    let barrier = Arc::new(Barrier::new(4));
    let errors: Vec<_> = (0..4)
        .map(|_| {
            let (mgr, barrier) = (mgr.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                mgr.get(BOTTLENECK, None).unwrap_err()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    // Waiters on the failed load get its error; anyone arriving after the
    // quarantine gets ArtifactQuarantined. Nobody gets a kernel.
    assert!(
        errors.iter().all(|e| matches!(e.kind(), PrefetchErrorKind::Truncated | PrefetchErrorKind::ArtifactMissing))
    );
    assert_eq!(env.sink.named("kasmina.kernel.artifact_quarantined").len(), 1);
}

#[test]
fn interval_stats_reset_while_cumulative_keep_counting() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();
    mgr.get(MLP_ADAPTER, None).unwrap();
    mgr.get(MLP_ADAPTER, None).unwrap();
    mgr.get("ghost", None).unwrap_err();
    env.clock.advance_ms(1_000);
    let first = mgr.snapshot_and_reset();
    assert_eq!(
        (first.interval.hits, first.interval.misses, first.interval.loads, first.interval.load_failures),
        (1, 2, 1, 1)
    );
    assert_eq!(first.taken_at_ms - first.interval_started_ms, 1_000);
    assert!(first.interval.load_latency_max_us > 0);

    for _ in 0..3 {
        mgr.get(MLP_ADAPTER, None).unwrap();
    }
    let second = mgr.snapshot_and_reset();
    assert_eq!((second.interval.hits, second.interval.misses, second.interval.loads), (3, 0, 0));
    assert_eq!(second.interval.load_latency_max_us, 0, "no loads this interval");
    assert_eq!(second.interval.hit_rate(), 1.0);
    assert_eq!((second.cumulative.hits, second.cumulative.misses, second.cumulative.loads), (4, 2, 1));
    let metrics = second.interval.metrics("interval");
    assert!(metrics.iter().any(|m| m.name == "kasmina.kernel.cache.hit_rate" && m.value == 1.0));
}

#[test]
fn the_cache_is_bounded_by_entry_count() {
    let env = common::Env::new(100);
    let mut cfg = common::config();
    cfg.cache_max_entries = 2;
    cfg.cache_max_bytes = 1 << 20;
    let (mgr, _events) = env.manager(cfg);
    for id in [MLP_ADAPTER, RESIDUAL_CONV, BOTTLENECK, MLP_ADAPTER_64] {
        mgr.get(id, None).unwrap();
        mgr.run_pending_tasks();
    }
    assert!(mgr.cache_entries() <= 2, "{}", mgr.cache_entries());
    assert!(mgr.stats().cumulative.evictions >= 2);
}

#[test]
fn the_cache_is_bounded_by_bytes() {
    let env = common::Env::new(100);
    let mut cfg = common::config();
    cfg.cache_max_entries = 100;
    cfg.cache_max_bytes = 100 * 1024; // mlp_adapter_64 alone weighs ~74 KiB
    let (mgr, _events) = env.manager(cfg);
    for id in [MLP_ADAPTER, RESIDUAL_CONV, MLP_ADAPTER_64] {
        mgr.get(id, None).unwrap();
        mgr.run_pending_tasks();
    }
    assert!(mgr.cache_weight_kib() <= 100, "{} KiB", mgr.cache_weight_kib());
    assert!(mgr.stats().cumulative.evictions >= 1);
}

#[test]
fn entries_past_their_ttl_are_reverified_and_reloaded() {
    let env = common::Env::new(100);
    let mut cfg = common::config();
    cfg.cache_ttl_ms = 5_000;
    let (mgr, _events) = env.manager(cfg);
    let first = mgr.get(MLP_ADAPTER, None).unwrap();
    env.clock.advance_ms(4_999);
    assert!(Arc::ptr_eq(&first, &mgr.get(MLP_ADAPTER, None).unwrap()));
    env.clock.advance_ms(1);
    let second = mgr.get(MLP_ADAPTER, None).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    let s = mgr.stats().cumulative;
    assert_eq!((s.loads, s.expirations), (2, 1));

    // The reload re-reads the file: corruption since the first load is caught.
    std::fs::write(env.artifact_path(MLP_ADAPTER), b"tampered").unwrap();
    env.clock.advance_ms(5_000);
    assert_eq!(mgr.get(MLP_ADAPTER, None).unwrap_err().kind(), PrefetchErrorKind::Truncated);
}

#[test]
fn invalid_configs_are_refused() {
    let env = common::Env::new(100);
    for mutate in [
        (|c: &mut kasmina_kernels::KernelManagerConfig| c.cache_max_entries = 0) as fn(&mut _),
        |c| c.cache_ttl_ms = 0,
        |c| c.prewarm_runs = 0,
        |c| c.prewarm_memory_bytes = 1 << 19,
        |c| c.prefetch_max_in_flight = 0,
    ] {
        let mut cfg = common::config();
        mutate(&mut cfg);
        let r = kasmina_kernels::KernelLoadManager::new(
            env.urza.clone(),
            cfg,
            env.breaker.clone(),
            env.sink.clone(),
            env.clock.clone(),
        );
        assert!(matches!(r, Err(KernelError::InvalidConfig { .. })));
    }
}
