//! Plugin verdicts are computed before the seed manager's state lock is
//! taken (issue: control-plane core): through a whole seed life — commands
//! with gates (G0 at GERMINATE, START_TRAINING's G1, an EVALUATE dry run, a
//! resume's re-check) and step-driven gates (G2–G4) — no gate plugin call
//! happens under the lock. Negative control: when the facts change between
//! prepare and apply, the verdict no longer matches and the gate asks the
//! plugin under the lock, which the counter shows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use harness::harness;
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::api::KasminaApi;
use leyline::command::{CommandPayload, PauseCommand};
use leyline::{SeedOperation, SeedStage};

fn calls(h: &harness::Harness) -> (u64, u64) {
    let stats = h.host.manager().gate_service().call_stats();
    (stats.calls, stats.calls_under_lock)
}

#[test]
fn a_whole_seed_life_asks_every_gate_plugin_outside_the_lock() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Training, 10));
    let evaluate = h.seed_op("seed-a", SeedOperation::Evaluate, MLP_ADAPTER_64, &[]);
    assert!(h.submit(evaluate).accepted);
    let pause =
        h.signed("seed-a", CommandPayload::Pause(PauseCommand { resume: false }), &[("training_run_id", harness::RUN)]);
    assert!(h.submit(pause).accepted);
    let resume =
        h.signed("seed-a", CommandPayload::Pause(PauseCommand { resume: true }), &[("training_run_id", harness::RUN)]);
    let outcome = h.submit(resume);
    assert!(outcome.accepted, "{outcome:?}");
    assert!(h.run_until("seed-a", SeedStage::Probationary, 30), "{:?}", h.state("seed-a"));
    // A second seed advanced by command rather than by steps.
    assert!(h.germinate("seed-b", MLP_ADAPTER_64).accepted);
    h.step();
    h.step();
    let (total, under_lock) = calls(&h);
    assert!(total >= 6, "the plugin decided only {total} gates: the check below would be vacuous");
    assert_eq!(under_lock, 0, "{under_lock} of {total} gate plugin calls happened under the state lock");
}

#[test]
fn a_verdict_whose_facts_changed_is_asked_again_under_the_lock() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Training, 10));
    let evaluate = h.seed_op("seed-a", SeedOperation::Evaluate, MLP_ADAPTER_64, &[]);
    let prepared = h.host.prepare_command(evaluate);
    // A step between prepare and apply changes the seed's loss window.
    h.trainer.m.loss = 0.7;
    h.step();
    let (_, before) = calls(&h);
    let outcome = h.host.apply_command(prepared);
    assert!(outcome.accepted, "{outcome:?}");
    let (_, after) = calls(&h);
    assert_eq!(after, before + 1, "a stale verdict was applied instead of asking the plugin again");
}

#[test]
fn a_kernel_that_never_comes_is_waited_for_once_per_step() {
    // The artifact is a FIFO nobody writes: the load never finishes.
    let mut h = harness::harness_with(&format!("{}\n[kernels]\nprefetch_timeout_ms = 400\n", harness::SETTINGS));
    let urza = kasmina_kernels::UrzaLibrary::open(h.dir.path().join("urza")).unwrap();
    let entry = urza.entry(MLP_ADAPTER_64).unwrap();
    let artifact = urza.artifact_path(&entry);
    std::fs::remove_file(&artifact).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&artifact).status().unwrap().success(), "mkfifo");
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    let started = std::time::Instant::now();
    h.step();
    let took = started.elapsed();
    // One bounded wait (the kernel manager fails the stale prefetch at
    // its timeout), not one per prepare attempt (3 × 400 ms).
    assert!(took >= std::time::Duration::from_millis(400), "the step did not wait for the kernel: {took:?}");
    assert!(took < std::time::Duration::from_millis(1_000), "the step waited {took:?}: more than once");
    // Unblock the loader thread so the host shuts down promptly.
    let _ = std::fs::OpenOptions::new().write(true).open(&artifact);
}

/// A GERMINATE staged before the lock is applied as staged (with its G0
/// verdict) only when the seed and the host facts are unchanged. Here the
/// trainer re-registers as a 2-rank job between prepare and apply: G0's
/// inputs now carry the ranks, so the staged verdict no longer stands and
/// the plugin is asked again under the lock (taking the staged one anyway
/// would leave the count unchanged). Control: the same command with nothing
/// in between is applied with no plugin call under the lock.
#[test]
fn a_germination_staged_before_a_change_of_host_facts_is_judged_again() {
    let mut h = harness();
    let control = h.seed_op("seed-b", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    let prepared = h.host.prepare_command(control);
    let (_, before) = calls(&h);
    assert!(h.host.apply_command(prepared).accepted, "control: nothing changed");
    assert_eq!(calls(&h).1, before, "control: the staged verdict was not taken");

    let cmd = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    let prepared = h.host.prepare_command(cmd);
    let mut two_ranks = harness::registration(Vec::new(), Vec::new());
    two_ranks.world_size = 2;
    h.host.register_host(two_ranks).expect("re-register");
    let (_, before) = calls(&h);
    let outcome = h.host.apply_command(prepared);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(calls(&h).1, before + 1, "a verdict staged for a 1-rank job was applied to a 2-rank one");
}

/// A GERMINATE taken as staged emits events built before the lock; the
/// transition's step is the one thing read on apply. Here steps are
/// reported between prepare and apply (the host facts stay the same: the
/// metric does not move), so the staged seed is taken — no plugin call
/// under the lock — and the event must carry the step at apply (5), not
/// the one at prepare (2). Negative control: emitting the prebuilt event
/// as built fails the step check.
#[test]
fn a_germination_taken_as_staged_reports_the_step_it_was_applied_at() {
    let mut h = harness();
    h.step();
    h.step();
    let cmd = h.seed_op("seed-b", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    let prepared = h.host.prepare_command(cmd);
    for _ in 0..3 {
        h.step();
    }
    h.events();
    let (_, before) = calls(&h);
    let outcome = h.host.apply_command(prepared);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(calls(&h).1, before, "the staged seed was not taken: this test checks nothing");
    let events = h.events();
    let transition = events
        .iter()
        .find(|e| e.name == "kasmina.seed.transition" && e.seed_id.as_deref() == Some("seed-b"))
        .expect("a transition event for seed-b");
    assert_eq!(transition.attributes.get("to").map(ToString::to_string).as_deref(), Some("GERMINATED"));
    assert_eq!(transition.attributes.get("step").map(ToString::to_string).as_deref(), Some("5"), "{transition:?}");
    let verdict =
        events.iter().position(|e| e.name == "kasmina.gate.verdict" && e.seed_id.as_deref() == Some("seed-b"));
    let moved = events.iter().position(|e| std::ptr::eq(e, transition));
    assert!(verdict.is_some() && verdict < moved, "G0's verdict is reported before the transition: {events:?}");
}
