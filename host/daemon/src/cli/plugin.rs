//! `kasmina plugin check` and `kasmina plugin info`: the conformance kit.

use std::path::PathBuf;
use std::process::ExitCode;

use kasmina_plugin_host::conformance::{self, CheckOptions};

/// Plugin verbs.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Run the conformance checks (load, API version, imports, fuzz, output
    /// caps, determinism, safety invariants, latency); exits non-zero on any failure.
    Check {
        /// Plugin component (.wasm).
        file: PathBuf,
        /// Only the quick smoke subset (what hot reload runs).
        #[arg(long)]
        quick: bool,
        /// Directory of precompiled plugin artifacts.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Print what a plugin declares: name, version, API version, kind, imports, exports.
    Info {
        /// Plugin component (.wasm).
        file: PathBuf,
        /// Directory of precompiled plugin artifacts.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

/// Runs a plugin verb.
pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Check { file, quick, cache } => {
            anyhow::ensure!(file.is_file(), "{} is not a file; pass the plugin's .wasm component", file.display());
            let options = if quick { CheckOptions::smoke() } else { CheckOptions::default() };
            let report = conformance::check_file(&file, &cache.unwrap_or_else(super::plugin_cache_dir), &options);
            println!("{report}");
            if let Some(l) = report.latency {
                println!("latency: p50 {:?}, p99 {:?} over {} calls", l.p50, l.p99, l.samples);
            }
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PluginCommand::Info { file, cache } => {
            let summary =
                conformance::info_file(&file, &cache.unwrap_or_else(super::plugin_cache_dir)).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (run `kasmina plugin check` for the full report)", file.display())
                })?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
