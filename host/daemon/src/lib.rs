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
//! - [`codec`]: length-delimited postcard frames with size caps and typed
//!   errors (oversized, truncated, garbage, EOF);
//! - [`telemetry`]: the hub fanning drained host events out to connections;
//! - [`client`]: [`client::DaemonClient`], a blocking client implementing
//!   `KasminaApi` (a trainer swaps embedded ↔ daemon by swapping the
//!   `Arc<dyn KasminaApi>`), and [`client::TelemetryStream`] for observers.
//!   It polls briefly (`ClientSettings::spin_wait`, 200 µs) for an answer
//!   before sleeping: waking a blocked thread costs ~35 µs on the 2-core VM,
//!   more than the whole round trip.
//!
//! What the server serves, and what survives a crash:
//! - [`daemon_host`]: [`DaemonHost`] — the embedded host behind the same
//!   trait, journaled: start-up recovers the journal (cutting a torn tail),
//!   restores seed state, and every state-changing call is answered only
//!   once its records are durable;
//! - [`recorder`]: [`JournalRecorder`], the seed manager's decision
//!   recorder writing commands, transitions, gate verdicts and snapshots;
//! - [`gate_record`]: gate inputs as ordered text pairs, and back;
//! - [`journal_tools`]: read-only `journal inspect` and `journal replay`
//!   of recorded gate decisions through a candidate plugin;
//! - [`metrics`]: Prometheus text on loopback HTTP.

pub mod client;
pub mod codec;
mod connection;
pub mod daemon_host;
pub mod gate_record;
pub mod journal_tools;
pub mod metrics;
pub mod recorder;
pub mod server;
pub mod telemetry;

pub use client::{ClientError, ClientSettings, DaemonClient, TelemetryStream};
pub use codec::FrameError;
pub use connection::check_role;
pub use daemon_host::{DaemonHost, StartError, StartOptions, StartReport};
pub use recorder::JournalRecorder;
pub use server::{
    ServeError, ServerSettings, ShutdownReport, UnixSocket, bind_tcp, run, serve_bound, serve_unix, shutdown_signal,
};
