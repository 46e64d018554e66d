//! `Client`: `kasmina_client::DaemonClient` for Python. Every request runs
//! with the GIL released (the whole round trip: encode, write, wait, read,
//! decode), so other Python threads — a data loader, a second client — run
//! meanwhile; results become Python objects after the GIL is taken back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use kasmina_client::{ClientError, ClientSettings, DaemonClient};
use leyline::api::{ApiError, ApiErrorCode, KasminaApi};

use crate::command::AdaptationCommand;
use crate::contract::{
    HostRegistration, HostStatus, KernelArtifact, Outcome, SeedState, StepReport, TelemetryEvent, TrainerSettings,
};
use crate::directive::GraftDirective;
use crate::enums::Role;
use crate::errors;

/// A blocking connection to `kasmina serve`. Calls are serialised (one
/// request in flight per client); open one client per thread for
/// parallelism. `close()` (or leaving a `with` block) drops the connection;
/// later calls raise `TransportError`.
#[pyclass(frozen, module = "kasmina._native")]
pub struct Client {
    inner: Mutex<Option<Arc<DaemonClient>>>,
    role: Role,
    server: String,
    address: String,
}

fn settings(timeout: Option<f64>, spin_wait_us: u64) -> PyResult<ClientSettings> {
    let request_timeout = match timeout {
        None => None,
        Some(t) => Some(
            Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| PyValueError::new_err(format!("timeout={t}: must be > 0 seconds, or None")))?,
        ),
    };
    Ok(ClientSettings { request_timeout, spin_wait: Duration::from_micros(spin_wait_us), ..ClientSettings::default() })
}

fn connect_error(py: Python<'_>, err: ClientError) -> PyErr {
    match err {
        ClientError::Refused(reason) => errors::kasmina_error(
            py,
            "TransportError",
            format!("daemon refused the connection: {reason}"),
            "refused",
            None,
        ),
        other => errors::api_error(py, ApiError::from(other)),
    }
}

impl Client {
    fn new(client: DaemonClient, role: Role, address: String) -> Self {
        let server = client.server().to_owned();
        Client { inner: Mutex::new(Some(Arc::new(client))), role, server, address }
    }

    /// The live connection, or `TransportError` once closed.
    fn conn(&self, py: Python<'_>) -> PyResult<Arc<DaemonClient>> {
        let guard = self.inner.lock().map_err(|_| {
            errors::api_error(py, ApiError::new(ApiErrorCode::Internal, "client lock poisoned by a panic"))
        })?;
        guard.clone().ok_or_else(|| {
            errors::api_error(
                py,
                ApiError::new(ApiErrorCode::Transport, format!("client for {} is closed", self.address)),
            )
        })
    }

    /// Runs `call` on the connection with the GIL released.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&DaemonClient) -> Result<T, ApiError> + Send,
    ) -> PyResult<T> {
        let conn = self.conn(py)?;
        py.detach(|| call(&conn)).map_err(|e| errors::api_error(py, e))
    }
}

#[pymethods]
impl Client {
    /// Connects to the daemon's Unix socket and performs the handshake.
    ///
    /// `role`: a `Role` or its name (`"trainer"`, `"controller"`,
    /// `"observer"`). `timeout`: seconds one request may take (None: no
    /// bound). `spin_wait_us`: how long to poll for an answer before
    /// sleeping (0 never polls).
    #[staticmethod]
    #[pyo3(signature = (socket, role, name = "kasmina-python".to_owned(), *, timeout = Some(60.0), spin_wait_us = 200))]
    fn connect(
        py: Python<'_>,
        socket: PathBuf,
        role: &Bound<'_, PyAny>,
        name: String,
        timeout: Option<f64>,
        spin_wait_us: u64,
    ) -> PyResult<Self> {
        let role = role_of(role)?;
        let settings = settings(timeout, spin_wait_us)?;
        let address = socket.display().to_string();
        let client = py
            .detach(|| DaemonClient::connect_unix(&socket, role.into(), &name, settings))
            .map_err(|e| connect_error(py, e))?;
        Ok(Client::new(client, role, address))
    }

    /// Connects over loopback TCP (`"127.0.0.1:7411"`).
    #[staticmethod]
    #[pyo3(signature = (address, role, name = "kasmina-python".to_owned(), *, timeout = Some(60.0), spin_wait_us = 200))]
    fn connect_tcp(
        py: Python<'_>,
        address: &str,
        role: &Bound<'_, PyAny>,
        name: String,
        timeout: Option<f64>,
        spin_wait_us: u64,
    ) -> PyResult<Self> {
        let role = role_of(role)?;
        let settings = settings(timeout, spin_wait_us)?;
        let addr: std::net::SocketAddr =
            address.parse().map_err(|e| PyValueError::new_err(format!("bad TCP address {address:?}: {e}")))?;
        let client = py
            .detach(|| DaemonClient::connect_tcp(addr, role.into(), &name, settings))
            .map_err(|e| connect_error(py, e))?;
        Ok(Client::new(client, role, address.to_owned()))
    }

    /// Role declared in the handshake.
    #[getter]
    fn role(&self) -> Role {
        self.role
    }

    /// Server name and version from the handshake.
    #[getter]
    fn server(&self) -> &str {
        &self.server
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().map(|g| g.is_none()).unwrap_or(true)
    }

    /// Verifies, parses, admits and executes a signed command. Returns the
    /// `Outcome` (a rejection is an answer, not an error); with
    /// `check=True` a rejection raises `CommandRejected` instead.
    #[pyo3(signature = (command, *, check = false))]
    fn submit_command<'py>(
        &self,
        py: Python<'py>,
        command: &AdaptationCommand,
        check: bool,
    ) -> PyResult<Bound<'py, Outcome>> {
        let cmd = command.inner.clone();
        let outcome = Bound::new(py, Outcome::from(self.call(py, move |c| c.submit_command(cmd))?))?;
        if check { Outcome::raise_for_rejection_of(&outcome) } else { Ok(outcome) }
    }

    /// Registers the trainer's model; returns the settings to apply.
    fn register_host(&self, py: Python<'_>, registration: &HostRegistration) -> PyResult<TrainerSettings> {
        let reg = leyline::api::HostRegistration::from(registration);
        Ok(self.call(py, move |c| c.register_host(reg))?.into())
    }

    /// The verified kernel artifact of a blueprint.
    fn fetch_kernel(&self, py: Python<'_>, blueprint_id: String) -> PyResult<KernelArtifact> {
        Ok(self.call(py, move |c| c.fetch_kernel(&blueprint_id))?.into())
    }

    /// Reports a finished step; returns the directives for the next one.
    fn step_report(&self, py: Python<'_>, report: &StepReport) -> PyResult<Vec<GraftDirective>> {
        let report = leyline::api::StepReport::from(report);
        Ok(self.call(py, move |c| c.step_report(report))?.into_iter().map(Into::into).collect())
    }

    /// Rank 0 of a data-parallel job: merges every rank's
    /// `StepReport.to_bytes()` (index = global rank), reports the merged
    /// step with its rank summary, fetches the kernel of every Attach, and
    /// returns the bytes to broadcast (`RankBroadcast.from_bytes`).
    fn rank_step(&self, py: Python<'_>, parts: Vec<Bound<'_, PyBytes>>) -> PyResult<Py<PyBytes>> {
        let parts = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
        let conn = self.conn(py)?;
        crate::ranks::rank_step(py, &conn, parts)
    }

    /// Every seed's state.
    fn seed_states(&self, py: Python<'_>) -> PyResult<Vec<SeedState>> {
        Ok(self.call(py, |c| c.seed_states())?.into_iter().map(Into::into).collect())
    }

    /// Host summary.
    fn status(&self, py: Python<'_>) -> PyResult<HostStatus> {
        Ok(self.call(py, |c| c.status())?.into())
    }

    /// Telemetry events published since this connection's previous drain.
    fn drain_telemetry(&self, py: Python<'_>) -> PyResult<Vec<TelemetryEvent>> {
        Ok(self.call(py, |c| c.drain_telemetry())?.into_iter().map(Into::into).collect())
    }

    /// Closes the connection (idempotent).
    fn close(&self) {
        if let Ok(mut guard) = self.inner.lock() {
            guard.take();
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Client(address={:?}, role={}, server={:?}, closed={})",
            self.address,
            self.role.wire_name(),
            self.server,
            self.closed()
        )
    }
}

fn role_of(role: &Bound<'_, PyAny>) -> PyResult<Role> {
    if let Ok(r) = role.cast::<Role>() {
        return Ok(*r.get());
    }
    let text: String = role.extract().map_err(|_| PyValueError::new_err("role must be a Role or its name"))?;
    Role::ALL
        .iter()
        .copied()
        .find(|r| r.wire_name() == text)
        .ok_or_else(|| PyValueError::new_err(format!("unknown role {text:?}; use trainer, controller or observer")))
}
