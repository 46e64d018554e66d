//! `kasmina journal inspect` and `kasmina journal replay`: read-only tools
//! over a decision journal directory (see `kasmina_daemon::journal_tools`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kasmina_daemon::journal_tools;
use kasmina_plugin_host::PluginLimits;

/// Journal verbs.
#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Print what a journal holds, one line per record, and any torn tail
    /// the daemon would cut on its next start (the directory is not modified).
    Inspect {
        /// Journal directory (as given to `kasmina serve --journal`).
        dir: PathBuf,
        /// Only records about this seed.
        #[arg(long)]
        seed: Option<String>,
        /// Only records of this kind: command_accepted, transition, gate_verdict, snapshot or progress.
        #[arg(long)]
        kind: Option<String>,
        /// Also print each gate verdict's recorded inputs.
        #[arg(long)]
        inputs: bool,
    },
    /// Re-run every recorded gate decision through a candidate gate plugin
    /// and report agreements and disagreements (seed, gate, old verdict, the
    /// candidate's own verdict and what the host's safety invariants would
    /// make of it); a pass an invariant forbids counts as a disagreement.
    Replay {
        /// Journal directory.
        dir: PathBuf,
        /// Candidate gate plugin (.wasm component).
        #[arg(long)]
        plugin: PathBuf,
        /// Exit non-zero when any decision differs.
        #[arg(long)]
        fail_on_disagreement: bool,
        /// Per-call deadline for the candidate, ms.
        #[arg(long, default_value_t = 100)]
        deadline_ms: u64,
        /// Directory of precompiled plugin artifacts.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

/// Runs a journal verb.
pub fn run(cmd: JournalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JournalCommand::Inspect { dir, seed, kind, inputs } => {
            const KINDS: [&str; 5] = ["command_accepted", "transition", "gate_verdict", "snapshot", "progress"];
            if let Some(k) = &kind {
                anyhow::ensure!(KINDS.contains(&k.as_str()), "--kind {k:?}: use one of {}", KINDS.join(", "));
            }
            let (entries, report) = journal_tools::read_journal(&dir)?;
            println!("{}: {} segments, {} intact records", dir.display(), report.segments, report.records);
            if let Some(t) = &report.torn_tail {
                println!(
                    "torn tail: {} bytes at offset {} of {} ({}); the daemon cuts it on its next start",
                    t.bytes_cut,
                    t.offset,
                    t.segment.display(),
                    t.defect
                );
            }
            for entry in &entries {
                let record = &entry.record;
                if seed.as_deref().is_some_and(|s| record.seed_id() != Some(s))
                    || kind.as_deref().is_some_and(|k| record.kind() != k)
                {
                    continue;
                }
                println!("{}", journal_tools::describe(entry));
                if inputs && let leyline::journal::JournalRecord::GateVerdict { inputs, .. } = record {
                    print!("{}", journal_tools::describe_inputs(inputs));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JournalCommand::Replay { dir, plugin, fail_on_disagreement, deadline_ms, cache } => {
            let (entries, _) = journal_tools::read_journal(&dir)?;
            let limits = PluginLimits { deadline: Duration::from_millis(deadline_ms), ..PluginLimits::default() };
            let candidate =
                journal_tools::load_candidate(&plugin, &cache.unwrap_or_else(super::plugin_cache_dir), limits)?;
            let report = journal_tools::replay(&entries, &candidate)?;
            for d in &report.disagreements {
                println!("DISAGREE {d}");
            }
            println!(
                "{} gate decisions replayed through {}: {} agree, {} disagree ({} unsafe passes), {} failed by the host before any plugin",
                report.decisions,
                plugin.display(),
                report.agreements,
                report.disagreements.len(),
                report.unsafe_passes(),
                report.host_decided
            );
            Ok(if fail_on_disagreement && !report.disagreements.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
