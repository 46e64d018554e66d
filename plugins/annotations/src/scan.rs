//! Bounded scanners. Each walks the input once, keeps at most `cap + 1`
//! elements, and reports the first malformed token.

use std::collections::BTreeSet;

/// Longest layer name a list may hold, in bytes: SPEC.md §3's cap on ids,
/// and what the host accepts back from a parser (its `name_bytes` output
/// cap). A longer name is refused here as a malformed list (`invalid_mesh`)
/// rather than returned and failing the host's check as a plugin fault.
pub const MAX_LAYER_NAME_BYTES: usize = 256;

/// Why a scan failed (mapped to a parse-error code by the parser).
#[derive(Debug, Clone, PartialEq)]
pub enum ScanError {
    /// More elements than the cap; `seen` is cap + 1 (scanning stopped there).
    OverCap {
        /// Elements seen when scanning stopped.
        seen: usize,
    },
    /// The list syntax is broken.
    MalformedList(String),
    /// An element is not a finite number.
    MalformedNumber(String),
}

/// Parses a finite `f64`; `NaN`, `inf` and empty strings are malformed.
pub fn parse_finite(text: &str) -> Result<f64, ScanError> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(ScanError::MalformedNumber(truncate(text))),
    }
}

/// Scans a JSON list of numbers (`[0.1, 0.5]`), at most `cap` of them.
pub fn scan_number_list(text: &str, cap: usize) -> Result<Vec<f64>, ScanError> {
    let body = strip_brackets(text)?;
    let mut values = Vec::new();
    if body.trim().is_empty() {
        return Ok(values);
    }
    // `split` is lazy: only the elements up to cap + 1 are ever looked at.
    for token in body.split(',') {
        if values.len() == cap {
            return Err(ScanError::OverCap { seen: cap + 1 });
        }
        values.push(parse_finite(token)?);
    }
    Ok(values)
}

/// A de-duplicated list of names with the number of duplicates dropped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NameList {
    /// Distinct names in first-seen order.
    pub names: Vec<String>,
    /// Duplicates dropped.
    pub duplicates: u32,
}

/// Scans a JSON list of strings (`["a","b"]`) or a comma list (`a, b`),
/// de-duplicating as it goes; more than `cap` distinct names is an error.
pub fn scan_name_list(text: &str, cap: usize) -> Result<NameList, ScanError> {
    let trimmed = text.trim();
    // JSON that is not a list of strings (an object, a string, a literal) is
    // an error, never read as a one-name comma list (SPEC §4).
    if trimmed.starts_with(['{', '"']) || matches!(trimmed, "true" | "false" | "null") {
        return Err(ScanError::MalformedList(
            "JSON that is not a list of strings; give a JSON list [\"a\", \"b\"] or a comma list a,b".into(),
        ));
    }
    let json = trimmed.starts_with('[');
    let body = if json { strip_brackets(trimmed)? } else { trimmed };
    let mut list = NameList::default();
    let mut seen = BTreeSet::new();
    if body.trim().is_empty() {
        return Err(ScanError::MalformedList("empty list".into()));
    }
    for token in body.split(',') {
        let name = if json { unquote(token)? } else { token.trim() };
        if name.is_empty() {
            return Err(ScanError::MalformedList("empty layer name".into()));
        }
        if name.len() > MAX_LAYER_NAME_BYTES {
            return Err(ScanError::MalformedList(format!(
                "a layer name of {} bytes; at most {MAX_LAYER_NAME_BYTES}",
                name.len()
            )));
        }
        if !seen.insert(name) {
            list.duplicates = list.duplicates.saturating_add(1);
            continue;
        }
        if list.names.len() == cap {
            return Err(ScanError::OverCap { seen: cap + 1 });
        }
        list.names.push(name.to_owned());
    }
    Ok(list)
}

fn strip_brackets(text: &str) -> Result<&str, ScanError> {
    text.trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(|| ScanError::MalformedList("expected a JSON list in [ ]".into()))
}

/// A JSON string element without escapes (layer names never need them).
fn unquote(token: &str) -> Result<&str, ScanError> {
    let inner =
        token.trim().strip_prefix('"').and_then(|rest| rest.strip_suffix('"')).ok_or_else(|| {
            ScanError::MalformedList(format!("expected a quoted name, got {}", truncate(token.trim())))
        })?;
    if inner.contains(['"', '\\']) {
        return Err(ScanError::MalformedList("escapes are not allowed in layer names".into()));
    }
    Ok(inner)
}

/// Keeps error details short whatever the input size.
pub fn truncate(text: &str) -> String {
    const MAX: usize = 32;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_list_stops_at_cap_plus_one() {
        assert_eq!(scan_number_list("[0.1, 1, 0]", 3), Ok(vec![0.1, 1.0, 0.0]));
        assert_eq!(
            scan_number_list("[0,0,0,0,x", 3),
            Err(ScanError::MalformedList("expected a JSON list in [ ]".into()))
        );
        // A valid-but-huge list fails with the cap, without parsing past it.
        let huge = format!("[{}0]", "0,".repeat(100_000));
        assert_eq!(scan_number_list(&huge, 64), Err(ScanError::OverCap { seen: 65 }));
        assert!(matches!(scan_number_list("[0.1, nan]", 4), Err(ScanError::MalformedNumber(_))));
        assert!(matches!(scan_number_list("[0.1,,0.2]", 4), Err(ScanError::MalformedNumber(_))));
        assert_eq!(scan_number_list("[]", 4), Ok(vec![]));
    }

    #[test]
    fn name_list_accepts_json_and_commas_and_dedupes() {
        let list = scan_name_list(r#"["a", "b", "a"]"#, 4).unwrap_or_default();
        assert_eq!(list.names, vec!["a", "b"]);
        assert_eq!(list.duplicates, 1);
        let list = scan_name_list("a, b ,c,b", 4).unwrap_or_default();
        assert_eq!(list.names, vec!["a", "b", "c"]);
        assert_eq!(scan_name_list("a,b,c", 2), Err(ScanError::OverCap { seen: 3 }));
        assert!(matches!(scan_name_list("a,,b", 4), Err(ScanError::MalformedList(_))));
        assert!(matches!(scan_name_list(r#"["a", b]"#, 4), Err(ScanError::MalformedList(_))));
        assert!(matches!(scan_name_list("", 4), Err(ScanError::MalformedList(_))));
    }
}
