//! GPU checks, compiled only with `--features cuda-tests` and meant for a
//! machine with CUDA libtorch: every blend mode on CUDA matches the CPU
//! result, the reused buffer stays on the device, and the isolation sampler
//! runs on device gradients.
//!
//! Run: `cargo test -p kasmina-tensor --features cuda-tests --test cuda`

#![cfg(feature = "cuda-tests")]
#![allow(clippy::unwrap_used)]

use anyhow::Result;
use kasmina_tensor::blend::kernels::{blend, blend_into};
use kasmina_tensor::isolation::sampled_cosine;
use kasmina_tensor::{BlendSpec, ConfidenceGate};
use tch::{Device, Kind, Tensor};

fn cuda() -> Device {
    let device = Device::cuda_if_available();
    assert!(device.is_cuda(), "cuda-tests enabled but libtorch sees no CUDA device");
    device
}

#[test]
fn every_mode_on_cuda_matches_cpu() -> Result<()> {
    let dev = cuda();
    let host = Tensor::randn([8, 16, 12, 12], (Kind::Float, Device::Cpu));
    let seed = Tensor::randn([8, 16, 12, 12], (Kind::Float, Device::Cpu));
    let logits = Tensor::randn([8, 10], (Kind::Float, Device::Cpu));
    let alpha_vec: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
    let specs = [
        BlendSpec::convex(),
        BlendSpec::residual(),
        BlendSpec::channel(alpha_vec)?,
        BlendSpec::confidence(ConfidenceGate { k: 4.0, tau: 0.5, alpha_lo: 0.1, alpha_hi: 0.9 })?,
    ];
    let (hd, sd, ld) = (host.to_device(dev), seed.to_device(dev), logits.to_device(dev));
    let mut buf = Tensor::empty_like(&hd);
    for spec in &specs {
        let (cpu, _) = blend(spec, 0.6, &host, &seed, Some(&logits))?;
        let (gpu, _) = blend(spec, 0.6, &hd, &sd, Some(&ld))?;
        assert!((gpu.to_device(Device::Cpu) - &cpu).abs().max().double_value(&[]) < 1e-5, "{:?}", spec.mode());
        blend_into(spec, 0.6, &hd, &sd, Some(&ld), &mut buf)?;
        assert!(buf.device().is_cuda());
        assert!((buf.to_device(Device::Cpu) - &cpu).abs().max().double_value(&[]) < 1e-5, "{:?} fused", spec.mode());
    }
    Ok(())
}

#[test]
fn isolation_sampler_runs_on_device_gradients() -> Result<()> {
    let dev = cuda();
    let shared = Tensor::randn([256, 256], (Kind::Float, dev)).set_requires_grad(true);
    let own = Tensor::randn([256, 256], (Kind::Float, dev)).set_requires_grad(true);
    (shared.sum(Kind::Float) + own.sum(Kind::Float)).backward();
    let (cos, n) = sampled_cosine(&[shared.shallow_clone()], &[shared.shallow_clone(), own.shallow_clone()], 64)?;
    assert_eq!(n, 1);
    // Equal gradients on both: cos = ‖a‖² / √(‖a‖² · 2‖a‖²) = 1/√2.
    assert!((cos - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{cos}");
    Ok(())
}
