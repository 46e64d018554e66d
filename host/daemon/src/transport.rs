//! What a connection needs from the server and nothing more: the limits
//! it enforces ([`ServerSettings`]), the listening sockets it is accepted
//! from ([`Listener`]) and the blocking stream its thread serves on
//! ([`BlockingStream`]). `server` (the accept loop) and `connection` (one
//! client) both depend on this module and not on each other.

use std::future::Future;
use std::io;
use std::time::Duration;

use kasmina::settings::defaults;
use kasmina_client::codec::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

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
/// Default time a client has to finish a frame once its first byte arrived:
/// a peer that starts a frame and stalls (or trickles it) is closed
/// (`daemon.frame_timeout_ms` in the settings file).
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_millis(defaults::FRAME_TIMEOUT_MS);
/// Default time a connection may stay silent between frames before it is
/// closed as half-open (a peer gone without a close, e.g. over TCP). Long,
/// because a trainer may evaluate for minutes between step reports; a
/// subscribed observer only reads and is never reaped for silence (a dead
/// one fails the next telemetry write instead) (`daemon.idle_timeout_s` in
/// the settings file).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(defaults::IDLE_TIMEOUT_S);
/// Default time one write may take before the client is dropped as too slow.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Time from a frame's first byte to its last before the client is
    /// closed (slow or stalled senders).
    pub frame_timeout: Duration,
    /// Silence between frames after which a connection that is not
    /// subscribed to telemetry is closed as half-open; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Bound on graceful shutdown.
    pub shutdown_grace: Duration,
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
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            shutdown_grace: Duration::from_millis(defaults::SHUTDOWN_TIMEOUT_MS),
            telemetry_capacity: defaults::TELEMETRY_QUEUE_CAPACITY,
            critical_capacity: defaults::TELEMETRY_CRITICAL_CAPACITY,
        }
    }
}

impl ServerSettings {
    /// Refuses a zero limit, naming it.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let zero = [
            ("max_request_bytes", self.max_request_bytes == 0),
            ("max_response_bytes", self.max_response_bytes == 0),
            ("max_connections", self.max_connections == 0),
            ("max_in_flight_per_connection", self.max_in_flight_per_connection == 0),
            ("outgoing_queue", self.outgoing_queue == 0),
            ("telemetry_capacity", self.telemetry_capacity == 0),
            ("critical_capacity", self.critical_capacity == 0),
            ("frame_timeout", self.frame_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_some_and(|t| t.is_zero())),
        ];
        match zero.iter().find(|(_, bad)| *bad) {
            Some((name, _)) => Err(format!("{name} must be > 0")),
            None => Ok(()),
        }
    }
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
