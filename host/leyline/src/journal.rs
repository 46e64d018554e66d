//! Decision-journal records: what the daemon writes, durably, before it
//! acknowledges a command, and what replay tools read back.
//!
//! The framing (length, checksum, sequence number, segments) lives in the
//! `kasmina-journal` crate; this module only fixes the payload. Records are
//! postcard-encoded, so variants are only ever appended (a reordered variant
//! would make old journals decode as the wrong record); a breaking change
//! bumps [`JOURNAL_RECORD_VERSION`], which each segment header carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gate::GateInputs;
use crate::telemetry::AttrValue;
use crate::{AdaptationCommand, BreakerState, GateId, Outcome, SeedStage, SeedState};

/// Version of the [`JournalRecord`] payload schema. A journal written with
/// another version is refused on open rather than misread.
///
/// Version 2: [`JournalRecord::GateVerdict`] stores [`GateInputs`] itself
/// instead of text pairs; snapshots carry live nonces, in-stage progress and
/// breaker states; [`JournalRecord::Progress`] records in-stage progress.
///
/// Version 3: [`GateInputs`] carries the seed's blend statistics and rank
/// agreement (plugin API 0.2.0); [`JournalRecord::GateVerdict`] stores the
/// verdict's typed attributes.
pub const JOURNAL_RECORD_VERSION: u32 = 3;

/// One journaled decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalRecord {
    /// A command the host accepted, with the outcome it returned. Written
    /// (and fsynced) before the outcome is acknowledged to the controller.
    CommandAccepted {
        /// The command exactly as received (signature included, so an
        /// auditor can re-verify it).
        command: AdaptationCommand,
        /// The outcome returned to the controller.
        outcome: Outcome,
        /// When it was recorded (ms since the Unix epoch).
        recorded_at_ms: u64,
    },
    /// A seed moved from one lifecycle stage to another.
    Transition {
        /// Seed id.
        seed_id: String,
        /// Stage before.
        from: SeedStage,
        /// Stage after.
        to: SeedStage,
        /// Training step at which the transition took effect.
        step: u64,
        /// Why (command id, gate verdict, cull reason …).
        reason: String,
        /// When it was recorded (ms since the Unix epoch).
        recorded_at_ms: u64,
    },
    /// A gate plugin's verdict, with the inputs it saw, so `journal replay`
    /// can re-run the decision through a candidate plugin.
    GateVerdict {
        /// Seed id.
        seed_id: String,
        /// Gate evaluated.
        gate: GateId,
        /// Whether the gate passed.
        passed: bool,
        /// The plugin's reason.
        reason: String,
        /// The verdict's attributes, typed as the plugin returned them
        /// (API 0.2.0), or text (API 0.1.0 and host prechecks).
        attributes: BTreeMap<String, AttrValue>,
        /// The gate inputs exactly as the plugin saw them (postcard keeps
        /// every float bit for bit, NaN and ±inf included), so `journal
        /// replay` can re-feed them to a candidate plugin.
        inputs: GateInputs,
        /// Training step of the evaluation.
        step: u64,
        /// When it was recorded (ms since the Unix epoch).
        recorded_at_ms: u64,
    },
    /// Every seed's state at one instant; written by compaction as the first
    /// record of a fresh segment. Recovery starts from the last snapshot and
    /// applies the records after it.
    Snapshot {
        /// All seeds.
        seeds: Vec<SeedState>,
        /// In-stage progress of the active seeds and the breakers.
        progress: ProgressState,
        /// Command ids the nonce ledger still refuses, with their expiry:
        /// replay protection must survive a restart even when the commands
        /// themselves were compacted away or precede this snapshot.
        nonces: Vec<LiveNonce>,
        /// When it was taken (ms since the Unix epoch).
        recorded_at_ms: u64,
    },
    /// In-stage progress after a call that moved no seed to another stage
    /// (a training step: α, steps, loss window) and the breakers. Ends the
    /// call like a snapshot does, so a SIGKILL during BLENDING loses
    /// neither α nor the step count.
    Progress {
        /// Training step the progress was reached at.
        step: u64,
        /// The progress.
        progress: ProgressState,
        /// When it was recorded (ms since the Unix epoch).
        recorded_at_ms: u64,
    },
}

/// What a restart must not forget beyond stages: each active seed's
/// progress inside its stage, the circuit breakers and the metric gates
/// compare against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressState {
    /// Active (and paused) seeds, in seed-id order.
    pub seeds: Vec<SeedProgress>,
    /// Every circuit breaker.
    pub breakers: Vec<BreakerSnapshot>,
    /// Latest global metric the trainer reported.
    pub latest_metric: Option<f64>,
}

/// One seed's progress inside its current stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedProgress {
    /// Seed id.
    pub seed_id: String,
    /// Stage the progress belongs to (restore checks it).
    pub stage: SeedStage,
    /// α the trainer was last told to apply.
    pub alpha: f64,
    /// Steps trained in the stage (the exported epoch).
    pub steps_in_stage: u64,
    /// Recent seed losses (the G2 window), oldest first.
    pub losses: Vec<f64>,
    /// Isolation violations in the current window.
    pub isolation_violations: u32,
    /// Largest host/seed gradient cosine in the window.
    pub max_cosine: f64,
    /// Global metric when the seed joined (G4 baseline).
    pub metric_baseline: Option<f64>,
    /// Anything but the seed's verified kernel ran (sticky).
    pub fallback_used: bool,
    /// Latest seed outputs finite.
    pub outputs_finite: bool,
    /// Automatic advancement held (STABILIZE).
    pub hold: bool,
    /// A RESUME was accepted while the trainer had not resynchronised; its
    /// gate re-check runs once it has.
    pub resume_pending: bool,
}

/// A circuit breaker's state, enough to rebuild it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// Breaker name (`fetch`, `isolation`).
    pub name: String,
    /// State.
    pub state: BreakerState,
    /// Consecutive failures counted.
    pub consecutive_failures: u32,
    /// When it last opened (ms since the Unix epoch; the cooldown runs from here).
    pub opened_at_ms: u64,
}

/// One live entry of the nonce ledger (SPEC.md §3: replays are refused
/// within the TTL, across restarts too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveNonce {
    /// The command id (the nonce).
    pub command_id: String,
    /// When the ledger stops refusing it (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

impl JournalRecord {
    /// Stable lower-case name of the variant (for inspect tools and logs).
    pub const fn kind(&self) -> &'static str {
        match self {
            JournalRecord::CommandAccepted { .. } => "command_accepted",
            JournalRecord::Transition { .. } => "transition",
            JournalRecord::GateVerdict { .. } => "gate_verdict",
            JournalRecord::Snapshot { .. } => "snapshot",
            JournalRecord::Progress { .. } => "progress",
        }
    }

    /// The seed the record concerns, if it concerns exactly one.
    pub fn seed_id(&self) -> Option<&str> {
        match self {
            JournalRecord::CommandAccepted { command, .. } => Some(&command.target_seed_id),
            JournalRecord::Transition { seed_id, .. } | JournalRecord::GateVerdict { seed_id, .. } => Some(seed_id),
            JournalRecord::Snapshot { .. } | JournalRecord::Progress { .. } => None,
        }
    }
}

/// Index of the last [`JournalRecord::Snapshot`] in `records`, where state
/// rebuilding starts (0 when there is none: replay everything).
pub fn replay_start<'a, I>(records: I) -> usize
where
    I: IntoIterator<Item = &'a JournalRecord>,
{
    records
        .into_iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, JournalRecord::Snapshot { .. }))
        .map(|(i, _)| i)
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(seed: &str) -> JournalRecord {
        JournalRecord::Transition {
            seed_id: seed.to_owned(),
            from: SeedStage::Dormant,
            to: SeedStage::Germinated,
            step: 3,
            reason: "cmd-1".to_owned(),
            recorded_at_ms: 10,
        }
    }

    #[test]
    fn postcard_round_trip_keeps_gate_inputs_exactly() {
        let mut inputs = crate::gate::tests::awkward();
        inputs.metric_delta = -0.5; // NaN != NaN: compare the finite record first
        inputs.parameters.clear();
        if let Some(blend) = inputs.blend.as_mut() {
            blend.alpha_p95 = 0.5;
            blend.gate_mean = Some(0.75);
        }
        let record = JournalRecord::GateVerdict {
            seed_id: "s1".to_owned(),
            gate: GateId::G2Stability,
            passed: false,
            reason: "loss variance 3.2 > 1.0".to_owned(),
            attributes: BTreeMap::from([
                ("variance".to_owned(), AttrValue::Float(3.2)),
                ("window".to_owned(), AttrValue::Int(8)),
                ("layer".to_owned(), AttrValue::Str("hidden".to_owned())),
                ("finite".to_owned(), AttrValue::Bool(false)),
            ]),
            inputs,
            step: 7,
            recorded_at_ms: 1,
        };
        let bytes = postcard::to_allocvec(&record).unwrap_or_default();
        let back: Result<JournalRecord, _> = postcard::from_bytes(&bytes);
        assert_eq!(back.ok(), Some(record.clone()));

        // With NaN inside: the re-encoding is identical, and NaN stays NaN.
        let JournalRecord::GateVerdict { mut inputs, .. } = record else { return };
        inputs.metric_delta = f64::NAN;
        let record = JournalRecord::GateVerdict {
            seed_id: "s1".to_owned(),
            gate: GateId::G2Stability,
            passed: false,
            reason: String::new(),
            attributes: BTreeMap::from([("nan".to_owned(), AttrValue::Float(f64::NAN))]),
            inputs,
            step: 7,
            recorded_at_ms: 1,
        };
        let bytes = postcard::to_allocvec(&record).unwrap_or_default();
        let back = postcard::from_bytes::<JournalRecord>(&bytes).ok();
        assert_eq!(back.as_ref().map(|b| postcard::to_allocvec(b).unwrap_or_default()), Some(bytes));
        assert!(matches!(back, Some(JournalRecord::GateVerdict { inputs, .. }) if inputs.metric_delta.is_nan()));
    }

    #[test]
    fn replay_starts_at_the_last_snapshot() {
        let snap = JournalRecord::Snapshot {
            seeds: Vec::new(),
            progress: ProgressState::default(),
            nonces: Vec::new(),
            recorded_at_ms: 0,
        };
        let records = vec![transition("a"), snap.clone(), transition("b"), snap, transition("c")];
        assert_eq!(replay_start(&records), 3);
        assert_eq!(replay_start(&records[..1]), 0);
        assert_eq!(records[0].seed_id(), Some("a"));
        assert_eq!(records[1].kind(), "snapshot");
    }
}
