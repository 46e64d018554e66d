//! `kasmina._native`: the Python face of `kasmina-client`, built with PyO3
//! (abi3, CPython ≥ 3.9) by maturin. It never links libtorch — a PyTorch
//! process has exactly one, PyTorch's — and it never re-implements the wire
//! protocol: frames, postcard and HMAC all come from the Rust crates.
//!
//! Module map, in the order a trainer or controller meets them:
//! - [`enums`]: the contract's enums as Python enum classes (`SeedStage`,
//!   `BlendMode`, `ReasonCode`, `Role`, …), each with its wire `name`;
//! - [`contract`]: the contract's structs as frozen Python classes with
//!   constructors and `==` (registration, blend spec, step reports, seed
//!   states, outcomes, telemetry, kernel artifacts), and their conversions
//!   to and from `leyline` — the one place the two shapes meet;
//! - [`directive`]: `GraftDirective`, a Python class per variant
//!   (`GraftDirective.Attach`, `.Stage`, …) usable in `match`;
//! - [`command`]: `HmacKey`, the `Command` builder and the signed
//!   `AdaptationCommand` (canonical bytes are leyline's);
//! - [`client`]: `Client`, the blocking socket client; the GIL is released
//!   for the whole round trip of every request;
//! - [`ranks`]: data-parallel ranks — the rank summary and the bytes
//!   ranks exchange over their control group (`kasmina.torch`'s distributed layer);
//! - [`errors`]: API errors become `kasmina.KasminaError` subclasses that
//!   carry the reason code (defined in Python, `kasmina/_errors.py`).

mod client;
mod command;
mod contract;
mod directive;
mod enums;
mod errors;
mod ranks;

use pyo3::prelude::*;

/// The native module. Users import `kasmina`, which re-exports these.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CONTRACT_VERSION", leyline::CONTRACT_VERSION)?;
    m.add("PROTOCOL_VERSION", leyline::protocol::PROTOCOL_VERSION)?;
    m.add("MAX_ALPHA_VEC_LEN", leyline::MAX_ALPHA_VEC_LEN)?;
    enums::register(m)?;
    contract::register(m)?;
    m.add_class::<directive::GraftDirective>()?;
    m.add_class::<directive::CheckpointEvent>()?;
    command::register(m)?;
    ranks::register(m)?;
    m.add_class::<client::Client>()?;
    m.add_function(wrap_pyfunction!(can_transition, m)?)?;
    Ok(())
}

/// Whether the lifecycle allows `from → to` (leyline's one transition table).
#[pyfunction]
fn can_transition(from: enums::SeedStage, to: enums::SeedStage) -> bool {
    leyline::SeedStage::from(from).can_transition_to(to.into())
}
