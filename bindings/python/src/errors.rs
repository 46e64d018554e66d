//! Errors cross into Python as `kasmina.KasminaError` subclasses with a
//! machine-readable `code`. The classes are defined in Python
//! (`kasmina/_errors.py`) so users read, subclass and document them like any
//! other Python exception; this module only instantiates them.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use leyline::api::ApiError;

use crate::enums::api_error_class;

/// Module that defines the exception classes.
const ERRORS_MODULE: &str = "kasmina._errors";

/// An instance of `kasmina._errors.<class>(message, code, **extra)` as a
/// `PyErr`. If the class cannot be found (a broken install), that failure is
/// what surfaces: it names the missing class rather than hiding the error.
pub(crate) fn kasmina_error(
    py: Python<'_>,
    class: &str,
    message: impl Into<String>,
    code: &str,
    extra: Option<&Bound<'_, PyDict>>,
) -> PyErr {
    let message = message.into();
    let made = py.import(ERRORS_MODULE).and_then(|m| m.getattr(class)).and_then(|cls| cls.call((message, code), extra));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        Err(err) => err,
    }
}

/// An [`ApiError`] as the `KasminaError` subclass of its category.
pub(crate) fn api_error(py: Python<'_>, err: ApiError) -> PyErr {
    let (class, code) = api_error_class(err.code);
    kasmina_error(py, class, err.message, code, None)
}

/// A key that could not be loaded (`HmacKeyError`, code `key`).
pub(crate) fn key_error(py: Python<'_>, err: &kasmina_client::KeyError) -> PyErr {
    kasmina_error(py, "HmacKeyError", err.to_string(), "key", None)
}

/// A blend spec that breaks a contract rule (`BlendSpecError`, code
/// `invalid_blend`, with `key` naming the annotation key at fault).
pub(crate) fn blend_error(py: Python<'_>, err: &leyline::BlendSpecError) -> PyErr {
    let extra = PyDict::new(py);
    if let Err(e) = extra.set_item("key", err.key) {
        return e;
    }
    kasmina_error(py, "BlendSpecError", err.to_string(), "invalid_blend", Some(&extra))
}
