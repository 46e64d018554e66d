//! kasminad: the control plane served over a local socket.
//!
//! Module map, in the order a request meets them:
//! - [`server`]: [`server::serve_unix`] binds the socket (mode 0600, stale
//!   file removed only if nothing answers) and [`server::run`] accepts
//!   connections (bounded by a semaphore) until its shutdown future fires,
//!   then drains them within a grace period; [`server::shutdown_signal`]
//!   is that future for SIGINT/SIGTERM;
//! - `connection`: per client — Hello handshake (version check naming both
//!   versions), then one blocking thread that reads a frame, checks the
//!   role, calls the synchronous [`leyline::api::KasminaApi`] (never inside
//!   the runtime) and writes the answer itself, in order; a small async task
//!   pushes subscribed telemetry (CRITICAL first) and handles shutdown;
//! - `async_frames`: the handshake's async read, a thin loop feeding the
//!   socket's bytes to [`kasmina_client::FrameDecoder`] — the same decoder
//!   the connection thread and every client use ([`kasmina_client::codec`]:
//!   length-delimited postcard frames, size caps, typed errors);
//! - [`telemetry`]: the hub fanning drained host events out to connections;
//! - [`transport`]: what `server` and `connection` share without importing
//!   each other — [`ServerSettings`] (every bound), the [`transport::Listener`]
//!   trait for Unix and TCP sockets, and the blocking stream a connection
//!   thread serves on.
//!
//! Clients — [`kasmina_client::DaemonClient`] (the blocking `KasminaApi`
//! client), key loading and the signed-command builder — live in the light
//! `kasmina-client` crate, which the CLI, tests and benches here use.
//!
//! What the server serves, and what survives a crash:
//! - [`daemon_host`]: [`DaemonHost`] — the embedded host behind the same
//!   trait, journaled: start-up recovers the journal (cutting a torn tail),
//!   restores seed state, and every state-changing call is answered only
//!   once its records are durable;
//! - [`recorder`]: [`JournalRecorder`], the seed manager's decision
//!   recorder writing commands, transitions, gate verdicts and snapshots;
//! - [`journal_tools`]: read-only `journal inspect` and `journal replay`
//!   of recorded gate decisions through a candidate plugin;
//! - [`metrics`]: the host's counters as OpenMetrics text (prometheus-client);
//! - [`http`]: the read-only HTTP side on the metrics address (axum):
//!   `/metrics`, the live status page at `/`, its JSON and its SSE stream;
//! - [`status_page`]: what the page shows, fed by telemetry push and a tap
//!   on step reports, every store bounded;
//! - [`human`]: local RFC 3339 times for what people read;
//! - [`reload_signal`]: SIGHUP → hot reload of the policy plugins named in
//!   the settings file's `[plugins]` refs, behind the conformance canary.

mod async_frames;
mod connection;
pub mod daemon_host;
pub mod http;
pub mod human;
pub mod journal_tools;
pub mod metrics;
pub mod recorder;
pub mod reload_signal;
pub mod server;
pub mod status_page;
pub mod telemetry;
pub mod transport;

pub use connection::check_role;
pub use daemon_host::{DaemonHost, StartError, StartOptions, StartReport};
/// Framing errors, re-exported: the daemon reads frames with kasmina-client's codec.
pub use kasmina_client::FrameError;
pub use recorder::JournalRecorder;
pub use server::{
    ServeError, ServerSettings, ShutdownReport, UnixSocket, bind_tcp, bind_tcp_public, run, serve_bound, serve_unix,
    shutdown_signal,
};
