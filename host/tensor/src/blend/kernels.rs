//! The blend kernels: one fused libtorch op per mode.
//!
//! | mode | op | weight |
//! |---|---|---|
//! | CONVEX | `lerp(host, seed, α)` | scalar |
//! | RESIDUAL | `addcmul(host, seed, α)` | 0-d tensor |
//! | CHANNEL | `lerp(host, seed, w)` | `α·α_vec` viewed `[1, C, 1, …]` |
//! | CONFIDENCE | `lerp(host, seed, w)` | `clamp(α·g, lo, hi)` viewed `[N, 1, …]` |
//!
//! Two entry points, because libtorch's `out=` variants cannot record
//! autograd history:
//! - [`blend`] (training): allocates its output and keeps the graph, so the
//!   seed's parameters receive gradients. Used for TRAINING/BLENDING steps.
//! - [`blend_into`] (hot path): runs under `no_grad` and writes into a reused
//!   buffer — one pass over memory, no allocation. Used for evaluation,
//!   shadow comparisons and inference, where nothing is trained.
//!
//! In both, the host branch is `host.detach()` and no input tensor is written.

use std::time::Instant;

use leyline::BlendMode;
use tch::{Kind, Tensor};

use super::stats::{BlendStats, p95};
use super::{BlendSpec, check_alpha};
use crate::error::{Result, TensorError};

/// Most dimensions a CHANNEL/CONFIDENCE feature tensor may have:
/// `[N, C, D, H, W]` (3-D features).
pub const MAX_FEATURE_RANK: usize = 5;

/// The blend weight, resolved for one call.
enum Weight {
    /// CONVEX: a plain scalar.
    Scalar(f64),
    /// RESIDUAL: a 0-d tensor (addcmul's multiplier).
    Scale(Tensor),
    /// CHANNEL/CONFIDENCE: a broadcastable weight tensor.
    Broadcast(Tensor),
}

/// Runs the blend with autograd (training path). `logits` are the
/// classification logits of this batch (CONFIDENCE only).
pub fn blend(
    spec: &BlendSpec,
    alpha: f64,
    host: &Tensor,
    seed: &Tensor,
    logits: Option<&Tensor>,
) -> Result<(Tensor, BlendStats)> {
    blend_graph(spec, alpha, &host.detach(), host, seed, logits)
}

/// The blend of a fossilized seed: the seed is part of the host now, so the
/// host branch keeps its graph (no detach). Same values as [`blend`].
pub(crate) fn blend_fossil(
    spec: &BlendSpec,
    alpha: f64,
    host: &Tensor,
    seed: &Tensor,
    logits: Option<&Tensor>,
) -> Result<(Tensor, BlendStats)> {
    blend_graph(spec, alpha, host, host, seed, logits)
}

fn blend_graph(
    spec: &BlendSpec,
    alpha: f64,
    host_branch: &Tensor,
    host: &Tensor,
    seed: &Tensor,
    logits: Option<&Tensor>,
) -> Result<(Tensor, BlendStats)> {
    let (weight, mut stats) = prepare(spec, alpha, host, seed, logits)?;
    let start = Instant::now();
    let out = match &weight {
        Weight::Scalar(a) => host_branch.f_lerp(seed, *a),
        Weight::Scale(a) => host_branch.f_addcmul(seed, a),
        Weight::Broadcast(w) => host_branch.f_lerp_tensor(seed, w),
    }
    .map_err(TensorError::torch("blend"))?;
    stats.kernel_us = start.elapsed().as_secs_f64() * 1e6;
    Ok((out, stats))
}

/// Runs the blend into `out` without autograd (hot path). `out` must already
/// have the host's shape, dtype and device; it is the only tensor written.
pub fn blend_into(
    spec: &BlendSpec,
    alpha: f64,
    host: &Tensor,
    seed: &Tensor,
    logits: Option<&Tensor>,
    out: &mut Tensor,
) -> Result<BlendStats> {
    check_buffer(out, host)?;
    tch::no_grad(|| {
        let (weight, mut stats) = prepare(spec, alpha, host, seed, logits)?;
        let start = Instant::now();
        // The returned handle aliases `out`; nothing else to keep.
        let _aliases_out = match &weight {
            Weight::Scalar(a) => host.f_lerp_scalar_out(out, seed, *a),
            Weight::Scale(a) => host.f_addcmul_out(out, seed, a),
            Weight::Broadcast(w) => host.f_lerp_tensor_out(out, seed, w),
        }
        .map_err(TensorError::torch("blend_into"))?;
        stats.kernel_us = start.elapsed().as_secs_f64() * 1e6;
        Ok(stats)
    })
}

/// The incubator (TRAINING) output: `host + (seed − seed.detach())`. Its
/// value is the host output exactly; its gradient w.r.t. the seed output is
/// the gradient the host output receives (straight-through estimator).
pub fn incubate(host: &Tensor, seed: &Tensor) -> Result<Tensor> {
    check_same_shape("seed output vs host output", host, seed)?;
    check_compatible("seed output vs host output", host, seed)?;
    let ste = seed.f_sub(&seed.detach()).map_err(TensorError::torch("incubate"))?;
    host.f_add(&ste).map_err(TensorError::torch("incubate"))
}

/// Whether `out` can receive a blend of `host`-shaped tensors.
pub fn buffer_fits(out: &Tensor, host: &Tensor) -> bool {
    out.size() == host.size() && out.kind() == host.kind() && out.device() == host.device()
}

fn check_buffer(out: &Tensor, host: &Tensor) -> Result<()> {
    if out.size() != host.size() {
        return Err(TensorError::ShapeMismatch {
            what: "output buffer vs host output",
            expected: host.size(),
            got: out.size(),
        });
    }
    check_compatible("output buffer vs host output", host, out)
}

/// Same dtype and device, and a floating dtype. Checked before any libtorch
/// call: tch 0.24 panics (instead of returning `Err`) when an op taking a
/// `Scalar` argument fails, because the scalar's destructor re-reads the
/// pending libtorch error — so such ops must never be handed mismatches.
fn check_compatible(what: &'static str, host: &Tensor, other: &Tensor) -> Result<()> {
    const FLOATS: [Kind; 4] = [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16];
    if !FLOATS.contains(&host.kind()) {
        return Err(TensorError::Incompatible {
            what: "host dtype",
            expected: "a floating dtype".into(),
            got: format!("{:?}", host.kind()),
        });
    }
    if other.kind() != host.kind() {
        return Err(TensorError::Incompatible {
            what,
            expected: format!("{:?}", host.kind()),
            got: format!("{:?}", other.kind()),
        });
    }
    if other.device() != host.device() {
        return Err(TensorError::Incompatible {
            what,
            expected: format!("{:?}", host.device()),
            got: format!("{:?}", other.device()),
        });
    }
    Ok(())
}

fn check_same_shape(what: &'static str, host: &Tensor, seed: &Tensor) -> Result<()> {
    if host.size() == seed.size() {
        Ok(())
    } else {
        Err(TensorError::ShapeMismatch { what, expected: host.size(), got: seed.size() })
    }
}

/// Validates shapes and α, resolves the weight and the α-related stats.
fn prepare(
    spec: &BlendSpec,
    alpha: f64,
    host: &Tensor,
    seed: &Tensor,
    logits: Option<&Tensor>,
) -> Result<(Weight, BlendStats)> {
    check_alpha(alpha)?;
    check_same_shape("seed output vs host output", host, seed)?;
    check_compatible("seed output vs host output", host, seed)?;
    let mut stats = BlendStats::scalar(spec.mode(), alpha);
    let weight = match spec.mode() {
        BlendMode::Convex => Weight::Scalar(alpha),
        BlendMode::Residual => {
            // On the host's device: a CPU scalar tensor is not accepted by every CUDA kernel.
            let a =
                Tensor::f_scalar_tensor(alpha, (host.kind(), host.device())).map_err(TensorError::torch("alpha"))?;
            Weight::Scale(a)
        }
        BlendMode::Channel => Weight::Broadcast(channel_weight(spec.alpha_vec(), alpha, host, &mut stats)?),
        BlendMode::Confidence => Weight::Broadcast(confidence_weight(spec, alpha, host, logits, &mut stats)?),
    };
    Ok((weight, stats))
}

fn check_feature_rank(host: &Tensor, min: usize, expected: &'static str) -> Result<()> {
    let rank = host.dim();
    if (min..=MAX_FEATURE_RANK).contains(&rank) {
        Ok(())
    } else {
        Err(TensorError::WrongRank { what: "features", expected, got: rank })
    }
}

/// `α·α_vec` as `[1, C, 1, …]` on the host's device and dtype.
fn channel_weight(alpha_vec: &[f32], alpha: f64, host: &Tensor, stats: &mut BlendStats) -> Result<Tensor> {
    check_feature_rank(host, 2, "2 to 5 ([N, C, …])")?;
    let channels = host.size()[1];
    if i64::try_from(alpha_vec.len()).ok() != Some(channels) {
        return Err(TensorError::AlphaVecLength { len: alpha_vec.len(), channels });
    }
    // Stats from the host-side copy: no device sync on the hot path.
    let eff: Vec<f64> = alpha_vec.iter().map(|a| alpha * f64::from(*a)).collect();
    stats.alpha_mean = eff.iter().sum::<f64>() / eff.len() as f64;
    stats.alpha_p95 = p95(eff.clone());
    stats.sparsity = Some(eff.iter().filter(|a| **a == 0.0).count() as f64 / eff.len() as f64);
    let mut shape = vec![1i64; host.dim()];
    shape[1] = channels;
    let eff32: Vec<f32> = eff.iter().map(|a| *a as f32).collect();
    Tensor::f_from_slice(&eff32)
        .and_then(|t| t.f_to_kind(host.kind()))
        .and_then(|t| t.f_to_device(host.device()))
        .and_then(|t| t.f_view(shape.as_slice()))
        .map_err(TensorError::torch("channel weight"))
}

/// `clamp(α·sigmoid(k·(top1 − top2 − τ)), lo, hi)` as `[N, 1, …]`.
fn confidence_weight(
    spec: &BlendSpec,
    alpha: f64,
    host: &Tensor,
    logits: Option<&Tensor>,
    stats: &mut BlendStats,
) -> Result<Tensor> {
    let gate = spec.gate().ok_or(TensorError::IncompleteSpec { mode: BlendMode::Confidence, missing: "a gate" })?;
    check_feature_rank(host, 1, "1 to 5 ([N, …])")?;
    let logits = logits.ok_or(TensorError::MissingLogits)?;
    if logits.dim() != 2 {
        return Err(TensorError::WrongRank { what: "logits", expected: "2 ([N, classes])", got: logits.dim() });
    }
    let (n, classes) = (logits.size()[0], logits.size()[1]);
    let batch = host.size()[0];
    if n != batch {
        return Err(TensorError::LogitsBatchMismatch { logits: n, features: batch });
    }
    if classes < 2 {
        return Err(TensorError::TooFewClasses(classes));
    }
    // The gate is a control signal, not a trainable path: logits are detached.
    let logits = logits.detach().f_to_kind(Kind::Float).map_err(TensorError::torch("confidence gate"))?;
    let (top, _) = logits.f_topk(2, 1, true, true).map_err(TensorError::torch("confidence gate"))?;
    let margin = top.f_select(1, 0).and_then(|a| top.f_select(1, 1).and_then(|b| a.f_sub(&b)));
    let g = margin
        .and_then(|m| m.f_sub_scalar(gate.tau))
        .and_then(|m| m.f_mul_scalar(gate.k))
        .and_then(|m| m.f_sigmoid())
        .map_err(TensorError::torch("confidence gate"))?;
    let raw = g.f_mul_scalar(alpha).map_err(TensorError::torch("confidence gate"))?;
    let eff = raw.f_clamp(gate.alpha_lo, gate.alpha_hi).map_err(TensorError::torch("confidence gate"))?;
    // One small device→host copy of N gate values per step for the stats.
    let g_host = to_host_vec(&g)?;
    let raw_host = to_host_vec(&raw)?;
    let eff_host: Vec<f64> = raw_host.iter().map(|a| a.clamp(gate.alpha_lo, gate.alpha_hi)).collect();
    let len = eff_host.len().max(1) as f64;
    stats.gate_mean = Some(g_host.iter().sum::<f64>() / len);
    stats.clamped_fraction =
        raw_host.iter().filter(|a| **a < gate.alpha_lo || **a > gate.alpha_hi).count() as f64 / len;
    stats.alpha_mean = eff_host.iter().sum::<f64>() / len;
    stats.alpha_p95 = p95(eff_host);
    let mut shape = vec![1i64; host.dim()];
    shape[0] = batch;
    eff.f_to_kind(host.kind())
        .and_then(|t| t.f_to_device(host.device()))
        .and_then(|t| t.f_view(shape.as_slice()))
        .map_err(TensorError::torch("confidence weight"))
}

/// Copies a 1-D tensor to a host `Vec<f64>` (small tensors only: stats).
fn to_host_vec(t: &Tensor) -> Result<Vec<f64>> {
    let t = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Double))
        .map_err(TensorError::torch("stats copy"))?;
    Vec::<f64>::try_from(&t).map_err(TensorError::torch("stats copy"))
}
