//! SIGHUP → hot reload of the policy plugins, for `kasmina serve`.
//!
//! On SIGHUP the daemon re-reads its settings file and reloads each policy
//! slot whose `[plugins]` ref (gates, annotations, blueprint_policy: path
//! and sha256) changed, behind the conformance canary
//! ([`kasmina::EmbeddedHost::reload_plugins`]); nothing else of the file is
//! applied, and what needs a restart is named. Reloads run one at a time:
//! the handler awaits each one, and SIGHUPs that arrive meanwhile are
//! coalesced into one more reload after it (which re-reads the file).
//! Every outcome is telemetry (`kasmina.plugin.reload_*`,
//! `kasmina.plugin.reloaded`), which [`ReloadLog`] also prints on stderr.

use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use leyline::api::TelemetryListener;
use leyline::{TelemetryEvent, TelemetryLevel};

use crate::DaemonHost;

/// Prints each plugin-reload event on stderr as it is emitted, unless the
/// log filter (`RUST_LOG`) already shows it (the telemetry hub logs every
/// event at its level): the operator's log of what a SIGHUP did, every
/// event exactly once whatever the filter.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReloadLog;

impl TelemetryListener for ReloadLog {
    fn event(&self, event: &TelemetryEvent) {
        if !event.name.starts_with("kasmina.plugin.reload") {
            return;
        }
        let logged = match event.level {
            TelemetryLevel::Info => tracing::enabled!(target: "kasmina::telemetry::hub", tracing::Level::INFO),
            TelemetryLevel::Warning => tracing::enabled!(target: "kasmina::telemetry::hub", tracing::Level::WARN),
            TelemetryLevel::Error | TelemetryLevel::Critical => {
                tracing::enabled!(target: "kasmina::telemetry::hub", tracing::Level::ERROR)
            }
        };
        if !logged {
            // Never panics: a closed stderr loses the line, not the reload.
            let _ = writeln!(io::stderr(), "kasmina: {} {}: {}", event.level.as_str(), event.name, event.message);
        }
    }
}

/// Installs the SIGHUP handler (call inside the runtime, before announcing
/// readiness: SIGHUP's default action ends the process) and returns the
/// loop that serves reloads; spawn it, and abort it at shutdown.
pub fn on_sighup(host: Arc<DaemonHost>, settings_file: Option<PathBuf>) -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            let (host, file) = (Arc::clone(&host), settings_file.clone());
            // Off the runtime (it reads a file and runs the canary), and
            // awaited: never two reloads at once.
            let reload = tokio::task::spawn_blocking(move || host.host().reload_plugins(file.as_deref(), "SIGHUP"));
            if let Err(err) = reload.await {
                tracing::error!(%err, "kasmina.plugin.reload_panicked");
                let _ = writeln!(io::stderr(), "kasmina: ERROR plugin reload panicked: {err}");
            }
        }
    })
}
