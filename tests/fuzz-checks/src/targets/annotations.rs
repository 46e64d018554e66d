//! The default annotation parser, natively (`plugins/annotations`, the same
//! code the wasm component runs; `annotations_wasm` runs the component).
//!
//! Input: 5 bytes choose the caps (alpha_vec 0..=64, mesh layers 0..=128,
//! bytes 4 KiB..=16 KiB; a first byte of 0 means the SPEC defaults), the rest
//! is `key=value` records separated by newlines. The parser must refuse or
//! return a result within the caps (finite numbers, α in [0, 1]), give the
//! same answer twice, and never make one allocation larger than the byte cap.
//!
//! Run: `scripts/fuzz.sh annotations 60`.

use crate::{Input, annotation_pairs, with_alloc_cap};
use kasmina_annotations_plugin::parser;
use kasmina_plugin_sdk::annotation::{Annotation, ParseLimits, ParsedAnnotations};

/// The caps a fuzz input asks for (also read by `annotations_wasm`, whose
/// input starts the same way).
pub(crate) fn limits(input: &mut Input<'_>) -> ParseLimits {
    let default = input.byte() == 0;
    let (a, m, b) = (input.byte(), input.byte(), input.u16());
    if default {
        return ParseLimits { alpha_vec_cap: 64, mesh_layers_cap: 128, annotation_bytes_cap: 16 * 1024 };
    }
    ParseLimits {
        alpha_vec_cap: u32::from(a) % 65,
        mesh_layers_cap: u32::from(m) % 129,
        annotation_bytes_cap: 4096 + u32::from(b) % (12 * 1024 + 1),
    }
}

fn check_within_caps(p: &ParsedAnnotations, limits: &ParseLimits) {
    assert!(p.mesh_layers.len() <= limits.mesh_layers_cap as usize, "mesh layers over the cap");
    let mut seen = std::collections::BTreeSet::new();
    assert!(p.mesh_layers.iter().all(|l| seen.insert(l.as_str())), "mesh layers not de-duplicated");
    let Some(blend) = &p.blend else { return };
    if let Some(v) = &blend.alpha_vec {
        assert!(v.len() <= limits.alpha_vec_cap as usize, "alpha_vec over the cap");
        assert!(v.iter().all(|a| a.is_finite() && (0.0..=1.0).contains(a)), "alpha_vec value outside [0, 1]: {v:?}");
    }
    for x in [blend.gate_k, blend.gate_tau].into_iter().flatten() {
        assert!(x.is_finite(), "non-finite confidence parameter {x}");
    }
    for x in [blend.alpha_lo, blend.alpha_hi].into_iter().flatten() {
        assert!(x.is_finite() && (0.0..=1.0).contains(&x), "alpha clamp outside [0, 1]: {x}");
    }
}

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = limits(&mut input);
    let annotations: Vec<Annotation> =
        annotation_pairs(input.rest()).into_iter().map(|(key, value)| Annotation { key, value }).collect();
    let cap = limits.annotation_bytes_cap as usize;
    let first = with_alloc_cap(cap, "parsing annotations", || parser::parse(&annotations, &limits));
    if let Ok(parsed) = &first {
        check_within_caps(parsed, &limits);
    }
    let second = parser::parse(&annotations, &limits);
    assert_eq!(format!("{first:?}"), format!("{second:?}"), "the parser is not deterministic");
}
