//! Plugin API 0.1.0 and 0.2.0 in one daemon (`wit/README.md`): a gate
//! plugin built against the frozen 0.1.0 (the `gates-v0_1` fixture) and the
//! 0.2.0 default gate the same seed through G0–G4, each as the active plugin
//! and as the shadow candidate of the other, and agree on every verdict;
//! `kasmina journal replay --plugin` accepts the 0.1.0 plugin against a
//! journal the 0.2.0 default wrote (blend statistics included).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::Path;
use std::time::Duration;

use kasmina_daemon::{DaemonHost, StartOptions, journal_tools};
use leyline::api::KasminaApi;
use leyline::journal::JournalRecord;
use leyline::{GateId, SeedOperation, SeedStage};
use support::daemon_process::cli;
use support::{SimTrainer, command, key, registration, stage_of, test_settings, urza};

use kasmina_plugin_artifacts as artifacts;

fn plugin_ref(table: &str, path: &str, sha256: &str) -> String {
    format!("[plugins.{table}]\npath = {path:?}\nsha256 = {sha256:?}\n")
}

fn start(dir: &Path, extra: &str) -> DaemonHost {
    let mut options = StartOptions::new(test_settings(extra));
    options.key = Some(key());
    options.urza_dir = Some(dir.join("urza"));
    options.journal_dir = Some(dir.join("journal"));
    DaemonHost::start(options).unwrap().0
}

/// Germinates hidden-0 and steps until G4 has let it into PROBATIONARY.
fn run_to_probation(host: &DaemonHost) {
    host.register_host(registration()).unwrap();
    assert!(host.submit_command(command("g0", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    let mut sim = SimTrainer::new(100);
    while stage_of(host, "hidden-0") != SeedStage::Probationary {
        assert!(sim.step < 40, "stuck in {:?}", stage_of(host, "hidden-0"));
        sim.step(host);
    }
    assert!(host.host().manager().gate_service().settle_shadow(Duration::from_secs(60)));
}

#[test]
fn a_v0_1_and_a_v0_2_gate_plugin_gate_the_same_seed_and_agree() {
    for (active, shadow) in [
        (None, (artifacts::FIXTURE_GATES_V0_1, artifacts::FIXTURE_GATES_V0_1_SHA256)),
        (
            Some((artifacts::FIXTURE_GATES_V0_1, artifacts::FIXTURE_GATES_V0_1_SHA256)),
            (artifacts::GATES, artifacts::GATES_SHA256),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        urza(dir.path());
        let mut extra = plugin_ref("shadow_gates", shadow.0, shadow.1);
        if let Some((path, sha)) = active {
            extra.push_str(&plugin_ref("gates", path, sha));
        }
        let host = start(dir.path(), &extra);
        let served = host.host().manager().gate_service().plugin_api_versions();
        let expected = if active.is_some() { ("0.1.0", Some("0.2.0")) } else { ("0.2.0", Some("0.1.0")) };
        assert_eq!(served, expected, "active and shadow API versions");
        run_to_probation(&host);
        let calls = host.host().manager().gate_service().call_stats();
        // G0 at GERMINATE, then G1–G4: every one judged by both versions.
        assert!(calls.shadow_agreements >= 5 && calls.shadow_disagreements == 0, "{calls:?}");
        drop(host);

        // The journal holds what the plugins saw: G3 was decided on blend
        // statistics (API 0.2.0 inputs), which a 0.1.0 plugin never sees.
        let (entries, _) = journal_tools::read_journal(&dir.path().join("journal")).unwrap();
        let g3 = entries
            .iter()
            .find_map(|e| match &e.record {
                JournalRecord::GateVerdict { gate: GateId::G3Interface, inputs, passed: true, .. } => Some(inputs),
                _ => None,
            })
            .expect("a passing G3 verdict in the journal");
        let blend = g3.blend.as_ref().expect("blend statistics in the G3 inputs");
        assert!(blend.steps >= 1 && (0.0..=1.0).contains(&blend.alpha_mean), "{blend:?}");
        assert_eq!(g3.ranks, None, "a single-process trainer has no rank agreement");
    }
}

#[test]
fn journal_replay_accepts_a_candidate_of_either_version() {
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let host = start(dir.path(), "");
    run_to_probation(&host);
    drop(host);
    let journal = dir.path().join("journal");
    let cache = support::plugin_cache();
    // `journal replay JOURNAL --plugin PLUGIN --fail-on-disagreement`: (exit code, stdout, stderr).
    let replay = |plugin: &str| {
        cli(&[
            "journal",
            "replay",
            journal.to_str().unwrap(),
            "--plugin",
            plugin,
            "--deadline-ms",
            "250",
            "--cache",
            cache.to_str().unwrap(),
            "--fail-on-disagreement",
        ])
    };
    for plugin in [artifacts::FIXTURE_GATES_V0_1, artifacts::GATES] {
        let (code, stdout, stderr) = replay(plugin);
        assert_eq!(code, 0, "{plugin}: {stdout}\n{stderr}");
        assert!(stdout.contains(" 0 disagree"), "{plugin}: {stdout}");
    }
    // Negative control: a candidate that fails every call (it panics) does disagree.
    let (code, stdout, _) = replay(artifacts::FIXTURE_PANIC);
    assert_eq!(code, 1, "{stdout}");
}
