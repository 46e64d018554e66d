//! Inputs for conformance runs: passing baselines per gate and a
//! deterministic generator of hostile-ish inputs (non-finite numbers, long
//! lists, disagreeing stages, malformed annotations).

use std::collections::BTreeMap;

use leyline::lifecycle::{ALL_GATES, ALL_STAGES};
use leyline::{
    BlendStats, BlueprintDescriptor, BlueprintTier, GateId, KernelInterface, ParameterBounds, RankAgreement, SeedStage,
};

use crate::annotation::AnnotationLimits;
use crate::blueprint::AdmissionContext;
use crate::gate::{GateInputs, PerformanceStatus};

/// The stage a gate's transition leaves from.
pub fn source_stage(gate: GateId) -> SeedStage {
    match gate {
        GateId::G0Sanity => SeedStage::Dormant,
        GateId::G1GradientHealth => SeedStage::Germinated,
        GateId::G2Stability => SeedStage::Training,
        GateId::G3Interface => SeedStage::Blending,
        GateId::G4SystemImpact => SeedStage::Shadowing,
        GateId::G5Reset => SeedStage::Resetting,
    }
}

/// Inputs a SPEC-conforming gate policy passes at `gate`: a healthy seed.
pub fn passing_gate_inputs(gate: GateId) -> GateInputs {
    let stage = source_stage(gate);
    let resetting = gate == GateId::G5Reset;
    GateInputs {
        seed_id: "seed-1".into(),
        site: "block2".into(),
        blueprint_id: "bp-conv".into(),
        blueprint_known: true,
        current_stage: stage,
        expected_stage: stage,
        reported_stage: stage,
        parameters: BTreeMap::from([("lr".to_owned(), 0.01)]),
        parameter_bounds: BTreeMap::from([("lr".to_owned(), ParameterBounds { min: 0.0, max: 1.0 })]),
        kernel_attached: !resetting,
        kernel_verified: !resetting,
        fallback_used: false,
        isolation_violations: 0,
        max_cosine: 0.01,
        outputs_finite: true,
        loss_window: vec![1.0, 1.01, 0.99, 1.0],
        loss_variance_threshold: 0.1,
        kernel_latency_us: 100.0,
        latency_budget_us: 5000.0,
        host_registered: true,
        required_layers: vec!["block1".into(), "block2".into()],
        available_layers: vec!["block0".into(), "block1".into(), "block2".into()],
        interface_matches: true,
        performance_status: PerformanceStatus::Nominal,
        metric_delta: 0.0,
        metric_tolerance: 0.01,
        reset_clean: true,
        blend: None,
        ranks: None,
    }
}

/// A descriptor the default policy admits with [`passing_parameters`].
pub fn safe_descriptor() -> BlueprintDescriptor {
    BlueprintDescriptor {
        blueprint_id: "bp-mlp".into(),
        name: "MLP adapter".into(),
        tier: BlueprintTier::Safe,
        parameter_bounds: BTreeMap::from([("width".to_owned(), ParameterBounds { min: 1.0, max: 64.0 })]),
        risk: 0.1,
        quarantine_only: false,
        approval_required: false,
        interface: KernelInterface { inputs: Vec::new(), outputs: Vec::new() },
    }
}

/// Parameters within [`safe_descriptor`]'s bounds.
pub fn passing_parameters() -> BTreeMap<String, f64> {
    BTreeMap::from([("width".to_owned(), 8.0)])
}

/// An ordinary, unapproved, non-quarantine context.
pub fn plain_context() -> AdmissionContext {
    AdmissionContext { training_run_id: "run-1".into(), quarantine: false, approved: false }
}

/// xorshift64*: tiny, deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is remapped; xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn float(&mut self) -> f64 {
        match self.below(12) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => 0.0,
            4 => -1e300,
            _ => (self.next() % 20_000) as f64 / 1000.0 - 10.0,
        }
    }
    fn names(&mut self, max: usize) -> Vec<String> {
        (0..self.below(max + 1)).map(|_| format!("block{}", self.below(40))).collect()
    }
}

/// One generated gate call.
pub fn gate_case(rng: &mut Rng) -> (GateId, GateInputs) {
    let gate = ALL_GATES[rng.below(ALL_GATES.len())];
    let mut inputs = passing_gate_inputs(gate);
    let stage =
        |rng: &mut Rng, base: SeedStage| if rng.chance(4) { ALL_STAGES[rng.below(ALL_STAGES.len())] } else { base };
    inputs.current_stage = stage(rng, inputs.current_stage);
    inputs.expected_stage = stage(rng, inputs.expected_stage);
    inputs.reported_stage = stage(rng, inputs.reported_stage);
    if rng.chance(3) {
        inputs.parameters = (0..rng.below(6)).map(|i| (format!("p{i}"), rng.float())).collect();
    }
    inputs.blueprint_known = !rng.chance(8);
    inputs.kernel_attached = rng.chance(8) != inputs.kernel_attached;
    inputs.kernel_verified = !rng.chance(8);
    inputs.fallback_used = rng.chance(6);
    inputs.isolation_violations = if rng.chance(6) { rng.below(5) as u32 } else { 0 };
    inputs.max_cosine = rng.float();
    inputs.outputs_finite = !rng.chance(10);
    inputs.loss_window = (0..rng.below(64)).map(|_| rng.float()).collect();
    inputs.kernel_latency_us = rng.float().abs() * 1000.0;
    inputs.required_layers = rng.names(128);
    inputs.available_layers = rng.names(128);
    inputs.performance_status = [
        PerformanceStatus::Nominal,
        PerformanceStatus::Healthy,
        PerformanceStatus::Degraded,
        PerformanceStatus::Fallback,
        PerformanceStatus::Critical,
    ][rng.below(5)];
    inputs.metric_delta = rng.float();
    inputs.reset_clean = !rng.chance(5);
    // API 0.2.0 facts (a 0.1.0 plugin never sees them): sometimes absent,
    // sometimes with non-finite figures.
    if rng.chance(2) {
        inputs.blend = Some(BlendStats {
            steps: 1 + rng.below(64) as u32,
            alpha_mean: rng.float(),
            alpha_p95: rng.float(),
            clamped_fraction: rng.float(),
            gate_mean: rng.chance(2).then(|| rng.float()),
            kernel_latency_p95_us: rng.float().abs() * 1000.0,
        });
    }
    if rng.chance(3) {
        inputs.ranks = Some(RankAgreement { world_size: 2 + rng.below(7) as u32, agreed: !rng.chance(4) });
    }
    (gate, inputs)
}

/// One generated annotation set (within the byte cap, so the plugin sees it).
pub fn annotation_case(rng: &mut Rng, limits: &AnnotationLimits) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let numbers = |rng: &mut Rng, n: usize| {
        let items: Vec<String> = (0..n).map(|_| format!("{}", rng.float())).collect();
        format!("[{}]", items.join(","))
    };
    if rng.chance(2) {
        map.insert("training_run_id".into(), if rng.chance(8) { " ".into() } else { "run-9".into() });
    }
    if rng.chance(2) {
        let layers = rng.names(limits.mesh_layers_cap as usize + 8);
        let joined = if rng.chance(2) { layers.join(",") } else { format!("[\"{}\"]", layers.join("\",\"")) };
        map.insert("mesh_layers".into(), joined);
    }
    if rng.chance(3) {
        let modes = ["CONVEX", "RESIDUAL", "CHANNEL", "CONFIDENCE", "convex", "LINEAR", ""];
        map.insert("blend_mode".into(), modes[rng.below(modes.len())].into());
    }
    if rng.chance(3) {
        let n = rng.below(limits.alpha_vec_cap as usize + 4);
        map.insert("alpha_vec".into(), numbers(rng, n));
        if rng.chance(2) {
            map.insert("alpha_vec_len".into(), format!("{}", rng.below(n + 2)));
        }
    }
    for key in ["gate_k", "gate_tau", "alpha_lo", "alpha_hi"] {
        if rng.chance(5) {
            let value = if rng.chance(6) { "abc".to_owned() } else { format!("{}", rng.float()) };
            map.insert(key.into(), value);
        }
    }
    if rng.chance(6) {
        map.insert("confidence_logits_required".into(), if rng.chance(2) { "true".into() } else { "maybe".into() });
    }
    if rng.chance(5) {
        map.insert("x-other-consumer".into(), "value".into());
    }
    let total: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > limits.annotation_bytes_cap as usize {
        map.remove("mesh_layers");
    }
    map
}

/// One generated admission request.
pub fn blueprint_case(rng: &mut Rng) -> (BlueprintDescriptor, BTreeMap<String, f64>, AdmissionContext) {
    let mut descriptor = safe_descriptor();
    descriptor.tier = [BlueprintTier::Safe, BlueprintTier::Experimental, BlueprintTier::HighRisk][rng.below(3)];
    descriptor.quarantine_only = rng.chance(4);
    descriptor.approval_required = rng.chance(4);
    descriptor.risk = if rng.chance(6) { rng.float() } else { 0.2 };
    if rng.chance(5) {
        descriptor.parameter_bounds.insert("depth".into(), ParameterBounds { min: rng.float(), max: rng.float() });
    }
    let params =
        (0..rng.below(4)).map(|i| (if i == 0 { "width".to_owned() } else { format!("p{i}") }, rng.float())).collect();
    let context = AdmissionContext {
        training_run_id: if rng.chance(8) { String::new() } else { "run-3".into() },
        quarantine: rng.chance(3),
        approved: rng.chance(3),
    };
    (descriptor, params, context)
}
