//! The accept loop, mini-redis style: `run(listener, api, settings,
//! shutdown)` serves until the shutdown future completes, then broadcasts
//! shutdown to every connection and waits (bounded) for them to answer what
//! they already read.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kasmina::settings::defaults;
use kasmina_client::codec::{self, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES};
use leyline::api::KasminaApi;
use leyline::protocol::ServerFrame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;

use crate::connection::{self, Shared};
use crate::telemetry::TelemetryHub;

#[path = "blocking_stream.rs"]
mod blocking_stream;
pub use blocking_stream::BlockingStream;

/// Default bound on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default requests a connection may have read but not yet answered.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
/// Default frames queued for one connection's writer.
pub const DEFAULT_OUTGOING_QUEUE: usize = 256;
/// Default time a client has to send Hello.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time one write may take before the client is dropped as too slow.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default period of the background telemetry pump.
pub const DEFAULT_TELEMETRY_POLL: Duration = Duration::from_millis(100);

/// Server limits; every queue and wait is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Largest client frame read.
    pub max_request_bytes: u32,
    /// Largest server frame written (kernel artifacts travel in these).
    pub max_response_bytes: u32,
    /// Simultaneous connections; more are refused with a reason.
    pub max_connections: usize,
    /// Answers a connection may hold back to write in one batch while the
    /// client has further requests queued (pipelining); requests are read
    /// only as they are served, so the socket buffer is the backpressure.
    pub max_in_flight_per_connection: usize,
    /// Telemetry frames coalesced into one write to a subscriber.
    pub outgoing_queue: usize,
    /// Time a client has to send Hello.
    pub handshake_timeout: Duration,
    /// Time one write may take before the client is dropped.
    pub write_timeout: Duration,
    /// Bound on graceful shutdown.
    pub shutdown_grace: Duration,
    /// Period of the background telemetry pump.
    pub telemetry_poll: Duration,
    /// Normal telemetry a lagging connection may fall behind by.
    pub telemetry_capacity: usize,
    /// CRITICAL telemetry a lagging connection may fall behind by.
    pub critical_capacity: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT,
            outgoing_queue: DEFAULT_OUTGOING_QUEUE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shutdown_grace: Duration::from_millis(defaults::SHUTDOWN_TIMEOUT_MS),
            telemetry_poll: DEFAULT_TELEMETRY_POLL,
            telemetry_capacity: defaults::TELEMETRY_QUEUE_CAPACITY,
            critical_capacity: defaults::TELEMETRY_CRITICAL_CAPACITY,
        }
    }
}

impl ServerSettings {
    fn validate(&self) -> Result<(), ServeError> {
        let zero = [
            ("max_request_bytes", self.max_request_bytes == 0),
            ("max_response_bytes", self.max_response_bytes == 0),
            ("max_connections", self.max_connections == 0),
            ("max_in_flight_per_connection", self.max_in_flight_per_connection == 0),
            ("outgoing_queue", self.outgoing_queue == 0),
            ("telemetry_capacity", self.telemetry_capacity == 0),
            ("critical_capacity", self.critical_capacity == 0),
            ("telemetry_poll", self.telemetry_poll.is_zero()),
        ];
        match zero.iter().find(|(_, bad)| *bad) {
            Some((name, _)) => Err(ServeError::Settings(format!("{name} must be > 0"))),
            None => Ok(()),
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Socket path or listener I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path or address.
        path: String,
        /// Underlying error.
        source: io::Error,
    },
    /// Something that is not a socket sits at the socket path.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// Another server answers on the socket path.
    #[error("a server is already listening on {0}")]
    AlreadyServing(PathBuf),
    /// TCP is offered on loopback only.
    #[error("refusing to listen on {0}: TCP is served on loopback addresses only")]
    NotLoopback(SocketAddr),
    /// Invalid settings.
    #[error("server settings invalid: {0}")]
    Settings(String),
}

fn io_err(what: &'static str, path: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ServeError {
    move |source| ServeError::Io { what, path: path.to_string(), source }
}

/// What a graceful shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still busy when the grace period ended (aborted).
    pub aborted_connections: usize,
}

/// A listening socket the server can accept from.
pub trait Listener: Send + 'static {
    /// Accepted stream type.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// Accepts one connection; returns it with a peer description for logs.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
    /// Writes without waiting (used to refuse a connection over the limit
    /// without spending a task on it).
    fn try_write_now(stream: &Self::Stream, bytes: &[u8]) -> io::Result<usize>;
    /// Takes a stream off the reactor after the handshake: its connection
    /// thread then reads, calls the host and answers on it directly.
    fn into_blocking(stream: Self::Stream) -> io::Result<BlockingStream>;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept(&mut self) -> io::Result<(UnixStream, String)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, "unix".to_owned()))
    }
    fn try_write_now(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
        stream.try_write(bytes)
    }
    fn into_blocking(stream: UnixStream) -> io::Result<BlockingStream> {
        BlockingStream::from_tokio_unix(stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&mut self) -> io::Result<(TcpStream, String)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        // Frames are written whole; Nagle would only add latency.
        stream.set_nodelay(true)?;
        Ok((stream, addr.to_string()))
    }
    fn try_write_now(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
        stream.try_write(bytes)
    }
    fn into_blocking(stream: TcpStream) -> io::Result<BlockingStream> {
        BlockingStream::from_tokio_tcp(stream)
    }
}

/// Serves `api` on `listener` until `shutdown` completes, then shuts down
/// gracefully within `settings.shutdown_grace`.
pub async fn run<L: Listener>(
    mut listener: L,
    api: Arc<dyn KasminaApi>,
    settings: ServerSettings,
    shutdown: impl Future,
) -> Result<ShutdownReport, ServeError> {
    settings.validate()?;
    let hub = TelemetryHub::new(settings.telemetry_capacity, settings.critical_capacity);
    let shared = Arc::new(Shared { api, settings, hub });
    let settings = &shared.settings;
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let mut conns = JoinSet::new();
    let pump = tokio::spawn(telemetry_pump(Arc::clone(&shared), notify_shutdown.subscribe()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(err) = joined && err.is_panic() {
                    tracing::error!(%err, "kasmina.daemon.connection_panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => {
                        let shared = Arc::clone(&shared);
                        let rx = notify_shutdown.subscribe();
                        conns.spawn(async move {
                            connection::serve::<L>(stream, peer, shared, rx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => refuse_over_limit::<L>(&stream, settings),
                },
                Err(err) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(%err, "kasmina.daemon.accept_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = notify_shutdown.send(());
    let open = conns.len();
    tracing::info!(open, grace_ms = settings.shutdown_grace.as_millis() as u64, "kasmina.daemon.shutting_down");
    let drained =
        tokio::time::timeout(settings.shutdown_grace, async { while conns.join_next().await.is_some() {} }).await;
    let aborted_connections = if drained.is_err() {
        let left = conns.len();
        conns.shutdown().await;
        tracing::warn!(left, "kasmina.daemon.shutdown_grace_expired");
        left
    } else {
        0
    };
    let _ = pump.await;
    // Publish anything the host emitted while connections wound down.
    shared.hub.pump(&*shared.api);
    Ok(ShutdownReport { aborted_connections })
}

fn refuse_over_limit<L: Listener>(stream: &L::Stream, settings: &ServerSettings) {
    let reason = format!("too many connections (limit {})", settings.max_connections);
    tracing::warn!(%reason, "kasmina.daemon.connection_refused");
    let mut frame = Vec::new();
    if codec::encode_frame(&ServerFrame::Refused { reason }, settings.max_response_bytes, &mut frame).is_ok() {
        // Best effort: a fresh socket's buffer takes this small frame at once.
        let _ = L::try_write_now(stream, &frame);
    }
}

async fn telemetry_pump(shared: Arc<Shared>, mut shutdown: broadcast::Receiver<()>) {
    let mut tick = tokio::time::interval(shared.settings.telemetry_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let shared = Arc::clone(&shared);
        if tokio::task::spawn_blocking(move || shared.hub.pump(&*shared.api)).await.is_err() {
            tracing::error!("kasmina.daemon.telemetry_pump_panicked");
        }
    }
}

/// A bound Unix socket; the socket file is removed when this is dropped.
#[derive(Debug)]
pub struct UnixSocket {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
}

impl UnixSocket {
    /// Binds `path` with mode 0600. A stale socket file (nothing answers on
    /// it) is removed; a live one, or any other kind of file, is an error.
    /// The socket is bound under a temporary name, restricted, then renamed
    /// into place, so it is never reachable with wider permissions.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, ServeError> {
        let path = path.as_ref().to_path_buf();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(ServeError::NotASocket(path)),
            Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => return Err(ServeError::AlreadyServing(path)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "kasmina.daemon.stale_socket_removed");
                    std::fs::remove_file(&path).map_err(io_err("removing stale socket", path.display()))?;
                }
                Err(e) => return Err(io_err("probing existing socket", path.display())(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting socket path", path.display())(e)),
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.binding", std::process::id()));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing leftover", tmp.display())(e)),
            _ => {}
        }
        // std, not tokio, so binding needs no runtime (the CLI binds first
        // to report a busy path before it starts anything else).
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err("binding", tmp.display()))?;
        listener.set_nonblocking(true).map_err(io_err("configuring", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("restricting", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(io_err("moving socket into place at", path.display()))?;
        Ok(UnixSocket { listener: Some(listener), path })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        // Best effort on the way out; a later bind removes a stale file anyway.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `api` on a Unix socket at `path` (mode 0600) until `shutdown`;
/// removes the socket file afterwards. The CLI's `serve` entry point.
pub async fn serve_unix(
    path: impl AsRef<Path>,
    api: Arc<dyn KasminaApi>,
    settings: ServerSettings,
    shutdown: impl Future,
) -> Result<ShutdownReport, ServeError> {
    serve_bound(UnixSocket::bind(path)?, api, settings, shutdown).await
}

/// Serves on a socket bound earlier with [`UnixSocket::bind`] (bind first
/// to report a busy path before anything else starts).
pub async fn serve_bound(
    mut socket: UnixSocket,
    api: Arc<dyn KasminaApi>,
    settings: ServerSettings,
    shutdown: impl Future,
) -> Result<ShutdownReport, ServeError> {
    let listener = socket.listener.take().ok_or_else(|| ServeError::Settings("socket already served".into()))?;
    let listener = UnixListener::from_std(listener).map_err(io_err("registering", socket.path().display()))?;
    tracing::info!(path = %socket.path().display(), "kasmina.daemon.listening");
    let report = run(listener, api, settings, shutdown).await;
    drop(socket);
    report
}

/// Binds a loopback TCP listener (any other address is refused).
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    if !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    TcpListener::bind(addr).await.map_err(io_err("binding", addr))
}

/// Completes on SIGINT or SIGTERM: the shutdown future for the CLI.
pub async fn shutdown_signal() -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("kasmina.daemon.sigterm"),
        _ = int.recv() => tracing::info!("kasmina.daemon.sigint"),
    }
    Ok(())
}
