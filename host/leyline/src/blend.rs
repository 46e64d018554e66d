//! The blend spec (SPEC.md §5) and the one set of rules it must satisfy.
//!
//! Every side that handles a blend spec calls [`BlendSpec::validate`]: the
//! host after the annotation plugin (so a spec is refused at admission,
//! naming the key), the trainers before they build a blend, and the tensor
//! plane. Before this existed, four copies of these rules had drifted, and a
//! CONFIDENCE spec with `gate_k = 0` was admitted by the host only to abort
//! the training run when the trainer built the blend.

use serde::{Deserialize, Serialize};

use crate::BlendMode;
use crate::annotations;

/// Longest α vector any side accepts. Channel counts of real feature maps
/// stay far below this; the annotation parser caps it much lower (default
/// 64). This is the contract's own bound, for callers that skip the parser.
pub const MAX_ALPHA_VEC_LEN: usize = 16_384;

/// How a seed's output is blended; parsed from annotations and re-validated
/// by the host before it reaches a trainer.
///
/// Fields a mode does not use hold neutral values (see the constructors):
/// `alpha_vec` empty, `gate_k = gate_tau = alpha_lo = 0`, `alpha_hi = 1`,
/// `confidence_logits_required = false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendSpec {
    /// Blend mode.
    pub mode: BlendMode,
    /// Per-channel α (CHANNEL only), each in [0, 1].
    pub alpha_vec: Vec<f32>,
    /// Gate steepness k (CONFIDENCE), finite and > 0.
    pub gate_k: f64,
    /// Gate margin τ (CONFIDENCE), finite.
    pub gate_tau: f64,
    /// Lower clamp of the effective α (CONFIDENCE), in [0, alpha_hi].
    pub alpha_lo: f64,
    /// Upper clamp of the effective α (CONFIDENCE), in [alpha_lo, 1].
    pub alpha_hi: f64,
    /// CONFIDENCE: the trainer must refuse a step that brings no logits
    /// instead of skipping the blend.
    pub confidence_logits_required: bool,
}

/// A blend parameter broke a rule of [`BlendSpec::validate`]; `key` is the
/// annotation key (SPEC.md §4) at fault, so a refusal can name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blend parameter {key} = {value} rejected: {rule}")]
pub struct BlendSpecError {
    /// Annotation key of the offending parameter (`gate_k`, `alpha_vec`, …).
    pub key: &'static str,
    /// The offending value, rendered (a whole-vector problem shows its length).
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

impl BlendSpecError {
    fn new(key: &'static str, value: impl std::fmt::Display, rule: &'static str) -> Self {
        BlendSpecError { key, value: value.to_string(), rule }
    }
}

/// `lo <= v <= hi` and `v` finite (a NaN fails every comparison).
fn within(v: f64, lo: f64, hi: f64) -> bool {
    v.is_finite() && lo <= v && v <= hi
}

impl BlendSpec {
    fn plain(mode: BlendMode) -> Self {
        BlendSpec {
            mode,
            alpha_vec: Vec::new(),
            gate_k: 0.0,
            gate_tau: 0.0,
            alpha_lo: 0.0,
            alpha_hi: 1.0,
            confidence_logits_required: false,
        }
    }

    /// CONVEX: `α·seed + (1−α)·host`.
    pub fn convex() -> Self {
        Self::plain(BlendMode::Convex)
    }

    /// RESIDUAL: `host + α·seed`.
    pub fn residual() -> Self {
        Self::plain(BlendMode::Residual)
    }

    /// CHANNEL with a per-channel α vector. Not validated: call
    /// [`validate`](Self::validate).
    pub fn channel(alpha_vec: Vec<f32>) -> Self {
        BlendSpec { alpha_vec, ..Self::plain(BlendMode::Channel) }
    }

    /// CONFIDENCE with gate steepness `k`, margin `tau` and the clamp
    /// `[lo, hi]` of the effective α; logits not required. Not validated:
    /// call [`validate`](Self::validate).
    pub fn confidence(k: f64, tau: f64, lo: f64, hi: f64) -> Self {
        BlendSpec { gate_k: k, gate_tau: tau, alpha_lo: lo, alpha_hi: hi, ..Self::plain(BlendMode::Confidence) }
    }

    /// Checks the spec against the rules of its mode (SPEC.md §5):
    /// - CHANNEL: a non-empty `alpha_vec` of at most [`MAX_ALPHA_VEC_LEN`]
    ///   entries, each finite and in [0, 1];
    /// - CONFIDENCE: `gate_k` finite and > 0, `gate_tau` finite,
    ///   `0 <= alpha_lo <= alpha_hi <= 1`, all finite;
    /// - every mode but CHANNEL: an empty `alpha_vec` (a vector the blend
    ///   would ignore is a controller mistake, not something to drop).
    ///
    /// The first broken rule is returned, naming its annotation key.
    pub fn validate(&self) -> Result<(), BlendSpecError> {
        if self.mode != BlendMode::Channel {
            if !self.alpha_vec.is_empty() {
                return Err(BlendSpecError::new(
                    annotations::ALPHA_VEC,
                    format!("[{} entries]", self.alpha_vec.len()),
                    "only CHANNEL blending takes an alpha_vec",
                ));
            }
        } else {
            self.validate_channel()?;
        }
        if self.mode == BlendMode::Confidence {
            self.validate_confidence()?;
        }
        Ok(())
    }

    fn validate_channel(&self) -> Result<(), BlendSpecError> {
        let len = self.alpha_vec.len();
        if len == 0 {
            return Err(BlendSpecError::new(
                annotations::ALPHA_VEC,
                "[]",
                "CHANNEL blending needs a non-empty alpha_vec",
            ));
        }
        if len > MAX_ALPHA_VEC_LEN {
            return Err(BlendSpecError::new(
                annotations::ALPHA_VEC_LEN,
                len,
                "must be at most MAX_ALPHA_VEC_LEN (16384) entries",
            ));
        }
        if let Some(bad) = self.alpha_vec.iter().find(|a| !within(f64::from(**a), 0.0, 1.0)) {
            return Err(BlendSpecError::new(annotations::ALPHA_VEC, bad, "entries must be finite and in [0, 1]"));
        }
        Ok(())
    }

    fn validate_confidence(&self) -> Result<(), BlendSpecError> {
        let BlendSpec { gate_k, gate_tau, alpha_lo, alpha_hi, .. } = *self;
        if !(gate_k.is_finite() && gate_k > 0.0) {
            return Err(BlendSpecError::new(annotations::GATE_K, gate_k, "must be finite and > 0"));
        }
        if !gate_tau.is_finite() {
            return Err(BlendSpecError::new(annotations::GATE_TAU, gate_tau, "must be finite"));
        }
        if !within(alpha_lo, 0.0, 1.0) {
            return Err(BlendSpecError::new(annotations::ALPHA_LO, alpha_lo, "must be finite and in [0, 1]"));
        }
        if !within(alpha_hi, alpha_lo, 1.0) {
            return Err(BlendSpecError::new(annotations::ALPHA_HI, alpha_hi, "must be finite and in [alpha_lo, 1]"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(spec: &BlendSpec) -> Option<&'static str> {
        spec.validate().err().map(|e| e.key)
    }

    #[test]
    fn constructors_give_valid_neutral_specs() {
        for spec in [BlendSpec::convex(), BlendSpec::residual(), BlendSpec::channel(vec![0.0, 0.5, 1.0])] {
            assert_eq!(spec.validate(), Ok(()), "{spec:?}");
            assert!(!spec.confidence_logits_required);
            assert_eq!((spec.gate_k, spec.gate_tau, spec.alpha_lo, spec.alpha_hi), (0.0, 0.0, 0.0, 1.0));
        }
        let spec = BlendSpec::confidence(4.0, 0.1, 0.2, 0.8);
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.mode, BlendMode::Confidence);
        assert!(spec.alpha_vec.is_empty());
    }

    #[test]
    fn channel_rules_name_the_key() {
        assert_eq!(key_of(&BlendSpec::channel(vec![])), Some("alpha_vec"));
        assert_eq!(key_of(&BlendSpec::channel(vec![0.5, 1.5])), Some("alpha_vec"));
        assert_eq!(key_of(&BlendSpec::channel(vec![-0.0001])), Some("alpha_vec"));
        assert_eq!(key_of(&BlendSpec::channel(vec![0.5, f32::NAN])), Some("alpha_vec"));
        assert_eq!(key_of(&BlendSpec::channel(vec![f32::INFINITY])), Some("alpha_vec"));
        assert_eq!(key_of(&BlendSpec::channel(vec![0.5; MAX_ALPHA_VEC_LEN])), None);
        assert_eq!(key_of(&BlendSpec::channel(vec![0.5; MAX_ALPHA_VEC_LEN + 1])), Some("alpha_vec_len"));
    }

    #[test]
    fn confidence_rules_name_the_key() {
        let c = BlendSpec::confidence;
        assert_eq!(key_of(&c(0.0, 0.1, 0.0, 1.0)), Some("gate_k"));
        assert_eq!(key_of(&c(-1.0, 0.1, 0.0, 1.0)), Some("gate_k"));
        assert_eq!(key_of(&c(f64::NAN, 0.1, 0.0, 1.0)), Some("gate_k"));
        assert_eq!(key_of(&c(f64::INFINITY, 0.1, 0.0, 1.0)), Some("gate_k"));
        assert_eq!(key_of(&c(4.0, f64::NAN, 0.0, 1.0)), Some("gate_tau"));
        assert_eq!(key_of(&c(4.0, f64::NEG_INFINITY, 0.0, 1.0)), Some("gate_tau"));
        assert_eq!(key_of(&c(4.0, -3.0, 0.0, 1.0)), None, "a negative margin is allowed");
        assert_eq!(key_of(&c(4.0, 0.1, -0.1, 1.0)), Some("alpha_lo"));
        assert_eq!(key_of(&c(4.0, 0.1, f64::NAN, 1.0)), Some("alpha_lo"));
        assert_eq!(key_of(&c(4.0, 0.1, 0.8, 0.2)), Some("alpha_hi"));
        assert_eq!(key_of(&c(4.0, 0.1, 0.0, 1.5)), Some("alpha_hi"));
        assert_eq!(key_of(&c(4.0, 0.1, 0.0, f64::NAN)), Some("alpha_hi"));
        assert_eq!(key_of(&c(4.0, 0.1, 0.5, 0.5)), None, "lo == hi pins α_eff");
    }

    #[test]
    fn alpha_vec_outside_channel_is_refused() {
        let mut spec = BlendSpec::convex();
        spec.alpha_vec = vec![0.5];
        assert_eq!(key_of(&spec), Some("alpha_vec"));
        let mut spec = BlendSpec::confidence(4.0, 0.1, 0.0, 1.0);
        spec.alpha_vec = vec![0.5];
        assert_eq!(key_of(&spec), Some("alpha_vec"));
    }

    #[test]
    fn error_message_names_key_value_and_rule() {
        let err = BlendSpec::confidence(0.0, 0.1, 0.0, 1.0).validate().err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("blend parameter gate_k = 0 rejected: must be finite and > 0")
        );
    }

    #[test]
    fn postcard_round_trip() {
        let mut spec = BlendSpec::confidence(4.0, -0.5, 0.1, 0.9);
        spec.confidence_logits_required = true;
        let bytes = postcard::to_allocvec(&spec).unwrap_or_default();
        assert_eq!(postcard::from_bytes::<BlendSpec>(&bytes).ok(), Some(spec));
    }
}
