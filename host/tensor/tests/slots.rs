//! Seed slots and the seeded model on real libtorch: stage semantics (the
//! incubator's exact host value and straight-through learning, blending,
//! shadowing, fossil, pause), a real TorchScript kernel, site order.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use anyhow::Result;
use kasmina_tensor::{
    BlendSpec, ForwardCtx, NativeKernel, ScriptedKernel, SeedKernel, SeedSlot, SeededModel, TensorError,
};
use leyline::SeedStage;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn linear_kernel(dim: i64) -> Box<dyn SeedKernel> {
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = nn::linear(vs.root() / "adapter", dim, dim, Default::default());
    Box::new(NativeKernel::new(vs, lin).unwrap())
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// A slot moved through the legal stages up to `to`, kernel attached at GERMINATED.
fn slot_at(to: SeedStage, spec: BlendSpec, kernel: Box<dyn SeedKernel>) -> SeedSlot {
    let mut slot = SeedSlot::new("seed-1", "block1", spec).unwrap();
    let path = [
        SeedStage::Germinated,
        SeedStage::Training,
        SeedStage::Blending,
        SeedStage::Shadowing,
        SeedStage::Probationary,
        SeedStage::Fossilized,
    ];
    let mut kernel = Some(kernel);
    for stage in path {
        slot.transition(stage).unwrap();
        if stage == SeedStage::Germinated {
            slot.attach_kernel(kernel.take().unwrap()).unwrap();
        }
        if stage == to {
            break;
        }
    }
    slot
}

/// A tiny host: `h = x·W` with W trainable.
struct Host {
    _vs: nn::VarStore,
    lin: nn::Linear,
}

impl Host {
    fn new(dim: i64) -> Host {
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "host", dim, dim, Default::default());
        Host { _vs: vs, lin }
    }
}

#[test]
fn dormant_and_germinated_return_the_host_unchanged() -> Result<()> {
    let host = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    let mut dormant = SeedSlot::new("s", "block1", BlendSpec::convex())?;
    assert_eq!(max_diff(&dormant.forward(&host, &ForwardCtx::train())?.out, &host), 0.0);
    let mut germ = slot_at(SeedStage::Germinated, BlendSpec::convex(), linear_kernel(8));
    let out = germ.forward(&host, &ForwardCtx::train())?;
    assert_eq!(max_diff(&out.out, &host), 0.0);
    assert!(out.seed.is_none(), "a germinated seed must not run");
    Ok(())
}

#[test]
fn incubator_value_is_the_host_exactly_yet_the_seed_learns() -> Result<()> {
    let host_model = Host::new(8);
    let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
    let mut slot = slot_at(SeedStage::Training, BlendSpec::convex(), linear_kernel(8));
    let h = host_model.lin.forward(&x);
    let out = slot.forward(&h, &ForwardCtx::train())?;
    // Value: bit-for-bit the host output.
    assert!(out.out.equal(&h));
    let loss = (&out.out * &out.out).sum(Kind::Float);
    loss.backward();
    // The seed learns through the straight-through estimator…
    let seed_grads: f64 =
        slot.kernel().unwrap().parameters().iter().map(|p| p.grad().abs().sum(Kind::Float).double_value(&[])).sum();
    assert!(seed_grads > 0.0);
    // …while the host's gradient is exactly what it would be without the seed.
    let with_seed = host_model.lin.ws.grad().copy();
    let _ = host_model.lin.ws.grad().zero_();
    let h2 = host_model.lin.forward(&x);
    (&h2 * &h2).sum(Kind::Float).backward();
    assert!(max_diff(&with_seed, &host_model.lin.ws.grad()) < 1e-6);
    // Inference skips the incubating seed entirely.
    let infer = slot.forward(&h, &ForwardCtx::infer())?;
    assert!(infer.seed.is_none() && infer.out.equal(&h));
    Ok(())
}

#[test]
fn blending_applies_the_directed_alpha_only() -> Result<()> {
    let mut slot = slot_at(SeedStage::Blending, BlendSpec::convex(), linear_kernel(8));
    let h = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    // Entering BLENDING starts at 0 until the control plane directs α.
    assert_eq!(slot.alpha(), 0.0);
    let a0 = 0.25;
    slot.set_alpha(a0)?;
    let out = slot.forward(&h, &ForwardCtx::train())?;
    let seed = out.seed.unwrap();
    assert!(max_diff(&out.out, &(&seed * a0 + &h * (1.0 - a0))) < 1e-6);
    let stats = slot.end_step().unwrap();
    assert_eq!(stats.alpha, a0);
    // Ending a step never moves α: there is no local ramp.
    assert_eq!(slot.alpha(), a0);
    assert!(slot.end_step().is_none(), "stats are taken once");
    assert!(slot.set_alpha(1.5).is_err() && slot.set_alpha(f64::NAN).is_err());
    assert_eq!(slot.alpha(), a0, "a refused α changes nothing");
    // The fused inference path agrees and reuses its buffer across calls.
    let a1 = 0.75;
    slot.set_alpha(a1)?;
    let first = slot.forward(&h, &ForwardCtx::infer())?;
    let expected = &first.seed.unwrap() * a1 + &h * (1.0 - a1);
    assert!(max_diff(&first.out, &expected) < 1e-6);
    let second = slot.forward(&h, &ForwardCtx::infer())?;
    assert_eq!(first.out.data_ptr(), second.out.data_ptr(), "buffer reallocated");
    // A different batch size reallocates instead of failing.
    let h3 = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
    assert_eq!(slot.forward(&h3, &ForwardCtx::infer())?.out.size(), vec![3, 8]);
    Ok(())
}

#[test]
fn shadowing_uses_the_seed_and_keeps_the_host_for_comparison() -> Result<()> {
    let mut slot = slot_at(SeedStage::Shadowing, BlendSpec::convex(), linear_kernel(8));
    let h = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    let out = slot.forward(&h, &ForwardCtx::train())?;
    assert_eq!(slot.alpha(), 1.0);
    assert!(out.out.equal(out.seed.as_ref().unwrap()));
    assert!(out.host.equal(&h));
    Ok(())
}

#[test]
fn paused_slot_returns_the_host_in_any_stage() -> Result<()> {
    let mut slot = slot_at(SeedStage::Shadowing, BlendSpec::residual(), linear_kernel(8));
    slot.set_paused(true);
    let h = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    let out = slot.forward(&h, &ForwardCtx::train())?;
    assert!(out.out.equal(&h) && out.seed.is_none());
    slot.set_paused(false);
    assert!(!slot.forward(&h, &ForwardCtx::train())?.out.equal(&h));
    Ok(())
}

#[test]
fn fossil_is_part_of_the_host_gradients_flow_through_it() -> Result<()> {
    let host_model = Host::new(8);
    let mut slot = slot_at(SeedStage::Fossilized, BlendSpec::residual(), linear_kernel(8));
    let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    let h = host_model.lin.forward(&x);
    let out = slot.forward(&h, &ForwardCtx::train())?;
    let seed = out.seed.unwrap();
    assert!(max_diff(&out.out, &(&h + &seed)) < 1e-6);
    out.out.sum(Kind::Float).backward();
    // Host gradient now includes the path through the fossil: differs from dsum/dW of h alone.
    let with_fossil = host_model.lin.ws.grad().copy();
    let _ = host_model.lin.ws.grad().zero_();
    host_model.lin.forward(&x).sum(Kind::Float).backward();
    assert!(max_diff(&with_fossil, &host_model.lin.ws.grad()) > 1e-4);
    assert!(matches!(slot.detach_kernel(), Err(TensorError::WrongStage { .. })));
    Ok(())
}

#[test]
fn stage_table_and_kernel_rules_are_enforced() -> Result<()> {
    let mut slot = SeedSlot::new("s", "block1", BlendSpec::convex())?;
    assert!(matches!(slot.transition(SeedStage::Blending), Err(TensorError::WrongStage { .. })));
    assert!(matches!(slot.attach_kernel(linear_kernel(4)), Err(TensorError::WrongStage { .. })));
    slot.transition(SeedStage::Germinated)?;
    assert!(matches!(slot.transition(SeedStage::Training), Err(TensorError::NoKernel(SeedStage::Training))));
    slot.attach_kernel(linear_kernel(4))?;
    slot.transition(SeedStage::Training)?;
    slot.transition(SeedStage::Culled)?;
    let h = Tensor::randn([1, 4], (Kind::Float, Device::Cpu));
    assert!(slot.forward(&h, &ForwardCtx::train())?.out.equal(&h));
    assert!(slot.detach_kernel()?.is_some());
    Ok(())
}

#[test]
fn foreign_shapes_from_a_kernel_are_errors_not_panics() -> Result<()> {
    let mut slot = slot_at(SeedStage::Blending, BlendSpec::convex(), linear_kernel(8));
    let wrong = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
    let err = slot.forward(&wrong, &ForwardCtx::train()).unwrap_err();
    assert!(matches!(err, TensorError::Kernel(_)), "{err}");
    Ok(())
}

#[test]
fn torchscript_kernel_trains_in_a_slot() -> Result<()> {
    let kernel = ScriptedKernel::load(&fixture("seed_adapter.pt"), Device::Cpu)?;
    assert_eq!(kernel.parameters().len(), 2);
    let mut slot = slot_at(SeedStage::Blending, BlendSpec::residual(), Box::new(kernel));
    // α as the control plane would direct it partway through the ramp.
    slot.set_alpha(0.5)?;
    let h = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
    let out = slot.forward(&h, &ForwardCtx::train())?;
    out.out.sum(Kind::Float).backward();
    for p in slot.kernel().unwrap().parameters() {
        assert!(p.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    let bad = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
    assert!(matches!(slot.forward(&bad, &ForwardCtx::train()), Err(TensorError::Kernel(_))));
    Ok(())
}

#[test]
fn model_runs_sites_in_order_and_chains_slots_at_a_site() -> Result<()> {
    let mut model = SeededModel::new(["block1", "block2"])?;
    assert!(matches!(SeededModel::new(["a", "a"]), Err(TensorError::Duplicate { .. })));
    let mut a = slot_at(SeedStage::Shadowing, BlendSpec::residual(), linear_kernel(4));
    let b = {
        let mut s = SeedSlot::new("seed-2", "block1", BlendSpec::residual())?;
        s.transition(SeedStage::Germinated)?;
        s.attach_kernel(linear_kernel(4))?;
        s.transition(SeedStage::Training)?;
        s.transition(SeedStage::Blending)?;
        s.transition(SeedStage::Shadowing)?;
        s
    };
    let h = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
    // Expected: slot a then slot b, each residual with α = 1.
    let after_a = a.forward(&h, &ForwardCtx::infer())?.out.copy();
    model.add_slot(a)?;
    model.add_slot(b)?;
    assert!(matches!(
        model.add_slot(SeedSlot::new("seed-3", "nowhere", BlendSpec::convex())?),
        Err(TensorError::UnknownSite(_))
    ));
    model.begin_forward();
    let out = model.apply("block1", &h, &ForwardCtx::infer())?;
    let b_kernel = model.slot("seed-2").unwrap().kernel().unwrap();
    let expected = &after_a + tch::no_grad(|| b_kernel.forward(&after_a))?;
    assert!(max_diff(&out, &expected) < 1e-6);
    let _ = model.apply("block2", &out, &ForwardCtx::infer())?;
    assert!(matches!(model.apply("block1", &h, &ForwardCtx::infer()), Err(TensorError::SiteOrder { .. })));
    model.begin_forward();
    let _ = model.apply("block2", &h, &ForwardCtx::infer())?;
    assert!(matches!(model.apply("block1", &h, &ForwardCtx::infer()), Err(TensorError::SiteOrder { .. })));
    let stats = model.end_step();
    assert!(stats.contains_key("seed-1") && stats.contains_key("seed-2"));
    Ok(())
}
