//! Verbs that talk to a running daemon: `status`, `seeds`, `send`,
//! `register`, `telemetry`.

use super::output::outln;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use kasmina_client::{ClientSettings, CommandBuilder, DaemonClient, HmacKey};
use leyline::api::{HostRegistration, KasminaApi};
use leyline::protocol::Role;
use leyline::{CommandPayload, TelemetryLevel};
use serde::Deserialize;

use super::{SocketArg, parse_toml_or_json, read_capped};

/// Cap on a command or registration file.
const INPUT_FILE_CAP: u64 = 1 << 20;

fn connect(socket: &SocketArg, role: Role) -> anyhow::Result<DaemonClient> {
    DaemonClient::connect_unix(&socket.socket, role, "kasmina-cli", ClientSettings::default()).with_context(|| {
        format!(
            "is `kasmina serve --socket {}` running? (or pass --socket / set KASMINA_SOCKET)",
            socket.socket.display()
        )
    })
}

/// Arguments of `kasmina status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Print JSON (one object: the server and the host's status) instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints the daemon's status.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.socket, Role::Observer)?;
    let s = client.status()?;
    if args.json {
        let value = serde_json::json!({ "server": client.server().to_string(), "status": s });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("server:            {}", client.server());
    outln!("contract version:  {}", s.contract_version);
    outln!("training run:      {}", s.training_run_id.as_deref().unwrap_or("(no trainer registered)"));
    outln!("seeds:             {}", s.seeds);
    outln!("commands:          {} accepted, {} rejected", s.commands_accepted, s.commands_rejected);
    outln!("last step:         {}", s.last_step.map_or_else(|| "(none)".to_owned(), |n| n.to_string()));
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `kasmina seeds`.
#[derive(Debug, clap::Args)]
pub struct SeedsArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Lists seeds.
pub fn seeds(args: SeedsArgs) -> anyhow::Result<ExitCode> {
    let seeds = connect(&args.socket, Role::Observer)?.seed_states()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&seeds)?);
        return Ok(ExitCode::SUCCESS);
    }
    if seeds.is_empty() {
        outln!(
            "no seeds: a trainer registers its slots first (`kasmina register <file>` or the trainer's register_host)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<16} {:<12} {:<13} {:<20} {:<10} {:>6} {:>6} {:<9} paused",
        "SEED",
        "SITE",
        "STAGE",
        "BLUEPRINT",
        "BLEND",
        "ALPHA",
        "EPOCH",
        "HEALTH"
    );
    for s in seeds {
        outln!(
            "{:<16} {:<12} {:<13} {:<20} {:<10} {:>6.3} {:>6} {:<9} {}",
            s.seed_id,
            s.site,
            s.stage.as_str(),
            s.blueprint_id.as_deref().unwrap_or("-"),
            s.blend_mode.map_or("-", |m| m.as_str()),
            s.alpha,
            s.epoch,
            format!("{:?}", s.health),
            s.paused
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A command as written by an operator: the command without its
/// signature; `command_id` and `issued_at_ms` are filled when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandFile {
    version: Option<u32>,
    command_id: Option<String>,
    target_seed_id: String,
    execution_deadline_ms: Option<u64>,
    issued_at_ms: Option<u64>,
    issued_by: String,
    payload: CommandPayload,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Arguments of `kasmina send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Command file (.toml or .json); see examples/commands/.
    pub file: PathBuf,
    /// HMAC key file (hex); default: $KASMINA_HMAC_KEY.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArg,
}

/// Signs and sends a command; exit 0 if accepted, 1 if rejected.
pub fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let text = read_capped(&args.file, INPUT_FILE_CAP, "command file")?;
    let file: CommandFile = parse_toml_or_json(&args.file, &text, "command file")?;
    let key = match &args.key_file {
        Some(path) => HmacKey::from_file(path)?,
        None => HmacKey::from_env(kasmina::settings::defaults::HMAC_KEY_ENV)
            .context("pass --key-file <file> (create one with `kasmina keygen <file>`) or set KASMINA_HMAC_KEY")?,
    };
    // What the file leaves out, the builder fills: a fresh `cli-` id, now.
    let mut builder = CommandBuilder::new(file.target_seed_id, file.payload)
        .command_id_prefix("cli")
        .issued_by(file.issued_by)
        .deadline_ms(file.execution_deadline_ms)
        .annotations(file.annotations);
    if let Some(version) = file.version {
        builder = builder.version(version);
    }
    if let Some(id) = file.command_id {
        builder = builder.command_id(id);
    }
    if let Some(at) = file.issued_at_ms {
        builder = builder.issued_at_ms(Some(at));
    }
    let command = builder.sign(&key);
    let outcome = connect(&args.socket, Role::Controller)?.submit_command(command.clone())?;
    if args.json {
        let value = serde_json::json!({ "command_id": command.command_id, "outcome": outcome });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(if outcome.accepted { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let verdict = if outcome.accepted { "accepted" } else { "REJECTED" };
    outln!(
        "{verdict}: command {} ({} on {})",
        command.command_id,
        command.command_type().as_str(),
        command.target_seed_id
    );
    // The outcome's own reason code first; the attributes (which may hold
    // a gate's `verdict_reason`) under their own heading, so the two are
    // never read as one another.
    if let Some(reason) = outcome.reason {
        outln!("  outcome reason: {}", reason.as_str());
    }
    if !outcome.attributes.is_empty() {
        outln!("  attributes:");
        for (k, v) in &outcome.attributes {
            outln!("    {k} = {v}");
        }
    }
    Ok(if outcome.accepted { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Arguments of `kasmina register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Registration file (.toml or .json): training_run_id, sites, slots.
    pub file: PathBuf,
    #[command(flatten)]
    socket: SocketArg,
}

/// Registers a model as a trainer would.
pub fn register(args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let text = read_capped(&args.file, INPUT_FILE_CAP, "registration file")?;
    let registration: HostRegistration = parse_toml_or_json(&args.file, &text, "registration file")?;
    let (run, sites, slots) =
        (registration.training_run_id.clone(), registration.sites.len(), registration.slots.len());
    connect(&args.socket, Role::Trainer)?.register_host(registration)?;
    outln!("registered run {run}: {sites} sites, {slots} seed slots");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `kasmina telemetry`.
#[derive(Debug, clap::Args)]
pub struct TelemetryArgs {
    /// Keep printing until the daemon stops (or Ctrl-C).
    #[arg(long)]
    follow: bool,
    /// Without --follow: how long to listen before exiting, ms.
    #[arg(long, default_value_t = 2_000)]
    wait_ms: u64,
    /// Lowest level shown: info, warning, error or critical.
    #[arg(long, default_value = "info")]
    level: String,
    /// Print each event as JSON (JSON Lines; `timestamp_ms` stays epoch milliseconds).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArg,
}

/// Prints events (CRITICAL ones arrive first).
pub fn telemetry(args: TelemetryArgs) -> anyhow::Result<ExitCode> {
    let level = match args.level.to_ascii_lowercase().as_str() {
        "info" => TelemetryLevel::Info,
        "warning" => TelemetryLevel::Warning,
        "error" => TelemetryLevel::Error,
        "critical" => TelemetryLevel::Critical,
        other => anyhow::bail!("--level {other:?}: use info, warning, error or critical"),
    };
    let client = connect(&args.socket, Role::Observer)?;
    let stream = client.subscribe_telemetry(level)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in stream {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_millis(args.wait_ms);
    loop {
        let next = if args.follow {
            rx.recv().map_err(|_| ())
        } else {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|_| ())
        };
        match next {
            Ok(Ok(event)) if args.json => outln!("{}", serde_json::to_string(&event)?),
            Ok(Ok(e)) => {
                let attrs: Vec<String> = e.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                outln!(
                    "{} {:<8} {} {}{} {}",
                    kasmina_daemon::human::local_time(e.timestamp_ms),
                    e.level.as_str(),
                    e.name,
                    e.seed_id.as_deref().map_or(String::new(), |s| format!("[{s}] ")),
                    e.message,
                    attrs.join(" ")
                );
            }
            Ok(Err(err)) => anyhow::bail!("telemetry stream ended: {err}"),
            Err(()) => return Ok(ExitCode::SUCCESS),
        }
    }
}
