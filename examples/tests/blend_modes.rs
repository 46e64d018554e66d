//! Every blend mode grows a seed to FOSSILIZED through the public trainer
//! API (`kasmina-trainer`), embedded and beside a real daemon, with the same
//! decisions at the same steps in both modes. The unstable seed is culled in
//! every run, so each run also shows a failing path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Daemon, data, decisions, settings};
use kasmina_examples::demo::trainer::{self, Control};
use kasmina_examples::demo::{Apis, Controller, Plan, TimelineEntry, TrainConfig, setup};
use leyline::api::KasminaApi;
use leyline::protocol::Role;
use leyline::{BlendMode, SeedStage, SeedState};

const STEPS: u64 = 200;

struct Run {
    timeline: Vec<TimelineEntry>,
    seeds: Vec<SeedState>,
    parameters_added: i64,
}

fn seeded(mode: BlendMode, apis: Apis<'_>, key: kasmina::HmacKey, data: &kasmina_examples::digits::Split) -> Run {
    let s = settings();
    let plan = Plan::for_steps(STEPS, s.lifecycle.probation_steps).with_blend(mode);
    let mut controller = Controller::demo(key, plan);
    let mut timeline = Vec::new();
    let config = TrainConfig::demo(STEPS, common::SEED, tch::Device::Cpu);
    let control = Control { apis, controller: &mut controller, timeline: &mut timeline };
    let stats = trainer::train(&config, data, Some(control), false).expect("seeded run");
    Run { timeline, seeds: apis.controller.seed_states().expect("states"), parameters_added: stats.parameters_added }
}

fn stage(run: &Run, id: &str) -> Option<SeedStage> {
    run.seeds.iter().find(|s| s.seed_id == id).map(|s| s.stage)
}

/// The embedded run, and the daemon's `/metrics` text rendered over the same host afterwards.
fn embedded(mode: BlendMode, data: &kasmina_examples::digits::Split) -> (Run, String) {
    let key = setup::fresh_key().expect("key");
    let urza = tempfile::tempdir().expect("tempdir");
    let host = Arc::new(setup::embedded_host(settings(), key.clone(), urza.path()).expect("embedded host"));
    let run = seeded(mode, Apis { trainer: &*host, controller: &*host }, key, data);
    let metrics = kasmina_daemon::metrics::render(&kasmina_daemon::DaemonHost::unjournaled(host));
    (run, metrics)
}

fn beside_daemon(mode: BlendMode, data: &kasmina_examples::digits::Split) -> Run {
    let key = setup::fresh_key().expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let host: Arc<dyn KasminaApi> =
        Arc::new(setup::embedded_host(settings(), key.clone(), &dir.path().join("urza")).expect("host"));
    let daemon = Daemon::start(host, dir.path());
    let trainer = daemon.connect(Role::Trainer, "test-trainer");
    let controller = daemon.connect(Role::Controller, "test-controller");
    seeded(mode, Apis { trainer: &trainer, controller: &controller }, key, data)
}

fn check(mode: BlendMode) {
    let data = data();
    let (local, metrics) = embedded(mode, &data);
    assert_eq!(stage(&local, "seed-a"), Some(SeedStage::Fossilized), "{mode:?}: {:#?}", local.timeline);
    // The fossil still blends (α = 1): its statistics reached the host …
    let blend = local.seeds.iter().find(|s| s.seed_id == "seed-a").and_then(|s| s.blend.clone());
    let blend = blend.unwrap_or_else(|| panic!("{mode:?}: no blend statistics for seed-a"));
    assert_eq!(blend.mode, mode);
    assert_eq!(blend.gate_mean.is_some(), mode == BlendMode::Confidence, "{blend:?}");
    assert_eq!(blend.sparsity.is_some(), mode == BlendMode::Channel, "{blend:?}");
    // … and the operator's gauges.
    let gauge =
        format!("kasmina_seed_blend_alpha_mean{{seed_id=\"seed-a\",site=\"hidden\",mode=\"{}\"}}", mode.as_str());
    assert!(metrics.contains(&gauge), "{gauge} missing from /metrics:\n{metrics}");
    assert!(matches!(stage(&local, "seed-b"), Some(SeedStage::Embargoed | SeedStage::Culled)));
    assert!(local.parameters_added > 0, "{mode:?}: a fossilized seed adds parameters");
    let remote = beside_daemon(mode, &data);
    assert_eq!(decisions(&local.timeline), decisions(&remote.timeline), "{mode:?}: embedded and daemon differ");
    assert_eq!(local.parameters_added, remote.parameters_added);
}

#[test]
fn convex_seed_fossilizes_in_both_modes() {
    check(BlendMode::Convex);
}

#[test]
fn channel_seed_fossilizes_in_both_modes() {
    check(BlendMode::Channel);
}

#[test]
fn confidence_seed_fossilizes_on_the_batch_logits_in_both_modes() {
    check(BlendMode::Confidence);
}
