//! `kasmina settings check`.

use super::output::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// Settings verbs.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Parse and validate a TOML settings file; unknown keys and bad values are errors naming the key.
    Check {
        /// Settings file to check.
        file: PathBuf,
    },
}

/// Runs a settings verb.
pub fn run(cmd: SettingsCommand) -> anyhow::Result<ExitCode> {
    let SettingsCommand::Check { file } = cmd;
    let settings = kasmina::Settings::from_file(&file)?;
    outln!(
        "{}: valid (freshness window {} s, nonce TTL {} s, embargo {} s)",
        file.display(),
        settings.security.freshness_window_s,
        settings.security.nonce_ttl_s,
        settings.lifecycle.embargo_s
    );
    Ok(ExitCode::SUCCESS)
}
