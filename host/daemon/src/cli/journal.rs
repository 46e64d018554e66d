//! `kasmina journal inspect` and `kasmina journal replay`: read-only tools
//! over a decision journal directory (see `kasmina_daemon::journal_tools`).

use super::output::outln;
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
        /// Print JSON Lines instead: a header object (segments, records,
        /// torn tail), then one object per record (`seq`, `kind`, `record`;
        /// times stay epoch ms; a NaN is written as null).
        #[arg(long)]
        json: bool,
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
        /// Print one JSON object (counts and every disagreement) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a journal verb.
pub fn run(cmd: JournalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JournalCommand::Inspect { dir, seed, kind, inputs, json } => {
            const KINDS: [&str; 5] = ["command_accepted", "transition", "gate_verdict", "snapshot", "progress"];
            if let Some(k) = &kind {
                anyhow::ensure!(KINDS.contains(&k.as_str()), "--kind {k:?}: use one of {}", KINDS.join(", "));
            }
            let (entries, report) = journal_tools::read_journal(&dir)?;
            let wanted = |record: &leyline::journal::JournalRecord| {
                seed.as_deref().is_none_or(|s| record.seed_id() == Some(s))
                    && kind.as_deref().is_none_or(|k| record.kind() == k)
            };
            if json {
                let torn = report.torn_tail.as_ref().map(|t| {
                    serde_json::json!({
                        "segment": t.segment.display().to_string(),
                        "offset": t.offset,
                        "bytes_cut": t.bytes_cut,
                        "defect": t.defect.to_string(),
                    })
                });
                let header = serde_json::json!({
                    "dir": dir.display().to_string(),
                    "segments": report.segments,
                    "records": report.records,
                    "torn_tail": torn,
                });
                outln!("{header}");
                for entry in entries.iter().filter(|e| wanted(&e.record)) {
                    let line =
                        serde_json::json!({ "seq": entry.seq.0, "kind": entry.record.kind(), "record": entry.record });
                    outln!("{line}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            outln!("{}: {} segments, {} intact records", dir.display(), report.segments, report.records);
            if let Some(t) = &report.torn_tail {
                outln!(
                    "torn tail: {} bytes at offset {} of {} ({}); the daemon cuts it on its next start",
                    t.bytes_cut,
                    t.offset,
                    t.segment.display(),
                    t.defect
                );
            }
            for entry in &entries {
                let record = &entry.record;
                if !wanted(record) {
                    continue;
                }
                outln!("{}", journal_tools::describe(entry));
                if inputs && let leyline::journal::JournalRecord::GateVerdict { inputs, .. } = record {
                    outln!("{}", journal_tools::describe_inputs(inputs).trim_end_matches('\n'));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JournalCommand::Replay { dir, plugin, fail_on_disagreement, deadline_ms, cache, json } => {
            let (entries, _) = journal_tools::read_journal(&dir)?;
            let limits = PluginLimits { deadline: Duration::from_millis(deadline_ms), ..PluginLimits::default() };
            let candidate =
                journal_tools::load_candidate(&plugin, &cache.unwrap_or_else(super::plugin_cache_dir), limits)?;
            let report = journal_tools::replay(&entries, &candidate)?;
            let failed = fail_on_disagreement && !report.disagreements.is_empty();
            if json {
                let disagreements: Vec<serde_json::Value> = report
                    .disagreements
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "seq": d.seq, "seed_id": d.seed_id, "gate": d.gate.as_str(), "step": d.step,
                            "old_passed": d.old_passed, "old_reason": d.old_reason,
                            "new_passed": d.new_passed, "new_reason": d.new_reason,
                            "override_invariant": d.override_invariant, "judgement": d.judgement,
                        })
                    })
                    .collect();
                let value = serde_json::json!({
                    "plugin": plugin.display().to_string(),
                    "decisions": report.decisions,
                    "agreements": report.agreements,
                    "host_decided": report.host_decided,
                    "unsafe_passes": report.unsafe_passes(),
                    "disagreements": disagreements,
                });
                outln!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
            }
            for d in &report.disagreements {
                outln!("DISAGREE {d}");
            }
            outln!(
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
