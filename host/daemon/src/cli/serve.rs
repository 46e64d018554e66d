//! `kasmina serve`: the daemon.
//!
//! Order of start-up, so every failure is reported before anything runs:
//! settings → socket bound (a busy or foreign path is refused) → host built
//! (plugins, Urza, key) → journal recovered and seed state restored →
//! listeners. Prints `ready: …` on stdout once it accepts requests. SIGINT
//! or SIGTERM: stop accepting, answer what was read (bounded by the grace
//! period), write a final journal snapshot, stop prefetch, exit 0. SIGHUP:
//! re-read the settings file and hot-reload the policy plugins whose
//! `[plugins]` refs changed (`kasmina_daemon::reload_signal`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kasmina::HostError;
use kasmina_daemon::{DaemonHost, ServerSettings, StartError, StartOptions, UnixSocket};

use super::output::hinted;
use kasmina_daemon::http::HttpState;
use kasmina_daemon::reload_signal::{self, ReloadLog};
use kasmina_daemon::status_page::{LiveFeed, Observed};
use leyline::api::{KasminaApi, TelemetryListener};
use tokio::sync::watch;

/// Arguments of `kasmina serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Host settings (TOML); see `kasmina settings check`. Defaults apply when omitted.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Unix socket to create (mode 0600).
    #[arg(long, env = "KASMINA_SOCKET", default_value = "kasminad.sock")]
    pub socket: PathBuf,
    /// Also serve on this loopback TCP address, e.g. 127.0.0.1:7411.
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// Urza library directory (overrides kernels.urza_dir).
    #[arg(long, env = "KASMINA_URZA")]
    pub urza: Option<PathBuf>,
    /// Decision journal directory: accepted commands, transitions and gate
    /// verdicts are fsynced here and seed state is restored from it on start.
    /// Without it nothing survives a restart.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// HMAC key file (hex); overrides security.key_file and the environment.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics and the live status
    /// page at http://ADDR/ (read-only; loopback addresses unless
    /// --metrics-public).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Allow a non-loopback --metrics address, e.g. 0.0.0.0:9464 for a
    /// Prometheus server on another machine. The page and metrics are
    /// read-only but unauthenticated: anyone who can reach the address sees
    /// seed ids, stages and command counts. The control plane itself
    /// (--tcp) stays loopback only.
    #[arg(long, requires = "metrics")]
    pub metrics_public: bool,
    /// Journal: compact once the journal exceeds this many bytes.
    #[arg(long, default_value_t = kasmina_journal::DEFAULT_COMPACT_AFTER_BYTES)]
    pub journal_compact_bytes: u64,
    /// Journal: rotate segments at this many bytes.
    #[arg(long, default_value_t = kasmina_journal::DEFAULT_SEGMENT_BYTES)]
    pub journal_segment_bytes: u64,
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let settings = match &args.settings {
        Some(path) => kasmina::Settings::from_file(path).map_err(|e| {
            hinted(
                format!("settings {} refused", path.display()),
                format!("`kasmina settings check {}` names every bad key", path.display()),
                e,
            )
        })?,
        None => kasmina::Settings::default(),
    };
    let server_settings = ServerSettings {
        shutdown_grace: std::time::Duration::from_millis(settings.kernels.shutdown_timeout_ms),
        telemetry_capacity: settings.telemetry.queue_capacity,
        critical_capacity: settings.telemetry.critical_capacity,
        frame_timeout: std::time::Duration::from_millis(settings.daemon.frame_timeout_ms),
        idle_timeout: Some(std::time::Duration::from_secs(settings.daemon.idle_timeout_s)),
        ..ServerSettings::default()
    };
    let socket = UnixSocket::bind(&args.socket).map_err(|e| {
        hinted(
            format!("cannot serve on {}", args.socket.display()),
            "pick another --socket path, or stop the daemon that holds this one",
            e,
        )
    })?;
    let mut options = StartOptions::new(settings);
    options.urza_dir = args.urza.clone();
    options.journal_dir = args.journal.clone();
    options.journal_config.compact_after_bytes = args.journal_compact_bytes;
    options.journal_config.segment_bytes = args.journal_segment_bytes;
    if let Some(path) = &args.key_file {
        options.key = Some(kasmina::HmacKey::from_file(path).map_err(|e| {
            hinted(
                format!("cannot load the HMAC key {}", path.display()),
                "create one with `kasmina keygen <file>` and pass it with --key-file",
                e,
            )
        })?);
    }
    let (host, report) =
        DaemonHost::start(options).map_err(|e| hinted("the daemon could not start", start_hint(&e, &args), e))?;
    let plugins: Vec<String> = host.host().plugins_at_start().iter().map(ToString::to_string).collect();
    eprintln!("kasmina: plugins: {}", plugins.join(", "));
    match &report {
        Some(report) => eprintln!("kasmina: {report}"),
        None => eprintln!("kasmina: WARNING no --journal: decisions are not persisted and nothing survives a restart"),
    }
    let host = Arc::new(host);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(serve(socket, Arc::clone(&host), server_settings, &args));
    // Final base for the next start; every acknowledged call is already durable.
    if let Err(err) = host.checkpoint() {
        eprintln!("kasmina: final journal snapshot failed: {err}");
    }
    host.host().shutdown();
    result?;
    eprintln!("kasmina: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    socket: UnixSocket,
    host: Arc<DaemonHost>,
    settings: ServerSettings,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    // The status page sees telemetry by push and step reports through a
    // tap on the served API (it changes nothing on the way).
    let feed = Arc::new(LiveFeed::default());
    let api: Arc<dyn KasminaApi> = if args.metrics.is_some() {
        host.subscribe_telemetry(Arc::clone(&feed) as Arc<dyn TelemetryListener>)
            .context("subscribing the status page to telemetry")?;
        Arc::new(Observed::new(host.clone(), Arc::clone(&feed)))
    } else {
        host.clone()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    if let Some(addr) = args.tcp {
        let listener = kasmina_daemon::bind_tcp(addr).await.map_err(|e| {
            hinted(format!("cannot serve on tcp://{addr}"), "TCP is loopback only, e.g. --tcp 127.0.0.1:7411", e)
        })?;
        tasks.push(tokio::spawn(kasmina_daemon::run(
            listener,
            Arc::clone(&api),
            settings.clone(),
            stopped(stop_rx.clone()),
        )));
        eprintln!("kasmina: also serving on tcp://{addr}");
    }
    let metrics = match args.metrics {
        Some(addr) => {
            let bound = if args.metrics_public {
                kasmina_daemon::bind_tcp_public(addr).await
            } else {
                kasmina_daemon::bind_tcp(addr).await
            };
            let listener = bound.map_err(|e| {
                hinted(
                    format!("cannot serve metrics on {addr}"),
                    "metrics and the status page bind to loopback (e.g. --metrics 127.0.0.1:9464) unless \
                     --metrics-public is given",
                    e,
                )
            })?;
            if args.metrics_public && !addr.ip().is_loopback() {
                eprintln!(
                    "kasmina: warning: metrics and the status page are served on {addr} without authentication \
                     (--metrics-public)"
                );
            }
            let addr = listener.local_addr().unwrap_or(addr);
            eprintln!("kasmina: metrics at http://{addr}/metrics, status page at http://{addr}/");
            let state = HttpState::new(Arc::clone(&host), Arc::clone(&feed));
            Some(tokio::spawn(kasmina_daemon::http::serve(listener, state, stopped(stop_rx.clone()))))
        }
        None => None,
    };
    let path = socket.path().to_path_buf();
    let unix = tokio::spawn(kasmina_daemon::serve_bound(socket, api, settings, stopped(stop_rx)));
    // Handlers installed before "ready", so a signal right after it is caught.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    host.subscribe_telemetry(Arc::new(ReloadLog)).context("subscribing the reload log to telemetry")?;
    let reloads = tokio::spawn(
        reload_signal::on_sighup(Arc::clone(&host), args.settings.clone())
            .context("installing the SIGHUP (plugin reload) handler")?,
    );
    println!("ready: listening on {}", path.display());
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    reloads.abort();
    eprintln!("kasmina: shutting down");
    let _ = stop_tx.send(true);
    let report = unix.await.context("socket server task failed")??;
    if report.aborted_connections > 0 {
        eprintln!("kasmina: {} connections did not finish within the grace period", report.aborted_connections);
    }
    for task in tasks {
        task.await.context("TCP server task failed")??;
    }
    if let Some(m) = metrics {
        m.await.context("metrics task failed")?;
    }
    Ok(())
}

/// What to do about a start failure, by what failed: a plugin failure is
/// not answered with advice about keys and journals.
fn start_hint(err: &StartError, args: &ServeArgs) -> String {
    match err {
        StartError::Host(HostError::Key(_)) => "create a key with `kasmina keygen <file>` and pass --key-file <file> \
             (or set security.key_file, or $KASMINA_HMAC_KEY to the key's hex)"
            .to_owned(),
        StartError::Host(HostError::NoUrza) => "pass --urza DIR (publish blueprints into it with \
             `kasmina urza publish`), or set kernels.urza_dir in the settings"
            .to_owned(),
        StartError::Host(HostError::Urza(_)) => format!(
            "check the Urza library{}: `kasmina urza verify --urza DIR` reports what is wrong with it",
            args.urza.as_ref().map_or(String::new(), |p| format!(" {}", p.display()))
        ),
        StartError::Host(HostError::Plugin { .. }) => "check the plugin's path and sha256 under [plugins] in the \
             settings; `kasmina plugin check <file>` runs the full conformance report"
            .to_owned(),
        StartError::Host(HostError::Settings(_)) => "`kasmina settings check <file>` names every bad key".to_owned(),
        StartError::Host(HostError::Kernels(_)) => {
            "the kernel load manager could not start its workers: check memory and thread limits".to_owned()
        }
        StartError::Host(HostError::Verifier(_) | HostError::Purger(_)) => {
            "check the [security] section of the settings (`kasmina settings check <file>`)".to_owned()
        }
        StartError::Journal { dir, .. } | StartError::Restore { dir, .. } | StartError::Checkpoint { dir, .. } => {
            format!(
                "`kasmina journal inspect {}` shows what the journal holds; move it aside to start without \
                 its history",
                dir.display()
            )
        }
    }
}

/// Logs to stderr; ANSI colour only when stderr is a terminal and
/// `NO_COLOR` is not set.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(super::output::stderr_colour())
        .with_writer(std::io::stderr)
        .try_init();
}
