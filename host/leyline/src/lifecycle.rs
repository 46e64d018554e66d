//! Seed lifecycle: stages, the transition table and the gates on its edges
//! (SPEC.md §2).
//!
//! The table lives in exactly one place, [`SeedStage::allowed_next`], as an
//! exhaustive `match`: adding a stage without deciding its successors does not
//! compile.

use serde::{Deserialize, Serialize};

/// A seed's lifecycle stage. `Unknown` exists only for bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SeedStage {
    /// Bootstrap only: a slot whose state has not been established yet.
    Unknown,
    /// Empty slot, ready to germinate.
    Dormant,
    /// Blueprint chosen and admitted; kernel being supplied.
    Germinated,
    /// Seed trains in isolation ("incubator"); forward value equals the host.
    Training,
    /// Seed output blended in with a ramped α.
    Blending,
    /// Seed output used (α = 1) with the host output kept for comparison.
    Shadowing,
    /// Seed on probation: system impact watched before it may fossilize.
    Probationary,
    /// Seed merged permanently into the host.
    Fossilized,
    /// Seed rejected by a gate or a command.
    Culled,
    /// Slot blocked for the embargo period after a cull.
    Embargoed,
    /// Slot being cleaned before it may return to dormant.
    Resetting,
    /// Slot retired for good.
    Terminated,
}

/// Every stage, in declaration order (used by exhaustive tests and tooling).
pub const ALL_STAGES: [SeedStage; 12] = [
    SeedStage::Unknown,
    SeedStage::Dormant,
    SeedStage::Germinated,
    SeedStage::Training,
    SeedStage::Blending,
    SeedStage::Shadowing,
    SeedStage::Probationary,
    SeedStage::Fossilized,
    SeedStage::Culled,
    SeedStage::Embargoed,
    SeedStage::Resetting,
    SeedStage::Terminated,
];

/// A lifecycle gate (SPEC.md §2 gate table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GateId {
    /// G0 sanity: DORMANT → GERMINATED.
    G0Sanity,
    /// G1 gradient health: GERMINATED → TRAINING.
    G1GradientHealth,
    /// G2 stability: TRAINING → BLENDING.
    G2Stability,
    /// G3 interface: BLENDING → SHADOWING.
    G3Interface,
    /// G4 system impact: SHADOWING → PROBATIONARY.
    G4SystemImpact,
    /// G5 reset: RESETTING → DORMANT.
    G5Reset,
}

/// Every gate, in order.
pub const ALL_GATES: [GateId; 6] = [
    GateId::G0Sanity,
    GateId::G1GradientHealth,
    GateId::G2Stability,
    GateId::G3Interface,
    GateId::G4SystemImpact,
    GateId::G5Reset,
];

/// A rejected transition; names both stages so the log line is actionable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal seed transition {from} -> {to}; allowed from {from}: {allowed}")]
pub struct TransitionError {
    /// Stage the seed is in.
    pub from: SeedStage,
    /// Stage that was requested.
    pub to: SeedStage,
    /// Human-readable list of legal successors of `from`.
    pub allowed: String,
}

impl SeedStage {
    /// The legal successors of this stage. The one transition table.
    pub const fn allowed_next(self) -> &'static [SeedStage] {
        use SeedStage::*;
        match self {
            Unknown => &[Dormant],
            Dormant => &[Germinated, Terminated],
            Germinated => &[Training, Culled],
            Training => &[Blending, Culled],
            Blending => &[Shadowing, Culled],
            Shadowing => &[Probationary, Culled],
            Probationary => &[Fossilized, Culled],
            Fossilized => &[Terminated],
            Culled => &[Embargoed],
            Embargoed => &[Resetting],
            Resetting => &[Dormant],
            Terminated => &[],
        }
    }

    /// Whether `self → to` is in the table.
    pub fn can_transition_to(self, to: SeedStage) -> bool {
        self.allowed_next().contains(&to)
    }

    /// Checks `self → to` against the table.
    pub fn check_transition(self, to: SeedStage) -> Result<(), TransitionError> {
        if self.can_transition_to(to) {
            return Ok(());
        }
        let allowed = match self.allowed_next() {
            [] => "none (terminal)".to_owned(),
            next => next.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        };
        Err(TransitionError { from: self, to, allowed })
    }

    /// The gate that guards `self → to`, if any. Transitions into CULLED,
    /// EMBARGOED, TERMINATED and the bootstrap edge are not gated.
    pub const fn gate_for(self, to: SeedStage) -> Option<GateId> {
        use SeedStage::*;
        match (self, to) {
            (Dormant, Germinated) => Some(GateId::G0Sanity),
            (Germinated, Training) => Some(GateId::G1GradientHealth),
            (Training, Blending) => Some(GateId::G2Stability),
            (Blending, Shadowing) => Some(GateId::G3Interface),
            (Shadowing, Probationary) => Some(GateId::G4SystemImpact),
            (Resetting, Dormant) => Some(GateId::G5Reset),
            _ => None,
        }
    }

    /// Whether the seed occupies its slot with a live kernel (stages in which
    /// it runs in the forward pass or is being prepared to).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            SeedStage::Germinated
                | SeedStage::Training
                | SeedStage::Blending
                | SeedStage::Shadowing
                | SeedStage::Probationary
        )
    }

    /// Whether no transition leaves this stage.
    pub const fn is_terminal(self) -> bool {
        self.allowed_next().is_empty()
    }

    /// Stable upper-case name, as in SPEC.md and telemetry.
    pub const fn as_str(self) -> &'static str {
        use SeedStage::*;
        match self {
            Unknown => "UNKNOWN",
            Dormant => "DORMANT",
            Germinated => "GERMINATED",
            Training => "TRAINING",
            Blending => "BLENDING",
            Shadowing => "SHADOWING",
            Probationary => "PROBATIONARY",
            Fossilized => "FOSSILIZED",
            Culled => "CULLED",
            Embargoed => "EMBARGOED",
            Resetting => "RESETTING",
            Terminated => "TERMINATED",
        }
    }

    /// Parses the upper-case name (case-insensitive).
    pub fn parse(name: &str) -> Option<SeedStage> {
        ALL_STAGES.iter().copied().find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for SeedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GateId {
    /// The (from, to) edge this gate guards.
    pub const fn edge(self) -> (SeedStage, SeedStage) {
        use SeedStage::*;
        match self {
            GateId::G0Sanity => (Dormant, Germinated),
            GateId::G1GradientHealth => (Germinated, Training),
            GateId::G2Stability => (Training, Blending),
            GateId::G3Interface => (Blending, Shadowing),
            GateId::G4SystemImpact => (Shadowing, Probationary),
            GateId::G5Reset => (Resetting, Dormant),
        }
    }

    /// Short name used in telemetry and reports (`G0` … `G5`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GateId::G0Sanity => "G0",
            GateId::G1GradientHealth => "G1",
            GateId::G2Stability => "G2",
            GateId::G3Interface => "G3",
            GateId::G4SystemImpact => "G4",
            GateId::G5Reset => "G5",
        }
    }
}

impl std::fmt::Display for GateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use SeedStage::*;

    /// SPEC.md §2, written out independently of `allowed_next` so a typo in
    /// the table cannot make its own test pass.
    const SPEC_EDGES: &[(SeedStage, SeedStage)] = &[
        (Unknown, Dormant),
        (Dormant, Germinated),
        (Dormant, Terminated),
        (Germinated, Training),
        (Germinated, Culled),
        (Training, Blending),
        (Training, Culled),
        (Blending, Shadowing),
        (Blending, Culled),
        (Shadowing, Probationary),
        (Shadowing, Culled),
        (Probationary, Fossilized),
        (Probationary, Culled),
        (Fossilized, Terminated),
        (Culled, Embargoed),
        (Embargoed, Resetting),
        (Resetting, Dormant),
    ];

    #[test]
    fn all_144_pairs_match_the_spec_table() {
        let mut allowed = 0;
        for from in ALL_STAGES {
            for to in ALL_STAGES {
                let expected = SPEC_EDGES.contains(&(from, to));
                let got = from.check_transition(to);
                assert_eq!(got.is_ok(), expected, "{from} -> {to}");
                if let Err(err) = got {
                    let msg = err.to_string();
                    assert!(msg.contains(from.as_str()) && msg.contains(to.as_str()), "{msg}");
                } else {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, SPEC_EDGES.len());
    }

    #[test]
    fn each_gate_guards_exactly_its_edge() {
        for gate in ALL_GATES {
            let (from, to) = gate.edge();
            assert!(from.can_transition_to(to), "{gate} guards an illegal edge");
            assert_eq!(from.gate_for(to), Some(gate));
        }
        let gated = ALL_STAGES
            .iter()
            .flat_map(|f| ALL_STAGES.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f.gate_for(*t).is_some())
            .count();
        assert_eq!(gated, ALL_GATES.len());
    }

    #[test]
    fn terminal_rejection_says_so() {
        let err = Terminated.check_transition(Dormant).unwrap_err();
        assert!(err.to_string().contains("none (terminal)"));
        assert!(Terminated.is_terminal());
        assert!(!Fossilized.is_terminal());
    }

    #[test]
    fn names_round_trip() {
        for s in ALL_STAGES {
            assert_eq!(SeedStage::parse(s.as_str()), Some(s));
            assert_eq!(SeedStage::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(SeedStage::parse("SPROUTING"), None);
    }
}
