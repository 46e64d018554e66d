//! Instance allocation: the default pooling allocator recycles slots without
//! weakening containment, a full pool fails closed with a reason that names
//! it (and recovers once a slot is free), and the on-demand strategy still
//! works for hosts that opt out of the pool.

mod common;

use kasmina_plugin_artifacts as artifacts;
use kasmina_plugin_host::conformance::corpus::passing_gate_inputs;
use kasmina_plugin_host::{
    FailureKind, GatePlugin, InstanceAllocation, Isolation, PluginError, PluginLimits, PluginRuntime, RuntimeConfig,
};
use leyline::GateId;

use common::pinned;

fn runtime_with(allocation: InstanceAllocation) -> anyhow::Result<(PluginRuntime, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = RuntimeConfig { instance_allocation: allocation, ..RuntimeConfig::new(dir.path()) };
    Ok((PluginRuntime::new(config)?, dir))
}

#[test]
fn the_default_runtime_pools_instances() {
    assert_eq!(
        RuntimeConfig::new("unused").instance_allocation,
        InstanceAllocation::Pooled { instances: kasmina_plugin_host::DEFAULT_POOLED_INSTANCES }
    );
}

#[test]
fn a_full_pool_fails_closed_naming_the_pool_and_recovers() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime_with(InstanceAllocation::Pooled { instances: 1 })?;
    let per_call = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    let reused = per_call.with_limits(PluginLimits { isolation: Isolation::Reuse, ..PluginLimits::default() })?;
    let inputs = passing_gate_inputs(GateId::G2Stability);
    // The reused instance now holds the only slot.
    assert!(reused.evaluate(GateId::G2Stability, &inputs).passed);
    let failure = per_call
        .try_evaluate(GateId::G2Stability, &inputs)
        .err()
        .ok_or_else(|| anyhow::anyhow!("a second instance must not fit a one-slot pool"))?;
    assert_eq!(failure.kind, FailureKind::Oom);
    assert!(failure.detail.contains("instance pool is exhausted"), "{}", failure.detail);
    let verdict = per_call.evaluate(GateId::G2Stability, &inputs);
    assert!(!verdict.passed);
    assert_eq!(verdict.reason, "plugin_oom");
    // Releasing the slot lets per-call evaluations through again.
    drop(reused);
    assert!(per_call.evaluate(GateId::G2Stability, &inputs).passed);
    Ok(())
}

#[test]
fn an_empty_pool_is_refused() {
    let result = runtime_with(InstanceAllocation::Pooled { instances: 0 });
    let error = result.err().and_then(|e| e.downcast::<PluginError>().ok());
    assert!(matches!(error, Some(PluginError::Engine(ref m)) if m.contains("at least one")), "{error:?}");
}

#[test]
fn on_demand_allocation_evaluates_and_contains_faults() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime_with(InstanceAllocation::OnDemand)?;
    let gates = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    let inputs = passing_gate_inputs(GateId::G2Stability);
    assert!(gates.evaluate(GateId::G2Stability, &inputs).passed);
    let mut spec = pinned(artifacts::FIXTURE_ALLOC)?;
    spec.limits.deadline = std::time::Duration::from_millis(250);
    let alloc = GatePlugin::load(&runtime, &spec)?;
    let failure =
        alloc.try_evaluate(GateId::G2Stability, &inputs).err().ok_or_else(|| anyhow::anyhow!("no failure"))?;
    assert_eq!(failure.kind, FailureKind::Oom);
    Ok(())
}

/// Recycled slots must not break the memory cap: the allocating fixture is
/// refused at the cap on every evaluation, not just on a slot's first use.
#[test]
fn the_memory_cap_holds_across_recycled_slots() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime_with(InstanceAllocation::Pooled { instances: 2 })?;
    let mut spec = pinned(artifacts::FIXTURE_ALLOC)?;
    spec.limits.deadline = std::time::Duration::from_millis(250);
    let alloc = GatePlugin::load(&runtime, &spec)?;
    let inputs = passing_gate_inputs(GateId::G2Stability);
    for _ in 0..3 {
        let failure =
            alloc.try_evaluate(GateId::G2Stability, &inputs).err().ok_or_else(|| anyhow::anyhow!("no failure"))?;
        assert_eq!(failure.kind, FailureKind::Oom, "{}", failure.detail);
    }
    let gates = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    assert!(
        gates.evaluate(GateId::G2Stability, &inputs).passed,
        "a slot the fixture filled serves the next plugin clean"
    );
    Ok(())
}
