//! Two plugin API versions served side by side (`wit/README.md`): the frozen
//! 0.1.0 stays frozen, a plugin built against it loads, passes the
//! conformance kit and decides like the default 0.2.0 plugin it was the
//! previous version of; 0.2.0's typed attributes and new inputs reach it
//! only when it is 0.2.0; an unknown version is refused before it runs.

mod common;

use std::path::Path;
use std::time::Duration;

use kasmina_plugin_artifacts as artifacts;
use kasmina_plugin_host::conformance::corpus::{Rng, gate_case, passing_gate_inputs};
use kasmina_plugin_host::conformance::{CheckOptions, check_file_with, info_file};
use kasmina_plugin_host::{ApiVersion, AttrValue, GatePlugin, PluginError, PluginLimits};
use leyline::lifecycle::ALL_GATES;
use leyline::{GateId, RankAgreement};
use sha2::{Digest, Sha256};

use common::{pinned, runtime};

/// SHA-256 over `wit/since_v0.1.0/` (each file's name, NUL, bytes, NUL, in
/// name order). Plugins in the field were built against exactly these
/// files: a change here would break them silently. Add a new version folder
/// instead (see `wit/README.md`).
const FROZEN_V0_1_DIGEST: &str = "c838a93504aea3ecc1f90312a430fd98e0a908ce5f65e05c0ce7cac928538c0c";

fn folder_digest(dir: &Path) -> anyhow::Result<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        hasher.update(name.as_encoded_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(dir.join(&name))?);
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[test]
fn the_v0_1_interface_is_frozen() -> anyhow::Result<()> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
    assert_eq!(folder_digest(&wit.join("since_v0.1.0"))?, FROZEN_V0_1_DIGEST, "wit/since_v0.1.0 was edited");
    // Negative control: the digest does tell folders apart.
    assert_ne!(folder_digest(&wit.join("since_v0.2.0"))?, FROZEN_V0_1_DIGEST);
    Ok(())
}

#[test]
fn a_v0_1_plugin_loads_and_passes_the_conformance_kit() -> anyhow::Result<()> {
    let (runtime, dir) = runtime()?;
    let old = GatePlugin::load(&runtime, &pinned(artifacts::FIXTURE_GATES_V0_1)?)?;
    assert_eq!(old.api_version(), ApiVersion::V0_1);
    assert_eq!(old.identity().info.api_version, "0.1.0");
    let current = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    assert_eq!(current.api_version(), ApiVersion::V0_2);
    // As in conformance.rs: a loose wall-clock deadline for a shared 2-core
    // box; the cost verdict is in fuel.
    let options = CheckOptions {
        fuzz_cases: 96,
        determinism_cases: 12,
        latency_samples: 50,
        limits: PluginLimits { deadline: Duration::from_millis(250), ..PluginLimits::default() },
        ..CheckOptions::default()
    };
    let report = check_file_with(&runtime, artifacts::FIXTURE_GATES_V0_1.as_ref(), &options);
    assert!(report.passed(), "{report}");
    let text = report.to_string();
    assert!(text.contains("gate-policy@0.1.0") && text.contains("served beside 0.2.0"), "{text}");
    let info = info_file(artifacts::FIXTURE_GATES_V0_1.as_ref(), dir.path())?.to_string();
    assert!(info.contains("api-version: 0.1.0 (served beside the current 0.2.0"), "{info}");
    let info = info_file(artifacts::GATES.as_ref(), dir.path())?.to_string();
    assert!(info.contains("api-version: 0.2.0 (current)"), "{info}");
    Ok(())
}

#[test]
fn the_v0_1_policy_decides_like_the_default_it_preceded() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let old = GatePlugin::load(&runtime, &pinned(artifacts::FIXTURE_GATES_V0_1)?)?;
    let current = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    let mut rng = Rng::new(7);
    let (mut compared, mut failing) = (0, 0);
    for _ in 0..400 {
        let (gate, mut inputs) = gate_case(&mut rng);
        // The facts 0.2.0 added (and the rules on them) are outside the old
        // policy's view; with them neutral both must say the same.
        if inputs.ranks.is_some_and(|r| !r.agreed) {
            inputs.ranks = Some(RankAgreement { world_size: 2, agreed: true });
        }
        if let Some(blend) = inputs.blend.as_mut() {
            blend.alpha_mean = 0.5;
            blend.alpha_p95 = 0.6;
        }
        let (a, b) = (old.try_evaluate(gate, &inputs)?, current.try_evaluate(gate, &inputs)?);
        assert_eq!((a.passed, &a.reason), (b.passed, &b.reason), "{gate:?} on {inputs:?}");
        compared += 1;
        failing += usize::from(!a.passed);
    }
    // Not vacuous: the corpus makes both policies fail often, and pass too.
    assert!(failing > 40 && failing < compared, "{failing} of {compared} failed");
    Ok(())
}

#[test]
fn the_new_inputs_and_typed_attributes_reach_only_a_v0_2_plugin() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let old = GatePlugin::load(&runtime, &pinned(artifacts::FIXTURE_GATES_V0_1)?)?;
    let current = GatePlugin::load(&runtime, &pinned(artifacts::GATES)?)?;
    // Ranks that disagree: the 0.2.0 default refuses, the 0.1.0 policy
    // cannot see them (its inputs are projected) and passes.
    for gate in ALL_GATES.into_iter().filter(|g| *g != GateId::G5Reset) {
        let mut inputs = passing_gate_inputs(gate);
        inputs.ranks = Some(RankAgreement { world_size: 4, agreed: false });
        let (a, b) = (old.evaluate(gate, &inputs), current.evaluate(gate, &inputs));
        assert!(a.passed, "{gate:?}: {a:?}");
        assert_eq!(b.reason, "rank_divergence", "{gate:?}");
        assert_eq!(b.attributes.get("world_size"), Some(&AttrValue::Int(4)));
    }
    // The same failure, attributes typed by one and text from the other.
    let mut inputs = passing_gate_inputs(GateId::G1GradientHealth);
    inputs.isolation_violations = 2;
    let (a, b) = (old.evaluate(GateId::G1GradientHealth, &inputs), current.evaluate(GateId::G1GradientHealth, &inputs));
    assert_eq!((a.reason.as_str(), b.reason.as_str()), ("isolation_violations", "isolation_violations"));
    assert_eq!(a.attributes.get("violations"), Some(&AttrValue::Str("2".into())));
    assert_eq!(b.attributes.get("violations"), Some(&AttrValue::Int(2)));
    Ok(())
}

#[test]
fn an_unserved_version_is_refused_before_instantiation_naming_every_served_one() -> anyhow::Result<()> {
    let (runtime, _dir) = runtime()?;
    let err = GatePlugin::load(&runtime, &pinned(artifacts::FIXTURE_WRONG_VERSION)?).err();
    let Some(err @ PluginError::VersionMismatch { .. }) = err else {
        anyhow::bail!("expected a version mismatch, got {err:?}")
    };
    let text = err.to_string();
    for version in ["0.9.0", "0.1.0", "0.2.0"] {
        assert!(text.contains(version), "{version} not named in: {text}");
    }
    Ok(())
}
