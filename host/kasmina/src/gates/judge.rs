//! The host's part of every gate decision — the stage-order precheck before
//! the plugin and the safety invariants after it — and how a candidate
//! plugin is judged against a recorded decision (`journal replay`, shadow).
//!
//! A candidate is judged by **its own verdict**, shown beside what the
//! host's invariants would make of it: a candidate that passes a seed which
//! ran on a fallback is not "agreeing" with the recorded failure just
//! because the host would have overridden it — it is an unsafe pass, and
//! counts as a disagreement ("candidate passed; host invariant
//! fallback_must_fail_g2_g4 would override").

use std::collections::BTreeMap;

use kasmina_plugin_host::gate::{GateInputs, GatePlugin, PerformanceStatus};
use leyline::{AttrValue, GateId};

use super::GateDecision;

/// Stage order, checked by the host before any plugin runs.
pub(super) fn precheck(gate: GateId, inputs: &GateInputs) -> Option<(String, BTreeMap<String, AttrValue>)> {
    let (from, _) = gate.edge();
    let stages = [inputs.current_stage, inputs.expected_stage, inputs.reported_stage];
    if stages.iter().all(|s| *s == from) {
        return None;
    }
    let mut attributes = BTreeMap::new();
    attributes.insert("gate_source_stage".to_owned(), AttrValue::from(from.as_str()));
    attributes.insert("current_stage".to_owned(), AttrValue::from(inputs.current_stage.as_str()));
    attributes.insert("expected_stage".to_owned(), AttrValue::from(inputs.expected_stage.as_str()));
    attributes.insert("reported_stage".to_owned(), AttrValue::from(inputs.reported_stage.as_str()));
    attributes.insert("checked_by".to_owned(), AttrValue::from("host"));
    Some(("stage_mismatch".to_owned(), attributes))
}

/// Overrides a passing plugin verdict that breaks a safety invariant.
pub(super) fn enforce_invariants(mut decision: GateDecision) -> GateDecision {
    if decision.passed
        && let Some(broken) = violated_invariant(decision.gate, &decision.inputs)
    {
        decision.passed = false;
        decision.reason = "policy_invariant_violated".to_owned();
        decision.attributes.insert("invariant".to_owned(), AttrValue::from(broken));
        decision.attributes.insert("plugin_verdict".to_owned(), AttrValue::from("passed"));
    }
    decision
}

/// The invariant every gate policy must keep that a pass at `gate` with
/// these inputs would break, if any.
pub fn violated_invariant(gate: GateId, i: &GateInputs) -> Option<&'static str> {
    match gate {
        GateId::G0Sanity if i.parameters.values().any(|v| !v.is_finite()) => Some("non_finite_parameter_must_fail_g0"),
        GateId::G1GradientHealth if i.isolation_violations > 0 => Some("isolation_violations_must_fail_g1"),
        GateId::G2Stability | GateId::G4SystemImpact if i.fallback_used => Some("fallback_must_fail_g2_g4"),
        GateId::G4SystemImpact if i.performance_status == PerformanceStatus::Fallback => {
            Some("fallback_must_fail_g2_g4")
        }
        _ => None,
    }
}

/// A candidate plugin's verdict on one set of gate inputs, beside what the
/// host would make of it.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateJudgement {
    /// The host's stage-order check failed the gate before any plugin:
    /// the candidate was not consulted and cannot disagree.
    pub host_decided: bool,
    /// The candidate's own verdict.
    pub candidate_passed: bool,
    /// The candidate's own reason (a `plugin_*` reason if it failed to run).
    pub candidate_reason: String,
    /// The invariant the host would override the candidate's pass with.
    pub override_invariant: Option<&'static str>,
    /// The decision the host would take with this candidate active.
    pub effective: GateDecision,
}

impl CandidateJudgement {
    /// Whether the candidate disagrees with a decision that `passed`: its
    /// own verdict differs, or it passed what a safety invariant forbids
    /// (an unsafe pass is never hidden by the host's override).
    pub fn disagrees_with(&self, passed: bool) -> bool {
        !self.host_decided && (self.candidate_passed != passed || self.override_invariant.is_some())
    }

    /// One line for operators, e.g. `candidate passed; host invariant
    /// fallback_must_fail_g2_g4 would override` or `candidate failed (unstable)`.
    pub fn describe(&self) -> String {
        if self.host_decided {
            return format!("host failed it before any plugin ({})", self.effective.reason);
        }
        let own = if self.candidate_passed {
            "candidate passed".to_owned()
        } else {
            format!(
                "candidate failed ({})",
                if self.candidate_reason.is_empty() { "-" } else { &self.candidate_reason }
            )
        };
        match self.override_invariant {
            Some(invariant) => format!("{own}; host invariant {invariant} would override"),
            None => own,
        }
    }
}

/// Judges `plugin` on recorded `inputs` exactly as the gate service would
/// decide with it active — host precheck, the plugin, host invariants —
/// keeping the plugin's own verdict. No telemetry.
pub fn judge(plugin: &GatePlugin, gate: GateId, inputs: GateInputs) -> CandidateJudgement {
    if let Some((reason, attributes)) = precheck(gate, &inputs) {
        return CandidateJudgement {
            host_decided: true,
            candidate_passed: false,
            candidate_reason: String::new(),
            override_invariant: None,
            effective: GateDecision { gate, passed: false, reason, attributes, inputs },
        };
    }
    let verdict = plugin.evaluate(gate, &inputs);
    judge_verdict(gate, verdict, inputs)
}

/// The judgement of an already obtained plugin verdict.
pub(super) fn judge_verdict(
    gate: GateId,
    verdict: kasmina_plugin_host::Verdict,
    inputs: GateInputs,
) -> CandidateJudgement {
    let override_invariant = if verdict.passed { violated_invariant(gate, &inputs) } else { None };
    let candidate_passed = verdict.passed;
    let candidate_reason = verdict.reason.clone();
    let effective = enforce_invariants(GateDecision {
        gate,
        passed: verdict.passed,
        reason: verdict.reason,
        attributes: verdict.attributes,
        inputs,
    });
    CandidateJudgement { host_decided: false, candidate_passed, candidate_reason, override_invariant, effective }
}

/// The whole decision for recorded `inputs` — host stage-order check,
/// `plugin`, host invariants — exactly as the gate service takes it,
/// without telemetry.
pub fn decide(plugin: &GatePlugin, gate: GateId, inputs: GateInputs) -> GateDecision {
    judge(plugin, gate, inputs).effective
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use leyline::SeedStage;

    use super::*;

    pub(crate) fn inputs(stage: SeedStage) -> GateInputs {
        GateInputs {
            seed_id: "s".to_owned(),
            site: "hidden".to_owned(),
            blueprint_id: "bp".to_owned(),
            blueprint_known: true,
            current_stage: stage,
            expected_stage: stage,
            reported_stage: stage,
            parameters: BTreeMap::new(),
            parameter_bounds: BTreeMap::new(),
            kernel_attached: true,
            kernel_verified: true,
            fallback_used: false,
            isolation_violations: 0,
            max_cosine: 0.0,
            outputs_finite: true,
            loss_window: vec![0.5, 0.5],
            loss_variance_threshold: 1.0,
            kernel_latency_us: 10.0,
            latency_budget_us: 100.0,
            host_registered: true,
            required_layers: vec!["hidden".to_owned()],
            available_layers: vec!["hidden".to_owned()],
            interface_matches: true,
            performance_status: PerformanceStatus::Nominal,
            metric_delta: 0.0,
            metric_tolerance: 0.02,
            reset_clean: true,
            blend: None,
            ranks: None,
        }
    }

    fn pass() -> kasmina_plugin_host::Verdict {
        kasmina_plugin_host::Verdict { passed: true, reason: String::new(), attributes: BTreeMap::new() }
    }

    #[test]
    fn precheck_fails_any_stage_disagreement_before_the_plugin() {
        assert!(precheck(GateId::G2Stability, &inputs(SeedStage::Training)).is_none());
        for (field, stage) in [(0, SeedStage::Blending), (1, SeedStage::Germinated), (2, SeedStage::Dormant)] {
            let mut i = inputs(SeedStage::Training);
            match field {
                0 => i.current_stage = stage,
                1 => i.expected_stage = stage,
                _ => i.reported_stage = stage,
            }
            let (reason, attrs) = precheck(GateId::G2Stability, &i).expect("mismatch caught");
            assert_eq!(reason, "stage_mismatch");
            assert_eq!(attrs.get("checked_by").map(ToString::to_string).as_deref(), Some("host"));
        }
    }

    #[test]
    fn safety_invariants_hold_whatever_the_plugin_says() {
        let mut i = inputs(SeedStage::Training);
        i.fallback_used = true;
        assert!(violated_invariant(GateId::G2Stability, &i).is_some());
        assert!(violated_invariant(GateId::G4SystemImpact, &i).is_some());
        assert!(violated_invariant(GateId::G3Interface, &i).is_none());
        let mut i = inputs(SeedStage::Dormant);
        i.parameters.insert("lr".to_owned(), f64::NAN);
        assert!(violated_invariant(GateId::G0Sanity, &i).is_some());
        let mut i = inputs(SeedStage::Germinated);
        i.isolation_violations = 2;
        assert!(violated_invariant(GateId::G1GradientHealth, &i).is_some());
        assert!(violated_invariant(GateId::G1GradientHealth, &inputs(SeedStage::Germinated)).is_none());
    }

    #[test]
    fn an_unsafe_pass_is_a_disagreement_even_with_a_recorded_failure() {
        let mut i = inputs(SeedStage::Training);
        i.fallback_used = true;
        let j = judge_verdict(GateId::G2Stability, pass(), i);
        assert!(j.candidate_passed && !j.effective.passed, "the host overrides the pass");
        assert_eq!(j.override_invariant, Some("fallback_must_fail_g2_g4"));
        // The recorded decision failed (by the same invariant): the
        // effective verdicts agree, the candidate's own does not.
        assert!(j.disagrees_with(false));
        assert_eq!(j.describe(), "candidate passed; host invariant fallback_must_fail_g2_g4 would override");
        // Negative control: a safe pass agrees with a recorded pass.
        let safe = judge_verdict(GateId::G2Stability, pass(), inputs(SeedStage::Training));
        assert!(!safe.disagrees_with(true) && safe.disagrees_with(false));
        assert_eq!(safe.describe(), "candidate passed");
    }
}
