//! `kasmina plugin check` and `kasmina plugin info`: the conformance kit;
//! `kasmina plugin new`: a plugin crate to start from ([`super::plugin_new`]);
//! `kasmina plugin reload`: hot reload of a running daemon
//! ([`super::plugin_reload`]).

use super::output::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use kasmina_plugin_host::conformance::{self, CheckOptions};

/// Plugin verbs.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin crate (Cargo.toml against the SDK, a policy with one documented rule,
    /// unit tests, build instructions) that builds to a component and passes `plugin check` as written.
    #[command(after_help = super::plugin_new::AFTER_HELP)]
    New(super::plugin_new::NewArgs),
    /// Make a running `kasmina serve` re-read its settings file and hot-swap the policy plugins
    /// that changed (each behind its canary; a refused one leaves the previous serving); prints
    /// the outcome. Exit 0: all reloaded, 1: something refused, 2: no outcome in time.
    #[command(after_help = super::plugin_reload::AFTER_HELP)]
    Reload(super::plugin_reload::ReloadArgs),
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
        /// Wall-clock deadline per plugin call, ms (1..=10000). The default is
        /// the host's own (10 ms); raise it on a loaded machine, where a call
        /// can be descheduled past 10 ms. The cost verdict is in fuel either way.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        deadline_ms: Option<u64>,
        /// Print one JSON object (every check, the cost and latency) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print what a plugin declares: name, version, API version, kind, imports, exports.
    Info {
        /// Plugin component (.wasm).
        file: PathBuf,
        /// Directory of precompiled plugin artifacts.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a plugin verb.
pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New(args) => super::plugin_new::run(args),
        PluginCommand::Reload(args) => super::plugin_reload::run(args),
        PluginCommand::Check { file, quick, cache, deadline_ms, json } => {
            anyhow::ensure!(file.is_file(), "{} is not a file; pass the plugin's .wasm component", file.display());
            let mut options = if quick { CheckOptions::smoke() } else { CheckOptions::default() };
            if let Some(ms) = deadline_ms {
                options.limits.deadline = std::time::Duration::from_millis(ms);
            }
            let report = conformance::check_file(&file, &cache.unwrap_or_else(super::plugin_cache_dir), &options);
            if json {
                let checks: Vec<serde_json::Value> = report
                    .checks
                    .iter()
                    .map(|c| serde_json::json!({ "name": c.name, "status": format!("{:?}", c.status).to_uppercase(), "detail": c.detail }))
                    .collect();
                let latency = report.latency.map(|l| {
                    serde_json::json!({
                        "fuel_max": l.fuel_max, "fuel_p50": l.fuel_p50, "fuel_budget": l.fuel_budget,
                        "wall_p50_seconds": l.p50.as_secs_f64(), "wall_p99_seconds": l.p99.as_secs_f64(),
                        "samples": l.samples,
                    })
                });
                let value = serde_json::json!({
                    "file": file.display().to_string(),
                    "passed": report.passed(),
                    "checks": checks,
                    "latency": latency,
                });
                outln!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
            outln!("{report}");
            if let Some(l) = report.latency {
                outln!(
                    "cost: at most {} fuel per call (median {}, budget {}); wall clock p50 {:?}, p99 {:?} over {} calls",
                    l.fuel_max,
                    l.fuel_p50,
                    l.fuel_budget,
                    l.p50,
                    l.p99,
                    l.samples
                );
            }
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PluginCommand::Info { file, cache, json } => {
            let summary =
                conformance::info_file(&file, &cache.unwrap_or_else(super::plugin_cache_dir)).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (run `kasmina plugin check` for the full report)", file.display())
                })?;
            if json {
                let id = &summary.identity;
                let value = serde_json::json!({
                    "file": id.path.display().to_string(),
                    "sha256": id.sha256,
                    "name": id.info.name,
                    "version": id.info.version,
                    "api_version": id.info.api_version,
                    "api_version_current": id.api == kasmina_plugin_host::ApiVersion::CURRENT,
                    "served_api_versions": kasmina_plugin_host::SERVED_VERSIONS.map(|v| v.as_str()),
                    "kind": id.info.kind.to_string(),
                    "exports": id.exports,
                    "imports": id.imports,
                });
                outln!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                outln!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
