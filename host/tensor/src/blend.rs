//! Blend specifications (SPEC.md §5): which mode, with which parameters,
//! validated once when the spec is built so the per-step kernels only check
//! shapes.
//!
//! The kernels themselves live in [`kernels`]; per-step statistics in
//! [`stats`].

pub mod kernels;
pub mod stats;

use leyline::BlendMode;

use crate::error::{Result, TensorError};

/// Longest α vector accepted. Channel counts of real feature maps stay far
/// below this; the annotation parser caps it much lower (default 64), this is
/// the tensor plane's own bound for callers that skip the parser.
pub const MAX_ALPHA_VEC_LEN: usize = 16_384;

/// CONFIDENCE gate parameters: `g = sigmoid(k·(top1 − top2 − τ))`,
/// `α_eff = clamp(α·g, α_lo, α_hi)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfidenceGate {
    /// Gate steepness `k` (> 0).
    pub k: f64,
    /// Margin threshold `τ`.
    pub tau: f64,
    /// Lower clamp of α_eff, in [0, α_hi].
    pub alpha_lo: f64,
    /// Upper clamp of α_eff, in [α_lo, 1].
    pub alpha_hi: f64,
}

/// Parameters as the annotation parser hands them over; [`BlendSpec::new`]
/// checks that the mode's requirements are present. Nothing is defaulted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlendParams {
    /// Per-channel α vector (CHANNEL).
    pub alpha_vec: Option<Vec<f32>>,
    /// Gate steepness (CONFIDENCE).
    pub gate_k: Option<f64>,
    /// Gate margin threshold (CONFIDENCE).
    pub gate_tau: Option<f64>,
    /// Lower clamp of α_eff (CONFIDENCE).
    pub alpha_lo: Option<f64>,
    /// Upper clamp of α_eff (CONFIDENCE).
    pub alpha_hi: Option<f64>,
}

/// A validated blend specification.
#[derive(Debug, Clone, PartialEq)]
pub struct BlendSpec {
    mode: BlendMode,
    alpha_vec: Vec<f32>,
    gate: Option<ConfidenceGate>,
}

impl BlendSpec {
    /// CONVEX: `α·seed + (1−α)·host`.
    pub fn convex() -> Self {
        BlendSpec { mode: BlendMode::Convex, alpha_vec: Vec::new(), gate: None }
    }

    /// RESIDUAL: `host + α·seed`.
    pub fn residual() -> Self {
        BlendSpec { mode: BlendMode::Residual, alpha_vec: Vec::new(), gate: None }
    }

    /// CHANNEL with a per-channel α vector; entries must be finite and in
    /// [0, 1] (the annotation parser clamps and reports; here a value outside
    /// is a caller bug and refused).
    pub fn channel(alpha_vec: Vec<f32>) -> Result<Self> {
        if alpha_vec.is_empty() {
            return Err(TensorError::IncompleteSpec { mode: BlendMode::Channel, missing: "a non-empty alpha_vec" });
        }
        if alpha_vec.len() > MAX_ALPHA_VEC_LEN {
            return Err(TensorError::InvalidParameter {
                name: "alpha_vec_len",
                value: alpha_vec.len() as f64,
                rule: "at most MAX_ALPHA_VEC_LEN entries",
            });
        }
        if let Some(bad) = alpha_vec.iter().find(|a| !(0.0..=1.0).contains(*a)) {
            return Err(TensorError::InvalidParameter {
                name: "alpha_vec",
                value: f64::from(*bad),
                rule: "entries must be finite and in [0, 1]",
            });
        }
        Ok(BlendSpec { mode: BlendMode::Channel, alpha_vec, gate: None })
    }

    /// CONFIDENCE with its gate.
    pub fn confidence(gate: ConfidenceGate) -> Result<Self> {
        let ConfidenceGate { k, tau, alpha_lo, alpha_hi } = gate;
        if !(k.is_finite() && k > 0.0) {
            return Err(TensorError::InvalidParameter { name: "gate_k", value: k, rule: "must be finite and > 0" });
        }
        if !tau.is_finite() {
            return Err(TensorError::InvalidParameter { name: "gate_tau", value: tau, rule: "must be finite" });
        }
        if !(0.0..=1.0).contains(&alpha_lo) {
            return Err(TensorError::InvalidParameter { name: "alpha_lo", value: alpha_lo, rule: "must be in [0, 1]" });
        }
        if !(alpha_lo..=1.0).contains(&alpha_hi) {
            return Err(TensorError::InvalidParameter {
                name: "alpha_hi",
                value: alpha_hi,
                rule: "must be in [alpha_lo, 1]",
            });
        }
        Ok(BlendSpec { mode: BlendMode::Confidence, alpha_vec: Vec::new(), gate: Some(gate) })
    }

    /// Builds the spec for `mode` from parsed annotation parameters. A
    /// missing requirement is an error; there is no fallback mode.
    pub fn new(mode: BlendMode, params: BlendParams) -> Result<Self> {
        match mode {
            BlendMode::Convex => Ok(Self::convex()),
            BlendMode::Residual => Ok(Self::residual()),
            BlendMode::Channel => match params.alpha_vec {
                Some(v) => Self::channel(v),
                None => Err(TensorError::IncompleteSpec { mode, missing: "alpha_vec" }),
            },
            BlendMode::Confidence => {
                let need = |v: Option<f64>, missing| v.ok_or(TensorError::IncompleteSpec { mode, missing });
                Self::confidence(ConfidenceGate {
                    k: need(params.gate_k, "gate_k")?,
                    tau: need(params.gate_tau, "gate_tau")?,
                    alpha_lo: need(params.alpha_lo, "alpha_lo")?,
                    alpha_hi: need(params.alpha_hi, "alpha_hi")?,
                })
            }
        }
    }

    /// The mode.
    pub fn mode(&self) -> BlendMode {
        self.mode
    }

    /// The α vector (empty unless CHANNEL).
    pub fn alpha_vec(&self) -> &[f32] {
        &self.alpha_vec
    }

    /// The gate (CONFIDENCE only).
    pub fn gate(&self) -> Option<ConfidenceGate> {
        self.gate
    }
}

/// Checks a runtime α: finite and in [0, 1]. α is a value, never a parameter.
pub(crate) fn check_alpha(alpha: f64) -> Result<()> {
    if (0.0..=1.0).contains(&alpha) {
        Ok(())
    } else {
        Err(TensorError::InvalidParameter { name: "alpha", value: alpha, rule: "must be finite and in [0, 1]" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_without_alpha_vec_is_refused_not_defaulted() {
        let err = BlendSpec::new(BlendMode::Channel, BlendParams::default()).unwrap_err();
        assert!(matches!(err, TensorError::IncompleteSpec { missing: "alpha_vec", .. }), "{err}");
        assert!(BlendSpec::channel(vec![]).is_err());
        assert!(BlendSpec::channel(vec![0.5, 1.5]).is_err());
        assert!(BlendSpec::channel(vec![0.5, f32::NAN]).is_err());
    }

    #[test]
    fn confidence_needs_every_gate_parameter_and_ordered_bounds() {
        let mut p = BlendParams { gate_k: Some(4.0), gate_tau: Some(0.1), alpha_lo: Some(0.1), ..Default::default() };
        let err = BlendSpec::new(BlendMode::Confidence, p.clone()).unwrap_err();
        assert!(matches!(err, TensorError::IncompleteSpec { missing: "alpha_hi", .. }), "{err}");
        p.alpha_hi = Some(0.05);
        assert!(matches!(
            BlendSpec::new(BlendMode::Confidence, p.clone()),
            Err(TensorError::InvalidParameter { name: "alpha_hi", .. })
        ));
        p.alpha_hi = Some(0.9);
        let spec = BlendSpec::new(BlendMode::Confidence, p).unwrap();
        assert_eq!(spec.gate().map(|g| g.alpha_hi), Some(0.9));
    }

    #[test]
    fn alpha_outside_unit_interval_is_refused() {
        assert!(check_alpha(0.0).is_ok() && check_alpha(1.0).is_ok());
        assert!(check_alpha(-0.01).is_err() && check_alpha(1.01).is_err() && check_alpha(f64::NAN).is_err());
    }
}
