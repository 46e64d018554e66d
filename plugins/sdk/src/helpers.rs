//! Small helpers that make a plugin short: verdict builders, plugin info and
//! a logging shim that also works natively.

use crate::types::{Attribute, AttributeValue, Level, PluginInfo, PluginKind, Verdict};

/// The WIT API version this SDK was generated from (`esper:kasmina@0.2.0`).
/// The host serves 0.1.0 and 0.2.0 side by side and refuses any other
/// version before instantiating the plugin.
pub const API_VERSION: &str = "0.2.0";

/// Builds the [`PluginInfo`] a plugin returns from `info`, with [`API_VERSION`] filled in.
pub fn plugin_info(name: &str, version: &str, kind: PluginKind) -> PluginInfo {
    PluginInfo { name: name.to_owned(), version: version.to_owned(), api_version: API_VERSION.to_owned(), kind }
}

/// Logs through the host's `log` import. Natively (unit tests of policy code)
/// there is no host, so the message is dropped on purpose.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::gate::esper::kasmina::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

impl Verdict {
    /// A passing verdict with no attributes.
    pub fn pass() -> Self {
        Verdict { passed: true, reason: String::new(), attributes: Vec::new() }
    }

    /// A failing verdict with a snake_case `reason`.
    pub fn fail(reason: &str) -> Self {
        Verdict { passed: false, reason: reason.to_owned(), attributes: Vec::new() }
    }

    /// Adds one typed attribute (builder style): numbers stay numbers and
    /// flags stay flags in the host's telemetry and journal.
    pub fn with(mut self, key: &str, value: impl AttrValue) -> Self {
        self.attributes.push(Attribute { key: key.to_owned(), value: value.to_value() });
        self
    }
}

/// A value a verdict attribute can carry. Text counts against the host's
/// attribute value cap (256 bytes by default); numbers and flags do not.
pub trait AttrValue {
    /// The typed attribute value.
    fn to_value(&self) -> AttributeValue;
}

impl AttrValue for f64 {
    fn to_value(&self) -> AttributeValue {
        AttributeValue::Number(*self)
    }
}

impl AttrValue for f32 {
    fn to_value(&self) -> AttributeValue {
        AttributeValue::Number(f64::from(*self))
    }
}

impl AttrValue for bool {
    fn to_value(&self) -> AttributeValue {
        AttributeValue::Flag(*self)
    }
}

macro_rules! integer_attr {
    ($($t:ty),*) => {$(
        impl AttrValue for $t {
            fn to_value(&self) -> AttributeValue {
                // Saturating: a count beyond i64 is still "very many".
                AttributeValue::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
integer_attr!(u32, u64, usize, i32, i64);

impl AttrValue for str {
    fn to_value(&self) -> AttributeValue {
        AttributeValue::Text(self.to_owned())
    }
}

impl AttrValue for String {
    fn to_value(&self) -> AttributeValue {
        AttributeValue::Text(self.clone())
    }
}

impl<T: AttrValue + ?Sized> AttrValue for &T {
    fn to_value(&self) -> AttributeValue {
        (**self).to_value()
    }
}

/// Checks requested parameters against declared bounds, the rule both the
/// gate policy (G0) and the blueprint policy apply. Returns the failing
/// verdict for the first offending parameter, or `None` when all are admitted.
///
/// Fails on: bounds that are non-finite or inverted (`invalid_parameter_bounds`),
/// a parameter named twice (`duplicate_parameter`), a non-finite value
/// (`non_finite_parameter`), a name without declared bounds
/// (`undeclared_parameter`) and a value outside its bounds
/// (`parameter_out_of_bounds`).
pub fn check_parameters(
    parameters: &[crate::types::Parameter],
    bounds: &[crate::types::ParameterBound],
) -> Option<Verdict> {
    for bound in bounds {
        if !bound.min.is_finite() || !bound.max.is_finite() || bound.min > bound.max {
            return Some(
                Verdict::fail("invalid_parameter_bounds")
                    .with("parameter", &bound.name)
                    .with("min", bound.min)
                    .with("max", bound.max),
            );
        }
    }
    for (index, parameter) in parameters.iter().enumerate() {
        // Quadratic on purpose: parameter lists are short (the host caps
        // them) and a hash set would pull `wasi:random` into the component.
        if parameters[..index].iter().any(|p| p.name == parameter.name) {
            return Some(Verdict::fail("duplicate_parameter").with("parameter", &parameter.name));
        }
        if !parameter.value.is_finite() {
            return Some(
                Verdict::fail("non_finite_parameter").with("parameter", &parameter.name).with("value", parameter.value),
            );
        }
        let Some(bound) = bounds.iter().find(|b| b.name == parameter.name) else {
            return Some(Verdict::fail("undeclared_parameter").with("parameter", &parameter.name));
        };
        if parameter.value < bound.min || parameter.value > bound.max {
            return Some(
                Verdict::fail("parameter_out_of_bounds")
                    .with("parameter", &parameter.name)
                    .with("value", parameter.value)
                    .with("min", bound.min)
                    .with("max", bound.max),
            );
        }
    }
    None
}
