//! Blend specifications (SPEC.md §5): which mode, with which parameters,
//! validated once when the spec is built so the per-step kernels only check
//! shapes. The parameter rules are the contract's
//! ([`leyline::BlendSpec::validate`]); [`BlendSpec::from_contract`] turns the
//! spec a graft directive carries into this one.
//!
//! The kernels themselves live in [`kernels`]; per-step statistics in
//! [`stats`].

pub mod kernels;
pub mod stats;

use leyline::BlendMode;

use crate::error::{Result, TensorError};

/// Longest α vector accepted: the contract's bound (see
/// [`leyline::blend::MAX_ALPHA_VEC_LEN`]), re-exported where it always was.
pub use leyline::blend::MAX_ALPHA_VEC_LEN;

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
    /// CONFIDENCE: a step without logits is an error (absent means `false`,
    /// as the annotation parser reads it).
    pub confidence_logits_required: bool,
}

/// A validated blend specification.
///
/// Every constructor checks the parameters with the contract's
/// [`leyline::BlendSpec::validate`], so the tensor plane refuses exactly
/// what the host refuses at admission: one set of rules, not two copies.
#[derive(Debug, Clone, PartialEq)]
pub struct BlendSpec {
    mode: BlendMode,
    alpha_vec: Vec<f32>,
    gate: Option<ConfidenceGate>,
    logits_required: bool,
}

impl BlendSpec {
    /// CONVEX: `α·seed + (1−α)·host`.
    pub fn convex() -> Self {
        BlendSpec { mode: BlendMode::Convex, alpha_vec: Vec::new(), gate: None, logits_required: false }
    }

    /// RESIDUAL: `host + α·seed`.
    pub fn residual() -> Self {
        BlendSpec { mode: BlendMode::Residual, alpha_vec: Vec::new(), gate: None, logits_required: false }
    }

    /// CHANNEL with a per-channel α vector; entries must be finite and in
    /// [0, 1] (the annotation parser clamps and reports; here a value outside
    /// is a caller bug and refused).
    pub fn channel(alpha_vec: Vec<f32>) -> Result<Self> {
        Self::from_contract_owned(leyline::BlendSpec::channel(alpha_vec))
    }

    /// CONFIDENCE with its gate (logits not required; see
    /// [`from_contract`](Self::from_contract) to carry that flag).
    pub fn confidence(gate: ConfidenceGate) -> Result<Self> {
        let ConfidenceGate { k, tau, alpha_lo, alpha_hi } = gate;
        Self::from_contract_owned(leyline::BlendSpec::confidence(k, tau, alpha_lo, alpha_hi))
    }

    /// The tensor spec of a contract spec (what a `GraftDirective::Attach`
    /// carries). A spec the contract's validation refuses is refused here
    /// with the same key ([`TensorError::InvalidBlend`]).
    pub fn from_contract(spec: &leyline::BlendSpec) -> Result<Self> {
        Self::from_contract_owned(spec.clone())
    }

    fn from_contract_owned(spec: leyline::BlendSpec) -> Result<Self> {
        spec.validate()?;
        let gate = (spec.mode == BlendMode::Confidence).then_some(ConfidenceGate {
            k: spec.gate_k,
            tau: spec.gate_tau,
            alpha_lo: spec.alpha_lo,
            alpha_hi: spec.alpha_hi,
        });
        // Only CONFIDENCE reads logits; the flag means nothing elsewhere.
        let logits_required = spec.mode == BlendMode::Confidence && spec.confidence_logits_required;
        Ok(BlendSpec { mode: spec.mode, alpha_vec: spec.alpha_vec, gate, logits_required })
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
                let mut spec = leyline::BlendSpec::confidence(
                    need(params.gate_k, "gate_k")?,
                    need(params.gate_tau, "gate_tau")?,
                    need(params.alpha_lo, "alpha_lo")?,
                    need(params.alpha_hi, "alpha_hi")?,
                );
                spec.confidence_logits_required = params.confidence_logits_required;
                Self::from_contract_owned(spec)
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

    /// Whether a step without classification logits must be refused
    /// (CONFIDENCE with `confidence_logits_required`; `false` otherwise).
    pub fn logits_required(&self) -> bool {
        self.logits_required
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
            Err(TensorError::InvalidBlend(e)) if e.key == "alpha_hi"
        ));
        p.alpha_hi = Some(0.9);
        p.confidence_logits_required = true;
        let spec = BlendSpec::new(BlendMode::Confidence, p).unwrap();
        assert_eq!(spec.gate().map(|g| g.alpha_hi), Some(0.9));
        assert!(spec.logits_required());
    }

    #[test]
    fn from_contract_refuses_what_the_contract_refuses_with_the_same_key() {
        let mut no_logits_flag = leyline::BlendSpec::convex();
        no_logits_flag.confidence_logits_required = true;
        let bad = [
            leyline::BlendSpec::confidence(0.0, 0.1, 0.0, 1.0),
            leyline::BlendSpec::confidence(-1.0, 0.1, 0.0, 1.0),
            leyline::BlendSpec::confidence(4.0, f64::NAN, 0.0, 1.0),
            leyline::BlendSpec::confidence(4.0, 0.1, 0.8, 0.2),
            leyline::BlendSpec::channel(vec![]),
            leyline::BlendSpec::channel(vec![0.5, 1.5]),
            leyline::BlendSpec::channel(vec![0.5; MAX_ALPHA_VEC_LEN + 1]),
            leyline::BlendSpec { alpha_vec: vec![0.5], ..leyline::BlendSpec::residual() },
        ];
        for spec in bad {
            let contract = spec.validate().expect_err("the contract refuses it");
            match BlendSpec::from_contract(&spec) {
                Err(TensorError::InvalidBlend(e)) => assert_eq!(e.key, contract.key, "{spec:?}"),
                other => panic!("{spec:?}: expected InvalidBlend({}), got {other:?}", contract.key),
            }
        }
        // The flag is carried for CONFIDENCE and meaningless elsewhere.
        let mut confidence = leyline::BlendSpec::confidence(4.0, 0.1, 0.1, 0.9);
        confidence.confidence_logits_required = true;
        let spec = BlendSpec::from_contract(&confidence).unwrap();
        assert!(spec.logits_required() && spec.gate().is_some_and(|g| g.k == 4.0 && g.alpha_lo == 0.1));
        assert!(!BlendSpec::from_contract(&no_logits_flag).unwrap().logits_required());
        let channel = BlendSpec::from_contract(&leyline::BlendSpec::channel(vec![0.25, 1.0])).unwrap();
        assert_eq!((channel.mode(), channel.alpha_vec()), (BlendMode::Channel, &[0.25f32, 1.0][..]));
    }

    #[test]
    fn alpha_outside_unit_interval_is_refused() {
        assert!(check_alpha(0.0).is_ok() && check_alpha(1.0).is_ok());
        assert!(check_alpha(-0.01).is_err() && check_alpha(1.01).is_err() && check_alpha(f64::NAN).is_err());
    }
}
