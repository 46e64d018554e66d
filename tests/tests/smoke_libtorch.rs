//! Smoke test of the real libtorch through tch (issue 2, item 8a).
//!
//! Loads a TorchScript module saved by PyTorch 2.11 (fixture and generator in
//! `tests/fixtures/torchscript/`), runs forward and backward, and compares
//! outputs and gradients with the values PyTorch itself computed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/torchscript").join(name)
}

/// Reads a named line of floats from `tiny_mlp.expected.txt`.
fn expected(key: &str) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(fixture("tiny_mlp.expected.txt"))?;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some(key) {
            return parts.map(|v| v.parse::<f32>().with_context(|| format!("bad float {v}"))).collect();
        }
    }
    bail!("key {key} missing from expected file")
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

fn input() -> Result<Tensor> {
    let x = expected("input")?;
    Ok(Tensor::from_slice(&x).reshape([2, 4]))
}

#[test]
fn torchscript_inference_matches_pytorch() -> Result<()> {
    let module = tch::CModule::load(fixture("tiny_mlp.pt"))?;
    let out = module.forward_ts(&[input()?])?;
    assert_eq!(out.size(), [2, 2]);
    let got: Vec<f32> = out.flatten(0, -1).try_into()?;
    assert_close(&got, &expected("output")?, "output");
    Ok(())
}

#[test]
fn torchscript_trains_with_gradients_matching_pytorch() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut module = tch::TrainableCModule::load(fixture("tiny_mlp.pt"), vs.root())?;
    module.set_train();
    let variables = vs.variables();
    // tch stores TorchScript parameter names with `.` replaced by `_`.
    let weight = variables.get("fc1_weight").context("fc1_weight not in the VarStore")?;
    assert!(weight.requires_grad(), "loaded parameters must be trainable");

    let out = module.forward_ts(&[input()?])?;
    out.sum(Kind::Float).backward();
    let grad: Vec<f32> = weight.grad().flatten(0, -1).try_into()?;
    assert_close(&grad, &expected("grad_fc1_weight")?, "grad fc1.weight");

    // One SGD step must change the loss: the parameters really are live.
    let before = out.sum(Kind::Float).double_value(&[]);
    let mut opt = nn::Sgd::default().build(&vs, 0.1)?;
    opt.step();
    let after = module.forward_ts(&[input()?])?.sum(Kind::Float).double_value(&[]);
    assert!(after < before, "an SGD step on sum(out) must lower it: {before} -> {after}");
    Ok(())
}

#[test]
fn loading_a_missing_module_is_an_error_not_a_panic() {
    assert!(tch::CModule::load(fixture("does_not_exist.pt")).is_err());
}
