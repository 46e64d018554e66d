//! Blocking client: [`DaemonClient`] implements [`KasminaApi`] over the
//! socket, so a trainer switches between the embedded host and the daemon by
//! choosing which `Arc<dyn KasminaApi>` it holds. Observers turn a client
//! into a [`TelemetryStream`].

mod conn;

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use leyline::api::{
    ApiError, ApiErrorCode, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport,
    TelemetryListener, TrainerSettings,
};
use leyline::protocol::{ClientFrame, PROTOCOL_VERSION, RequestBody, ResponseBody, Role, ServerFrame};
use leyline::{AdaptationCommand, Outcome, SeedState, TelemetryEvent, TelemetryLevel};

use crate::codec::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES, FrameDecoder, FrameError};
use conn::{Conn, Stream, frame_name};

/// Default bound on one request's round trip (kernel fetches included).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a caller polls for its answer before sleeping in a
/// blocking read. Waking a sleeping thread costs tens of microseconds on
/// virtual machines, more than the daemon takes to answer a step report,
/// so a short poll roughly halves the round trip; the poll yields the CPU
/// between tries, so the daemon is never starved of it.
pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(200);

/// Client limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Largest frame sent.
    pub max_request_bytes: u32,
    /// Largest frame accepted.
    pub max_response_bytes: u32,
    /// Bound on waiting for one answer; `None` waits forever.
    pub request_timeout: Option<Duration>,
    /// How long to poll for an answer before a blocking read; zero never polls.
    pub spin_wait: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            spin_wait: DEFAULT_SPIN_WAIT,
        }
    }
}

/// Why a client could not connect or talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Path or address.
        addr: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Framing or transport failure.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The daemon refused the handshake.
    #[error("daemon refused the connection: {0}")]
    Refused(String),
    /// The daemon closed the connection and said why.
    #[error("daemon closed the connection: {0}")]
    Closed(ApiError),
    /// The daemon sent something the protocol does not allow here.
    #[error("protocol violation by the daemon: {0}")]
    Protocol(String),
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Closed(api) => api,
            other => ApiError::new(ApiErrorCode::Transport, other.to_string()),
        }
    }
}

/// A blocking connection to the daemon. Calls are serialised (one request
/// in flight per client); open one client per thread for parallelism.
pub struct DaemonClient {
    conn: Mutex<Conn>,
    role: Role,
    server: String,
}

impl std::fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonClient").field("role", &self.role).field("server", &self.server).finish_non_exhaustive()
    }
}

impl DaemonClient {
    /// Connects over a Unix socket and performs the handshake.
    pub fn connect_unix(
        path: impl AsRef<Path>,
        role: Role,
        client_name: &str,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .map_err(|source| ClientError::Connect { addr: path.display().to_string(), source })?;
        Self::handshake(Stream::Unix(stream), role, client_name, settings)
    }

    /// Connects over loopback TCP and performs the handshake.
    pub fn connect_tcp(
        addr: SocketAddr,
        role: Role,
        client_name: &str,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let stream =
            TcpStream::connect(addr).map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
        stream.set_nodelay(true).map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
        Self::handshake(Stream::Tcp(stream), role, client_name, settings)
    }

    fn handshake(stream: Stream, role: Role, client_name: &str, settings: ClientSettings) -> Result<Self, ClientError> {
        stream.set_read_timeout(settings.request_timeout).map_err(FrameError::Io)?;
        let mut conn = Conn {
            io: BufReader::with_capacity(64 * 1024, stream),
            next_id: 1,
            broken: None,
            wbuf: Vec::new(),
            decoder: FrameDecoder::new(settings.max_response_bytes),
            settings,
        };
        let sent = conn.send(&ClientFrame::Hello {
            protocol_version: PROTOCOL_VERSION,
            role,
            client_name: client_name.to_owned(),
        });
        // A server refusing the connection (e.g. over its limit) writes its
        // reason and closes at once, so our Hello may hit a closed socket:
        // read the reason anyway before reporting the send failure.
        let server = match (conn.recv(), sent) {
            (Ok(ServerFrame::Refused { reason }), _) => return Err(ClientError::Refused(reason)),
            (_, Err(send_err)) => return Err(send_err),
            (Ok(ServerFrame::Welcome { server, .. }), Ok(())) => server,
            (Ok(other), Ok(())) => {
                return Err(ClientError::Protocol(format!("expected Welcome, got {}", frame_name(&other))));
            }
            (Err(err), Ok(())) => return Err(err),
        };
        Ok(DaemonClient { conn: Mutex::new(conn), role, server })
    }

    /// Role declared in the handshake.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Server name and version from the Welcome frame.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one request and waits for its answer.
    pub fn request(&self, body: RequestBody) -> Result<ResponseBody, ApiError> {
        let mut conn =
            self.conn.lock().map_err(|_| ApiError::new(ApiErrorCode::Internal, "client lock poisoned by a panic"))?;
        conn.call(body)
    }

    /// Subscribes to telemetry at or above `min_level` and turns the client
    /// into a stream of pushed events (CRITICAL ones first).
    pub fn subscribe_telemetry(self, min_level: TelemetryLevel) -> Result<TelemetryStream, ApiError> {
        match self.request(RequestBody::SubscribeTelemetry { min_level })? {
            ResponseBody::Subscribed => {}
            other => return Err(unexpected("SubscribeTelemetry", &other)),
        }
        let conn = self
            .conn
            .into_inner()
            .map_err(|_| ApiError::new(ApiErrorCode::Internal, "client lock poisoned by a panic"))?;
        // Observers wait for events indefinitely.
        conn.io.get_ref().set_read_timeout(None).map_err(|e| ApiError::new(ApiErrorCode::Transport, e.to_string()))?;
        Ok(TelemetryStream { conn, done: false })
    }
}

fn unexpected(request: &str, answer: &ResponseBody) -> ApiError {
    let name = match answer {
        ResponseBody::CommandOutcome(_) => "CommandOutcome",
        ResponseBody::Registered(_) => "Registered",
        ResponseBody::Kernel(_) => "Kernel",
        ResponseBody::Directives(_) => "Directives",
        ResponseBody::SeedStates(_) => "SeedStates",
        ResponseBody::Status(_) => "Status",
        ResponseBody::Subscribed => "Subscribed",
        ResponseBody::Telemetry(_) => "Telemetry",
    };
    ApiError::new(ApiErrorCode::Transport, format!("daemon answered {request} with {name}"))
}

impl KasminaApi for DaemonClient {
    fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError> {
        match self.request(RequestBody::SubmitCommand(command))? {
            ResponseBody::CommandOutcome(o) => Ok(o),
            other => Err(unexpected("SubmitCommand", &other)),
        }
    }
    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        match self.request(RequestBody::RegisterHost(registration))? {
            ResponseBody::Registered(settings) => Ok(settings),
            other => Err(unexpected("RegisterHost", &other)),
        }
    }
    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        match self.request(RequestBody::FetchKernel { blueprint_id: blueprint_id.to_owned() })? {
            ResponseBody::Kernel(k) => Ok(k),
            other => Err(unexpected("FetchKernel", &other)),
        }
    }
    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        match self.request(RequestBody::StepReport(report))? {
            ResponseBody::Directives(d) => Ok(d),
            other => Err(unexpected("StepReport", &other)),
        }
    }
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        match self.request(RequestBody::SeedStates)? {
            ResponseBody::SeedStates(s) => Ok(s),
            other => Err(unexpected("SeedStates", &other)),
        }
    }
    fn status(&self) -> Result<HostStatus, ApiError> {
        match self.request(RequestBody::Status)? {
            ResponseBody::Status(s) => Ok(s),
            other => Err(unexpected("Status", &other)),
        }
    }
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        match self.request(RequestBody::DrainTelemetry)? {
            ResponseBody::Telemetry(events) => Ok(events),
            other => Err(unexpected("DrainTelemetry", &other)),
        }
    }
    fn subscribe_telemetry(&self, _listener: std::sync::Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        // Events of a remote host cannot be called back across the socket:
        // a client subscribes with a stream of its own.
        Err(ApiError::new(
            ApiErrorCode::BadRequest,
            "a daemon client cannot register a listener; use DaemonClient::subscribe_telemetry (a stream)",
        ))
    }
}

/// Pushed telemetry events; ends when the daemon closes the connection.
pub struct TelemetryStream {
    conn: Conn,
    done: bool,
}

impl std::fmt::Debug for TelemetryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryStream").field("done", &self.done).finish_non_exhaustive()
    }
}

impl Iterator for TelemetryStream {
    type Item = Result<TelemetryEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.conn.recv() {
            Ok(ServerFrame::Telemetry(event)) => return Some(Ok(event)),
            Err(ClientError::Frame(FrameError::Eof)) => None,
            Ok(ServerFrame::Closing(err)) => Some(Err(ClientError::Closed(err))),
            Ok(other) => {
                Some(Err(ClientError::Protocol(format!("unexpected {} on a telemetry stream", frame_name(&other)))))
            }
            Err(err) => Some(Err(err)),
        };
        self.done = true;
        item
    }
}
