//! The main job's comparison on the conv host (issue 17): the three runs'
//! numbers come from the runs (each summary number is checked against the
//! per-step curve it summarises, and two random seeds give different
//! numbers), the aggregate is the mean of the repeats, the SVG figure is
//! well-formed XML naming every run and seed, with a min–max band per run
//! over several repeats and none for one, and the seeded run makes the
//! same decisions embedded and beside a real daemon.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Daemon, decisions, settings};
use kasmina_examples::demo::stats::Aggregate;
use kasmina_examples::demo::trainer::{self, Control, CurvePoint, RunStats};
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

    // The figure over both repeats: well-formed SVG whose text names every
    // run and every seed, with a band per run in each of the two upper panels.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("figure.svg");
    let both = [a.clone(), b.clone()];
    figure::write_svg(&path, &both, HostKind::Conv, &agg.seeded_vs_baseline.text).expect("figure");
    let svg = std::fs::read_to_string(&path).expect("read figure");
    let text = svg_text(&svg);
    for name in ["baseline", "seeded", "static"] {
        assert!(text.iter().any(|t| t == name), "legend entry {name} missing: {text:?}");
    }
    for seed in ["seed-a", "seed-b", "seed-c"] {
        assert!(text.iter().any(|t| t.starts_with(seed)), "{seed} missing: {text:?}");
    }
    assert!(text.iter().any(|t| t == "F"), "a FOSSILIZED marker: {text:?}");
    assert!(text.iter().any(|t| t == "C"), "a CULLED marker: {text:?}");
    assert!(text.contains(&agg.seeded_vs_baseline.text), "the verdict heads the figure");
    for (run, fill) in RUN_FILLS {
        assert_eq!(bands(&svg, fill).len(), 2, "{run}: one band in each upper panel over 2 repeats");
    }
    assert!(text.iter().any(|t| t.contains("first repeat only")), "the marks' source is stated: {text:?}");
    // Negative control: one repeat draws no band.
    let one = figure::render_svg(&both[..1], HostKind::Conv, "one repeat").expect("figure");
    for (run, fill) in RUN_FILLS {
        assert!(bands(&one, fill).is_empty(), "{run}: a band with one repeat");
    }
}

/// The fill colours of the runs' bands (figure.rs `RUN_COLOURS`).
const RUN_FILLS: [(&str, &str); 3] = [("baseline", "#5A5A5A"), ("seeded", "#D62728"), ("static", "#1F77B4")];

/// The figure's text elements, trimmed.
fn svg_text(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the figure is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text().map(|t| t.trim().to_owned())).collect()
}

/// The filled polygons of `fill` at the bands' opacity: per band, its
/// outline as (x, y) pixels.
fn bands(svg: &str, fill: &str) -> Vec<Vec<(f64, f64)>> {
    let doc = roxmltree::Document::parse(svg).expect("the figure is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("polygon") && n.attribute("fill") == Some(fill))
        .filter(|n| n.attribute("opacity").and_then(|o| o.parse::<f64>().ok()) == Some(figure::BAND_OPACITY))
        .map(|n| {
            let points = n.attribute("points").expect("points");
            points
                .split_whitespace()
                .map(|xy| {
                    let (x, y) = xy.split_once(',').expect("x,y");
                    (x.parse().expect("x"), y.parse().expect("y"))
                })
                .collect()
        })
        .collect()
}

/// A synthetic run: validation every 5 steps, accuracy and loss moved by
/// `offset`; no training.
fn synthetic_run(steps: u64, offset: f64) -> RunStats {
    let curve = (1..=steps)
        .map(|step| CurvePoint {
            step,
            loss: (2.0 / step as f64 + offset * 0.1).max(1e-3),
            val_accuracy: (step % 5 == 0).then(|| (0.5 + 0.4 * step as f64 / steps as f64 + offset * 0.02).min(1.0)),
            alpha: BTreeMap::new(),
        })
        .collect();
    RunStats {
        test_accuracy: 0.9,
        val_accuracy: 0.9,
        final_loss: 0.1,
        host_parameters: 100,
        parameters_added: 0,
        ms_per_step: 1.0,
        fossils: Vec::new(),
        curve,
    }
}

fn synthetic_outcome(seed: u64, offset: f64, with_static: bool) -> Outcome {
    Outcome {
        seed,
        baseline: synthetic_run(60, offset),
        seeded: synthetic_run(60, offset + 0.5),
        static_run: with_static.then(|| synthetic_run(60, offset + 1.0)),
        timeline: Vec::new(),
        seeds: Vec::new(),
    }
}

#[test]
fn figure_shades_the_spread_over_repeats_and_not_for_one() {
    let three: Vec<Outcome> = (0..3).map(|i| synthetic_outcome(7 + i, i as f64, true)).collect();
    let svg = figure::render_svg(&three, HostKind::Linear, "headline").expect("figure");
    let text = svg_text(&svg);
    assert!(text.iter().any(|t| t.contains("random seeds 7–9")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("min–max") && t.contains("first repeat only")), "{text:?}");
    for (run, fill) in RUN_FILLS {
        let found = bands(&svg, fill);
        assert_eq!(found.len(), 2, "{run}: a band in the accuracy and the loss panel");
        // Accuracy: 12 validation steps, loss: 60 steps; each band goes out
        // along the top and back along the bottom, and has a height.
        let mut sizes: Vec<usize> = found.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [24, 120], "{run}");
        for band in &found {
            let (lo, hi) = band.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
            assert!(hi - lo > 1.0, "{run}: a flat band {band:?}");
        }
    }
    // Negative control: one repeat, the same curves, no band and no note.
    let one = figure::render_svg(&three[..1], HostKind::Linear, "headline").expect("figure");
    for (run, fill) in RUN_FILLS {
        assert!(bands(&one, fill).is_empty(), "{run}: a band with one repeat");
    }
    assert!(!one.contains("<polygon"), "no filled polygon at all with one repeat");
    assert!(!svg_text(&one).iter().any(|t| t.contains("min–max")));
    // A run present in one repeat only (static, when the others' fossils
    // cannot be rebuilt) is a line without a band.
    let mixed = [synthetic_outcome(7, 0.0, true), synthetic_outcome(8, 1.0, false)];
    let svg = figure::render_svg(&mixed, HostKind::Linear, "headline").expect("figure");
    assert_eq!(bands(&svg, RUN_FILLS[1].1).len(), 2, "seeded: banded over 2 repeats");
    assert!(bands(&svg, RUN_FILLS[2].1).is_empty(), "static: one repeat, no band");
    assert!(svg_text(&svg).iter().any(|t| t == "static"), "static still has its line");
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
