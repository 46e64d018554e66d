//! Decision-journal records: what the daemon writes, durably, before it
//! acknowledges a command, and what replay tools read back.
//!
//! The framing (length, checksum, sequence number, segments) lives in the
//! `kasmina-journal` crate; this module only fixes the payload. Records are
//! postcard-encoded, so variants are only ever appended (a reordered variant
//! would make old journals decode as the wrong record); a breaking change
//! bumps [`JOURNAL_RECORD_VERSION`], which each segment header carries.

use serde::{Deserialize, Serialize};

use crate::gate::GateInputs;
use crate::{AdaptationCommand, GateId, Outcome, SeedStage, SeedState};

/// Version of the [`JournalRecord`] payload schema. A journal written with
/// another version is refused on open rather than misread.
///
/// Version 2: [`JournalRecord::GateVerdict`] stores [`GateInputs`] itself
/// instead of text pairs.
pub const JOURNAL_RECORD_VERSION: u32 = 2;

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
        /// Command ids the nonce ledger still refuses, with their expiry:
        /// replay protection must survive a restart even when the commands
        /// themselves were compacted away or precede this snapshot.
        nonces: Vec<LiveNonce>,
        /// When it was taken (ms since the Unix epoch).
        recorded_at_ms: u64,
    },
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
        }
    }

    /// The seed the record concerns, if it concerns exactly one.
    pub fn seed_id(&self) -> Option<&str> {
        match self {
            JournalRecord::CommandAccepted { command, .. } => Some(&command.target_seed_id),
            JournalRecord::Transition { seed_id, .. } | JournalRecord::GateVerdict { seed_id, .. } => Some(seed_id),
            JournalRecord::Snapshot { .. } => None,
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
        let record = JournalRecord::GateVerdict {
            seed_id: "s1".to_owned(),
            gate: GateId::G2Stability,
            passed: false,
            reason: "loss variance 3.2 > 1.0".to_owned(),
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
        let snap = JournalRecord::Snapshot { seeds: Vec::new(), nonces: Vec::new(), recorded_at_ms: 0 };
        let records = vec![transition("a"), snap.clone(), transition("b"), snap, transition("c")];
        assert_eq!(replay_start(&records), 3);
        assert_eq!(replay_start(&records[..1]), 0);
        assert_eq!(records[0].seed_id(), Some("a"));
        assert_eq!(records[1].kind(), "snapshot");
    }
}
