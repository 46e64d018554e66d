//! Candidate gate plugins judged by their own verdict, on real plugins, a
//! real journal and the real `kasmina` binary:
//!
//! - `journal replay --plugin` counts an unsafe pass (the lying-gate fixture
//!   passing a G2 that a fallback failed) as a disagreement and says which
//!   host invariant would have overridden it — it used to compare the
//!   verdict *after* the override and call it an agreement;
//! - a live shadow candidate does the same;
//! - a looping shadow candidate (the loop fault fixture) never delays a
//!   training step: it runs off the step path with its own deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kasmina_daemon::{DaemonHost, StartOptions, journal_tools};
use leyline::api::KasminaApi;
use leyline::{SeedOperation, SeedStage, TelemetryEvent};
use support::daemon_process::cli;
use support::{SimTrainer, collect, command, key, registration, stage_of, test_settings, urza};

const INVARIANT: &str = "fallback_must_fail_g2_g4";

fn start(dir: &Path, extra: &str) -> DaemonHost {
    let mut options = StartOptions::new(test_settings(extra));
    options.key = Some(key());
    options.urza_dir = Some(dir.join("urza"));
    options.journal_dir = Some(dir.join("journal"));
    DaemonHost::start(options).unwrap().0
}

fn shadow(path: &str, sha256: &str) -> String {
    format!("[plugins.shadow_gates]\npath = {path:?}\nsha256 = {sha256:?}\n")
}

/// hidden-0 trains, then its trainer reports a fallback: G2 fails it.
fn fallback_fails_g2(host: &DaemonHost) -> SimTrainer {
    host.register_host(registration()).unwrap();
    assert!(host.submit_command(command("g0", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    let mut sim = SimTrainer::new(100);
    while stage_of(host, "hidden-0") != SeedStage::Training {
        assert!(sim.step < 5, "seed never started training");
        sim.step(host);
    }
    sim.fallback_used = true;
    while stage_of(host, "hidden-0") == SeedStage::Training {
        assert!(sim.step < 12, "G2 never ran");
        sim.step(host);
    }
    assert_eq!(stage_of(host, "hidden-0"), SeedStage::Embargoed);
    sim
}

fn named<'a>(events: &'a [TelemetryEvent], name: &str) -> Vec<&'a TelemetryEvent> {
    events.iter().filter(|e| e.name == name).collect()
}

fn attr(e: &TelemetryEvent, key: &str) -> String {
    e.attributes.get(key).map(ToString::to_string).unwrap_or_default()
}

#[test]
fn journal_replay_counts_an_unsafe_pass_as_a_disagreement() {
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let host = start(dir.path(), "");
    fallback_fails_g2(&host);
    drop(host);

    let journal = dir.path().join("journal");
    let (entries, _) = journal_tools::read_journal(&journal).unwrap();
    let limits = kasmina_plugin_host::PluginLimits { deadline: Duration::from_millis(250), ..Default::default() };
    let lying = kasmina_plugin_artifacts::FIXTURE_LYING_GATE;
    let candidate = journal_tools::load_candidate(lying.as_ref(), &support::plugin_cache(), limits).unwrap();
    let report = journal_tools::replay(&entries, &candidate).unwrap();
    assert_eq!(report.disagreements.len(), 1, "{report:?}");
    assert_eq!(report.unsafe_passes(), 1);
    let d = &report.disagreements[0];
    assert_eq!((d.gate, d.old_passed, d.new_passed), (leyline::GateId::G2Stability, false, true));
    assert_eq!(d.override_invariant.as_deref(), Some(INVARIANT));
    assert!(d.to_string().contains(&format!("candidate passed; host invariant {INVARIANT} would override")), "{d}");
    // What the old comparison looked at: after the override the verdicts
    // agree — exactly what hid the unsafe pass.
    let g2 = entries
        .iter()
        .find_map(|e| match &e.record {
            leyline::journal::JournalRecord::GateVerdict { gate: leyline::GateId::G2Stability, inputs, .. } => {
                Some(inputs.clone())
            }
            _ => None,
        })
        .unwrap();
    assert!(!kasmina::gates::decide(&candidate, leyline::GateId::G2Stability, g2).passed);
    // Negative control: the default plugin agrees with every recorded decision.
    let limits = kasmina_plugin_host::PluginLimits { deadline: Duration::from_millis(250), ..Default::default() };
    let same =
        journal_tools::load_candidate(kasmina_plugin_artifacts::GATES.as_ref(), &support::plugin_cache(), limits)
            .unwrap();
    let clean = journal_tools::replay(&entries, &same).unwrap();
    assert!(clean.disagreements.is_empty() && clean.agreements >= 3, "{clean:?}");

    // The CLI says the same and fails on it.
    let cache = support::plugin_cache();
    let (code, stdout, stderr) = cli(&[
        "journal",
        "replay",
        journal.to_str().unwrap(),
        "--plugin",
        lying,
        "--deadline-ms",
        "250",
        "--cache",
        cache.to_str().unwrap(),
        "--fail-on-disagreement",
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("recorded failed") && stdout.contains(INVARIANT), "{stdout}");
    assert!(stdout.contains("1 disagree (1 unsafe passes)"), "{stdout}");
}

#[test]
fn a_live_shadow_counts_an_unsafe_pass_as_a_disagreement() {
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let host = start(
        dir.path(),
        &shadow(kasmina_plugin_artifacts::FIXTURE_LYING_GATE, kasmina_plugin_artifacts::FIXTURE_LYING_GATE_SHA256),
    );
    let telemetry = collect(&host);
    let mut sim = fallback_fails_g2(&host);
    assert!(host.host().manager().gate_service().settle_shadow(Duration::from_secs(30)));
    sim.step(&host);
    let events = telemetry.take();
    let disagreements = named(&events, "kasmina.gate.shadow_disagreement");
    assert_eq!(disagreements.len(), 1, "only the G2 pass is unsafe: {disagreements:?}");
    let d = disagreements[0];
    assert_eq!((attr(d, "gate").as_str(), attr(d, "active_passed").as_str()), ("G2", "false"));
    assert_eq!(attr(d, "shadow_passed"), "true");
    assert_eq!(attr(d, "shadow_invariant_override"), INVARIANT);
    assert!(d.message.contains(&format!("candidate passed; host invariant {INVARIANT} would override")), "{d:?}");
    let calls = host.host().manager().gate_service().call_stats();
    assert!(calls.shadow_disagreements == 1 && calls.shadow_agreements >= 2, "{calls:?}");
}

#[test]
fn a_looping_shadow_never_delays_a_step() {
    const SHADOW_DEADLINE_MS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let mut settings =
        test_settings(&shadow(kasmina_plugin_artifacts::FIXTURE_LOOP, kasmina_plugin_artifacts::FIXTURE_LOOP_SHA256));
    settings.plugins.shadow_deadline_ms = SHADOW_DEADLINE_MS;
    let mut options = StartOptions::new(settings);
    options.key = Some(key());
    options.urza_dir = Some(dir.path().join("urza"));
    let (host, _) = DaemonHost::start(options).unwrap();
    let telemetry = collect(&host);

    host.register_host(registration()).unwrap();
    let started = Instant::now();
    assert!(host.submit_command(command("g0", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    let mut slowest = started.elapsed();
    let mut sim = SimTrainer::new(100);
    while stage_of(&host, "hidden-0") != SeedStage::Blending {
        assert!(sim.step < 8, "stuck in {:?}", stage_of(&host, "hidden-0"));
        let t = Instant::now();
        sim.step(&host);
        slowest = slowest.max(t.elapsed());
    }
    // G0 (at GERMINATE), G1 and G2 were plugin-decided, each handed to the
    // looping candidate; none of those calls waited for it.
    assert!(
        slowest < Duration::from_millis(SHADOW_DEADLINE_MS / 2),
        "a gate call waited for the shadow: slowest {slowest:?}"
    );
    // The shadow did run (not a vacuous pass): each evaluation timed out on
    // its own deadline and disagreed with the active pass.
    assert!(host.host().manager().gate_service().settle_shadow(Duration::from_secs(60)));
    sim.step(&host);
    let calls = host.host().manager().gate_service().call_stats();
    assert!(calls.shadow_disagreements >= 3, "{calls:?}");
    let events = telemetry.take();
    let timeouts = named(&events, "kasmina.gate.shadow_disagreement");
    assert!(timeouts.iter().all(|e| attr(e, "shadow_reason") == "plugin_timeout"), "{timeouts:?}");
}
