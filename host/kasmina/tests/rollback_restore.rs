//! ROLLBACK restores (SPEC.md §8) on the assembled control plane with real
//! plugins, Urza files and libtorch kernel loads; the harness trainer keeps
//! checkpoints of what it runs and answers the checkpoint directives.
//!
//! - A cull records a point whose checkpoint directive precedes the Detach;
//!   it becomes ready when the trainer confirms, and readiness is measured.
//! - ROLLBACK to it returns the seed to BLENDING with its α and epoch on
//!   both sides (it used to cull), freezing seeds until the trainer
//!   confirms; the seed then carries on through its gates.
//! - Fossilization records a durable (full path) point; rolling back to it
//!   un-fossilizes the seed into PROBATIONARY.
//! - Points that cannot be restored are refused with their reason; a failed
//!   restore changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Harness, harness};
use kasmina::rollback::PointStatus;
use kasmina::seeds::schedule::ramp_alpha;
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::api::GraftDirective;
use leyline::command::{CommandPayload, PauseCommand, RollbackCommand};
use leyline::{ReasonCode, SeedOperation, SeedStage};

fn rollback(h: &mut Harness, seed: &str, point: Option<&str>) -> leyline::Outcome {
    let cmd = h.signed(
        seed,
        CommandPayload::Rollback(RollbackCommand {
            rollback_point_id: point.map(str::to_owned),
            reason: "operator drill".to_owned(),
        }),
        &[],
    );
    h.submit(cmd)
}

fn cull(h: &mut Harness, seed: &str) -> leyline::Outcome {
    let cmd = h.seed_op(seed, SeedOperation::Cull, MLP_ADAPTER_64, &[]);
    h.submit(cmd)
}

/// seed-a in BLENDING, two ramp steps in.
fn blending(h: &mut Harness) {
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Blending, 20));
    h.step();
    h.step();
}

fn metric(h: &Harness, name: &str) -> f64 {
    h.host.manager().rollback().metrics().into_iter().find(|m| m.name == name).map_or(f64::NAN, |m| m.value)
}

#[test]
fn rollback_returns_a_culled_seed_to_its_stage_alpha_and_epoch_on_both_sides() {
    let mut h = harness();
    blending(&mut h);
    let before = h.state("seed-a");
    assert!(before.alpha > 0.0 && before.epoch == 2, "{before:?}");
    assert!(cull(&mut h, "seed-a").accepted);
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);

    // The checkpoint directive comes before the Detach: both halves describe
    // the seed before the cull.
    let directives = h.step();
    let at = |pred: &dyn Fn(&GraftDirective) -> bool| directives.iter().position(pred).expect("directive");
    let checkpoint = at(&|d| matches!(d, GraftDirective::Checkpoint { durable: false, .. }));
    let detach = at(&|d| matches!(d, GraftDirective::Detach { seed_id, .. } if seed_id == "seed-a"));
    assert!(checkpoint < detach, "{directives:?}");
    let point = h.host.manager().rollback().latest_for_seed("seed-a").unwrap();
    assert_eq!(h.host.manager().rollback().status(&point.id).unwrap(), PointStatus::Pending);
    assert_eq!(metric(&h, "kasmina.rollback.fast.within_sla"), 0.0);
    h.step();
    assert!(matches!(h.host.manager().rollback().status(&point.id).unwrap(), PointStatus::Ready { .. }));
    assert_eq!(metric(&h, "kasmina.rollback.fast.within_sla"), 1.0, "readiness counted once confirmed");
    assert!(metric(&h, "kasmina.rollback.fast.last_latency") > 0.0);

    let outcome = rollback(&mut h, "seed-a", None);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(outcome.attributes.get("rollback_point_id"), Some(&point.id));
    // Frozen until the trainer confirms: nothing moves, seed commands wait.
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    let pause = h.signed("seed-b", CommandPayload::Pause(PauseCommand { resume: false }), &[]);
    let frozen = h.submit(pause);
    assert!(detail(&frozen).contains("is being restored by the trainer"), "{frozen:?}");
    let directives = h.step();
    assert!(directives.contains(&GraftDirective::RestoreCheckpoint { point_id: point.id.clone() }));
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed, "not before the trainer confirms");
    h.step();
    // The ramp continues from the captured epoch (the restore's step counts
    // one more), not from the start of BLENDING.
    let after = h.state("seed-a");
    assert_eq!((after.stage, after.epoch), (SeedStage::Blending, before.epoch + 1), "{after:?}");
    let l = kasmina::Settings::from_toml(harness::SETTINGS).unwrap().lifecycle;
    assert_eq!(after.alpha, ramp_alpha(before.epoch + 1, l.blend_steps, l.blend_temperature));
    assert!(after.alpha > before.alpha);
    let sim = &h.trainer.seeds["seed-a"];
    assert_eq!((sim.stage, sim.alpha), (SeedStage::Blending, after.alpha), "the trainer side returned too");
    assert_eq!(metric(&h, "kasmina.rollback.fast.restore_within_sla"), 1.0);
    assert!(metric(&h, "kasmina.rollback.fast.restore_last_latency") > 0.0);
    // The restored seed is healthy and carries on through its gates.
    assert!(h.run_until("seed-a", SeedStage::Shadowing, 10), "{:?}", h.state("seed-a"));
}

#[test]
fn fossilization_records_a_durable_point_and_rollback_unfossilizes() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Probationary, 40));
    h.step();
    h.step();
    let fossilize = h.seed_op("seed-a", SeedOperation::Fossilize, MLP_ADAPTER_64, &[]);
    assert!(h.submit(fossilize).accepted);
    let directives = h.step();
    assert!(directives.iter().any(|d| matches!(d, GraftDirective::Checkpoint { durable: true, .. })), "{directives:?}");
    h.step();
    assert_eq!(metric(&h, "kasmina.rollback.full.within_sla"), 1.0);
    assert_eq!(h.state("seed-a").stage, SeedStage::Fossilized);
    let outcome = rollback(&mut h, "seed-a", None);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(outcome.attributes.get("kind").map(String::as_str), Some("full"));
    h.step();
    h.step();
    assert_eq!(h.state("seed-a").stage, SeedStage::Probationary);
    assert_eq!(h.trainer.seeds["seed-a"].stage, SeedStage::Probationary);
    assert_eq!(metric(&h, "kasmina.rollback.full.restore_within_sla"), 1.0);
}

#[test]
fn points_that_cannot_be_restored_are_refused_with_the_reason() {
    let mut h = harness();
    blending(&mut h);
    assert!(cull(&mut h, "seed-a").accepted);
    // Pending: the trainer has not captured it yet.
    let pending = rollback(&mut h, "seed-a", None);
    assert_eq!(pending.reason, Some(ReasonCode::RollbackUnavailable), "{pending:?}");
    assert!(detail(&pending).contains("not ready"), "{pending:?}");

    // A trainer that never answers: the point becomes unavailable, named.
    h.trainer.ignore_checkpoints = true;
    h.step();
    h.step();
    let unanswered = rollback(&mut h, "seed-a", None);
    assert_eq!(unanswered.reason, Some(ReasonCode::RollbackUnavailable));
    assert!(detail(&unanswered).contains("did not report"), "{unanswered:?}");
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed, "a refusal changes nothing");
    assert_eq!(h.host.manager().rollback().stats().capture_failures, 1);
    // Unknown point ids and other seeds' points are refused too.
    assert_eq!(rollback(&mut h, "seed-a", Some("rb-0-0")).reason, Some(ReasonCode::RollbackUnavailable));
}

#[test]
fn a_failed_restore_changes_nothing_on_the_control_plane() {
    let mut h = harness();
    blending(&mut h);
    assert!(cull(&mut h, "seed-a").accepted);
    h.step();
    h.step();
    h.trainer.fail_restore = Some("checkpoint digest mismatch".to_owned());
    assert!(rollback(&mut h, "seed-a", None).accepted);
    h.step();
    h.step();
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    let stats = h.host.manager().rollback().stats();
    assert_eq!((stats.restore_failures, stats.fast_restore.within), (1, 0));
    let failed: Vec<_> = h.events().into_iter().filter(|e| e.name == "kasmina.rollback.restore_failed").collect();
    assert!(failed.iter().any(|e| e.message.contains("digest mismatch")), "{failed:?}");
    // Commands flow again once the rollback is settled.
    let pause = h.signed("seed-b", CommandPayload::Pause(PauseCommand { resume: false }), &[]);
    let refused = h.submit(pause);
    assert!(detail(&refused).contains("not active") && !detail(&refused).contains("restored"), "{refused:?}");
}

fn detail(outcome: &leyline::Outcome) -> &str {
    outcome.attributes.get("detail").map_or("", String::as_str)
}
