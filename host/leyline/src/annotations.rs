//! The annotation keys of SPEC.md §4, defined once.
//!
//! The host, its re-validation of the annotation plugin's answer, and
//! controllers writing commands use these constants instead of spelling the
//! strings out. (The default annotation plugin is built against the WIT and
//! its SDK only, not against this crate, so it keeps its own copy.)

/// Training run the command belongs to (required on seed commands).
pub const TRAINING_RUN_ID: &str = "training_run_id";
/// Layers the mesh covers: a JSON list or a comma list of layer names.
pub const MESH_LAYERS: &str = "mesh_layers";
/// Blend mode: CONVEX, RESIDUAL, CHANNEL or CONFIDENCE. Absent means
/// CONVEX, recorded as `blend_mode_source = default`.
pub const BLEND_MODE: &str = "blend_mode";
/// Who chose the blend mode (`default` when the host applied CONVEX).
pub const BLEND_MODE_SOURCE: &str = "blend_mode_source";
/// Per-channel α (CHANNEL): a JSON list of floats, clamped into [0, 1].
pub const ALPHA_VEC: &str = "alpha_vec";
/// Declared length of `alpha_vec`; must match when given.
pub const ALPHA_VEC_LEN: &str = "alpha_vec_len";
/// CONFIDENCE gate steepness `k` (finite, > 0).
pub const GATE_K: &str = "gate_k";
/// CONFIDENCE gate margin `τ` (finite).
pub const GATE_TAU: &str = "gate_tau";
/// Lower clamp of the effective α (CONFIDENCE).
pub const ALPHA_LO: &str = "alpha_lo";
/// Upper clamp of the effective α (CONFIDENCE).
pub const ALPHA_HI: &str = "alpha_hi";
/// CONFIDENCE: `true` makes the trainer refuse a step without logits.
pub const CONFIDENCE_LOGITS_REQUIRED: &str = "confidence_logits_required";

/// Value of [`BLEND_MODE_SOURCE`] recorded when no `blend_mode` was given
/// and the documented default (CONVEX) applies.
pub const DEFAULT_SOURCE: &str = "default";

/// Every key SPEC.md §4 defines, in the order the SPEC lists them.
pub const SPEC_KEYS: &[&str] = &[
    TRAINING_RUN_ID,
    MESH_LAYERS,
    BLEND_MODE,
    BLEND_MODE_SOURCE,
    ALPHA_VEC,
    ALPHA_VEC_LEN,
    GATE_K,
    GATE_TAU,
    ALPHA_LO,
    ALPHA_HI,
    CONFIDENCE_LOGITS_REQUIRED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_keys_are_distinct_snake_case() {
        assert_eq!(SPEC_KEYS.len(), 11);
        for (i, key) in SPEC_KEYS.iter().enumerate() {
            assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{key}");
            assert!(!SPEC_KEYS[..i].contains(key), "{key} listed twice");
        }
    }
}
