//! ROLLBACK with the real trainer library, a real embedded host and real
//! libtorch: a rollback point's weights half is captured on directive (in
//! memory when a seed is culled, on disk when one is fossilized); ROLLBACK
//! returns the model — host weights, seed kernel weights, slot stage and α
//! — to exactly what it computed at the point, and the control plane's
//! state with it; the SLA metrics count both the capture and the restore.
//! A tampered checkpoint file is refused and changes nothing. A trainer
//! that reconnects keeps its seeds; a restarted one receives them again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use kasmina_trainer::{ForwardCtx, Trainer, TrainerEvent};
use leyline::api::{CheckpointAction, KasminaApi};
use leyline::command::{CommandPayload, RollbackCommand, SeedCommand};
use leyline::{SeedOperation, SeedStage};
use support::{BLUEPRINT, Fixture, Model, RUN, SITE, config, fixture, model, stage_of, train};
use tch::Tensor;
use tch::nn::{self, Module, OptimizerConfig};

/// What the model computes for the fixed batch (inference, seeds included).
fn infer<A: KasminaApi>(t: &mut Trainer<A>, m: &Model) -> Tensor {
    let h = tch::no_grad(|| m.fc1.forward(&m.x));
    let out = t.site(SITE, &h, &ForwardCtx::infer()).unwrap();
    tch::no_grad(|| m.fc2.forward(&out)).copy()
}

/// One training step up to (not including) `end_step`.
fn forward_backward<A: KasminaApi>(t: &mut Trainer<A>, m: &Model, opt: &mut nn::Optimizer, step: u64) -> f64 {
    let h = m.fc1.forward(&m.x);
    let out = m.fc2.forward(&t.site(SITE, &h, &ForwardCtx::train()).unwrap());
    let loss = out.cross_entropy_for_logits(&m.y);
    opt.zero_grad();
    t.zero_grad().unwrap();
    loss.backward();
    t.after_backward(step).unwrap();
    opt.step();
    t.optimizer_step().unwrap();
    loss.double_value(&[])
}

fn seed_command(f: &Fixture, op: SeedOperation) -> leyline::Outcome {
    let payload = CommandPayload::Seed(SeedCommand {
        operation: op,
        blueprint_id: BLUEPRINT.to_owned(),
        parameters: BTreeMap::new(),
    });
    let cmd =
        f.command("seed-a", payload, &[("training_run_id", RUN), ("mesh_layers", SITE), ("blend_mode", "RESIDUAL")]);
    f.host.submit_command(cmd).unwrap()
}

fn rollback(f: &Fixture) -> leyline::Outcome {
    let payload = CommandPayload::Rollback(RollbackCommand { rollback_point_id: None, reason: "drill".to_owned() });
    f.host.submit_command(f.command("seed-a", payload, &[])).unwrap()
}

fn metric(f: &Fixture, name: &str) -> f64 {
    f.host.manager().rollback().metrics().into_iter().find(|m| m.name == name).map_or(f64::NAN, |m| m.value)
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.eq_tensor(b).all().int64_value(&[]) == 1
}

/// Steps until seed-a is in `stage`; returns the last step.
fn until(
    t: &mut Trainer<&kasmina::EmbeddedHost>,
    f: &Fixture,
    m: &Model,
    opt: &mut nn::Optimizer,
    from: u64,
    stage: SeedStage,
) -> u64 {
    let mut step = from;
    while stage_of(&f.host, "seed-a") != stage {
        assert!(step < from + 40, "seed-a stuck in {:?}", stage_of(&f.host, "seed-a"));
        step += 1;
        train(t, m, opt, step..=step, false);
    }
    step
}

#[test]
fn rollback_on_the_fast_path_restores_weights_slot_and_state() {
    let f = fixture();
    let m = model();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    assert!(f.germinate("seed-a", &[("blend_mode", "RESIDUAL")]).accepted);
    let mut step = until(&mut t, &f, &m, &mut opt, 0, SeedStage::Blending);
    step += 1;
    train(&mut t, &m, &mut opt, step..=step, false);
    let epoch = f.host.seed_states().unwrap()[0].epoch;
    assert!(seed_command(&f, SeedOperation::Cull).accepted);

    // The cull's point is captured in this end_step, before the Detach.
    step += 1;
    let loss = forward_backward(&mut t, &m, &mut opt, step);
    let reference = infer(&mut t, &m);
    let events = t.end_step(step, loss, Some(0.5)).unwrap().events;
    assert!(events.iter().any(|e| matches!(e, TrainerEvent::CheckpointCaptured { durable: false, .. })), "{events:?}");
    assert!(t.seed_stage("seed-a").is_none(), "detached after the capture");
    step += 1;
    train(&mut t, &m, &mut opt, step..=step + 2, false);
    step += 2;
    assert!(!same(&infer(&mut t, &m), &reference), "training moved on (negative control)");
    assert!(metric(&f, "kasmina.rollback.fast.within_sla") >= 1.0);
    assert!(metric(&f, "kasmina.rollback.fast.last_latency") > 0.0);
    assert_eq!(metric(&f, "kasmina.rollback.fast.restore_within_sla"), 0.0);

    let outcome = rollback(&f);
    assert!(outcome.accepted, "{outcome:?}");
    step += 1;
    let events = train(&mut t, &m, &mut opt, step..=step, false);
    assert!(events.iter().any(|e| matches!(e, TrainerEvent::CheckpointRestored { .. })), "{events:?}");
    assert!(same(&infer(&mut t, &m), &reference), "the model computes exactly what it did at the point");
    assert_eq!(t.seed_stage("seed-a"), Some(SeedStage::Blending));

    step += 1;
    train(&mut t, &m, &mut opt, step..=step, false);
    let state = f.host.seed_states().unwrap().into_iter().find(|s| s.seed_id == "seed-a").unwrap();
    assert_eq!((state.stage, state.epoch), (SeedStage::Blending, epoch + 1), "{state:?}");
    assert_eq!(metric(&f, "kasmina.rollback.fast.restore_within_sla"), 1.0);
    assert!(metric(&f, "kasmina.rollback.fast.restore_last_latency") > 0.0);
    until(&mut t, &f, &m, &mut opt, step, SeedStage::Shadowing);
}

#[test]
fn rollback_on_the_full_path_restores_from_disk_and_refuses_a_tampered_file() {
    let f = fixture();
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let mut t = Trainer::register(&f.host, config().checkpoint_dir(dir.path())).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    assert!(f.germinate("seed-a", &[("blend_mode", "RESIDUAL")]).accepted);
    let mut step = until(&mut t, &f, &m, &mut opt, 0, SeedStage::Probationary);
    step += 1;
    train(&mut t, &m, &mut opt, step..=step + 1, false);
    step += 1;
    assert!(seed_command(&f, SeedOperation::Fossilize).accepted);

    step += 1;
    let loss = forward_backward(&mut t, &m, &mut opt, step);
    let reference = infer(&mut t, &m);
    let events = t.end_step(step, loss, Some(0.5)).unwrap().events;
    assert!(events.iter().any(|e| matches!(e, TrainerEvent::CheckpointCaptured { durable: true, .. })), "{events:?}");
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one checkpoint file, no temporary left: {files:?}");
    assert_eq!(t.seed_stage("seed-a"), Some(SeedStage::Fossilized));
    step += 1;
    train(&mut t, &m, &mut opt, step..=step + 2, false);
    step += 2;
    assert!(!same(&infer(&mut t, &m), &reference), "training moved on (negative control)");
    assert!(metric(&f, "kasmina.rollback.full.within_sla") >= 1.0);

    assert!(rollback(&f).accepted);
    step += 1;
    let events = train(&mut t, &m, &mut opt, step..=step, false);
    assert!(events.iter().any(|e| matches!(e, TrainerEvent::CheckpointRestored { .. })), "{events:?}");
    assert!(same(&infer(&mut t, &m), &reference), "restored from the file exactly");
    assert_eq!(t.seed_stage("seed-a"), Some(SeedStage::Probationary), "un-fossilized");
    step += 1;
    train(&mut t, &m, &mut opt, step..=step, false);
    assert_eq!(stage_of(&f.host, "seed-a"), SeedStage::Probationary);
    assert_eq!(metric(&f, "kasmina.rollback.full.restore_within_sla"), 1.0);

    // A flipped byte in the payload: the restore is refused, nothing changes.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 8;
    bytes[last] ^= 0x40;
    std::fs::write(&files[0], bytes).unwrap();
    let before = infer(&mut t, &m);
    assert!(rollback(&f).accepted);
    step += 1;
    let loss = forward_backward(&mut t, &m, &mut opt, step);
    let trained = infer(&mut t, &m);
    let events = t.end_step(step, loss, Some(0.5)).unwrap().events;
    let refused = events.iter().find_map(|e| match e {
        TrainerEvent::CheckpointFailed { action: CheckpointAction::Restore, reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(refused.as_deref().is_some_and(|r| r.contains("SHA-256")), "{events:?}");
    assert!(same(&infer(&mut t, &m), &trained) && !same(&trained, &before), "the trained weights stand");
    step += 1;
    train(&mut t, &m, &mut opt, step..=step, false);
    assert_eq!(f.host.manager().rollback().stats().restore_failures, 1);
    assert_eq!(t.seed_stage("seed-a"), Some(SeedStage::Probationary));
}

#[test]
fn a_reconnecting_trainer_keeps_its_seed_and_a_restarted_one_receives_it_again() {
    let f = fixture();
    let m = model();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    assert!(f.germinate("seed-a", &[("blend_mode", "RESIDUAL")]).accepted);
    let mut step = until(&mut t, &f, &m, &mut opt, 0, SeedStage::Blending);

    t.reconnect(&f.host).unwrap();
    step += 1;
    let events = train(&mut t, &m, &mut opt, step..=step + 1, false);
    step += 1;
    assert!(!events.iter().any(|e| matches!(e, TrainerEvent::Attached { .. })), "adopted: {events:?}");
    assert_eq!(stage_of(&f.host, "seed-a"), SeedStage::Blending);

    // A new trainer process: it holds nothing; the seed comes back to it.
    drop(t);
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    step += 1;
    let events = train(&mut t, &m, &mut opt, step..=step, false);
    assert!(events.iter().any(|e| matches!(e, TrainerEvent::Attached { seed_id, .. } if seed_id == "seed-a")));
    assert_eq!(t.seed_stage("seed-a"), Some(SeedStage::Blending), "{events:?}");
    until(&mut t, &f, &m, &mut opt, step, SeedStage::Shadowing);
}
