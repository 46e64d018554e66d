//! The verbs of `kasmina` and their dispatch.
//!
//! - `serve` ([`serve`]): run the daemon;
//! - `status`, `seeds`, `send`, `register`, `telemetry` ([`client`]): talk
//!   to a running daemon over its socket;
//! - `journal inspect|replay` ([`journal`]), `plugin check|info`
//!   ([`plugin`]), `urza publish|list|verify|show` ([`urza`]): offline
//!   tools on files;
//! - `plugin new` ([`plugin_new`]): a plugin crate to start from;
//! - `keygen`, `settings check` ([`keys`], [`settings`]);
//! - [`output`]: what every verb shares about writing to a terminal (a
//!   closed pipe ends quietly, errors with hints, colour rules).
//!
//! Every listing verb takes `--json` (one JSON document, or JSON Lines
//! where the listing streams) for scripts; human output shows local
//! RFC 3339 times.

mod client;
mod journal;
mod keys;
pub mod output;
mod plugin;
mod plugin_new;
mod plugin_reload;
mod serve;
mod settings;
mod urza;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kasmina: the execution layer of morphogenetic training.
#[derive(Debug, Parser)]
#[command(name = "kasmina", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a running daemon listens (client verbs).
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// The daemon's Unix socket (as given to `kasmina serve --socket`).
    #[arg(long, env = "KASMINA_SOCKET", default_value = "kasminad.sock")]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: serve the control plane on a Unix socket (and optionally loopback TCP).
    Serve(serve::ServeArgs),
    /// Show the daemon's status: run, seeds, command counts, last step.
    Status(client::StatusArgs),
    /// List every seed: stage, blueprint, blend mode, alpha, health.
    Seeds(client::SeedsArgs),
    /// Sign and send a command from a TOML or JSON file; prints the outcome.
    Send(client::SendArgs),
    /// Register a trainer's model (sites and seed slots) from a TOML or JSON file.
    Register(client::RegisterArgs),
    /// Print telemetry events as the daemon publishes them.
    Telemetry(client::TelemetryArgs),
    /// Read or replay a decision journal.
    #[command(subcommand)]
    Journal(journal::JournalCommand),
    /// Start, check or describe a policy plugin (.wasm component), or reload a running daemon's.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Manage an Urza blueprint library.
    #[command(subcommand)]
    Urza(urza::UrzaCommand),
    /// Write a new random 32-byte HMAC key (hex) to a file with mode 0600.
    Keygen(keys::KeygenArgs),
    /// Inspect and validate host settings.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
}

/// Runs the verb; `Ok` carries the exit code of verbs that judge something.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => client::status(args),
        Command::Seeds(args) => client::seeds(args),
        Command::Send(args) => client::send(args),
        Command::Register(args) => client::register(args),
        Command::Telemetry(args) => client::telemetry(args),
        Command::Journal(cmd) => journal::run(cmd),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Urza(cmd) => urza::run(cmd),
        Command::Keygen(args) => keys::keygen(args),
        Command::Settings(cmd) => settings::run(cmd),
    }
}

/// Default directory of precompiled plugin artifacts.
pub fn plugin_cache_dir() -> PathBuf {
    kasmina::host::default_cache_root().join("plugin-cache")
}

/// Reads a small text file, refusing anything over `cap` bytes.
pub fn read_capped(path: &std::path::Path, cap: u64, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    anyhow::ensure!(meta.len() <= cap, "{what} {} is {} bytes; the cap is {cap}", path.display(), meta.len());
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))
}

/// Parses TOML or JSON by the file's extension.
pub fn parse_toml_or_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    text: &str,
    what: &str,
) -> anyhow::Result<T> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{what} {} is not valid: {e}", path.display()))
        }
        Some("json") => {
            serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{what} {} is not valid: {e}", path.display()))
        }
        _ => anyhow::bail!("{what} {} must end in .toml or .json", path.display()),
    }
}
