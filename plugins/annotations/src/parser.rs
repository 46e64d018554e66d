//! Annotation parsing: byte cap, duplicate keys, per-key parsing, then
//! assembly of the blend spec with its cross-key rules.

use kasmina_plugin_sdk::annotation::{
    Annotation, BlendMode, BlendSpec, ParseError, ParseErrorCode, ParseLimits, ParsedAnnotations,
};

use crate::scan::{self, ScanError};

/// Every key this parser understands; the index is the slot in [`Raw`].
/// The keys after `blend_mode` are its parameters (see [`BLEND_KEYS`]).
const KEYS: [&str; 11] = [
    "training_run_id",
    "mesh_layers",
    "blend_mode",
    "blend_mode_source",
    "alpha_vec",
    "alpha_vec_len",
    "gate_k",
    "gate_tau",
    "alpha_lo",
    "alpha_hi",
    "confidence_logits_required",
];

/// Keys that only make sense with a `blend_mode`: every key after it.
const BLEND_KEYS: &[&str] = KEYS.split_at(3).1;

fn error(code: ParseErrorCode, key: &str, detail: impl Into<String>) -> ParseError {
    ParseError { code, key: key.to_owned(), detail: detail.into() }
}

fn scan_error(key: &str, err: ScanError) -> ParseError {
    match err {
        ScanError::OverCap { seen } => {
            let code = if key == "alpha_vec" { ParseErrorCode::AlphaVecOverCap } else { ParseErrorCode::MeshOverCap };
            error(code, key, format!("more than {} entries", seen.saturating_sub(1)))
        }
        ScanError::MalformedList(detail) => error(ParseErrorCode::MalformedList, key, detail),
        ScanError::MalformedNumber(token) => {
            error(ParseErrorCode::MalformedNumber, key, format!("not a finite number: {token}"))
        }
    }
}

/// Parses `annotations` within `limits`.
pub fn parse(annotations: &[Annotation], limits: &ParseLimits) -> Result<ParsedAnnotations, ParseError> {
    let total: usize = annotations.iter().map(|a| a.key.len() + a.value.len()).sum();
    if total > limits.annotation_bytes_cap as usize {
        return Err(error(
            ParseErrorCode::OverByteCap,
            "",
            format!("{total} bytes > cap {}", limits.annotation_bytes_cap),
        ));
    }
    let mut raw: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
    let mut unknown_keys = 0u32;
    for annotation in annotations {
        match KEYS.iter().position(|k| *k == annotation.key) {
            Some(slot) if raw[slot].is_some() => {
                return Err(error(ParseErrorCode::DuplicateKey, &annotation.key, "key given twice"));
            }
            Some(slot) => raw[slot] = Some(annotation.value.as_str()),
            None => unknown_keys = unknown_keys.saturating_add(1),
        }
    }
    let get = |key: &str| KEYS.iter().position(|k| *k == key).and_then(|slot| raw[slot]);

    let training_run_id = match get("training_run_id") {
        Some(value) if value.trim().is_empty() => {
            return Err(error(ParseErrorCode::EmptyValue, "training_run_id", "empty run id"));
        }
        Some(value) => Some(value.trim().to_owned()),
        None => None,
    };
    let (mesh_layers, mesh_duplicates) = match get("mesh_layers") {
        Some(value) => {
            let list = scan::scan_name_list(value, limits.mesh_layers_cap as usize)
                .map_err(|e| scan_error("mesh_layers", e))?;
            (list.names, list.duplicates)
        }
        None => (Vec::new(), 0),
    };
    let mut clamped = 0u32;
    let blend = match get("blend_mode") {
        Some(mode) => Some(parse_blend(mode, &get, limits, &mut clamped)?),
        None => {
            if let Some(key) = BLEND_KEYS.iter().find(|k| get(k).is_some()) {
                return Err(error(ParseErrorCode::MissingBlendMode, key, "blend parameter without blend_mode"));
            }
            None
        }
    };
    Ok(ParsedAnnotations { training_run_id, mesh_layers, blend, alpha_clamped: clamped, mesh_duplicates, unknown_keys })
}

fn parse_blend<'a>(
    mode: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
    limits: &ParseLimits,
    clamped: &mut u32,
) -> Result<BlendSpec, ParseError> {
    // Exact names only: an unknown mode is an error, never CONVEX.
    let mode = match mode {
        "CONVEX" => BlendMode::Convex,
        "RESIDUAL" => BlendMode::Residual,
        "CHANNEL" => BlendMode::Channel,
        "CONFIDENCE" => BlendMode::Confidence,
        other => {
            return Err(error(
                ParseErrorCode::UnknownBlendMode,
                "blend_mode",
                format!("unknown mode {}", scan::truncate(other)),
            ));
        }
    };
    let mode_source = match get("blend_mode_source") {
        Some(source) if source.trim().is_empty() => {
            return Err(error(ParseErrorCode::EmptyValue, "blend_mode_source", "empty source"));
        }
        other => other.map(|s| s.trim().to_owned()),
    };
    let alpha_vec = match get("alpha_vec") {
        Some(text) => {
            let values =
                scan::scan_number_list(text, limits.alpha_vec_cap as usize).map_err(|e| scan_error("alpha_vec", e))?;
            Some(values.into_iter().map(|v| clamp_unit(v, clamped) as f32).collect::<Vec<f32>>())
        }
        None => None,
    };
    if let Some(declared) = get("alpha_vec_len") {
        let declared: u32 = declared.trim().parse().map_err(|_| {
            error(
                ParseErrorCode::MalformedNumber,
                "alpha_vec_len",
                format!("not a length: {}", scan::truncate(declared)),
            )
        })?;
        let actual = alpha_vec.as_ref().map(Vec::len);
        if actual != Some(declared as usize) {
            let detail = match actual {
                Some(n) => format!("declared {declared}, alpha_vec has {n}"),
                None => format!("declared {declared}, no alpha_vec"),
            };
            return Err(error(ParseErrorCode::AlphaVecLengthMismatch, "alpha_vec_len", detail));
        }
    }
    if mode == BlendMode::Channel && alpha_vec.is_none() {
        return Err(error(ParseErrorCode::MissingAlphaVec, "alpha_vec", "CHANNEL mode needs alpha_vec"));
    }
    let number = |key: &str| -> Result<Option<f64>, ParseError> {
        get(key).map(|text| scan::parse_finite(text).map_err(|e| scan_error(key, e))).transpose()
    };
    let gate_k = number("gate_k")?;
    let gate_tau = number("gate_tau")?;
    let alpha_lo = number("alpha_lo")?.map(|v| clamp_unit(v, clamped));
    let alpha_hi = number("alpha_hi")?.map(|v| clamp_unit(v, clamped));
    if let (Some(lo), Some(hi)) = (alpha_lo, alpha_hi)
        && lo > hi
    {
        return Err(error(ParseErrorCode::MalformedNumber, "alpha_lo", format!("alpha_lo {lo} > alpha_hi {hi}")));
    }
    let confidence_logits_required = match get("confidence_logits_required") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(error(
                ParseErrorCode::MalformedBool,
                "confidence_logits_required",
                format!("expected true or false, got {}", scan::truncate(other)),
            ));
        }
    };
    Ok(BlendSpec { mode, mode_source, alpha_vec, gate_k, gate_tau, alpha_lo, alpha_hi, confidence_logits_required })
}

/// Clamps into [0, 1], counting values that moved.
fn clamp_unit(value: f64, clamped: &mut u32) -> f64 {
    let inside = value.clamp(0.0, 1.0);
    if inside != value {
        *clamped = clamped.saturating_add(1);
    }
    inside
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
