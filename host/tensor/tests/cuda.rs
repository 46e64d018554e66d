//! GPU checks, compiled only with `--features cuda-tests` and meant for a
//! machine with CUDA libtorch. On `cuda:0`:
//! - every blend mode matches the CPU result, on both the autograd path
//!   (`blend`, with the seed receiving the CPU gradient and the host none)
//!   and the reused-buffer path (`blend_into`, the buffer staying on the
//!   device);
//! - the incubator (TRAINING) returns the host output bit for bit while the
//!   seed learns through the straight-through estimator, in a slot;
//! - isolation sampling: `sampled_cosine` on device gradients, the monitor's
//!   verdicts (isolated vs shared parameter) and the input-leak probe;
//! - knowledge distillation: the hand-computed KD case, and a TorchScript
//!   teacher loaded from bytes onto the device, frozen and mixed in;
//! - a TorchScript seed kernel loaded onto `cuda:0` from bytes
//!   (`ScriptedKernel::from_bytes`): same values as on CPU, trains in a slot.
//!
//! Run: `cargo test -p kasmina-tensor --features cuda-tests --test cuda`
//!
//! `KASMINA_TEST_DEVICE=cpu` runs the same binary on the CPU: the stand-in
//! `scripts/gpu-check.sh --dry-run` uses to test its own flow on a machine
//! without a GPU (the comparisons are then CPU against CPU).

#![cfg(feature = "cuda-tests")]
#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::sync::Arc;

use anyhow::Result;
use kasmina_core::{ManualClock, MemorySink};
use kasmina_tensor::blend::kernels::{blend, blend_into, incubate};
use kasmina_tensor::isolation::sampled_cosine;
use kasmina_tensor::{
    BlendSpec, ConfidenceGate, Distiller, ForwardCtx, IsolationConfig, IsolationMonitor, NativeKernel, ScriptedKernel,
    SeedKernel, SeedSlot, Teacher, kd_loss, mix_losses,
};
use leyline::SeedStage;
use tch::nn::{self, Module};
use tch::{CModule, Device, Kind, Tensor};

/// The TorchScript fixtures (`fixtures/gen_fixtures.py`), compiled in: the
/// kernels reach the device from bytes, as a daemon's verified artifact does.
const SEED_ADAPTER_PT: &[u8] = include_bytes!("../fixtures/seed_adapter.pt");
const TEACHER_PT: &[u8] = include_bytes!("../fixtures/teacher.pt");

/// The device under test: `cuda:0`, or the CPU when `KASMINA_TEST_DEVICE=cpu`.
fn dev() -> Device {
    match std::env::var("KASMINA_TEST_DEVICE").as_deref() {
        Ok("cpu") => Device::Cpu,
        Ok("cuda") | Err(_) => {
            assert!(tch::Cuda::is_available(), "cuda-tests enabled but libtorch sees no CUDA device");
            Device::Cuda(0)
        }
        Ok(other) => panic!("KASMINA_TEST_DEVICE={other:?}: use cpu or cuda"),
    }
}

fn on_dev(t: &Tensor) -> bool {
    t.device() == dev()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_device(Device::Cpu) - b.to_device(Device::Cpu)).abs().max().double_value(&[])
}

/// A fresh leaf on `device` that requires grad (a copy: `to_device` to the
/// same device would alias `t`).
fn leaf(t: &Tensor, device: Device) -> Tensor {
    t.to_device(device).copy().set_requires_grad(true)
}

fn specs(channels: i64) -> Result<Vec<BlendSpec>> {
    let alpha_vec: Vec<f32> = (0..channels).map(|i| i as f32 / channels as f32).collect();
    Ok(vec![
        BlendSpec::convex(),
        BlendSpec::residual(),
        BlendSpec::channel(alpha_vec)?,
        BlendSpec::confidence(ConfidenceGate { k: 4.0, tau: 0.5, alpha_lo: 0.1, alpha_hi: 0.9 })?,
    ])
}

#[test]
fn every_mode_on_the_device_matches_cpu_on_both_paths() -> Result<()> {
    let dev = dev();
    let host = Tensor::randn([8, 16, 12, 12], (Kind::Float, Device::Cpu));
    let seed = Tensor::randn([8, 16, 12, 12], (Kind::Float, Device::Cpu));
    let logits = Tensor::randn([8, 10], (Kind::Float, Device::Cpu));
    let upstream = Tensor::randn([8, 16, 12, 12], (Kind::Float, Device::Cpu));
    let (hd, ld, ud) = (host.to_device(dev), logits.to_device(dev), upstream.to_device(dev));
    let mut buf = Tensor::empty_like(&hd);
    for spec in specs(16)? {
        let mode = spec.mode();
        // Autograd path: same value, and the seed gets the same gradient.
        let seed_cpu = leaf(&seed, Device::Cpu);
        let seed_dev = leaf(&seed, dev);
        let host_dev = leaf(&host, dev);
        let (cpu, _) = blend(&spec, 0.6, &host, &seed_cpu, Some(&logits))?;
        let (gpu, stats) = blend(&spec, 0.6, &host_dev, &seed_dev, Some(&ld))?;
        assert!(on_dev(&gpu), "{mode:?}: output left the device");
        assert!(max_diff(&gpu, &cpu) < 1e-5, "{mode:?}");
        assert!(stats.alpha_mean.is_finite(), "{mode:?}: stats");
        (&cpu * &upstream).sum(Kind::Float).backward();
        (&gpu * &ud).sum(Kind::Float).backward();
        assert!(on_dev(&seed_dev.grad()), "{mode:?}: seed gradient left the device");
        assert!(max_diff(&seed_dev.grad(), &seed_cpu.grad()) < 1e-5, "{mode:?} seed gradient");
        assert!(!host_dev.grad().defined(), "{mode:?}: the host branch must receive no gradient");
        // Hot path into a reused device buffer.
        blend_into(&spec, 0.6, &hd, &seed_dev.detach(), Some(&ld), &mut buf)?;
        assert!(on_dev(&buf));
        assert!(max_diff(&buf, &cpu) < 1e-5, "{mode:?} fused");
    }
    Ok(())
}

#[test]
fn incubator_is_the_host_exactly_and_the_seed_learns_on_the_device() -> Result<()> {
    let dev = dev();
    // The kernel function itself.
    let h = Tensor::randn([4, 8], (Kind::Float, dev));
    let s = Tensor::randn([4, 8], (Kind::Float, dev)).set_requires_grad(true);
    let out = incubate(&h, &s)?;
    assert!(on_dev(&out) && out.equal(&h), "incubator value must be the host output bit for bit");
    let upstream = Tensor::randn([4, 8], (Kind::Float, dev));
    (&out * &upstream).sum(Kind::Float).backward();
    assert_eq!(max_diff(&s.grad(), &upstream), 0.0, "straight-through: the seed gets the host's gradient");

    // In a slot at TRAINING with a native kernel on the device.
    let host_vs = nn::VarStore::new(dev);
    let host_lin = nn::linear(host_vs.root() / "host", 8, 8, Default::default());
    let seed_vs = nn::VarStore::new(dev);
    let adapter = nn::linear(seed_vs.root() / "adapter", 8, 8, Default::default());
    let mut slot = SeedSlot::new("seed-1", "block1", BlendSpec::convex())?;
    slot.transition(SeedStage::Germinated)?;
    slot.attach_kernel(Box::new(NativeKernel::new(seed_vs, adapter)?))?;
    slot.transition(SeedStage::Training)?;
    let x = Tensor::randn([4, 8], (Kind::Float, dev));
    let h = host_lin.forward(&x);
    let out = slot.forward(&h, &ForwardCtx::train())?;
    assert!(on_dev(&out.out) && out.out.equal(&h));
    (&out.out * &out.out).sum(Kind::Float).backward();
    for p in slot.kernel().unwrap().parameters() {
        assert!(on_dev(&p.grad()) && p.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    let infer = slot.forward(&h, &ForwardCtx::infer())?;
    assert!(infer.seed.is_none(), "inference skips the incubating seed");
    Ok(())
}

#[test]
fn isolation_sampler_runs_on_device_gradients() -> Result<()> {
    let dev = dev();
    let shared = Tensor::randn([256, 256], (Kind::Float, dev)).set_requires_grad(true);
    let own = Tensor::randn([256, 256], (Kind::Float, dev)).set_requires_grad(true);
    (shared.sum(Kind::Float) + own.sum(Kind::Float)).backward();
    let (cos, n) = sampled_cosine(&[shared.shallow_clone()], &[shared.shallow_clone(), own.shallow_clone()], 64)?;
    assert_eq!(n, 1);
    // Equal gradients on both: cos = ‖a‖² / √(‖a‖² · 2‖a‖²) = 1/√2.
    assert!((cos - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{cos}");
    Ok(())
}

/// One backward of a host `x → lin1 → relu → lin2` and a seed fed the
/// detached features; with `share`, the seed also runs the host's `lin2`
/// and lists its weight. Returns (host, seed) parameters with gradients.
fn isolation_step(share: bool) -> (Vec<Tensor>, Vec<Tensor>) {
    let dev = dev();
    let vs = nn::VarStore::new(dev);
    let lin1 = nn::linear(vs.root() / "lin1", 16, 64, Default::default());
    let lin2 = nn::linear(vs.root() / "lin2", 64, 10, Default::default());
    let seed_vs = nn::VarStore::new(dev);
    let lin_s = nn::linear(seed_vs.root() / "adapter", 64, 64, Default::default());
    let x = Tensor::randn([32, 16], (Kind::Float, dev));
    let h = lin1.forward(&x);
    let logits = lin2.forward(&h.relu());
    let mut seed_out = lin_s.forward(&h.detach());
    if share {
        seed_out = lin2.forward(&seed_out.relu());
    }
    (logits.pow_tensor_scalar(2).mean(Kind::Float) + seed_out.pow_tensor_scalar(2).mean(Kind::Float)).backward();
    let host = vec![lin1.ws.shallow_clone(), lin2.ws.shallow_clone()];
    let mut seed = vec![lin_s.ws.shallow_clone()];
    if share {
        seed.push(lin2.ws.shallow_clone());
    }
    // The handles share the stores' storage; keep the stores alive with them.
    std::mem::forget(vs);
    std::mem::forget(seed_vs);
    (host, seed)
}

#[test]
fn isolation_monitor_verdicts_and_input_probe_on_the_device() -> Result<()> {
    let dev = dev();
    let config = IsolationConfig {
        cosine_threshold: 0.1,
        samples_per_param: 256,
        violations_to_trip: 3,
        window_steps: 100,
        fail_fast: false,
    };
    let sink = Arc::new(MemorySink::new(100));
    let mut monitor = IsolationMonitor::new(config, Arc::new(ManualClock::new(0)), sink.clone())?;
    let (host, seed) = isolation_step(false);
    assert!(host.iter().chain(&seed).all(|p| on_dev(&p.grad())));
    let r = monitor.check("seed-1", 1, &host, &seed)?;
    assert!(!r.violation && r.cosine == Some(0.0), "isolated graphs: {r:?}");
    let (host, seed) = isolation_step(true);
    let r = monitor.check("seed-1", 2, &host, &seed)?;
    assert!(r.violation && r.shared_parameters == 1, "shared parameter: {r:?}");
    assert_eq!(sink.named("kasmina.isolation.violation").len(), 1);

    // Input-leak probe: an undetached host input reaches lin1's weight and bias.
    let vs = nn::VarStore::new(dev);
    let lin1 = nn::linear(vs.root() / "lin1", 16, 32, Default::default());
    let seed_vs = nn::VarStore::new(dev);
    let lin_s = nn::linear(seed_vs.root() / "adapter", 32, 32, Default::default());
    let h = lin1.forward(&Tensor::randn([8, 16], (Kind::Float, dev)));
    let leaky = monitor.probe_input_leak("seed-2", 1, &lin_s.forward(&h), &vs.trainable_variables())?;
    assert!(leaky.violation && leaky.leaked_parameters == 2, "{leaky:?}");
    let clean = monitor.probe_input_leak("seed-3", 1, &lin_s.forward(&h.detach()), &vs.trainable_variables())?;
    assert!(!clean.violation && clean.leaked_parameters == 0, "{clean:?}");
    Ok(())
}

#[test]
fn kd_loss_matches_the_hand_computed_case_on_the_device() -> Result<()> {
    let dev = dev();
    // Same case as tests/registry_kd.rs: T = 2, expected T²·KL = 1.280627.
    let student = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]).to_device(dev).set_requires_grad(true);
    let teacher = Tensor::from_slice(&[3.0f32, 2.0, 1.0]).view([1, 3]).to_device(dev);
    let loss = kd_loss(&student, &teacher, 2.0)?;
    assert!(on_dev(&loss));
    assert!((loss.double_value(&[]) - 1.280_627).abs() < 1e-5, "{}", loss.double_value(&[]));
    loss.backward();
    assert!(on_dev(&student.grad()) && student.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    Ok(())
}

#[test]
fn torchscript_teacher_from_bytes_is_frozen_and_mixed_in_on_the_device() -> Result<()> {
    let dev = dev();
    let module = CModule::load_data_on_device(&mut Cursor::new(TEACHER_PT), dev)?;
    let teacher = Teacher::new(module, 1 << 20)?;
    assert_eq!(teacher.memory_bytes(), 144, "Linear(8, 4): 36 floats");
    assert!(teacher.parameters().iter().all(on_dev));
    let x = Tensor::randn([5, 8], (Kind::Float, dev));
    let mut kd = Distiller::new(0.3, 2.0)?;
    kd.set_teacher(teacher);
    let t_logits = kd.teacher().unwrap().logits(&x)?;
    assert!(on_dev(&t_logits) && !t_logits.requires_grad());
    // Same teacher on the CPU gives the same logits.
    let cpu_teacher = Teacher::new(CModule::load_data_on_device(&mut Cursor::new(TEACHER_PT), Device::Cpu)?, 1 << 20)?;
    assert!(max_diff(&t_logits, &cpu_teacher.logits(&x.to_device(Device::Cpu))?) < 1e-5);
    let student = Tensor::randn([5, 4], (Kind::Float, dev)).set_requires_grad(true);
    let task = student.pow_tensor_scalar(2).mean(Kind::Float);
    let expected = mix_losses(&task, &kd_loss(&student, &t_logits, 2.0)?, 0.3)?;
    let total = kd.loss(&task, &student, &x)?;
    assert!(on_dev(&total) && (total.double_value(&[]) - expected.double_value(&[])).abs() < 1e-6);
    total.backward();
    assert!(on_dev(&student.grad()));
    for p in kd.teacher().unwrap().parameters() {
        assert!(!p.grad().defined() || p.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
    }
    Ok(())
}

#[test]
fn torchscript_kernel_from_bytes_runs_and_trains_on_cuda_0() -> Result<()> {
    let dev = dev();
    let kernel = ScriptedKernel::from_bytes(SEED_ADAPTER_PT, dev)?;
    assert_eq!(kernel.parameters().len(), 2);
    assert!(kernel.parameters().iter().all(on_dev), "parameters must load onto {dev:?}");
    // Same bytes on the CPU: same weights, same values.
    let cpu_kernel = ScriptedKernel::from_bytes(SEED_ADAPTER_PT, Device::Cpu)?;
    let x = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
    let y = kernel.forward(&x.to_device(dev))?;
    assert!(on_dev(&y) && max_diff(&y, &cpu_kernel.forward(&x)?) < 1e-5);
    // In a slot, blending residually at the directed α.
    let mut slot = SeedSlot::new("seed-1", "block1", BlendSpec::residual())?;
    slot.transition(SeedStage::Germinated)?;
    slot.attach_kernel(Box::new(kernel))?;
    slot.transition(SeedStage::Training)?;
    slot.transition(SeedStage::Blending)?;
    slot.set_alpha(0.5)?;
    let h = x.to_device(dev);
    let out = slot.forward(&h, &ForwardCtx::train())?;
    assert!(on_dev(&out.out) && max_diff(&out.out, &(&h + out.seed.as_ref().unwrap() * 0.5)) < 1e-5);
    out.out.sum(Kind::Float).backward();
    for p in slot.kernel().unwrap().parameters() {
        assert!(on_dev(&p.grad()) && p.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    // Inference writes into the slot's reused buffer on the device.
    let infer = slot.forward(&h, &ForwardCtx::infer())?;
    assert!(on_dev(&infer.out));
    Ok(())
}
