//! The main job's comparison on the conv host (issue 17): the three runs'
//! numbers come from the runs (each summary number is checked against the
//! per-step curve it summarises, and two random seeds give different
//! numbers), the aggregate is the mean of the repeats, the SVG figure is
//! well-formed XML naming every run and seed, and the seeded run makes the
//! same decisions embedded and beside a real daemon.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Daemon, decisions, settings};
use kasmina_examples::demo::stats::Aggregate;
use kasmina_examples::demo::trainer::{self, Control, RunStats};
use kasmina_examples::demo::{self, Apis, Controller, HostKind, Outcome, Plan, TrainConfig, figure, setup};
use kasmina_examples::digits;
use leyline::SeedStage;
use leyline::api::KasminaApi;
use leyline::protocol::Role;

const STEPS: u64 = 200;

/// `tch::manual_seed` is process-wide: runs in this binary take turns so
/// each starts from its own seed.
static TURN: Mutex<()> = Mutex::new(());

fn data(seed: u64) -> digits::Split {
    digits::load(&digits::default_path().expect("data path"), seed, tch::Device::Cpu)
        .expect("digits (scripts/setup.sh)")
}

fn config(seed: u64) -> TrainConfig {
    TrainConfig::demo(STEPS, seed, tch::Device::Cpu).with_host(HostKind::Conv)
}

fn controller(key: kasmina::HmacKey, s: &kasmina::Settings) -> Controller {
    Controller::for_host(key, Plan::for_steps(STEPS, s.lifecycle.probation_steps), HostKind::Conv, 64)
}

fn conv_scenario(seed: u64) -> Outcome {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = setup::fresh_key().expect("key");
    let urza = tempfile::tempdir().expect("tempdir");
    let s = settings();
    let mut controller = controller(key.clone(), &s);
    let host = setup::embedded_host(s, key, urza.path()).expect("embedded host");
    demo::run(&config(seed), &data(seed), Apis { trainer: &host, controller: &host }, &mut controller, false)
        .expect("conv scenario")
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.into_iter().collect();
    v.iter().sum::<f64>() / v.len() as f64
}

/// Every summary number of `run` is what its per-step curve says.
fn check_against_curve(name: &str, run: &RunStats) {
    assert_eq!(run.curve.len() as u64, STEPS, "{name}: one point per step");
    let last_losses = run.curve.iter().rev().take(20).map(|p| p.loss);
    assert!((run.final_loss - mean(last_losses)).abs() < 1e-12, "{name}: final loss is the last 20 steps' mean");
    let last_val = run.curve.last().and_then(|p| p.val_accuracy).expect("validation measured at the last step");
    assert!((run.val_accuracy - last_val).abs() < 1e-9, "{name}: {} vs curve {last_val}", run.val_accuracy);
    assert!(run.test_accuracy > 0.5 && run.test_accuracy <= 1.0, "{name}: test accuracy {}", run.test_accuracy);
}

fn check_outcome(o: &Outcome) {
    let stage = |id: &str| o.seeds.iter().find(|s| s.seed_id == id).map(|s| s.stage);
    assert_eq!(stage("seed-a"), Some(SeedStage::Fossilized), "residual conv block: {:#?}", o.timeline);
    assert_eq!(stage("seed-c"), Some(SeedStage::Fossilized), "channel attention: {:#?}", o.timeline);
    assert!(matches!(stage("seed-b"), Some(SeedStage::Embargoed | SeedStage::Culled)), "{:?}", stage("seed-b"));
    assert!(o.timeline.iter().any(|t| t.seed_id == "seed-b"
        && t.kind == "gate"
        && t.what == "G2"
        && t.passed == Some(false)
        && t.reason == "non_finite_outputs"));
    let st = o.static_run.as_ref().expect("residual fossils: the static run exists");
    for (name, run) in [("baseline", &o.baseline), ("seeded", &o.seeded), ("static", st)] {
        check_against_curve(name, run);
    }
    // Parameters: what fossilized is what the static run builds in.
    let fossils: Vec<&str> = o.seeded.fossils.iter().map(|f| f.blueprint_id.as_str()).collect();
    assert_eq!(fossils, [setup::CONV_BLOCK_BLUEPRINT, setup::ATTENTION_BLUEPRINT]);
    assert_eq!(o.seeded.parameters_added, o.seeded.fossils.iter().map(|f| f.parameters).sum::<i64>());
    assert!(o.seeded.parameters_added > 0);
    assert_eq!(st.parameters(), o.seeded.parameters());
    assert_eq!(o.baseline.parameters_added, 0);
    // Same initialisation and batch order: until the first seed blends in,
    // baseline and seeded are the same computation, step for step.
    let first_germination = Plan::for_steps(STEPS, 20).good_at as usize;
    let losses = |r: &RunStats| r.curve[..first_germination].iter().map(|p| p.loss).collect::<Vec<_>>();
    assert_eq!(losses(&o.baseline), losses(&o.seeded));
    // α: recorded for the grown seeds, 1 once fossilized.
    let last = o.seeded.curve.last().expect("curve");
    assert_eq!(last.alpha.get("seed-a"), Some(&1.0));
    assert_eq!(last.alpha.get("seed-c"), Some(&1.0));
}

#[test]
fn summary_numbers_come_from_the_runs_and_the_figure_names_every_run() {
    let a = conv_scenario(7);
    let b = conv_scenario(8);
    check_outcome(&a);
    check_outcome(&b);
    // Different random seeds: different splits, initialisations and numbers.
    assert_ne!(a.baseline.final_loss, b.baseline.final_loss);
    assert_ne!(a.seeded.curve[0].loss, b.seeded.curve[0].loss);

    let agg = Aggregate::of(&[a.clone(), b.clone()]);
    assert_eq!(agg.repeats, 2);
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    assert!(close(agg.seeded.test_accuracy.mean, (a.seeded.test_accuracy + b.seeded.test_accuracy) / 2.0));
    assert!(close(agg.baseline.final_loss.mean, (a.baseline.final_loss + b.baseline.final_loss) / 2.0));
    let diffs = [a.seeded.test_accuracy - a.baseline.test_accuracy, b.seeded.test_accuracy - b.baseline.test_accuracy];
    assert!(close(agg.seeded_vs_baseline.diff_points.mean, mean(diffs.map(|d| d * 100.0))));
    assert_eq!(agg.seeded_vs_baseline.diff_points.n, 2);
    assert_eq!(agg.per_seed.iter().map(|r| r.seed).collect::<Vec<_>>(), [7, 8]);
    assert_eq!(agg.static_run.as_ref().map(|s| s.parameters), Some(a.seeded.parameters()));
    assert_eq!(agg.verdict().len(), 3);

    // The figure: well-formed SVG whose text names every run and every seed.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("figure.svg");
    figure::write_svg(&path, &a, HostKind::Conv, &agg.seeded_vs_baseline.text).expect("figure");
    let svg = std::fs::read_to_string(&path).expect("read figure");
    let doc = roxmltree::Document::parse(&svg).expect("the figure is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let text: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
        .collect();
    for name in ["baseline", "seeded", "static"] {
        assert!(text.iter().any(|t| t == name), "legend entry {name} missing: {text:?}");
    }
    for seed in ["seed-a", "seed-b", "seed-c"] {
        assert!(text.iter().any(|t| t.starts_with(seed)), "{seed} missing: {text:?}");
    }
    assert!(text.iter().any(|t| t == "F"), "a FOSSILIZED marker: {text:?}");
    assert!(text.iter().any(|t| t == "C"), "a CULLED marker: {text:?}");
    assert!(text.contains(&agg.seeded_vs_baseline.text), "the verdict heads the figure");
}

fn seeded_decisions(apis: Apis<'_>, key: kasmina::HmacKey) -> (Vec<demo::TimelineEntry>, i64) {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut controller = controller(key, &settings());
    let mut timeline = Vec::new();
    let control = Control { apis, controller: &mut controller, timeline: &mut timeline };
    let stats = trainer::train(&config(common::SEED), &data(common::SEED), Some(control), false).expect("seeded run");
    (timeline, stats.parameters_added)
}

#[test]
fn conv_host_makes_the_same_decisions_embedded_and_beside_a_daemon() {
    let key = setup::fresh_key().expect("key");
    let urza = tempfile::tempdir().expect("tempdir");
    let host = setup::embedded_host(settings(), key.clone(), urza.path()).expect("embedded host");
    let (local, local_params) = seeded_decisions(Apis { trainer: &host, controller: &host }, key);

    let key = setup::fresh_key().expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let host: Arc<dyn KasminaApi> =
        Arc::new(setup::embedded_host(settings(), key.clone(), &dir.path().join("urza")).expect("host"));
    let daemon = Daemon::start(host, dir.path());
    let trainer = daemon.connect(Role::Trainer, "test-trainer");
    let controller = daemon.connect(Role::Controller, "test-controller");
    let (remote, remote_params) = seeded_decisions(Apis { trainer: &trainer, controller: &controller }, key);
    drop((trainer, controller));
    drop(daemon);

    assert!(decisions(&local).iter().any(|d| d.1 == "seed-c" && d.3 == "FOSSILIZED"), "{local:#?}");
    assert_eq!(decisions(&local), decisions(&remote), "embedded and daemon timelines differ");
    assert_eq!(local_params, remote_params);
}
