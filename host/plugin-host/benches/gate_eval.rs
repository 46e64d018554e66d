//! Per-call gate evaluation: the default gate plugin on a fresh store per
//! call (`per-call`; pooled slots, the default, and on-demand mappings), on a
//! reused instance (`reuse`), and the same policy called natively; plus G3
//! over 128 mesh layers, with a variant that fails on its first rule to
//! isolate the cost of copying 256 layer names into the guest; and the
//! API 0.1.0 projection: the same policy built against the frozen 0.1.0
//! (the `gates-v0_1` fixture) against the 0.2.0 default, both reused.
//!
//! Run: `cargo bench -p kasmina-plugin-host --bench gate_eval -- --warm-up-time 1 --measurement-time 3`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kasmina_gates_plugin::policy;
use kasmina_plugin_host::conformance::corpus::passing_gate_inputs;
use kasmina_plugin_host::{
    GateInputs, GatePlugin, InstanceAllocation, Isolation, Pin, PluginLimits, PluginRuntime, PluginSpec, RuntimeConfig,
};
use kasmina_plugin_sdk::gate::{GateInputs as SdkInputs, PerformanceStatus};
use kasmina_plugin_sdk::types::{Gate, Parameter, ParameterBound, Stage};
use leyline::GateId;

/// The host's baseline inputs, rebuilt as the SDK's type for the native call.
fn native_inputs(host: &GateInputs, stage: Stage) -> SdkInputs {
    SdkInputs {
        seed_id: host.seed_id.clone(),
        site: host.site.clone(),
        blueprint_id: host.blueprint_id.clone(),
        blueprint_known: host.blueprint_known,
        current_stage: stage,
        expected_stage: stage,
        reported_stage: stage,
        parameters: host.parameters.iter().map(|(n, v)| Parameter { name: n.clone(), value: *v }).collect(),
        parameter_bounds: host
            .parameter_bounds
            .iter()
            .map(|(n, b)| ParameterBound { name: n.clone(), min: b.min, max: b.max })
            .collect(),
        kernel_attached: host.kernel_attached,
        kernel_verified: host.kernel_verified,
        fallback_used: host.fallback_used,
        isolation_violations: host.isolation_violations,
        max_cosine: host.max_cosine,
        outputs_finite: host.outputs_finite,
        loss_window: host.loss_window.clone(),
        loss_variance_threshold: host.loss_variance_threshold,
        kernel_latency_us: host.kernel_latency_us,
        latency_budget_us: host.latency_budget_us,
        host_registered: host.host_registered,
        required_layers: host.required_layers.clone(),
        available_layers: host.available_layers.clone(),
        interface_matches: host.interface_matches,
        performance_status: PerformanceStatus::Nominal,
        metric_delta: host.metric_delta,
        metric_tolerance: host.metric_tolerance,
        reset_clean: host.reset_clean,
        blend: None,
        ranks: None,
    }
}

fn with_layers(mut inputs: GateInputs, n: usize) -> GateInputs {
    inputs.required_layers = (0..n).map(|i| format!("layer{i}")).collect();
    inputs.available_layers = inputs.required_layers.clone();
    inputs
}

fn bench(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(runtime) = PluginRuntime::new(RuntimeConfig::new(dir.path())) else { return };
    let spec = PluginSpec::new(kasmina_plugin_artifacts::GATES, Pin::Unpinned);
    let Ok(per_call) = GatePlugin::load(&runtime, &spec) else { return };
    let Ok(reused) = per_call.with_limits(PluginLimits { isolation: Isolation::Reuse, ..PluginLimits::default() })
    else {
        return;
    };
    let on_demand_config =
        RuntimeConfig { instance_allocation: InstanceAllocation::OnDemand, ..RuntimeConfig::new(dir.path()) };
    let Ok(on_demand_runtime) = PluginRuntime::new(on_demand_config) else { return };
    let Ok(on_demand) = GatePlugin::load(&on_demand_runtime, &spec) else { return };
    let g2 = passing_gate_inputs(GateId::G2Stability);
    let g2_native = native_inputs(&g2, Stage::Training);
    let g3 = with_layers(passing_gate_inputs(GateId::G3Interface), 128);
    let g3_native = native_inputs(&g3, Stage::Blending);
    assert!(per_call.evaluate(GateId::G2Stability, &g2).passed && reused.evaluate(GateId::G3Interface, &g3).passed);
    assert!(on_demand.evaluate(GateId::G2Stability, &g2).passed);

    let mut group = c.benchmark_group("gate_eval_g2");
    group.bench_function("wasm_fresh_store", |b| {
        b.iter(|| black_box(per_call.evaluate(GateId::G2Stability, black_box(&g2))))
    });
    group.bench_function("wasm_fresh_store_on_demand", |b| {
        b.iter(|| black_box(on_demand.evaluate(GateId::G2Stability, black_box(&g2))))
    });
    group.bench_function("wasm_reused_instance", |b| {
        b.iter(|| black_box(reused.evaluate(GateId::G2Stability, black_box(&g2))))
    });
    group
        .bench_function("native", |b| b.iter(|| black_box(policy::evaluate(Gate::G2Stability, black_box(&g2_native)))));
    group.finish();

    let mut group = c.benchmark_group("gate_eval_g3_128_layers");
    group.bench_function("wasm_reused_instance", |b| {
        b.iter(|| black_box(reused.evaluate(GateId::G3Interface, black_box(&g3))))
    });
    group
        .bench_function("native", |b| b.iter(|| black_box(policy::evaluate(Gate::G3Interface, black_box(&g3_native)))));
    // Fails on `host_not_registered` before touching the layers: what is
    // left is the canonical-ABI copy of the inputs in and the verdict out.
    let mut g3_transfer = g3.clone();
    g3_transfer.host_registered = false;
    group.bench_function("wasm_reused_transfer_only", |b| {
        b.iter(|| black_box(reused.evaluate(GateId::G3Interface, black_box(&g3_transfer))))
    });
    group.finish();

    // Plugin API 0.1.0 served beside 0.2.0: one policy, two versions. Goal:
    // the 0.1.0 call costs at most 10 % more than the native 0.2.0 one.
    let old_spec = PluginSpec::new(kasmina_plugin_artifacts::FIXTURE_GATES_V0_1, Pin::Unpinned);
    let reuse = PluginLimits { isolation: Isolation::Reuse, ..PluginLimits::default() };
    let Ok(v0_1) = GatePlugin::load(&runtime, &old_spec).and_then(|p| p.with_limits(reuse)) else { return };
    let g3_small = passing_gate_inputs(GateId::G3Interface);
    assert!(v0_1.evaluate(GateId::G2Stability, &g2).passed && v0_1.evaluate(GateId::G3Interface, &g3).passed);
    for (name, gate, inputs) in [
        ("g2", GateId::G2Stability, &g2),
        ("g3", GateId::G3Interface, &g3_small),
        ("g3_128_layers", GateId::G3Interface, &g3),
    ] {
        let mut group = c.benchmark_group(format!("gate_api_version_{name}"));
        group.bench_function("v0_2_native", |b| b.iter(|| black_box(reused.evaluate(gate, black_box(inputs)))));
        group.bench_function("v0_1_projected", |b| b.iter(|| black_box(v0_1.evaluate(gate, black_box(inputs)))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
