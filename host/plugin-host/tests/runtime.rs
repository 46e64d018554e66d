//! The runtime with real components built from `plugins/` and
//! `tests/fixtures/plugins/`: WIT calls, containment of every fault fixture
//! with its specific reason, pinning, kind/version refusal, the artifact cache.

mod common;

use std::collections::BTreeMap;

use kasmina_plugin_artifacts as artifacts;
use kasmina_plugin_host::conformance::corpus::{
    passing_gate_inputs, passing_parameters, plain_context, safe_descriptor,
};
use kasmina_plugin_host::{
    AnnotationError, AnnotationLimits, AnnotationPlugin, BlueprintPlugin, CacheOutcome, FailureKind, GatePlugin,
    Isolation, ParseErrorCode, Pin, PluginError, PluginKind, PluginLimits, PluginRuntime, PluginSpec, RuntimeConfig,
};
use leyline::{BlendMode, BlueprintTier, GateId};

use common::{pinned, runtime};

#[test]
fn default_gate_plugin_is_called_through_wit() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let gates = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    assert_eq!(gates.identity().info.kind, PluginKind::GatePolicy);
    assert_eq!(gates.identity().info.api_version, "0.2.0");
    let verdict = gates.evaluate(GateId::G2Stability, &passing_gate_inputs(GateId::G2Stability));
    assert!(verdict.passed, "{verdict:?}");
    let mut inputs = passing_gate_inputs(GateId::G2Stability);
    inputs.fallback_used = true;
    assert_eq!(gates.evaluate(GateId::G2Stability, &inputs).reason, "fallback_used");
    let mut inputs = passing_gate_inputs(GateId::G3Interface);
    inputs.required_layers.push("block9".into());
    let verdict = gates.evaluate(GateId::G3Interface, &inputs);
    assert_eq!(verdict.reason, "mesh_not_covering");
    assert_eq!(verdict.attributes.get("missing").map(ToString::to_string).as_deref(), Some("block9"));
    Ok(())
}

/// Loads a fault fixture and returns the failure of one G2 evaluation.
fn fault(runtime: &PluginRuntime, path: &str, isolation: Isolation) -> anyhow::Result<(FailureKind, String)> {
    let mut spec = pinned(path)?;
    spec.limits.isolation = isolation;
    if path != artifacts::FIXTURE_LOOP {
        // Only the loop fixture is about time: it keeps the default 10 ms
        // deadline. The others get slack so a descheduled test thread on a
        // busy machine cannot turn their fault into a timeout.
        spec.limits.deadline = std::time::Duration::from_millis(250);
    }
    let plugin = GatePlugin::load(runtime, &spec)?;
    let inputs = passing_gate_inputs(GateId::G2Stability);
    let verdict = plugin.evaluate(GateId::G2Stability, &inputs);
    assert!(!verdict.passed, "fail closed");
    let failure =
        plugin.try_evaluate(GateId::G2Stability, &inputs).err().ok_or_else(|| anyhow::anyhow!("no failure"))?;
    assert_eq!(verdict.reason, failure.kind.as_reason());
    Ok((failure.kind, failure.detail))
}

#[test]
fn every_fault_fixture_is_contained_with_its_reason() -> anyhow::Result<()> {
    let cases = [
        (artifacts::FIXTURE_LOOP, FailureKind::Timeout, "deadline"),
        (artifacts::FIXTURE_ALLOC, FailureKind::Oom, "refused"),
        // std's panic hook reaches for `wasi:cli/environment` (RUST_BACKTRACE),
        // which is defined as a trap: contained before the abort.
        (artifacts::FIXTURE_PANIC, FailureKind::Trap, "not given"),
        (artifacts::FIXTURE_STACK, FailureKind::Trap, "stack"),
        (artifacts::FIXTURE_HUGE_REASON, FailureKind::BadOutput, "reason"),
        (artifacts::FIXTURE_MANY_ATTRIBUTES, FailureKind::BadOutput, "attributes"),
        (artifacts::FIXTURE_CLOCK, FailureKind::Trap, "wasi:clocks"),
    ];
    let (runtime, _dir) = runtime()?;
    for (path, kind, hint) in cases {
        for isolation in [Isolation::PerCall, Isolation::Reuse] {
            let (got, detail) = fault(&runtime, path, isolation)?;
            assert_eq!(got, kind, "{path} ({isolation:?}): {detail}");
            assert!(detail.to_lowercase().contains(hint), "{path}: {detail}");
        }
    }
    Ok(())
}

#[test]
fn a_reused_instance_is_replaced_after_a_trap() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let mut spec = pinned(artifacts::FIXTURE_PANIC)?;
    spec.limits.isolation = Isolation::Reuse;
    let plugin = GatePlugin::load(&runtime, &spec)?;
    let inputs = passing_gate_inputs(GateId::G0Sanity);
    // A poisoned store would answer "cannot enter component"; a replaced
    // instance panics again with the same trap every time.
    for _ in 0..3 {
        let failure = plugin.try_evaluate(GateId::G0Sanity, &inputs).err().ok_or_else(|| anyhow::anyhow!("passed"))?;
        assert_eq!(failure.kind, FailureKind::Trap);
        assert!(failure.detail.contains("not given"), "{}", failure.detail);
    }
    let gates = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?
        .with_limits(PluginLimits { isolation: Isolation::Reuse, ..PluginLimits::default() })?;
    for _ in 0..3 {
        assert!(gates.evaluate(GateId::G0Sanity, &inputs).passed);
    }
    Ok(())
}

#[test]
fn wrong_api_version_is_refused_before_instantiation() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let err = GatePlugin::load(&runtime, &pinned(artifacts::FIXTURE_WRONG_VERSION)?).err();
    let Some(err @ PluginError::VersionMismatch { .. }) = err else {
        anyhow::bail!("expected a version mismatch, got {err:?}")
    };
    assert!(err.is_version_mismatch());
    let text = err.to_string();
    assert!(text.contains("plugin_version_mismatch") && text.contains("0.9.0") && text.contains("0.1.0"), "{text}");
    Ok(())
}

#[test]
fn pins_kinds_and_limits_are_enforced_at_load() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let wrong_pin = PluginSpec::new(artifacts::GATES, Pin::sha256(&"0".repeat(64))?);
    assert!(matches!(GatePlugin::load(&runtime, &wrong_pin), Err(PluginError::PinMismatch { .. })));
    assert!(matches!(Pin::sha256("abc"), Err(PluginError::InvalidPin(_))));
    let as_gate = GatePlugin::load(&runtime, &pinned(artifacts::ANNOTATIONS)?);
    assert!(matches!(
        as_gate,
        Err(PluginError::KindMismatch { expected: PluginKind::GatePolicy, found: PluginKind::AnnotationParser, .. })
    ));
    let mut fueled = pinned(artifacts::GATES)?;
    fueled.limits.fuel = Some(1000);
    assert!(matches!(GatePlugin::load(&runtime, &fueled), Err(PluginError::Link { .. })), "fuel needs fuel metering");
    let missing = PluginSpec::new("/nonexistent/plugin.wasm", Pin::Unpinned);
    assert!(matches!(GatePlugin::load(&runtime, &missing), Err(PluginError::Io { .. })));
    Ok(())
}

#[test]
fn fuel_metering_bounds_a_loop_too() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = PluginRuntime::new(RuntimeConfig { fuel_metering: true, ..RuntimeConfig::new(dir.path()) })?;
    let mut spec = pinned(artifacts::FIXTURE_LOOP)?;
    spec.limits.fuel = Some(1_000_000);
    spec.limits.deadline = std::time::Duration::from_secs(5);
    let plugin = GatePlugin::load(&runtime, &spec)?;
    let failure = plugin.try_evaluate(GateId::G0Sanity, &passing_gate_inputs(GateId::G0Sanity)).err();
    assert_eq!(failure.map(|f| (f.kind, f.detail)), Some((FailureKind::Timeout, "fuel exhausted".to_owned())));
    Ok(())
}

#[test]
fn artifacts_are_compiled_once_and_loaded_from_disk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = std::fs::read(artifacts::BLUEPRINT_POLICY)?;
    let first = PluginRuntime::new(RuntimeConfig::new(dir.path()))?;
    assert_eq!(first.load_through_disk_cache(&bytes)?, CacheOutcome::Compiled);
    let spec = pinned(artifacts::BLUEPRINT_POLICY)?;
    BlueprintPlugin::load(&first, &spec)?;
    BlueprintPlugin::load(&first, &spec)?;
    let stats = first.cache_stats();
    assert_eq!((stats.compiles, stats.disk_hits, stats.memory_hits), (1, 1, 1));
    // A fresh process (runtime) finds the artifact on disk.
    let second = PluginRuntime::new(RuntimeConfig::new(dir.path()))?;
    assert_eq!(second.load_through_disk_cache(&bytes)?, CacheOutcome::Disk);
    // A corrupted artifact is rejected and recompiled, never deserialised.
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut data = std::fs::read(&path)?;
            let middle = data.len() / 2;
            data[middle] ^= 0xff;
            std::fs::write(&path, data)?;
        }
    }
    let third = PluginRuntime::new(RuntimeConfig::new(dir.path()))?;
    assert_eq!(third.load_through_disk_cache(&bytes)?, CacheOutcome::Rejected);
    assert_eq!(third.cache_stats().rejected, 1);
    Ok(())
}

/// Runtimes sharing one cold cache directory (parallel tests, a daemon and
/// its CLI) may compile the same plugin at once; every load must succeed.
#[test]
fn concurrent_compiles_into_one_cache_all_succeed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = std::fs::read(artifacts::BLUEPRINT_POLICY)?;
    let runtimes = (0..4).map(|_| PluginRuntime::new(RuntimeConfig::new(dir.path()))).collect::<Result<Vec<_>, _>>()?;
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> =
            runtimes.iter().map(|runtime| scope.spawn(|| runtime.load_through_disk_cache(&bytes))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("loader panicked"))).collect::<Vec<_>>()
    });
    for outcome in outcomes {
        let outcome = outcome??;
        assert!(matches!(outcome, CacheOutcome::Compiled | CacheOutcome::Disk), "{outcome:?}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Ok(())
}

#[test]
fn annotation_plugin_parses_and_the_host_revalidates() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let parser = AnnotationPlugin::load(&runtime, &pinned(artifacts::ANNOTATIONS)?)?;
    let limits = AnnotationLimits::default();
    let annotations: BTreeMap<String, String> = [
        ("training_run_id", "run-42"),
        ("mesh_layers", "block1,block2,block1"),
        ("blend_mode", "CHANNEL"),
        ("alpha_vec", "[0.25, 1.5]"),
        ("alpha_vec_len", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let parsed = parser.parse(&annotations, &limits)?;
    assert_eq!(parsed.training_run_id.as_deref(), Some("run-42"));
    assert_eq!(parsed.mesh_layers, vec!["block1", "block2"]);
    assert_eq!(parsed.mesh_duplicates, 1);
    assert_eq!(parsed.alpha_clamped, 1);
    let blend = parsed.blend.ok_or_else(|| anyhow::anyhow!("no blend"))?;
    assert_eq!((blend.mode, blend.alpha_vec), (BlendMode::Channel, Some(vec![0.25, 1.0])));

    let mut unknown = annotations.clone();
    unknown.insert("blend_mode".into(), "LINEAR".into());
    let Err(AnnotationError::Rejected(err)) = parser.parse(&unknown, &limits) else { anyhow::bail!("LINEAR accepted") };
    assert_eq!((err.code, err.key.as_str()), (ParseErrorCode::UnknownBlendMode, "blend_mode"));

    // The byte cap is enforced by the host before the plugin sees the input.
    let mut huge = annotations.clone();
    huge.insert("x".into(), "y".repeat(limits.annotation_bytes_cap as usize));
    let Err(AnnotationError::Rejected(err)) = parser.parse(&huge, &limits) else { anyhow::bail!("over cap accepted") };
    assert_eq!(err.code, ParseErrorCode::OverByteCap);
    Ok(())
}

#[test]
fn blueprint_plugin_admits_and_refuses() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let policy = BlueprintPlugin::load(&runtime, &pinned(artifacts::BLUEPRINT_POLICY)?)?;
    let context = plain_context();
    assert!(policy.admit(&safe_descriptor(), &passing_parameters(), &context).passed);
    let high = leyline::BlueprintDescriptor { tier: BlueprintTier::HighRisk, ..safe_descriptor() };
    assert_eq!(policy.admit(&high, &passing_parameters(), &context).reason, "high_risk_not_approved");
    let nan = BTreeMap::from([("width".to_owned(), f64::NAN)]);
    assert_eq!(policy.admit(&safe_descriptor(), &nan, &context).reason, "non_finite_parameter");
    Ok(())
}
