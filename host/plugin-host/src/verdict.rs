//! The host-side verdict and its validation. A plugin's verdict is never
//! trusted: reason syntax, reserved reasons, attribute counts and sizes are
//! all checked after every call.

use std::collections::BTreeMap;

use crate::bindings::wit_types;
use crate::error::PluginFailure;
use crate::limits::OutputCaps;

/// A policy decision as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the check passed.
    pub passed: bool,
    /// snake_case reason; empty exactly when passed. Host failures use the
    /// `plugin_*` reasons (`plugin_timeout`, `plugin_oom`, ...).
    pub reason: String,
    /// Details (sorted by key).
    pub attributes: BTreeMap<String, String>,
}

impl Verdict {
    /// The fail-closed verdict for a plugin failure: reason is the failure's
    /// `plugin_*` code, with `detail` and `plugin` attributes.
    pub fn from_failure(failure: &PluginFailure, plugin: &str) -> Verdict {
        let mut attributes = BTreeMap::new();
        attributes.insert("detail".to_owned(), failure.detail.clone());
        attributes.insert("plugin".to_owned(), plugin.to_owned());
        Verdict { passed: false, reason: failure.kind.as_reason().to_owned(), attributes }
    }
}

/// Checks a raw verdict against `caps` and converts it.
pub(crate) fn validate(raw: wit_types::Verdict, caps: &OutputCaps) -> Result<Verdict, PluginFailure> {
    let wit_types::Verdict { passed, reason, attributes } = raw;
    if passed && !reason.is_empty() {
        return Err(PluginFailure::bad_output("passing verdict carries a reason"));
    }
    if !passed {
        if reason.is_empty() || reason.len() > caps.reason_bytes {
            return Err(PluginFailure::bad_output(format!(
                "reason is {} bytes (1..={} allowed)",
                reason.len(),
                caps.reason_bytes
            )));
        }
        if !reason.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(PluginFailure::bad_output("reason is not snake_case"));
        }
        if reason.starts_with("plugin_") {
            return Err(PluginFailure::bad_output(format!("reason {reason} is reserved for the host")));
        }
    }
    if attributes.len() > caps.attributes {
        return Err(PluginFailure::bad_output(format!("{} attributes (cap {})", attributes.len(), caps.attributes)));
    }
    let mut map = BTreeMap::new();
    for wit_types::Attribute { key, value } in attributes {
        if key.is_empty() || key.len() > caps.attribute_key_bytes || value.len() > caps.attribute_value_bytes {
            return Err(PluginFailure::bad_output(format!(
                "attribute key {} bytes / value {} bytes (caps 1..={} / {})",
                key.len(),
                value.len(),
                caps.attribute_key_bytes,
                caps.attribute_value_bytes
            )));
        }
        if map.insert(key, value).is_some() {
            return Err(PluginFailure::bad_output("duplicate attribute key"));
        }
    }
    Ok(Verdict { passed, reason, attributes: map })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(passed: bool, reason: &str, n: usize) -> wit_types::Verdict {
        wit_types::Verdict {
            passed,
            reason: reason.to_owned(),
            attributes: (0..n).map(|i| wit_types::Attribute { key: format!("k{i}"), value: "v".into() }).collect(),
        }
    }

    #[test]
    fn caps_and_syntax_are_enforced() {
        let caps = OutputCaps::default();
        assert!(validate(raw(true, "", 2), &caps).is_ok());
        assert!(validate(raw(false, "stage_mismatch", 0), &caps).is_ok());
        for bad in [raw(true, "x", 0), raw(false, "", 0), raw(false, "Bad Reason", 0), raw(false, "plugin_timeout", 0)]
        {
            assert!(validate(bad, &caps).is_err());
        }
        assert!(validate(raw(false, &"x".repeat(65), 0), &caps).is_err());
        assert!(validate(raw(false, "too_many", 33), &caps).is_err());
        let mut dup = raw(false, "dup", 2);
        dup.attributes[1].key = "k0".into();
        assert!(validate(dup, &caps).is_err());
    }
}
