//! Blend kernels on real libtorch: values of every mode, broadcasting over
//! 1-D/2-D/3-D features, detached host, α bounds, typed errors, and caller
//! tensors left untouched.

#![allow(clippy::unwrap_used)]

use anyhow::Result;
use kasmina_tensor::blend::kernels::{blend, blend_into};
use kasmina_tensor::{BlendSpec, ConfidenceGate, TensorError};
use leyline::BlendMode;
use tch::{Device, Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn gate() -> ConfidenceGate {
    ConfidenceGate { k: 4.0, tau: 0.5, alpha_lo: 0.1, alpha_hi: 0.8 }
}

/// Runs both paths and checks they agree; returns the training-path output.
fn both_paths(spec: &BlendSpec, alpha: f64, host: &Tensor, seed: &Tensor, logits: Option<&Tensor>) -> Result<Tensor> {
    let (out, _) = blend(spec, alpha, host, seed, logits)?;
    let mut buf = Tensor::empty_like(host);
    blend_into(spec, alpha, host, seed, logits, &mut buf)?;
    assert!(max_diff(&out, &buf) < 1e-6, "train and fused paths disagree");
    Ok(out)
}

#[test]
fn convex_and_residual_values() -> Result<()> {
    let (host, seed) = (randn(&[4, 3, 5]), randn(&[4, 3, 5]));
    let out = both_paths(&BlendSpec::convex(), 0.3, &host, &seed, None)?;
    assert!(max_diff(&out, &(&seed * 0.3 + &host * 0.7)) < 1e-6);
    let out = both_paths(&BlendSpec::residual(), 0.3, &host, &seed, None)?;
    assert!(max_diff(&out, &(&host + &seed * 0.3)) < 1e-6);
    // α = 1 in CONVEX is exactly the seed; α = 0 exactly the host.
    assert_eq!(max_diff(&both_paths(&BlendSpec::convex(), 1.0, &host, &seed, None)?, &seed), 0.0);
    assert_eq!(max_diff(&both_paths(&BlendSpec::convex(), 0.0, &host, &seed, None)?, &host), 0.0);
    Ok(())
}

#[test]
fn channel_broadcasts_on_dim1_for_1d_2d_3d_features() -> Result<()> {
    let alpha_vec = vec![0.0f32, 0.5, 1.0];
    let spec = BlendSpec::channel(alpha_vec.clone())?;
    for shape in [vec![2i64, 3], vec![2, 3, 7], vec![2, 3, 4, 5], vec![2, 3, 2, 3, 4]] {
        let (host, seed) = (randn(&shape), randn(&shape));
        let (out, stats) = blend(&spec, 0.8, &host, &seed, None)?;
        for (c, a) in alpha_vec.iter().enumerate() {
            let w = 0.8 * f64::from(*a);
            let (h, s, o) = (host.select(1, c as i64), seed.select(1, c as i64), out.select(1, c as i64));
            assert!(max_diff(&o, &(&s * w + &h * (1.0 - w))) < 1e-6, "shape {shape:?} channel {c}");
        }
        assert!((stats.alpha_mean - 0.4).abs() < 1e-9);
        assert!((stats.alpha_p95 - 0.8).abs() < 1e-9);
        assert_eq!(stats.sparsity, Some(1.0 / 3.0));
        let _ = both_paths(&spec, 0.8, &host, &seed, None)?;
    }
    Ok(())
}

#[test]
fn channel_refuses_wrong_length_and_rank() {
    let spec = BlendSpec::channel(vec![0.5; 4]).unwrap();
    let (host, seed) = (randn(&[2, 3, 5]), randn(&[2, 3, 5]));
    assert!(matches!(blend(&spec, 0.5, &host, &seed, None), Err(TensorError::AlphaVecLength { len: 4, channels: 3 })));
    let (h1, s1) = (randn(&[4]), randn(&[4]));
    assert!(matches!(blend(&spec, 0.5, &h1, &s1, None), Err(TensorError::WrongRank { what: "features", .. })));
    let (h6, s6) = (randn(&[1, 4, 1, 1, 1, 1]), randn(&[1, 4, 1, 1, 1, 1]));
    assert!(matches!(blend(&spec, 0.5, &h6, &s6, None), Err(TensorError::WrongRank { .. })));
}

#[test]
fn confidence_gate_comes_from_logits_and_is_clamped() -> Result<()> {
    let spec = BlendSpec::confidence(gate())?;
    // Margins top1 − top2: 3.0, 0.5, 0.0 → g = σ(4·2.5), σ(0), σ(4·(−0.5)).
    let logits = Tensor::from_slice(&[4.0f32, 1.0, 0.0, 1.0, 0.5, 0.2, 2.0, 2.0, 1.0]).view([3, 3]);
    let (host, seed) = (randn(&[3, 2, 4]), randn(&[3, 2, 4]));
    let alpha = 0.9;
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let g = [sig(10.0), sig(0.0), sig(-2.0)];
    let eff: Vec<f64> = g.iter().map(|g| (alpha * g).clamp(0.1, 0.8)).collect();
    let (out, stats) = blend(&spec, alpha, &host, &seed, Some(&logits))?;
    for (i, w) in eff.iter().enumerate() {
        let (h, s, o) = (host.select(0, i as i64), seed.select(0, i as i64), out.select(0, i as i64));
        assert!(max_diff(&o, &(&s * *w + &h * (1.0 - *w))) < 1e-6, "sample {i}");
    }
    assert!((stats.gate_mean.unwrap() - g.iter().sum::<f64>() / 3.0).abs() < 1e-6);
    // 0.9·σ(10) = 0.89996 > 0.8 is clamped; 0.45 and 0.9·0.119 = 0.107 are not.
    assert!((stats.clamped_fraction - 1.0 / 3.0).abs() < 1e-9);
    assert!((stats.alpha_mean - eff.iter().sum::<f64>() / 3.0).abs() < 1e-6);
    let _ = both_paths(&spec, alpha, &host, &seed, Some(&logits))?;
    Ok(())
}

#[test]
fn confidence_refuses_missing_wrong_rank_and_wrong_batch_logits() {
    let spec = BlendSpec::confidence(gate()).unwrap();
    let (host, seed) = (randn(&[3, 4]), randn(&[3, 4]));
    assert!(matches!(blend(&spec, 0.5, &host, &seed, None), Err(TensorError::MissingLogits)));
    let flat = randn(&[3]);
    assert!(matches!(blend(&spec, 0.5, &host, &seed, Some(&flat)), Err(TensorError::WrongRank { what: "logits", .. })));
    let other_batch = randn(&[5, 10]);
    assert!(matches!(
        blend(&spec, 0.5, &host, &seed, Some(&other_batch)),
        Err(TensorError::LogitsBatchMismatch { logits: 5, features: 3 })
    ));
    let one_class = randn(&[3, 1]);
    assert!(matches!(blend(&spec, 0.5, &host, &seed, Some(&one_class)), Err(TensorError::TooFewClasses(1))));
    let mut buf = Tensor::empty_like(&host);
    assert!(matches!(blend_into(&spec, 0.5, &host, &seed, None, &mut buf), Err(TensorError::MissingLogits)));
}

#[test]
fn host_receives_no_gradient_and_seed_does_in_every_mode() -> Result<()> {
    let logits = randn(&[2, 5]);
    let specs = [
        BlendSpec::convex(),
        BlendSpec::residual(),
        BlendSpec::channel(vec![0.3, 0.6, 0.9])?,
        BlendSpec::confidence(gate())?,
    ];
    for spec in &specs {
        let host_in = randn(&[2, 3, 4]).set_requires_grad(true);
        let seed_out = randn(&[2, 3, 4]).set_requires_grad(true);
        let host = &host_in * 2.0; // a host computation with a graph
        let (out, _) = blend(spec, 0.7, &host, &seed_out, Some(&logits))?;
        out.sum(Kind::Float).backward();
        let hg = host_in.grad();
        assert!(
            !hg.defined() || hg.abs().sum(Kind::Float).double_value(&[]) == 0.0,
            "{:?}: host got a gradient",
            spec.mode()
        );
        assert!(
            seed_out.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{:?}: seed got no gradient",
            spec.mode()
        );
    }
    Ok(())
}

#[test]
fn caller_tensors_are_never_written() -> Result<()> {
    let spec = BlendSpec::confidence(gate())?;
    let (host, seed, logits) = (randn(&[3, 4]), randn(&[3, 4]), randn(&[3, 6]));
    let (h0, s0, l0) = (host.copy(), seed.copy(), logits.copy());
    let mut buf = Tensor::empty_like(&host);
    for mode_spec in [spec, BlendSpec::channel(vec![0.1, 0.2, 0.3, 0.4])?, BlendSpec::residual(), BlendSpec::convex()] {
        let _ = blend(&mode_spec, 0.95, &host, &seed, Some(&logits))?;
        blend_into(&mode_spec, 0.95, &host, &seed, Some(&logits), &mut buf)?;
    }
    assert_eq!(max_diff(&host, &h0), 0.0);
    assert_eq!(max_diff(&seed, &s0), 0.0);
    assert_eq!(max_diff(&logits, &l0), 0.0);
    Ok(())
}

#[test]
fn foreign_shapes_and_bad_alpha_are_typed_errors() {
    let spec = BlendSpec::convex();
    let (host, seed) = (randn(&[2, 3]), randn(&[2, 4]));
    assert!(matches!(blend(&spec, 0.5, &host, &seed, None), Err(TensorError::ShapeMismatch { .. })));
    let seed = randn(&[2, 3]);
    let mut small = Tensor::empty([1, 3], (Kind::Float, Device::Cpu));
    assert!(matches!(blend_into(&spec, 0.5, &host, &seed, None, &mut small), Err(TensorError::ShapeMismatch { .. })));
    let mut wrong_kind = Tensor::empty([2, 3], (Kind::Double, Device::Cpu));
    assert!(matches!(
        blend_into(&spec, 0.5, &host, &seed, None, &mut wrong_kind),
        Err(TensorError::Incompatible { .. })
    ));
    for a in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            blend(&spec, a, &host, &seed, None),
            Err(TensorError::InvalidParameter { name: "alpha", .. })
        ));
    }
    let bf = seed.to_kind(Kind::Double);
    assert!(matches!(blend(&spec, 0.5, &host, &bf, None), Err(TensorError::Incompatible { .. })));
    let ints = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
    assert!(matches!(blend(&spec, 0.5, &ints, &ints, None), Err(TensorError::Incompatible { what: "host dtype", .. })));
}

#[test]
fn scalar_modes_report_alpha_as_mean_and_p95() -> Result<()> {
    let (host, seed) = (randn(&[2, 2]), randn(&[2, 2]));
    let (_, stats) = blend(&BlendSpec::residual(), 0.25, &host, &seed, None)?;
    assert_eq!(stats.mode, BlendMode::Residual);
    assert_eq!((stats.alpha_mean, stats.alpha_p95, stats.clamped_fraction), (0.25, 0.25, 0.0));
    assert!(stats.sparsity.is_none() && stats.gate_mean.is_none());
    assert!(stats.kernel_us >= 0.0);
    Ok(())
}
