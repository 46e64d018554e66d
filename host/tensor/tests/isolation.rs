//! Gradient isolation monitor on real backward passes: isolated graphs give
//! cosine 0, a deliberately shared parameter is a violation, the verdict does
//! not change with a 10× wider layer, an undetached host input is caught by
//! the input-leak probe, three violations in a window open the breaker with
//! a CRITICAL event, fail-fast returns an error.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use anyhow::Result;
use kasmina_core::{ManualClock, MemorySink};
use kasmina_tensor::isolation::sampled_cosine;
use kasmina_tensor::{IsolationConfig, IsolationMonitor, TensorError};
use leyline::{BreakerState, TelemetryLevel};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// A host `x → lin1 → relu → lin2` and a seed `lin_s` fed the detached
/// site features `lin1(x)`. With `share`, the seed also runs the host's
/// `lin2` inside its own computation and lists its weight as a seed
/// parameter: the classic shared-parameter leak.
fn run_step(width: i64, share: bool) -> (Vec<Tensor>, Vec<Tensor>) {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let (d, c) = (16, 10);
    let lin1 = nn::linear(vs.root() / "lin1", d, width, Default::default());
    let lin2 = nn::linear(vs.root() / "lin2", width, c, Default::default());
    let seed_vs = nn::VarStore::new(Device::Cpu);
    let lin_s = nn::linear(seed_vs.root() / "adapter", width, width, Default::default());
    let x = Tensor::randn([32, d], (Kind::Float, Device::Cpu));
    let h = lin1.forward(&x);
    let logits = lin2.forward(&h.relu());
    let mut seed_out = lin_s.forward(&h.detach());
    if share {
        seed_out = lin2.forward(&seed_out.relu());
    }
    let loss = logits.pow_tensor_scalar(2).mean(Kind::Float) + seed_out.pow_tensor_scalar(2).mean(Kind::Float);
    loss.backward();
    let host = vec![
        lin1.ws.shallow_clone(),
        lin1.bs.as_ref().unwrap().shallow_clone(),
        lin2.ws.shallow_clone(),
        lin2.bs.as_ref().unwrap().shallow_clone(),
    ];
    let mut seed = vec![lin_s.ws.shallow_clone(), lin_s.bs.as_ref().unwrap().shallow_clone()];
    if share {
        seed.push(lin2.ws.shallow_clone());
    }
    // Keep the stores alive as long as the handles: they share storage anyway.
    std::mem::forget(vs);
    std::mem::forget(seed_vs);
    (host, seed)
}

fn config(fail_fast: bool) -> IsolationConfig {
    IsolationConfig {
        cosine_threshold: 0.1,
        samples_per_param: 256,
        violations_to_trip: 3,
        window_steps: 100,
        fail_fast,
    }
}

fn monitor(fail_fast: bool) -> (IsolationMonitor, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new(100));
    let m = IsolationMonitor::new(config(fail_fast), Arc::new(ManualClock::new(0)), sink.clone()).unwrap();
    (m, sink)
}

#[test]
fn isolated_graphs_have_cosine_zero_and_no_violation() -> Result<()> {
    let (host, seed) = run_step(32, false);
    let (mut m, sink) = monitor(false);
    let r = m.check("seed-1", 1, &host, &seed)?;
    assert_eq!(r.cosine, Some(0.0));
    assert_eq!(r.shared_parameters, 0);
    assert!(!r.violation);
    assert!(sink.events().is_empty());
    Ok(())
}

#[test]
fn shared_parameter_is_a_violation_and_the_verdict_ignores_width() -> Result<()> {
    for width in [32, 320] {
        let (host, seed) = run_step(width, true);
        let (cos, shared) = sampled_cosine(&host, &seed, 256)?;
        assert_eq!(shared, 1);
        assert!(cos > 0.1, "width {width}: cosine {cos}");
        let (host, seed) = run_step(width, false);
        assert_eq!(sampled_cosine(&host, &seed, 256)?.0, 0.0, "width {width}");
    }
    Ok(())
}

#[test]
fn three_violations_in_a_window_open_the_breaker_with_a_critical_event() -> Result<()> {
    let (host, seed) = run_step(32, true);
    let (mut m, sink) = monitor(false);
    for step in [10, 20] {
        let r = m.check("seed-1", step, &host, &seed)?;
        assert!(r.violation);
        assert_eq!(r.breaker, BreakerState::Closed);
    }
    let r = m.check("seed-1", 30, &host, &seed)?;
    assert_eq!((r.violations_in_window, r.breaker), (3, BreakerState::Open));
    assert_eq!(m.breaker("seed-1"), BreakerState::Open);
    assert_eq!(m.breaker("seed-2"), BreakerState::Closed);
    let critical = sink.named("kasmina.isolation.breaker_open");
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].level, TelemetryLevel::Critical);
    assert_eq!(critical[0].seed_id.as_deref(), Some("seed-1"));
    assert_eq!(sink.named("kasmina.isolation.violation").len(), 3);
    let stats = m.stats("seed-1").unwrap();
    assert_eq!((stats.checks, stats.violations), (3, 3));
    assert!(m.forget("seed-1"));
    assert_eq!(m.breaker("seed-1"), BreakerState::Closed);
    Ok(())
}

#[test]
fn violations_outside_the_window_do_not_accumulate() -> Result<()> {
    let (host, seed) = run_step(32, true);
    let (mut m, _) = monitor(false);
    for step in [0, 100, 200, 300] {
        let r = m.check("seed-1", step, &host, &seed)?;
        assert_eq!(r.violations_in_window, 1, "step {step}");
    }
    assert_eq!(m.breaker("seed-1"), BreakerState::Closed);
    assert_eq!(m.outstanding("seed-1"), 1);
    Ok(())
}

#[test]
fn fail_fast_returns_the_violation() {
    let (host, seed) = run_step(32, true);
    let (mut m, _) = monitor(true);
    let err = m.check("seed-1", 1, &host, &seed).unwrap_err();
    assert!(matches!(err, TensorError::IsolationViolation { ref seed_id, .. } if seed_id == "seed-1"), "{err}");
    assert_eq!(m.stats("seed-1").unwrap().violations, 1, "state is recorded before failing");
}

#[test]
fn parameters_without_gradients_and_bad_configs() {
    let p = Tensor::randn([4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let q = Tensor::randn([4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    assert_eq!(sampled_cosine(&[p], &[q], 8).unwrap().0, 0.0);
    let sink = Arc::new(MemorySink::new(1));
    let clock = Arc::new(ManualClock::new(0));
    for bad in [
        IsolationConfig { cosine_threshold: 0.0, ..config(false) },
        IsolationConfig { samples_per_param: 0, ..config(false) },
        IsolationConfig { violations_to_trip: 0, ..config(false) },
        IsolationConfig { window_steps: 0, ..config(false) },
    ] {
        assert!(IsolationMonitor::new(bad, clock.clone(), sink.clone()).is_err());
    }
}

#[test]
fn cosine_formula_on_known_gradients() -> Result<()> {
    // All-ones gradients: a parameter in both sets plus one seed-only of the
    // same size gives ‖a‖² / √(‖a‖² · 2‖a‖²) = 1/√2, for any k and any size.
    for (n, k) in [(64, 8), (4096, 256), (100, 1000)] {
        let shared = Tensor::randn([n], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let own = Tensor::randn([n], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (shared.sum(Kind::Float) + own.sum(Kind::Float)).backward();
        let (cos, shared_n) =
            sampled_cosine(std::slice::from_ref(&shared), &[shared.shallow_clone(), own.shallow_clone()], k)?;
        assert_eq!(shared_n, 1);
        assert!((cos - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9, "n {n} k {k}: {cos}");
    }
    Ok(())
}

/// Host `x → lin1 → h`; a seed `lin_s` on `h` — detached or not.
fn probe_case(detach: bool, width: i64) -> Result<usize> {
    let vs = nn::VarStore::new(Device::Cpu);
    let lin1 = nn::linear(vs.root() / "lin1", 16, width, Default::default());
    let seed_vs = nn::VarStore::new(Device::Cpu);
    let lin_s = nn::linear(seed_vs.root() / "adapter", width, width, Default::default());
    let x = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
    let h = lin1.forward(&x);
    let input = if detach { h.detach() } else { h.shallow_clone() };
    let seed_out = lin_s.forward(&input);
    let (mut m, sink) = monitor(false);
    let r = m.probe_input_leak("seed-1", 1, &seed_out, &vs.trainable_variables())?;
    assert_eq!(r.violation, !detach);
    assert_eq!(r.cosine, None);
    assert_eq!(sink.named("kasmina.isolation.violation").len(), usize::from(!detach));
    // The probe keeps the graph: the trainer's backward still works afterwards.
    (h.sum(Kind::Float) + seed_out.sum(Kind::Float)).backward();
    Ok(r.leaked_parameters)
}

#[test]
fn undetached_host_input_is_caught_by_the_probe_at_any_width() -> Result<()> {
    for width in [32, 320] {
        assert_eq!(probe_case(true, width)?, 0, "detached, width {width}");
        assert_eq!(probe_case(false, width)?, 2, "undetached, width {width}: lin1 weight and bias");
    }
    Ok(())
}

#[test]
fn slot_fed_seed_never_leaks_into_the_host() -> Result<()> {
    use kasmina_tensor::{BlendSpec, ForwardCtx, NativeKernel, SeedSlot};
    use leyline::SeedStage;
    let vs = nn::VarStore::new(Device::Cpu);
    let lin1 = nn::linear(vs.root() / "lin1", 16, 8, Default::default());
    let seed_vs = nn::VarStore::new(Device::Cpu);
    let adapter = nn::linear(seed_vs.root() / "adapter", 8, 8, Default::default());
    let mut slot = SeedSlot::new("seed-1", "block1", BlendSpec::convex())?;
    slot.transition(SeedStage::Germinated)?;
    slot.attach_kernel(Box::new(NativeKernel::new(seed_vs, adapter)?))?;
    slot.transition(SeedStage::Training)?;
    let h = lin1.forward(&Tensor::randn([4, 16], (Kind::Float, Device::Cpu)));
    let out = slot.forward(&h, &ForwardCtx::train())?;
    let (mut m, _) = monitor(false);
    let r = m.probe_input_leak("seed-1", 1, out.seed.as_ref().unwrap(), &vs.trainable_variables())?;
    assert!(!r.violation && r.leaked_parameters == 0);
    Ok(())
}
