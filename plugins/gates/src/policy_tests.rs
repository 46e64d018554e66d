//! Native unit tests of the gate rules: one passing baseline per gate, then
//! one mutation per rule that must flip it to the named failure.

use super::*;
use kasmina_plugin_sdk::types::{Parameter, ParameterBound};

const ALL_GATES: [Gate; 6] =
    [Gate::G0Sanity, Gate::G1GradientHealth, Gate::G2Stability, Gate::G3Interface, Gate::G4SystemImpact, Gate::G5Reset];

/// Inputs that pass `gate`.
fn passing(gate: Gate) -> GateInputs {
    let stage = source_stage(gate);
    let reset = gate == Gate::G5Reset;
    GateInputs {
        seed_id: "seed-1".into(),
        site: "block2".into(),
        blueprint_id: "bp-conv".into(),
        blueprint_known: true,
        current_stage: stage,
        expected_stage: stage,
        reported_stage: stage,
        parameters: vec![Parameter { name: "lr".into(), value: 0.01 }],
        parameter_bounds: vec![ParameterBound { name: "lr".into(), min: 0.0, max: 1.0 }],
        kernel_attached: !reset,
        kernel_verified: !reset,
        fallback_used: false,
        isolation_violations: 0,
        max_cosine: 0.01,
        outputs_finite: true,
        loss_window: vec![1.0, 1.01, 0.99],
        loss_variance_threshold: 0.1,
        kernel_latency_us: 100.0,
        latency_budget_us: 5000.0,
        host_registered: true,
        required_layers: vec!["block1".into(), "block2".into()],
        available_layers: vec!["block0".into(), "block1".into(), "block2".into()],
        interface_matches: true,
        performance_status: PerformanceStatus::Nominal,
        metric_delta: -0.001,
        metric_tolerance: 0.01,
        reset_clean: true,
        blend: None,
        ranks: None,
    }
}

fn reason(gate: Gate, mutate: impl FnOnce(&mut GateInputs)) -> String {
    let mut inputs = passing(gate);
    mutate(&mut inputs);
    let verdict = evaluate(gate, &inputs);
    assert!(!verdict.passed || verdict.reason.is_empty());
    verdict.reason
}

#[test]
fn baselines_pass_every_gate() {
    for gate in ALL_GATES {
        let verdict = evaluate(gate, &passing(gate));
        assert!(verdict.passed, "{gate:?}: {verdict:?}");
    }
}

#[test]
fn stage_disagreement_fails_every_gate() {
    for gate in ALL_GATES {
        assert_eq!(reason(gate, |i| i.expected_stage = Stage::Culled), "stage_mismatch", "{gate:?}");
        assert_eq!(reason(gate, |i| i.reported_stage = Stage::Culled), "stage_mismatch", "{gate:?}");
        assert_eq!(
            reason(gate, |i| {
                i.current_stage = Stage::Terminated;
                i.expected_stage = Stage::Terminated;
                i.reported_stage = Stage::Terminated;
            }),
            "stage_mismatch",
            "agreeing stages that are not the gate's source stage: {gate:?}"
        );
    }
}

#[test]
fn g0_checks_blueprint_and_parameters() {
    let g = Gate::G0Sanity;
    assert_eq!(reason(g, |i| i.blueprint_id = " ".into()), "empty_blueprint_id");
    assert_eq!(reason(g, |i| i.blueprint_known = false), "unknown_blueprint");
    assert_eq!(reason(g, |i| i.parameters[0].value = f64::NAN), "non_finite_parameter");
    assert_eq!(reason(g, |i| i.parameters[0].value = f64::INFINITY), "non_finite_parameter");
    assert_eq!(reason(g, |i| i.parameters[0].value = 2.0), "parameter_out_of_bounds");
    assert_eq!(reason(g, |i| i.parameters[0].name = "momentum".into()), "undeclared_parameter");
    assert_eq!(reason(g, |i| i.parameters.push(i.parameters[0].clone())), "duplicate_parameter");
    assert_eq!(reason(g, |i| i.parameter_bounds[0].min = 5.0), "invalid_parameter_bounds");
}

#[test]
fn g1_checks_kernel_and_isolation() {
    let g = Gate::G1GradientHealth;
    assert_eq!(reason(g, |i| i.kernel_attached = false), "kernel_not_attached");
    assert_eq!(reason(g, |i| i.kernel_verified = false), "kernel_not_verified");
    assert_eq!(reason(g, |i| i.isolation_violations = 1), "isolation_violations");
    assert_eq!(reason(g, |i| i.max_cosine = f64::NAN), "non_finite_cosine");
}

#[test]
fn g2_fails_on_fallback_instability_and_latency() {
    let g = Gate::G2Stability;
    assert_eq!(reason(g, |i| i.fallback_used = true), "fallback_used");
    assert_eq!(reason(g, |i| i.outputs_finite = false), "non_finite_outputs");
    assert_eq!(reason(g, |i| i.loss_window.push(f64::NAN)), "non_finite_outputs");
    assert_eq!(reason(g, |i| i.loss_window.clear()), "empty_loss_window");
    assert_eq!(reason(g, |i| i.loss_window = vec![0.0, 10.0]), "loss_variance_exceeded");
    assert_eq!(reason(g, |i| i.kernel_latency_us = 6000.0), "latency_over_budget");
    assert_eq!(reason(g, |i| i.kernel_latency_us = f64::NAN), "latency_over_budget");
}

#[test]
fn g3_checks_mesh_covers_this_sites_layers() {
    let g = Gate::G3Interface;
    assert_eq!(reason(g, |i| i.host_registered = false), "host_not_registered");
    assert_eq!(reason(g, |i| i.interface_matches = false), "interface_mismatch");
    assert_eq!(reason(g, |i| i.required_layers.clear()), "no_required_layers");
    let mut inputs = passing(g);
    inputs.required_layers.push("block9".into());
    let verdict = evaluate(g, &inputs);
    assert_eq!(verdict.reason, "mesh_not_covering");
    assert!(verdict.attributes.iter().any(|a| a.key == "missing"
        && matches!(&a.value, kasmina_plugin_sdk::types::AttributeValue::Text(t) if t == "block9")));
    // A registered host with a mesh that covers other layers still fails.
    assert_eq!(reason(g, |i| i.available_layers = vec!["block0".into()]), "mesh_not_covering");
}

#[test]
fn g3_names_missing_layers_in_required_order_over_a_large_mesh() {
    let g = Gate::G3Interface;
    let mut inputs = passing(g);
    inputs.available_layers = (0..128).map(|i| format!("layer{i}")).collect();
    inputs.required_layers = (0..128).rev().map(|i| format!("layer{i}")).collect();
    assert!(evaluate(g, &inputs).passed, "every required layer is available, in any order");
    inputs.required_layers.extend(["gone3", "gone1", "gone2", "gone0", "gone4"].map(String::from));
    let verdict = evaluate(g, &inputs);
    assert_eq!(verdict.reason, "mesh_not_covering");
    let attr = |key: &str| verdict.attributes.iter().find(|a| a.key == key).map(|a| format!("{:?}", a.value));
    assert_eq!(attr("missing_count").as_deref(), Some("AttributeValue::Integer(5)"), "a count is typed (API 0.2.0)");
    assert_eq!(attr("missing").as_deref(), Some("AttributeValue::Text(\"gone3,gone1,gone2,gone0\")"));
}

#[test]
fn g4_fails_on_fallback_status_and_regression() {
    let g = Gate::G4SystemImpact;
    assert_eq!(reason(g, |i| i.performance_status = PerformanceStatus::Fallback), "performance_fallback");
    assert_eq!(reason(g, |i| i.performance_status = PerformanceStatus::Degraded), "performance_not_nominal");
    assert_eq!(reason(g, |i| i.performance_status = PerformanceStatus::Critical), "performance_not_nominal");
    assert!(
        evaluate(g, &{
            let mut i = passing(g);
            i.performance_status = PerformanceStatus::Healthy;
            i
        })
        .passed
    );
    assert_eq!(reason(g, |i| i.fallback_used = true), "fallback_used");
    assert_eq!(reason(g, |i| i.metric_delta = -0.5), "metric_regressed");
    assert_eq!(reason(g, |i| i.metric_tolerance = -1.0), "invalid_metric");
    assert_eq!(reason(g, |i| i.isolation_violations = 2), "isolation_violations");
}

#[test]
fn g5_requires_a_clean_slot() {
    let g = Gate::G5Reset;
    assert_eq!(reason(g, |i| i.kernel_attached = true), "kernel_still_attached");
    assert_eq!(reason(g, |i| i.isolation_violations = 1), "violations_outstanding");
    assert_eq!(reason(g, |i| i.reset_clean = false), "slot_not_clean");
}

#[test]
fn info_declares_a_gate_policy_at_the_sdk_api_version() {
    use kasmina_plugin_sdk::GatePolicy;
    let info = crate::DefaultGates::info();
    assert_eq!(info.kind, kasmina_plugin_sdk::types::PluginKind::GatePolicy);
    assert_eq!(info.api_version, kasmina_plugin_sdk::API_VERSION);
}

#[test]
fn ranks_that_disagree_fail_every_gate_but_g5() {
    use kasmina_plugin_sdk::gate::RankAgreement;
    for gate in [Gate::G0Sanity, Gate::G1GradientHealth, Gate::G2Stability, Gate::G3Interface, Gate::G4SystemImpact] {
        let agreed = |i: &mut GateInputs| i.ranks = Some(RankAgreement { world_size: 2, agreed: true });
        assert_eq!(reason(gate, agreed), "", "{gate:?}: agreeing ranks are no reason to fail");
        let diverged = |i: &mut GateInputs| i.ranks = Some(RankAgreement { world_size: 2, agreed: false });
        assert_eq!(reason(gate, diverged), "rank_divergence", "{gate:?}");
    }
    assert_eq!(reason(Gate::G5Reset, |i| i.ranks = Some(RankAgreement { world_size: 2, agreed: false })), "");
}

#[test]
fn g3_refuses_a_blend_whose_alpha_is_not_a_number() {
    use kasmina_plugin_sdk::gate::BlendStats;
    let stats = |alpha_mean: f64| BlendStats {
        steps: 3,
        alpha_mean,
        alpha_p95: 0.5,
        clamped_fraction: 0.0,
        gate_mean: None,
        kernel_latency_p95_us: 90.0,
    };
    assert_eq!(reason(Gate::G3Interface, |i| i.blend = Some(stats(0.4))), "");
    assert_eq!(reason(Gate::G3Interface, |i| i.blend = Some(stats(f64::NAN))), "blend_not_finite");
}
