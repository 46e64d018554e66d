//! `kasmina plugin reload`: asks a running `kasmina serve` to re-read its
//! settings file and hot-swap the policy plugins that changed, and prints
//! what it did.
//!
//! The trigger is the daemon's SIGHUP (the wire protocol has no reload
//! request, and a reload needs no new one): the verb finds the daemon's
//! process through the socket's peer credentials — the process that
//! listens on the socket the operator names, never a pid file that could
//! be stale — subscribes to its telemetry first, sends the signal, and
//! waits for the reload's own events (`kasmina.plugin.reload_*`,
//! `kasmina.plugin.reloaded`). Exit status: 0 when every changed slot was
//! reloaded, 1 when a plugin or the settings file was refused (the
//! previous plugins keep serving), 2 when no outcome arrived in time.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use kasmina_client::{ClientSettings, DaemonClient};
use leyline::protocol::Role;
use leyline::{TelemetryEvent, TelemetryLevel};

use super::SocketArg;
use super::output::outln;

/// Examples shown by `kasmina plugin reload --help`.
pub const AFTER_HELP: &str = "Examples:
  # after editing [plugins] in the settings file the daemon was started with
  kasmina plugin reload --socket /run/kasmina/kasminad.sock
  # for scripts: one JSON object per reload event, exit status 0 / 1 / 2
  kasmina plugin reload --socket kasminad.sock --json";

/// Arguments of `kasmina plugin reload`.
#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// How long to wait for the reload's outcome, ms (a reload compiles the
    /// new plugin and runs its canary: tens of milliseconds to seconds).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// Print each reload event as JSON (JSON Lines) instead of text.
    #[arg(long)]
    json: bool,
}

/// The process listening on `socket` (the Unix socket's peer credentials).
fn daemon_pid(socket: &std::path::Path) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
            format!("is `kasmina serve --socket {}` running? (or pass --socket / set KASMINA_SOCKET)", socket.display())
        })?;
        let pid = stream.peer_cred()?.pid();
        pid.filter(|p| *p > 0).with_context(|| format!("the process behind {} did not say its pid", socket.display()))
    })
}

/// Whether `event` ends a reload: its summary, or the settings refused.
fn outcome(event: &TelemetryEvent) -> Option<bool> {
    match event.name.as_str() {
        "kasmina.plugin.reload_finished" => {
            Some(event.attributes.get("refused").map(ToString::to_string).as_deref() == Some("0"))
        }
        "kasmina.plugin.reload_settings_refused" => Some(false),
        _ => None,
    }
}

/// Runs `kasmina plugin reload`.
pub fn run(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let socket = &args.socket.socket;
    let pid = daemon_pid(socket)?;
    // Subscribed before the signal, so no event of this reload is missed.
    let observer =
        DaemonClient::connect_unix(socket, Role::Observer, "kasmina plugin reload", ClientSettings::default())
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let stream = observer.subscribe_telemetry(TelemetryLevel::Info)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in stream {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .context("cannot run `kill` to send SIGHUP to the daemon")?;
    anyhow::ensure!(status.success(), "`kill -HUP {pid}` failed ({status}): is the daemon yours to signal?");
    if !args.json {
        outln!("sent SIGHUP to kasmina serve (pid {pid}); waiting for the reload");
    }
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    loop {
        let event = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(event)) => event,
            Ok(Err(err)) => anyhow::bail!("the daemon's telemetry stream ended before the reload finished: {err}"),
            Err(_) => {
                eprintln!(
                    "kasmina: no reload outcome within {} ms; see `kasmina telemetry` or the daemon's stderr",
                    args.timeout_ms
                );
                return Ok(ExitCode::from(2));
            }
        };
        if !event.name.starts_with("kasmina.plugin.reload") {
            continue;
        }
        if args.json {
            outln!("{}", serde_json::to_string(&event)?);
        } else {
            outln!("{:<8} {}", event.level.as_str(), event.message);
        }
        if let Some(all_reloaded) = outcome(&event) {
            return Ok(if all_reloaded { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
    }
}
