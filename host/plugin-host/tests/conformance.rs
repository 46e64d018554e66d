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
/// Wall-clock budgets are a benchmark concern on a shared 2-core box where a
/// test thread can be descheduled for milliseconds, so the test deadline and
/// latency budget are loose; the defaults (10 ms, 100 µs p99) are for operators.
fn options() -> CheckOptions {
    CheckOptions {
        fuzz_cases: 96,
        determinism_cases: 12,
        latency_samples: 50,
        latency_budget_p99: Duration::from_millis(50),
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
