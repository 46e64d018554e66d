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

use kasmina_client::codec;
use leyline::api::KasminaApi;
use leyline::protocol::ServerFrame;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;

use crate::connection::{self, Shared};
use crate::telemetry::TelemetryHub;

pub use crate::transport::{
    BlockingStream, DEFAULT_FRAME_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_OUTGOING_QUEUE, DEFAULT_WRITE_TIMEOUT, Listener, ServerSettings,
};

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

/// Serves `api` on `listener` until `shutdown` completes, then shuts down
/// gracefully within `settings.shutdown_grace`.
pub async fn run<L: Listener>(
    mut listener: L,
    api: Arc<dyn KasminaApi>,
    settings: ServerSettings,
    shutdown: impl Future,
) -> Result<ShutdownReport, ServeError> {
    settings.validate().map_err(ServeError::Settings)?;
    let hub = Arc::new(TelemetryHub::new(settings.telemetry_capacity, settings.critical_capacity));
    // Push, not poll: the host hands every event to the hub as it emits it.
    api.subscribe_telemetry(Arc::clone(&hub) as Arc<dyn leyline::api::TelemetryListener>)
        .map_err(|e| ServeError::Settings(format!("the host refused a telemetry subscription: {e}")))?;
    let shared = Arc::new(Shared { api, settings, hub });
    let settings = &shared.settings;
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let mut conns = JoinSet::new();
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

/// Binds a TCP listener on any address: only for the read-only HTTP side
/// (`--metrics-public`), never for the control plane.
pub async fn bind_tcp_public(addr: SocketAddr) -> Result<TcpListener, ServeError> {
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
