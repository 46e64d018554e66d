//! Controllers in Python: [`HmacKey`], the [`Command`] builder and the
//! signed [`AdaptationCommand`]. Every byte that is signed comes from
//! `leyline::command::canonical_bytes` and every signature from
//! `kasmina_client::sign`, so a command signed here verifies on the host
//! exactly like one signed by a Rust controller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use kasmina_client::CommandBuilder;
use leyline::command::{CommandPayload, canonical_bytes};

use crate::enums::{BreakerState, SeedOperation};
use crate::errors;

/// An HMAC-SHA256 key. Its `repr` never shows the key.
#[pyclass(frozen, module = "kasmina._native")]
#[derive(Clone)]
pub struct HmacKey {
    pub(crate) inner: kasmina_client::HmacKey,
}

#[pymethods]
impl HmacKey {
    /// Reads a hex key file (the format `kasmina keygen` writes).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        kasmina_client::HmacKey::from_file(&path).map(|inner| HmacKey { inner }).map_err(|e| errors::key_error(py, &e))
    }

    /// A key from hex text (surrounding whitespace trimmed).
    #[staticmethod]
    fn from_hex(py: Python<'_>, text: &str) -> PyResult<Self> {
        kasmina_client::HmacKey::from_hex(text).map(|inner| HmacKey { inner }).map_err(|e| errors::key_error(py, &e))
    }

    /// A key from raw bytes (32 to 1024 of them).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, key: &Bound<'_, PyBytes>) -> PyResult<Self> {
        kasmina_client::HmacKey::from_bytes(key.as_bytes())
            .map(|inner| HmacKey { inner })
            .map_err(|e| errors::key_error(py, &e))
    }

    /// A key from the hex in environment variable `var`.
    #[staticmethod]
    fn from_env(py: Python<'_>, var: &str) -> PyResult<Self> {
        kasmina_client::HmacKey::from_env(var).map(|inner| HmacKey { inner }).map_err(|e| errors::key_error(py, &e))
    }

    /// The HMAC-SHA256 tag of `data`.
    fn tag<'py>(&self, py: Python<'py>, data: &Bound<'_, PyBytes>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.tag(data.as_bytes()))
    }

    /// Whether `signature` is the tag of `data` (constant-time comparison).
    fn verify(&self, data: &Bound<'_, PyBytes>, signature: &Bound<'_, PyBytes>) -> bool {
        self.inner.verify(data.as_bytes(), signature.as_bytes())
    }

    fn __repr__(&self) -> &'static str {
        "HmacKey(<redacted>)"
    }
}

/// A command ready to send: built (and usually signed). Read-only; change a
/// signed command and its signature no longer verifies.
#[pyclass(frozen, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptationCommand {
    pub(crate) inner: leyline::AdaptationCommand,
}

#[pymethods]
impl AdaptationCommand {
    /// Contract version the sender used.
    #[getter]
    fn version(&self) -> u32 {
        self.inner.version
    }
    /// Unique id (the replay nonce).
    #[getter]
    fn command_id(&self) -> &str {
        &self.inner.command_id
    }
    /// Seed the command targets.
    #[getter]
    fn target_seed_id(&self) -> &str {
        &self.inner.target_seed_id
    }
    /// Deadline, ms since the Unix epoch.
    #[getter]
    fn execution_deadline_ms(&self) -> Option<u64> {
        self.inner.execution_deadline_ms
    }
    /// Issue time, ms since the Unix epoch.
    #[getter]
    fn issued_at_ms(&self) -> Option<u64> {
        self.inner.issued_at_ms
    }
    /// Who issued it.
    #[getter]
    fn issued_by(&self) -> &str {
        &self.inner.issued_by
    }
    /// `SEED`, `PAUSE`, … (from the payload).
    #[getter]
    fn command_type(&self) -> &'static str {
        self.inner.command_type().as_str()
    }
    /// The SEED operation, for SEED commands.
    #[getter]
    fn operation(&self) -> Option<SeedOperation> {
        match &self.inner.payload {
            CommandPayload::Seed(s) => Some(s.operation.into()),
            _ => None,
        }
    }
    /// The blueprint, for SEED commands.
    #[getter]
    fn blueprint_id(&self) -> Option<&str> {
        match &self.inner.payload {
            CommandPayload::Seed(s) => Some(&s.blueprint_id),
            _ => None,
        }
    }
    /// Blueprint parameters (SEED) or hyperparameters (OPTIMIZER).
    #[getter]
    fn parameters(&self) -> BTreeMap<String, f64> {
        match &self.inner.payload {
            CommandPayload::Seed(s) => s.parameters.clone(),
            CommandPayload::Optimizer(o) => o.hyperparameters.clone(),
            _ => BTreeMap::new(),
        }
    }
    /// Annotations.
    #[getter]
    fn annotations(&self) -> BTreeMap<String, String> {
        self.inner.annotations.clone()
    }
    /// The signature, if signed.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.signature.as_ref().map(|s| PyBytes::new(py, s))
    }

    /// The exact bytes the HMAC covers (every field but the signature,
    /// postcard-encoded after a domain tag): the same bytes Rust signs.
    fn canonical_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &canonical_bytes(&self.inner))
    }

    /// Whether the signature verifies under `key`.
    fn verify(&self, key: &HmacKey) -> bool {
        self.inner.signature.as_ref().is_some_and(|s| key.inner.verify(&canonical_bytes(&self.inner), s))
    }

    /// The same command with another signature (or none): for relaying a
    /// signature made elsewhere, or testing that a bad one is refused.
    #[pyo3(signature = (signature))]
    fn with_signature(&self, signature: Option<&Bound<'_, PyBytes>>) -> Self {
        let mut inner = self.inner.clone();
        inner.signature = signature.map(|s| s.as_bytes().to_vec());
        AdaptationCommand { inner }
    }

    fn __repr__(&self) -> String {
        format!(
            "AdaptationCommand(command_id={:?}, type={}, target={:?}, signed={})",
            self.inner.command_id,
            self.inner.command_type().as_str(),
            self.inner.target_seed_id,
            self.inner.signature.is_some()
        )
    }
}

/// Builds one command: start from the constructor for its type, chain the
/// adjustments (each returns a new builder), then `sign(key)` (or `build()`
/// for an unsigned one). Fills a fresh random `command_id`, the contract
/// version and `issued_at_ms` = now.
#[pyclass(frozen, module = "kasmina._native")]
#[derive(Debug, Clone)]
pub struct Command {
    builder: CommandBuilder,
}

impl Command {
    fn with(&self, f: impl FnOnce(CommandBuilder) -> CommandBuilder) -> Self {
        Command { builder: f(self.builder.clone()) }
    }
}

fn operation_of(op: &Bound<'_, PyAny>) -> PyResult<leyline::SeedOperation> {
    if let Ok(op) = op.cast::<SeedOperation>() {
        return Ok((*op.get()).into());
    }
    let text: String =
        op.extract().map_err(|_| PyValueError::new_err("operation must be a SeedOperation or its name"))?;
    SeedOperation::parse_name(&text).map(Into::into)
}

impl SeedOperation {
    fn parse_name(text: &str) -> PyResult<Self> {
        SeedOperation::ALL
            .iter()
            .copied()
            .find(|o| o.wire_name() == text)
            .ok_or_else(|| PyValueError::new_err(format!("unknown SeedOperation {text:?}")))
    }
}

fn breaker_state_of(state: &Bound<'_, PyAny>) -> PyResult<leyline::BreakerState> {
    if let Ok(s) = state.cast::<BreakerState>() {
        return Ok((*s.get()).into());
    }
    let text: String =
        state.extract().map_err(|_| PyValueError::new_err("desired_state must be a BreakerState or its name"))?;
    BreakerState::ALL
        .iter()
        .copied()
        .find(|s| s.wire_name() == text)
        .map(Into::into)
        .ok_or_else(|| PyValueError::new_err(format!("unknown BreakerState {text:?}")))
}

#[pymethods]
impl Command {
    /// A SEED command: `operation` (a `SeedOperation` or its name) on
    /// `target_seed_id` with `blueprint_id`.
    #[staticmethod]
    fn seed(target_seed_id: String, operation: &Bound<'_, PyAny>, blueprint_id: String) -> PyResult<Self> {
        Ok(Command { builder: CommandBuilder::seed(target_seed_id, operation_of(operation)?, blueprint_id) })
    }

    /// A ROLLBACK command; no `rollback_point_id` restores the latest point.
    #[staticmethod]
    #[pyo3(signature = (target_seed_id, reason, rollback_point_id = None))]
    fn rollback(target_seed_id: String, reason: String, rollback_point_id: Option<String>) -> Self {
        Command { builder: CommandBuilder::rollback(target_seed_id, rollback_point_id, reason) }
    }

    /// An OPTIMIZER command (hyperparameters with `parameter`).
    #[staticmethod]
    fn optimizer(target_seed_id: String, optimizer_id: String) -> Self {
        Command { builder: CommandBuilder::optimizer(target_seed_id, optimizer_id) }
    }

    /// A CIRCUIT_BREAKER command forcing `breaker` into `desired_state`.
    #[staticmethod]
    fn circuit_breaker(
        target_seed_id: String,
        breaker: String,
        desired_state: &Bound<'_, PyAny>,
        rationale: String,
    ) -> PyResult<Self> {
        let state = breaker_state_of(desired_state)?;
        Ok(Command { builder: CommandBuilder::circuit_breaker(target_seed_id, breaker, state, rationale) })
    }

    /// A PAUSE command (`resume=True` resumes the seed).
    #[staticmethod]
    #[pyo3(signature = (target_seed_id, resume = false))]
    fn pause(target_seed_id: String, resume: bool) -> Self {
        Command { builder: CommandBuilder::pause(target_seed_id, resume) }
    }

    /// An EMERGENCY command.
    #[staticmethod]
    #[pyo3(signature = (target_seed_id, cleanup = true, include_teacher = false))]
    fn emergency(target_seed_id: String, cleanup: bool, include_teacher: bool) -> Self {
        Command { builder: CommandBuilder::emergency(target_seed_id, cleanup, include_teacher) }
    }

    /// A STRUCTURAL_PRUNING command (hosts refuse it as unsupported).
    #[staticmethod]
    fn structural_pruning(target_seed_id: String, target_layers: Vec<String>, ratio: f64) -> Self {
        Command { builder: CommandBuilder::structural_pruning(target_seed_id, target_layers, ratio) }
    }

    /// Replaces the fresh id (a reused id is a replay: the host refuses it).
    fn command_id(&self, command_id: String) -> Self {
        self.with(|b| b.command_id(command_id))
    }

    /// A fresh id starting with `prefix-`.
    fn command_id_prefix(&self, prefix: &str) -> Self {
        self.with(|b| b.command_id_prefix(prefix))
    }

    /// Overrides the contract version (tests of version checks).
    fn version(&self, version: u32) -> Self {
        self.with(|b| b.version(version))
    }

    /// Who issues the command.
    fn issued_by(&self, issued_by: String) -> Self {
        self.with(|b| b.issued_by(issued_by))
    }

    /// Overrides the issue time (ms since the epoch); None sends none.
    #[pyo3(signature = (issued_at_ms))]
    fn issued_at_ms(&self, issued_at_ms: Option<u64>) -> Self {
        self.with(|b| b.issued_at_ms(issued_at_ms))
    }

    /// The absolute deadline (ms since the epoch), or none.
    #[pyo3(signature = (deadline_ms))]
    fn deadline_ms(&self, deadline_ms: Option<u64>) -> Self {
        self.with(|b| b.deadline_ms(deadline_ms))
    }

    /// A deadline `seconds` after the issue time.
    fn deadline_in(&self, seconds: f64) -> PyResult<Self> {
        let within = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err(format!("deadline_in({seconds}): must be finite and >= 0")))?;
        Ok(self.with(|b| b.deadline_in(within)))
    }

    /// Adds (or replaces) one annotation.
    fn annotation(&self, key: String, value: String) -> Self {
        self.with(|b| b.annotation(key, value))
    }

    /// Adds (or replaces) several annotations.
    fn annotations(&self, pairs: BTreeMap<String, String>) -> Self {
        self.with(|b| b.annotations(pairs))
    }

    /// Sets a blueprint parameter (SEED) or hyperparameter (OPTIMIZER);
    /// other command types have none, and naming one raises ValueError.
    fn parameter(&self, name: String, value: f64) -> PyResult<Self> {
        match &self.builder.peek().payload {
            CommandPayload::Seed(_) | CommandPayload::Optimizer(_) => Ok(self.with(|b| b.parameter(name, value))),
            other => Err(PyValueError::new_err(format!(
                "{} commands take no parameters (got {name:?})",
                other.command_type().as_str()
            ))),
        }
    }

    /// The command as built so far, unsigned.
    fn build(&self) -> AdaptationCommand {
        AdaptationCommand { inner: self.builder.clone().build() }
    }

    /// The command signed with `key` (HMAC-SHA256 over its canonical bytes).
    fn sign(&self, key: &HmacKey) -> AdaptationCommand {
        AdaptationCommand { inner: self.builder.clone().sign(&key.inner) }
    }

    fn __repr__(&self) -> String {
        let c = self.builder.peek();
        format!("Command(type={}, target={:?}, id={:?})", c.command_type().as_str(), c.target_seed_id, c.command_id)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HmacKey>()?;
    m.add_class::<AdaptationCommand>()?;
    m.add_class::<Command>()?;
    Ok(())
}
