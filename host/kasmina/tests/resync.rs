//! A re-registering trainer is resynchronised, never culled for the
//! reconnect itself: seeds it still holds (with the verified digest) are
//! adopted, seeds it lost get a fresh Attach and their stages replayed, a
//! wrong digest is replaced, and a trainer that never takes a seed back
//! fails it (`resync_failed`) within a bounded window. Real plugins, Urza
//! files and libtorch kernel loads; the harness plays the trainer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Harness, harness};
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::api::GraftDirective;
use leyline::{SeedStage, TelemetryEvent};

fn blending(h: &mut Harness) {
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Blending, 20));
    h.step();
}

fn resync_actions(events: &[TelemetryEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == "kasmina.seed.resync" && e.seed_id.as_deref() == Some("seed-a"))
        .filter_map(|e| e.attributes.get("action").map(ToString::to_string))
        .collect()
}

fn culled(events: &[TelemetryEvent]) -> bool {
    events.iter().any(|e| e.name == "kasmina.seed.culled")
}

#[test]
fn a_trainer_that_still_holds_its_seed_keeps_it() {
    let mut h = harness();
    blending(&mut h);
    let before = h.state("seed-a");
    h.reregister();
    let directives = h.step();
    assert!(!directives.iter().any(|d| matches!(d, GraftDirective::Attach { .. })), "adopted: {directives:?}");
    let after = h.state("seed-a");
    assert_eq!((after.stage, after.epoch), (SeedStage::Blending, before.epoch + 1), "progress went on: {after:?}");
    assert!(h.run_until("seed-a", SeedStage::Shadowing, 10));
    let events = h.events();
    assert_eq!(resync_actions(&events), ["adopted"]);
    assert!(!culled(&events), "nothing culled for a reconnect");
}

#[test]
fn a_trainer_that_lost_its_seed_receives_it_again_in_its_stage() {
    let mut h = harness();
    blending(&mut h);
    let alpha = h.state("seed-a").alpha;
    h.trainer.seeds.clear(); // the trainer process restarted
    h.reregister();
    let directives = h.step();
    let names: Vec<String> = directives
        .iter()
        .filter(|d| d.seed_id() == Some("seed-a"))
        .map(|d| match d {
            GraftDirective::Attach { .. } => "attach".to_owned(),
            GraftDirective::Stage { stage, .. } => stage.as_str().to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["attach", "TRAINING", "BLENDING"], "{directives:?}");
    let held = &h.trainer.seeds["seed-a"];
    assert_eq!((held.stage, held.alpha), (SeedStage::Blending, alpha), "the α it had");
    assert!(h.run_until("seed-a", SeedStage::Shadowing, 10), "{:?}", h.state("seed-a"));
    let events = h.events();
    assert_eq!(resync_actions(&events), ["reattached"]);
    assert!(events.iter().any(|e| e.name == "kasmina.seed.resynced"));
    assert!(!culled(&events));
}

#[test]
fn a_held_seed_with_another_digest_is_replaced_by_the_verified_kernel() {
    let mut h = harness();
    blending(&mut h);
    let verified = h.trainer.seeds["seed-a"].attached_sha.clone();
    h.trainer.seeds.get_mut("seed-a").unwrap().attached_sha = Some("0".repeat(64));
    h.reregister();
    let directives = h.step();
    let attach = directives.iter().find_map(|d| match d {
        GraftDirective::Attach { artifact_sha256, .. } => Some(artifact_sha256.clone()),
        _ => None,
    });
    assert_eq!(attach, verified, "the verified digest, not the held one");
    // The foreign kernel did run (the trainer reported it): a fallback,
    // which the gates must fail — the restart does not launder it.
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 20), "{:?}", h.state("seed-a"));
    let events = h.events();
    assert_eq!(resync_actions(&events), ["replaced"]);
    let failed: Vec<String> = events
        .iter()
        .filter(|e| {
            e.name == "kasmina.gate.verdict" && e.attributes.get("passed").is_some_and(|p| p.to_string() == "false")
        })
        .map(|e| e.message.clone())
        .collect();
    assert!(failed.iter().any(|m| m.contains("fallback")), "{failed:?}");
}

#[test]
fn a_trainer_that_never_takes_its_seed_back_fails_it_within_the_window() {
    let mut h = harness();
    blending(&mut h);
    h.trainer.seeds.clear();
    h.trainer.m.refuse_attach = true;
    h.reregister();
    // attach_timeout_steps = 3 in the harness: one step to deliver, three more.
    for _ in 0..4 {
        h.step();
        assert_eq!(h.state("seed-a").stage, SeedStage::Blending, "no gate judges it while it resyncs");
    }
    h.step();
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    let culls: Vec<_> = h.events().into_iter().filter(|e| e.name == "kasmina.seed.culled").collect();
    assert!(culls.iter().any(|e| e.message.contains("resync_failed")), "{culls:?}");
}

#[test]
fn checkpoints_the_trainer_no_longer_holds_cannot_be_restored_after_it_re_registers() {
    let mut h = harness();
    blending(&mut h);
    let cull = h.seed_op("seed-a", leyline::SeedOperation::Cull, MLP_ADAPTER_64, &[]);
    assert!(h.submit(cull).accepted);
    // The checkpoint directive is still queued when the trainer re-registers.
    h.reregister();
    let point = h.host.manager().rollback().latest_for_seed("seed-a").unwrap();
    let status = h.host.manager().rollback().status(&point.id).unwrap();
    assert!(
        matches!(&status, kasmina::rollback::PointStatus::Unavailable { reason } if reason.contains("before receiving")),
        "{status:?}"
    );
    // A confirmed point the trainer no longer lists is unavailable too.
    let cull = h.seed_op("seed-b", leyline::SeedOperation::Cull, MLP_ADAPTER_64, &[]);
    assert_eq!(h.submit(cull).reason, Some(leyline::ReasonCode::InvalidStage), "seed-b is dormant");
    assert!(h.germinate("seed-b", MLP_ADAPTER_64).accepted);
    h.step();
    h.step();
    let cull = h.seed_op("seed-b", leyline::SeedOperation::Cull, MLP_ADAPTER_64, &[]);
    assert!(h.submit(cull).accepted);
    h.step();
    h.step();
    let point = h.host.manager().rollback().latest_for_seed("seed-b").unwrap();
    assert!(matches!(
        h.host.manager().rollback().status(&point.id).unwrap(),
        kasmina::rollback::PointStatus::Ready { .. }
    ));
    h.trainer.checkpoints.clear(); // a restarted trainer process
    h.reregister();
    let status = h.host.manager().rollback().status(&point.id).unwrap();
    assert!(matches!(status, kasmina::rollback::PointStatus::Unavailable { .. }), "{status:?}");
}
