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
use leyline::journal::JournalRecord;
use leyline::{GateId, GateInputs};

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
    let when = crate::human::local_time(match &entry.record {
        JournalRecord::CommandAccepted { recorded_at_ms, .. }
        | JournalRecord::Transition { recorded_at_ms, .. }
        | JournalRecord::GateVerdict { recorded_at_ms, .. }
        | JournalRecord::Snapshot { recorded_at_ms, .. }
        | JournalRecord::Progress { recorded_at_ms, .. } => *recorded_at_ms,
    });
    match &entry.record {
        JournalRecord::CommandAccepted { command, outcome, .. } => format!(
            "{seq:>8} {when} command_accepted  {} {} on {} by {}: {}",
            command.command_id,
            command.command_type().as_str(),
            command.target_seed_id,
            command.issued_by,
            outcome.attributes.get("result").map_or("accepted", String::as_str)
        ),
        JournalRecord::Transition { seed_id, from, to, step, reason, .. } => {
            format!("{seq:>8} {when} transition        {seed_id} {from} -> {to} at step {step}: {reason}")
        }
        JournalRecord::GateVerdict { seed_id, gate, passed, reason, inputs, step, .. } => format!(
            "{seq:>8} {when} gate_verdict      {seed_id} {gate} {} at step {step}{} (blueprint {:?}, {})",
            if *passed { "passed" } else { "failed" },
            if reason.is_empty() { String::new() } else { format!(": {reason}") },
            inputs.blueprint_id,
            inputs.current_stage
        ),
        JournalRecord::Snapshot { seeds, .. } => {
            let stages: Vec<String> = seeds.iter().map(|s| format!("{}={}", s.seed_id, s.stage)).collect();
            format!("{seq:>8} {when} snapshot          {} seeds: {}", seeds.len(), stages.join(" "))
        }
        JournalRecord::Progress { step, progress, .. } => {
            let seeds: Vec<String> = progress
                .seeds
                .iter()
                .map(|p| format!("{}={} a={:.3} e={}", p.seed_id, p.stage, p.alpha, p.steps_in_stage))
                .collect();
            let breakers: Vec<String> =
                progress.breakers.iter().map(|b| format!("{}={}", b.name, b.state.as_str())).collect();
            format!(
                "{seq:>8} {when} progress          step {step}: {} breakers: {}",
                if seeds.is_empty() { "-".to_owned() } else { seeds.join(" ") },
                breakers.join(" ")
            )
        }
    }
}

/// A gate verdict's recorded inputs for `journal inspect --inputs`, one
/// field per line in declaration order, indented under the record line.
///
/// Rendered with `Debug` rather than JSON on purpose: JSON has no NaN or
/// infinity (serde_json writes `null`), and a NaN loss is exactly what an
/// operator looks for in a failed G2; `Debug` prints every float exactly.
pub fn describe_inputs(inputs: &GateInputs) -> String {
    let text = format!("{inputs:#?}");
    let mut out = String::with_capacity(text.len() + 16 * 32);
    for line in text.lines() {
        out.push_str("             ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A recorded decision the candidate judged differently: its own verdict
/// differs, or it passed what a host safety invariant forbids (an unsafe
/// pass counts even when the host would have overridden it to the recorded
/// failure).
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
    /// The candidate's own verdict.
    pub new_passed: bool,
    /// The candidate's own reason.
    pub new_reason: String,
    /// The invariant the host would override the candidate's pass with.
    pub override_invariant: Option<String>,
    /// The candidate's verdict and the host's view of it, in words.
    pub judgement: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = |p: bool| if p { "passed" } else { "failed" };
        write!(
            f,
            "record {} seed {} {} step {}: recorded {} ({}), {}",
            self.seq,
            self.seed_id,
            self.gate,
            self.step,
            word(self.old_passed),
            if self.old_reason.is_empty() { "-" } else { &self.old_reason },
            self.judgement
        )
    }
}

/// What `journal replay` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Gate decisions re-run.
    pub decisions: usize,
    /// The candidate's own verdict agreed, safely.
    pub agreements: usize,
    /// Failed by the host's stage-order check before any plugin: the
    /// candidate was not consulted.
    pub host_decided: usize,
    /// Different verdicts and unsafe passes.
    pub disagreements: Vec<Disagreement>,
}

impl ReplayReport {
    /// Disagreements that are unsafe passes (the host's invariants would
    /// have overridden the candidate).
    pub fn unsafe_passes(&self) -> usize {
        self.disagreements.iter().filter(|d| d.override_invariant.is_some()).count()
    }
}

/// Loads a candidate gate plugin (unpinned: the operator names the file).
pub fn load_candidate(path: &Path, cache_dir: &Path, limits: PluginLimits) -> Result<GatePlugin, ToolError> {
    let err = |detail: String| ToolError::Plugin { path: path.to_owned(), detail };
    let runtime = PluginRuntime::new(RuntimeConfig::new(cache_dir)).map_err(|e| err(e.to_string()))?;
    GatePlugin::load(&runtime, &PluginSpec { limits, ..PluginSpec::new(path, Pin::Unpinned) })
        .map_err(|e| err(e.to_string()))
}

/// Re-runs every recorded gate decision through `candidate` under the
/// host's own stage-order check, and compares the candidate's **own**
/// verdict with the recorded one; a pass the host's invariants would
/// override is a disagreement too, shown as such.
pub fn replay(entries: &[Entry<JournalRecord>], candidate: &GatePlugin) -> Result<ReplayReport, ToolError> {
    let mut report = ReplayReport::default();
    for entry in entries {
        let JournalRecord::GateVerdict { seed_id, gate, passed, reason, inputs, step, .. } = &entry.record else {
            continue;
        };
        let judgement = kasmina::gates::judge(candidate, *gate, inputs.clone());
        report.decisions += 1;
        if judgement.host_decided {
            report.host_decided += 1;
        } else if !judgement.disagrees_with(*passed) {
            report.agreements += 1;
        } else {
            report.disagreements.push(Disagreement {
                seq: entry.seq.0,
                seed_id: seed_id.clone(),
                gate: *gate,
                step: *step,
                old_passed: *passed,
                old_reason: reason.clone(),
                new_passed: judgement.candidate_passed,
                new_reason: judgement.candidate_reason.clone(),
                override_invariant: judgement.override_invariant.map(str::to_owned),
                judgement: judgement.describe(),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use leyline::{PerformanceStatus, SeedStage};

    use super::*;

    #[test]
    fn inputs_render_every_field_with_exact_non_finite_floats() {
        let inputs = GateInputs {
            seed_id: "seed-a".to_owned(),
            site: "hidden".to_owned(),
            blueprint_id: "bp".to_owned(),
            blueprint_known: true,
            current_stage: SeedStage::Training,
            expected_stage: SeedStage::Training,
            reported_stage: SeedStage::Training,
            parameters: BTreeMap::new(),
            parameter_bounds: BTreeMap::new(),
            kernel_attached: true,
            kernel_verified: true,
            fallback_used: false,
            isolation_violations: 0,
            max_cosine: 0.0,
            outputs_finite: false,
            loss_window: vec![0.5, f64::NAN],
            loss_variance_threshold: 1.0,
            kernel_latency_us: f64::INFINITY,
            latency_budget_us: 5000.0,
            host_registered: true,
            required_layers: vec!["hidden".to_owned()],
            available_layers: vec!["hidden".to_owned()],
            interface_matches: true,
            performance_status: PerformanceStatus::Nominal,
            metric_delta: 0.0,
            metric_tolerance: 0.02,
            reset_clean: true,
            blend: None,
            ranks: Some(leyline::RankAgreement { world_size: 2, agreed: true }),
        };
        let text = describe_inputs(&inputs);
        assert!(text.lines().all(|l| l.starts_with("             ")), "{text}");
        assert!(text.contains("NaN") && text.contains("kernel_latency_us: inf"), "{text}");
        assert!(
            text.contains("reset_clean: true") && text.contains("world_size: 2"),
            "the last fields are shown: {text}"
        );
    }
}
