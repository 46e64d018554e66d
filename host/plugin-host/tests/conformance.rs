//! The conformance kit and hot reload against real components: every
//! default plugin (and the SDK example) passes, every fault fixture fails
//! with the specific check and reason, and the process survives them all.

mod common;

use std::time::Duration;

use kasmina_plugin_artifacts as artifacts;
use kasmina_plugin_host::conformance::{CheckOptions, CheckStatus, check_file, check_file_with, info_file};
use kasmina_plugin_host::{GatePlugin, Pin, PluginLimits, PluginSlot, PluginSpec, ReloadError};
use leyline::GateId;

use common::{pinned, runtime};

/// Thorough enough to catch every fixture, quick enough for `cargo test`.
/// The test deadline is loose (a shared 2-core box can deschedule a test
/// thread for milliseconds); the latency verdict is judged in fuel, the
/// same under any load, so it keeps the operators' default budget.
fn options() -> CheckOptions {
    CheckOptions {
        fuzz_cases: 96,
        determinism_cases: 12,
        latency_samples: 50,
        limits: PluginLimits { deadline: Duration::from_millis(250), ..PluginLimits::default() },
        ..CheckOptions::default()
    }
}

#[test]
fn default_plugins_and_the_sdk_example_pass() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    for path in [artifacts::GATES, artifacts::ANNOTATIONS, artifacts::BLUEPRINT_POLICY, artifacts::EXAMPLE_CUSTOM_GATE]
    {
        let report = check_file_with(&runtime, path.as_ref(), &options());
        assert!(report.passed(), "{report}");
        assert_eq!(report.checks.len(), 10, "{report}");
        assert!(report.checks.iter().all(|c| c.status == CheckStatus::Pass), "{report}");
        assert!(report.latency.is_some());
    }
    Ok(())
}

#[test]
fn every_fault_fixture_fails_its_specific_check() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let cases = [
        (artifacts::FIXTURE_LOOP, "fuzz", "plugin_timeout"),
        (artifacts::FIXTURE_ALLOC, "fuzz", "plugin_oom"),
        (artifacts::FIXTURE_PANIC, "fuzz", "plugin_trap"),
        (artifacts::FIXTURE_STACK, "fuzz", "plugin_trap"),
        (artifacts::FIXTURE_HUGE_REASON, "output-caps", "plugin_bad_output"),
        (artifacts::FIXTURE_MANY_ATTRIBUTES, "output-caps", "plugin_bad_output"),
        (artifacts::FIXTURE_WRONG_VERSION, "api-version", "plugin_version_mismatch"),
        (artifacts::FIXTURE_LYING_GATE, "safety-invariants", "fallback used but G2Stability passed"),
        (artifacts::FIXTURE_CLOCK, "imports", "plugins get no clock"),
    ];
    for (path, check, needle) in cases {
        let report = check_file_with(&runtime, path.as_ref(), &options());
        assert!(!report.passed(), "{report}");
        let result = report.check(check).ok_or_else(|| anyhow::anyhow!("no {check} line in\n{report}"))?;
        assert_eq!(result.status, CheckStatus::Fail, "{report}");
        assert!(result.detail.contains(needle), "{path}: expected {needle:?} in\n{report}");
        assert!(report.to_string().contains(&format!("FAIL {check}: ")), "{report}");
    }
    Ok(())
}

#[test]
fn check_file_and_info_file_use_their_own_runtime() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let report = check_file(artifacts::GATES.as_ref(), dir.path(), &options());
    assert!(report.passed(), "{report}");
    let text = report.to_string();
    assert!(text.lines().next().is_some_and(|l| l.starts_with("PASS load: ")), "{text}");
    assert!(text.ends_with("(10 checks)"), "{text}");
    let summary = info_file(artifacts::ANNOTATIONS.as_ref(), dir.path())?.to_string();
    assert!(summary.contains("name:        kasmina-default-annotations"), "{summary}");
    assert!(summary.contains("implements:  annotation-parser"), "{summary}");
    let missing = check_file("/nonexistent.wasm".as_ref(), dir.path(), &options());
    assert_eq!(missing.check("load").map(|c| c.status), Some(CheckStatus::Fail));
    Ok(())
}

/// The same loose deadline for a slot's canary (which runs under the spec's limits).
fn loose(mut spec: PluginSpec) -> PluginSpec {
    spec.limits = options().limits;
    spec
}

#[test]
fn hot_reload_swaps_only_after_the_canary_passes() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let slot: PluginSlot<GatePlugin> =
        PluginSlot::new(&runtime, &loose(pinned(artifacts::GATES)?), CheckOptions::smoke())?;
    let before = slot.current();
    assert_eq!(before.identity().info.name, "kasmina-default-gates");

    let lying = slot.reload(&loose(pinned(artifacts::FIXTURE_LYING_GATE)?));
    let Err(ReloadError::CanaryFailed { report }) = lying else { anyhow::bail!("lying gate was installed") };
    assert_eq!(report.check("safety-invariants").map(|c| c.status), Some(CheckStatus::Fail));
    let looping = slot.reload(&loose(pinned(artifacts::FIXTURE_LOOP)?));
    assert!(matches!(looping, Err(ReloadError::CanaryFailed { .. })));
    let changed = slot.reload(&PluginSpec::new(artifacts::EXAMPLE_CUSTOM_GATE, Pin::sha256(&"1".repeat(64))?));
    assert!(matches!(changed, Err(ReloadError::Load(_))), "a changed file (pin mismatch) is refused");
    assert_eq!(slot.refused_reloads(), 3);
    assert_eq!(slot.current().identity().sha256, before.identity().sha256, "the old plugin keeps serving");

    let swapped = slot.reload(&loose(pinned(artifacts::EXAMPLE_CUSTOM_GATE)?))?;
    assert_eq!(swapped.identity().info.name, "example-strict-gates");
    assert_eq!(slot.current().identity().info.name, "example-strict-gates");
    // A caller holding the old Arc keeps a working plugin.
    assert!(
        before
            .evaluate(
                GateId::G0Sanity,
                &kasmina_plugin_host::conformance::corpus::passing_gate_inputs(GateId::G0Sanity)
            )
            .passed
    );
    Ok(())
}

/// Issue 16, "Flaky conformance": the latency verdict is judged in fuel,
/// so twenty full checks of the default gate plugin give the same verdict
/// and the same cost, whatever else the machine is doing; wall-clock
/// p50/p99 are reported beside it.
#[test]
fn flaky_conformance_twenty_checks_of_the_default_gate_plugin_agree() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let mut costs = Vec::new();
    for run in 0..20 {
        let report = check_file_with(&runtime, artifacts::GATES.as_ref(), &options());
        assert!(report.passed(), "run {run}:\n{report}");
        let latency = report.latency.ok_or_else(|| anyhow::anyhow!("latency not measured"))?;
        assert!(latency.fuel_max > 0 && latency.fuel_max <= latency.fuel_budget, "{report}");
        let line = &report.check("latency").ok_or_else(|| anyhow::anyhow!("no latency check"))?.detail;
        assert!(line.contains("fuel per call") && line.contains("wall clock p50"), "{line}");
        costs.push((latency.fuel_p50, latency.fuel_max));
    }
    assert!(costs.iter().all(|c| *c == costs[0]), "cost differs between runs: {costs:?}");
    println!("default gate plugin: median {} fuel, max {} fuel per call", costs[0].0, costs[0].1);
    Ok(())
}

/// A budget below what the plugin costs fails the check, naming both.
#[test]
fn flaky_conformance_a_cost_over_budget_fails_with_both_numbers() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let report =
        check_file_with(&runtime, artifacts::GATES.as_ref(), &CheckOptions { fuel_budget_per_call: 10, ..options() });
    let latency = report.check("latency").ok_or_else(|| anyhow::anyhow!("no latency check"))?;
    assert_eq!(latency.status, CheckStatus::Fail, "{report}");
    assert!(latency.detail.contains("budget 10") || latency.detail.contains("budget of 10"), "{}", latency.detail);
    Ok(())
}
