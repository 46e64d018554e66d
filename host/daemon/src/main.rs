//! `kasmina`: the operator's command line.
//!
//! Verbs are added as their subsystems land; each has `--help`.
//! - `kasmina settings check <file>`: validate a host settings file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kasmina: the execution layer of morphogenetic training.
#[derive(Debug, Parser)]
#[command(name = "kasmina", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and validate host settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
}

#[derive(Debug, Subcommand)]
enum SettingsCommand {
    /// Parse and validate a TOML settings file; unknown keys and bad values are errors naming the key.
    Check {
        /// Settings file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Settings(SettingsCommand::Check { file }) => check_settings(&file),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_settings(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let settings = kasmina::Settings::from_file(file)?;
    println!(
        "{}: valid (freshness window {} s, nonce TTL {} s, embargo {} s)",
        file.display(),
        settings.security.freshness_window_s,
        settings.security.nonce_ttl_s,
        settings.lifecycle.embargo_s
    );
    Ok(ExitCode::SUCCESS)
}
