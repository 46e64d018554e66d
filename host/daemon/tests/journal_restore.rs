//! The decision journal end to end on real files and the real host:
//! restart restores seed state, a torn tail is cut and reported,
//! compaction keeps state, replay re-judges recorded gate decisions, and
//! a shadow gate plugin reports disagreements without changing decisions.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::Write;
use std::path::Path;

use kasmina_daemon::{DaemonHost, StartOptions, journal_tools};
use leyline::api::KasminaApi;
use leyline::{SeedOperation, SeedStage};
use support::{SimTrainer, collect, command, key, pause, registration, stage_of, test_settings, urza};

fn start(dir: &Path, extra: &str, tweak: impl FnOnce(&mut StartOptions)) -> (DaemonHost, kasmina_daemon::StartReport) {
    let mut options = StartOptions::new(test_settings(extra));
    options.key = Some(key());
    options.urza_dir = Some(dir.join("urza"));
    options.journal_dir = Some(dir.join("journal"));
    tweak(&mut options);
    let (host, report) = DaemonHost::start(options).unwrap();
    (host, report.expect("journaled"))
}

fn stage_in(states: &[leyline::SeedState], seed: &str) -> SeedStage {
    states.iter().find(|s| s.seed_id == seed).map(|s| s.stage).expect("seed exists")
}

fn segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn restart_restores_seed_state_and_a_torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let (host, report) = start(dir.path(), "", |_| {});
    assert_eq!(report.restore.seeds, 0);
    host.register_host(registration()).unwrap();
    assert!(host.submit_command(command("g0", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    assert!(host.submit_command(command("g1", "hidden-1", SeedOperation::Germinate, true)).unwrap().accepted);
    assert!(host.submit_command(pause("p1", "hidden-1", false)).unwrap().accepted);
    assert!(host.submit_command(command("g2", "hidden-2", SeedOperation::Germinate, true)).unwrap().accepted);
    assert!(host.submit_command(command("c2", "hidden-2", SeedOperation::Cull, true)).unwrap().accepted);
    let before = host.seed_states().unwrap();
    assert_eq!(
        before.iter().map(|s| s.stage).collect::<Vec<_>>(),
        [SeedStage::Germinated, SeedStage::Germinated, SeedStage::Embargoed, SeedStage::Dormant]
    );
    assert!(before[1].paused && before[0].blend_mode.is_some());
    drop(host);

    // A torn record at the tail: what a crash mid-append leaves.
    std::fs::OpenOptions::new()
        .append(true)
        .open(segment(dir.path()))
        .unwrap()
        .write_all(&[0x40, 0, 0, 0, 1, 2, 3])
        .unwrap();
    let (host, report) = start(dir.path(), "", |_| {});
    let torn = report.recovery.torn_tail.as_ref().expect("torn tail reported");
    assert_eq!(torn.bytes_cut, 7);
    assert!(report.to_string().contains("torn tail cut: 7 bytes"), "{report}");
    assert_eq!(host.seed_states().unwrap(), before, "state equals the last durable record");
    assert_eq!(report.restore.prefetches_reissued, 2, "germinated seeds get their kernels again");
    // Nonces of acknowledged commands survive the restart: no replay.
    let replay = host.submit_command(command("g0", "hidden-0", SeedOperation::Germinate, true)).unwrap();
    assert_eq!(replay.reason, Some(leyline::ReasonCode::NonceReplayed));
    // The restored host keeps working: the trainer re-registers, the seed attaches.
    host.register_host(registration()).unwrap();
    let mut sim = SimTrainer::new(100);
    for _ in 0..4 {
        sim.step(&host);
    }
    assert_eq!(stage_of(&host, "hidden-0"), SeedStage::Training);
}

#[test]
fn uncommitted_trailing_records_are_ignored_and_compaction_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let small = |o: &mut StartOptions| {
        o.journal_config.segment_bytes = 4 * 1024;
        o.journal_config.compact_after_bytes = 8 * 1024;
    };
    let (host, _) = start(dir.path(), "", small);
    host.register_host(registration()).unwrap();
    // Germinate/pause/resume cycles grow the journal past its bound.
    assert!(host.submit_command(command("g", "hidden-3", SeedOperation::Germinate, true)).unwrap().accepted);
    for i in 0..30 {
        assert!(host.submit_command(pause(&format!("p{i}"), "hidden-3", false)).unwrap().accepted);
        assert!(host.submit_command(pause(&format!("r{i}"), "hidden-3", true)).unwrap().accepted);
    }
    let stats = host.recorder().unwrap().stats();
    assert!(stats.compactions.load(std::sync::atomic::Ordering::Relaxed) >= 1, "journal compacted");
    let before = host.seed_states().unwrap();
    drop(host);
    let segments = std::fs::read_dir(dir.path().join("journal")).unwrap().count();
    assert!(segments <= 3, "old segments deleted: {segments}");

    // An unfinished call: a transition with no boundary after it, as a
    // daemon killed between a step's transition and its snapshot leaves.
    // Applied, it would move hidden-3 to TRAINING.
    assert_eq!(stage_in(&before, "hidden-3"), SeedStage::Germinated);
    let config = kasmina_journal::JournalConfig {
        segment_bytes: 4 * 1024,
        compact_after_bytes: 8 * 1024,
        ..kasmina_journal::decision_journal_config()
    };
    let (mut journal, _, _) = kasmina_journal::DecisionJournal::open(dir.path().join("journal"), config).unwrap();
    let trailing = leyline::journal::JournalRecord::Transition {
        seed_id: "hidden-3".to_owned(),
        from: SeedStage::Germinated,
        to: SeedStage::Training,
        step: 99,
        reason: "G1 passed (a call that never finished)".to_owned(),
        recorded_at_ms: 1,
    };
    journal.append_durable(&trailing).unwrap();
    drop(journal);
    let (host, report) = start(dir.path(), "", small);
    assert_eq!(report.restore.uncommitted_ignored, 1, "{report}");
    assert_eq!(host.seed_states().unwrap(), before, "the trailing transition is not applied");
    drop(host);
    let (entries, _) = journal_tools::read_journal(&dir.path().join("journal")).unwrap();
    assert!(matches!(entries.last().unwrap().record, leyline::journal::JournalRecord::Snapshot { .. }));
}

#[test]
fn replay_and_shadow_judge_recorded_gates_with_a_stricter_candidate() {
    let dir = tempfile::tempdir().unwrap();
    urza(dir.path());
    let strict = kasmina_plugin_artifacts::EXAMPLE_CUSTOM_GATE;
    let shadow = format!(
        "[plugins.shadow_gates]\npath = {strict:?}\nsha256 = {:?}\n",
        kasmina_plugin_artifacts::EXAMPLE_CUSTOM_GATE_SHA256
    );
    let (host, _) = start(dir.path(), &shadow, |_| {});
    let telemetry = collect(&host);
    host.register_host(registration()).unwrap();
    assert!(host.submit_command(command("g0", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    // Latency 200 µs: inside the 300 µs budget (default gates pass G2), over
    // half of it (the strict example fails G2).
    let mut sim = SimTrainer::new(200);
    for _ in 0..7 {
        sim.step(&host);
    }
    // The shadow runs off the step path: wait for it, then one more step
    // carries its events out.
    assert!(host.host().manager().gate_service().settle_shadow(std::time::Duration::from_secs(30)));
    sim.step(&host);
    assert_eq!(stage_of(&host, "hidden-0"), SeedStage::Blending, "the shadow never changes a decision");
    let events = telemetry.take();
    let disagreement =
        events.iter().find(|e| e.name == "kasmina.gate.shadow_disagreement").expect("shadow disagreement emitted");
    assert_eq!(disagreement.attributes.get("gate").map(ToString::to_string).as_deref(), Some("G2"));
    assert_eq!(disagreement.attributes.get("shadow_reason").map(ToString::to_string).as_deref(), Some("unstable"));
    let calls = host.host().manager().gate_service().call_stats();
    assert!(calls.shadow_agreements >= 2 && calls.shadow_disagreements == 1, "{calls:?}");
    drop(host);

    let journal = dir.path().join("journal");
    let (entries, _) = journal_tools::read_journal(&journal).unwrap();
    let cache = support::plugin_cache();
    let limits =
        kasmina_plugin_host::PluginLimits { deadline: std::time::Duration::from_millis(250), ..Default::default() };
    let same = journal_tools::load_candidate(kasmina_plugin_artifacts::GATES.as_ref(), &cache, limits.clone()).unwrap();
    let report = journal_tools::replay(&entries, &same).unwrap();
    assert!(report.decisions >= 3 && report.disagreements.is_empty(), "{report:?}");
    let candidate = journal_tools::load_candidate(strict.as_ref(), &cache, limits).unwrap();
    let report = journal_tools::replay(&entries, &candidate).unwrap();
    assert_eq!(report.disagreements.len(), 1, "{report:?}");
    let d = &report.disagreements[0];
    assert_eq!(
        (d.seed_id.as_str(), d.gate, d.old_passed, d.new_passed, d.new_reason.as_str()),
        ("hidden-0", leyline::GateId::G2Stability, true, false, "unstable")
    );
    assert!(d.to_string().contains("recorded passed") && d.to_string().contains("candidate failed (unstable)"), "{d}");
    assert_eq!(d.override_invariant, None);
}
