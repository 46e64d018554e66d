//! The host-side verdict and its validation. A plugin's verdict is never
//! trusted: reason syntax, reserved reasons, attribute counts and sizes are
//! all checked after every call, whichever API version the plugin speaks.

use std::collections::BTreeMap;

pub use leyline::telemetry::AttrValue;

use crate::bindings::{wit_types, wit_types_v0_1};
use crate::error::PluginFailure;
use crate::limits::OutputCaps;

/// A policy decision as the control plane sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether the check passed.
    pub passed: bool,
    /// snake_case reason; empty exactly when passed. Host failures use the
    /// `plugin_*` reasons (`plugin_timeout`, `plugin_oom`, ...).
    pub reason: String,
    /// Details (sorted by key), typed: an API 0.2.0 plugin's numbers and
    /// flags stay numbers and flags in telemetry and the journal; an API
    /// 0.1.0 plugin's values are all text.
    pub attributes: BTreeMap<String, AttrValue>,
}

impl Verdict {
    /// The fail-closed verdict for a plugin failure: reason is the failure's
    /// `plugin_*` code, with `detail` and `plugin` attributes.
    pub fn from_failure(failure: &PluginFailure, plugin: &str) -> Verdict {
        let mut attributes = BTreeMap::new();
        attributes.insert("detail".to_owned(), AttrValue::Str(failure.detail.clone()));
        attributes.insert("plugin".to_owned(), AttrValue::Str(plugin.to_owned()));
        Verdict { passed: false, reason: failure.kind.as_reason().to_owned(), attributes }
    }
}

/// A verdict as either API version returns it.
pub(crate) enum RawVerdict {
    /// API 0.1.0: text attributes.
    V0_1(wit_types_v0_1::Verdict),
    /// API 0.2.0: typed attributes.
    V0_2(wit_types::Verdict),
}

fn attribute_value(value: wit_types::AttributeValue) -> AttrValue {
    use wit_types::AttributeValue as W;
    match value {
        W::Text(text) => AttrValue::Str(text),
        W::Integer(i) => AttrValue::Int(i),
        W::Number(x) => AttrValue::Float(x),
        W::Flag(b) => AttrValue::Bool(b),
    }
}

/// Checks a raw verdict of either version against `caps` and converts it.
pub(crate) fn validate(raw: RawVerdict, caps: &OutputCaps) -> Result<Verdict, PluginFailure> {
    let (passed, reason, attributes): (bool, String, Vec<(String, AttrValue)>) = match raw {
        RawVerdict::V0_1(v) => {
            (v.passed, v.reason, v.attributes.into_iter().map(|a| (a.key, AttrValue::Str(a.value))).collect())
        }
        RawVerdict::V0_2(v) => {
            (v.passed, v.reason, v.attributes.into_iter().map(|a| (a.key, attribute_value(a.value))).collect())
        }
    };
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
    for (key, value) in attributes {
        let value_bytes = match &value {
            AttrValue::Str(text) => text.len(),
            _ => 0,
        };
        if key.is_empty() || key.len() > caps.attribute_key_bytes || value_bytes > caps.attribute_value_bytes {
            return Err(PluginFailure::bad_output(format!(
                "attribute key {} bytes / value {} bytes (caps 1..={} / {})",
                key.len(),
                value_bytes,
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

    fn raw(passed: bool, reason: &str, n: usize) -> RawVerdict {
        RawVerdict::V0_2(wit_types::Verdict {
            passed,
            reason: reason.to_owned(),
            attributes: (0..n)
                .map(|i| wit_types::Attribute {
                    key: format!("k{i}"),
                    value: wit_types::AttributeValue::Integer(i as i64),
                })
                .collect(),
        })
    }

    fn raw_v0_1(passed: bool, reason: &str, attributes: &[(&str, &str)]) -> RawVerdict {
        RawVerdict::V0_1(wit_types_v0_1::Verdict {
            passed,
            reason: reason.to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| wit_types_v0_1::Attribute { key: (*k).to_owned(), value: (*v).to_owned() })
                .collect(),
        })
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
        let RawVerdict::V0_2(mut dup) = raw(false, "dup", 2) else { unreachable!() };
        dup.attributes[1].key = "k0".into();
        assert!(validate(RawVerdict::V0_2(dup), &caps).is_err());
    }

    #[test]
    fn typed_values_stay_typed_and_v0_1_text_is_held_to_the_same_caps() {
        let caps = OutputCaps::default();
        let v = validate(raw(false, "typed", 2), &caps).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.attributes.get("k1"), Some(&AttrValue::Int(1)));
        let old = validate(raw_v0_1(false, "old", &[("layer", "hidden")]), &caps).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.attributes.get("layer"), Some(&AttrValue::Str("hidden".into())));
        let long = "v".repeat(caps.attribute_value_bytes + 1);
        assert!(validate(raw_v0_1(false, "old", &[("k", &long)]), &caps).is_err());
        assert!(validate(raw_v0_1(true, "reason_on_pass", &[]), &caps).is_err());
    }
}
