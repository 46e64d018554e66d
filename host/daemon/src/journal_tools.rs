//! Offline journal tools: `kasmina journal inspect` and `kasmina journal
//! replay --plugin candidate.wasm`.
//!
//! Both read a journal without touching it: the segment files are copied
//! into a private temporary directory and recovered there, so a torn tail
//! is reported exactly as the daemon would cut it while the original (which
//! a live daemon may be appending to) stays as it is.

use std::path::{Path, PathBuf};

use kasmina_journal::recovery::{SEGMENT_SUFFIX, list_segments};
use kasmina_journal::{DecisionJournal, Entry, JournalError, RecoveryReport, decision_journal_config};
use kasmina_plugin_host::PluginLimits;
use kasmina_plugin_host::gate::GatePlugin;
use kasmina_plugin_host::runtime::{Pin, PluginRuntime, PluginSpec, RuntimeConfig};
use leyline::GateId;
use leyline::journal::JournalRecord;

use crate::gate_record::{self, GateRecordError};

/// Why a journal tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The directory has no journal segments.
    #[error("{0} holds no journal segments (*{SEGMENT_SUFFIX}); pass the directory given to `kasmina serve --journal`")]
    Empty(PathBuf),
    /// Copying the journal for a read-only look failed.
    #[error("copying {path} for inspection: {source}")]
    Copy {
        /// File.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The journal is damaged beyond a torn tail, or of another schema.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The candidate plugin could not be loaded.
    #[error("candidate plugin {path}: {detail}")]
    Plugin {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A recorded gate verdict's inputs do not parse.
    #[error("journal record {seq}: {source}")]
    Record {
        /// Sequence number.
        seq: u64,
        /// What is wrong.
        source: GateRecordError,
    },
}

/// Reads every intact record of the journal in `dir` without modifying it.
pub fn read_journal(dir: &Path) -> Result<(Vec<Entry<JournalRecord>>, RecoveryReport), ToolError> {
    let segments = list_segments(dir)?;
    if segments.is_empty() {
        return Err(ToolError::Empty(dir.to_owned()));
    }
    let copy = tempfile::tempdir().map_err(|source| ToolError::Copy { path: std::env::temp_dir(), source })?;
    for seg in &segments {
        let name = seg.path.file_name().map(PathBuf::from).unwrap_or_default();
        std::fs::copy(&seg.path, copy.path().join(name))
            .map_err(|source| ToolError::Copy { path: seg.path.clone(), source })?;
    }
    let (_journal, entries, mut report) = DecisionJournal::open(copy.path(), decision_journal_config())?;
    // Name the original file, not the private copy.
    if let Some(torn) = &mut report.torn_tail
        && let Some(name) = torn.segment.file_name()
    {
        torn.segment = dir.join(name);
    }
    Ok((entries, report))
}

/// One line per record for `journal inspect`.
pub fn describe(entry: &Entry<JournalRecord>) -> String {
    let seq = entry.seq;
    match &entry.record {
        JournalRecord::CommandAccepted { command, outcome, recorded_at_ms } => format!(
            "{seq:>8} {recorded_at_ms} command_accepted  {} {} on {} by {}: {}",
            command.command_id,
            command.command_type().as_str(),
            command.target_seed_id,
            command.issued_by,
            outcome.attributes.get("result").map_or("accepted", String::as_str)
        ),
        JournalRecord::Transition { seed_id, from, to, step, reason, recorded_at_ms } => {
            format!("{seq:>8} {recorded_at_ms} transition        {seed_id} {from} -> {to} at step {step}: {reason}")
        }
        JournalRecord::GateVerdict { seed_id, gate, passed, reason, inputs, step, recorded_at_ms } => format!(
            "{seq:>8} {recorded_at_ms} gate_verdict      {seed_id} {gate} {} at step {step}{} ({} inputs)",
            if *passed { "passed" } else { "failed" },
            if reason.is_empty() { String::new() } else { format!(": {reason}") },
            inputs.len()
        ),
        JournalRecord::Snapshot { seeds, recorded_at_ms } => {
            let stages: Vec<String> = seeds.iter().map(|s| format!("{}={}", s.seed_id, s.stage)).collect();
            format!("{seq:>8} {recorded_at_ms} snapshot          {} seeds: {}", seeds.len(), stages.join(" "))
        }
    }
}

/// A recorded decision the candidate judged differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// Journal sequence number.
    pub seq: u64,
    /// Seed.
    pub seed_id: String,
    /// Gate.
    pub gate: GateId,
    /// Training step of the decision.
    pub step: u64,
    /// Recorded verdict.
    pub old_passed: bool,
    /// Recorded reason.
    pub old_reason: String,
    /// Candidate's verdict.
    pub new_passed: bool,
    /// Candidate's reason.
    pub new_reason: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = |p: bool| if p { "passed" } else { "failed" };
        write!(
            f,
            "record {} seed {} {} step {}: recorded {} ({}), candidate {} ({})",
            self.seq,
            self.seed_id,
            self.gate,
            self.step,
            word(self.old_passed),
            if self.old_reason.is_empty() { "-" } else { &self.old_reason },
            word(self.new_passed),
            if self.new_reason.is_empty() { "-" } else { &self.new_reason }
        )
    }
}

/// What `journal replay` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Gate decisions re-run.
    pub decisions: usize,
    /// Same verdict.
    pub agreements: usize,
    /// Different verdict.
    pub disagreements: Vec<Disagreement>,
}

/// Loads a candidate gate plugin (unpinned: the operator names the file).
pub fn load_candidate(path: &Path, cache_dir: &Path, limits: PluginLimits) -> Result<GatePlugin, ToolError> {
    let err = |detail: String| ToolError::Plugin { path: path.to_owned(), detail };
    let runtime = PluginRuntime::new(RuntimeConfig::new(cache_dir)).map_err(|e| err(e.to_string()))?;
    GatePlugin::load(&runtime, &PluginSpec { path: path.to_owned(), pin: Pin::Unpinned, limits })
        .map_err(|e| err(e.to_string()))
}

/// Re-runs every recorded gate decision through `candidate`, under the
/// host's own stage-order check and invariants, and compares verdicts.
pub fn replay(entries: &[Entry<JournalRecord>], candidate: &GatePlugin) -> Result<ReplayReport, ToolError> {
    let mut report = ReplayReport::default();
    for entry in entries {
        let JournalRecord::GateVerdict { seed_id, gate, passed, reason, inputs, step, .. } = &entry.record else {
            continue;
        };
        let inputs =
            gate_record::from_pairs(inputs).map_err(|source| ToolError::Record { seq: entry.seq.0, source })?;
        let decision = kasmina::gates::decide(candidate, *gate, inputs);
        report.decisions += 1;
        if decision.passed == *passed {
            report.agreements += 1;
        } else {
            report.disagreements.push(Disagreement {
                seq: entry.seq.0,
                seed_id: seed_id.clone(),
                gate: *gate,
                step: *step,
                old_passed: *passed,
                old_reason: reason.clone(),
                new_passed: decision.passed,
                new_reason: decision.reason,
            });
        }
    }
    Ok(report)
}
