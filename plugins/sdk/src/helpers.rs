//! Small helpers that make a plugin short: verdict builders, plugin info and
//! a logging shim that also works natively.

use crate::types::{Attribute, Level, PluginInfo, PluginKind, Verdict};

/// The WIT API version this SDK was generated from (`esper:kasmina@0.1.0`).
/// The host refuses plugins built against another version before instantiating them.
pub const API_VERSION: &str = "0.1.0";

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

    /// Adds one attribute (builder style).
    pub fn with(mut self, key: &str, value: impl AttrValue) -> Self {
        self.attributes.push(Attribute { key: key.to_owned(), value: value.render() });
        self
    }
}

/// A value that renders compactly as a verdict attribute. The host caps
/// attribute values (256 bytes by default): a float like `-1e300` printed
/// with `{}` is 302 digits, so floats use scientific notation at the extremes.
pub trait AttrValue {
    /// The attribute text.
    fn render(&self) -> String;
}

impl AttrValue for f64 {
    fn render(&self) -> String {
        let magnitude = self.abs();
        if self.is_finite() && *self != 0.0 && !(1e-6..1e9).contains(&magnitude) {
            format!("{self:e}")
        } else {
            format!("{self}")
        }
    }
}

impl AttrValue for f32 {
    fn render(&self) -> String {
        f64::from(*self).render()
    }
}

macro_rules! display_attr {
    ($($t:ty),*) => {$(
        impl AttrValue for $t {
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
display_attr!(u32, u64, usize, i32, i64, bool, str, String);

impl<T: AttrValue + ?Sized> AttrValue for &T {
    fn render(&self) -> String {
        (**self).render()
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
