//! Blend admission: the blend spec a GERMINATE asks for, rebuilt from the
//! annotation plugin's answer and checked with the contract's rules
//! ([`BlendSpec::validate`]) before anything changes.
//!
//! Why here and not only in the trainer: a spec the tensor plane would
//! refuse (say CONFIDENCE with `gate_k = 0`) used to be admitted, germinate
//! the seed, and then abort the whole training run when the trainer built
//! the blend. Now every such spec is refused at admission, naming the key
//! (SPEC.md §11), and nothing about a CONFIDENCE gate is defaulted.

use kasmina_plugin_host::annotation::ParsedAnnotations;
use leyline::annotations as keys;
use leyline::api::BlendSpec;
use leyline::{BlendMode, ReasonCode};

/// Why a blend spec was refused: the reason code, the annotation key at
/// fault and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlendRefusal {
    /// `missing_field` or `invalid_field`.
    pub reason: ReasonCode,
    /// Annotation key (SPEC.md §4).
    pub key: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl BlendRefusal {
    fn missing(mode: BlendMode, key: &'static str) -> Self {
        BlendRefusal {
            reason: ReasonCode::MissingField,
            key,
            detail: format!("{} blending requires annotation {key}", mode.as_str()),
        }
    }
}

/// The validated host-side blend spec from parsed annotations.
///
/// No `blend_mode` at all is the documented default, CONVEX (recorded as
/// `blend_mode_source = default`, see [`mode_source`]); an unknown mode
/// never gets here (the plugin refuses it). CHANNEL needs `alpha_vec`;
/// CONFIDENCE needs `gate_k`, `gate_tau`, `alpha_lo` and `alpha_hi`, none
/// of them defaulted. The result passes [`BlendSpec::validate`] or is
/// refused with `invalid_field` naming the key.
pub(super) fn blend_spec(parsed: &ParsedAnnotations) -> Result<BlendSpec, BlendRefusal> {
    let Some(b) = &parsed.blend else {
        return Ok(BlendSpec::convex());
    };
    let spec = match b.mode {
        BlendMode::Convex | BlendMode::Residual | BlendMode::Channel => {
            let alpha_vec = match (&b.alpha_vec, b.mode) {
                (Some(v), _) => v.clone(),
                (None, BlendMode::Channel) => return Err(BlendRefusal::missing(b.mode, keys::ALPHA_VEC)),
                (None, _) => Vec::new(),
            };
            let plain = if b.mode == BlendMode::Residual { BlendSpec::residual() } else { BlendSpec::convex() };
            // A stray alpha_vec on CONVEX/RESIDUAL stays in the spec so that
            // validation refuses it instead of it being dropped unseen.
            BlendSpec { mode: b.mode, alpha_vec, ..plain }
        }
        BlendMode::Confidence => {
            let need = |v: Option<f64>, key| v.ok_or_else(|| BlendRefusal::missing(b.mode, key));
            let mut spec = BlendSpec::confidence(
                need(b.gate_k, keys::GATE_K)?,
                need(b.gate_tau, keys::GATE_TAU)?,
                need(b.alpha_lo, keys::ALPHA_LO)?,
                need(b.alpha_hi, keys::ALPHA_HI)?,
            );
            spec.confidence_logits_required = b.confidence_logits_required;
            spec
        }
    };
    spec.validate().map_err(|err| BlendRefusal {
        reason: ReasonCode::InvalidField,
        key: err.key,
        detail: err.to_string(),
    })?;
    Ok(spec)
}

/// Who chose the blend mode, as recorded in the outcome: `default` when no
/// `blend_mode` was given, otherwise the `blend_mode_source` annotation, or
/// `annotation` when the controller named the mode without a source.
pub(super) fn mode_source(parsed: &ParsedAnnotations) -> &str {
    match &parsed.blend {
        None => keys::DEFAULT_SOURCE,
        Some(b) => b.mode_source.as_deref().unwrap_or("annotation"),
    }
}

#[cfg(test)]
mod tests {
    use kasmina_plugin_host::annotation::BlendSpec as Parsed;

    use super::*;

    fn parsed(blend: Option<Parsed>) -> ParsedAnnotations {
        ParsedAnnotations {
            training_run_id: Some("run".to_owned()),
            mesh_layers: vec!["hidden".to_owned()],
            blend,
            alpha_clamped: 0,
            mesh_duplicates: 0,
            unknown_keys: 0,
        }
    }

    fn confidence(k: Option<f64>, tau: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> Parsed {
        Parsed {
            mode: BlendMode::Confidence,
            mode_source: None,
            alpha_vec: None,
            gate_k: k,
            gate_tau: tau,
            alpha_lo: lo,
            alpha_hi: hi,
            confidence_logits_required: true,
        }
    }

    fn refusal(blend: Parsed) -> (ReasonCode, &'static str) {
        match blend_spec(&parsed(Some(blend))) {
            Ok(spec) => panic!("expected a refusal, got {spec:?}"),
            Err(r) => (r.reason, r.key),
        }
    }

    #[test]
    fn no_blend_mode_is_convex_by_default() {
        let p = parsed(None);
        assert_eq!(blend_spec(&p), Ok(BlendSpec::convex()));
        assert_eq!(mode_source(&p), "default");
    }

    #[test]
    fn confidence_defaults_nothing_and_validates() {
        let (s, m, i) = (Some(4.0), ReasonCode::MissingField, ReasonCode::InvalidField);
        assert_eq!(refusal(confidence(None, s, s, s)), (m, "gate_k"));
        assert_eq!(refusal(confidence(s, None, Some(0.1), s)), (m, "gate_tau"));
        assert_eq!(refusal(confidence(s, s, None, Some(0.9))), (m, "alpha_lo"));
        assert_eq!(refusal(confidence(s, s, Some(0.1), None)), (m, "alpha_hi"));
        assert_eq!(refusal(confidence(Some(0.0), s, Some(0.1), Some(0.9))), (i, "gate_k"));
        assert_eq!(refusal(confidence(Some(-1.0), s, Some(0.1), Some(0.9))), (i, "gate_k"));
        assert_eq!(refusal(confidence(s, s, Some(0.8), Some(0.2))), (i, "alpha_hi"));
        let ok = blend_spec(&parsed(Some(confidence(s, Some(0.1), Some(0.1), Some(0.9)))));
        assert!(ok.is_ok_and(|spec| spec.confidence_logits_required && spec.gate_k == 4.0));
    }

    #[test]
    fn channel_needs_alpha_vec_and_others_refuse_one() {
        let mut channel = confidence(None, None, None, None);
        channel.mode = BlendMode::Channel;
        assert_eq!(refusal(channel.clone()), (ReasonCode::MissingField, "alpha_vec"));
        channel.alpha_vec = Some(vec![0.5, 1.0]);
        let spec = blend_spec(&parsed(Some(channel.clone())));
        assert!(spec.is_ok_and(|s| s.alpha_vec == [0.5, 1.0] && !s.confidence_logits_required));
        channel.mode = BlendMode::Residual;
        assert_eq!(refusal(channel), (ReasonCode::InvalidField, "alpha_vec"));
    }
}
