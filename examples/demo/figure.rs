//! The demo's picture: one SVG with three panels over the training steps —
//! validation accuracy and training loss of the three runs, and each seed's
//! α with its lifecycle transitions marked. Transitions also show as faint
//! vertical lines in the two upper panels, so a change in a curve can be
//! read against what the seeds were doing then.
//!
//! plotters with only its SVG backend: text is written as SVG `<text>` and
//! laid out with plotters' built-in size estimate (no font files needed).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::Outcome;
use super::hosts::HostKind;
use super::trainer::RunStats;

/// Width and height in pixels.
const SIZE: (u32, u32) = (960, 1000);
/// Steps in the moving mean of the training loss (one batch is noisy).
const LOSS_SMOOTHING: usize = 10;
/// Colours of the runs: baseline, seeded, static.
const RUN_COLOURS: [RGBColor; 3] = [RGBColor(90, 90, 90), RGBColor(214, 39, 40), RGBColor(31, 119, 180)];
/// Colours of the seeds, in slot order.
const SEED_COLOURS: [RGBColor; 4] =
    [RGBColor(148, 103, 189), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(140, 86, 75)];

/// Writes the figure of `outcome` (one repeat) to `path`; `headline` is the
/// verdict line printed under the title.
pub fn write_svg(path: &Path, outcome: &Outcome, host: HostKind, headline: &str) -> Result<()> {
    let svg = render_svg(outcome, host, headline)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// The figure as SVG text.
pub fn render_svg(outcome: &Outcome, host: HostKind, headline: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(70);
        let steps = outcome.seeded.curve.len() as u64;
        title.draw(&Text::new(
            format!("Kasmina digits demo: {} host, random seed {}, {steps} steps per run", host.as_str(), outcome.seed),
            (20, 12),
            ("sans-serif", 22).into_font(),
        ))?;
        title.draw(&Text::new(headline.to_owned(), (20, 42), ("sans-serif", 14).into_font()))?;
        let panels = body.split_evenly((3, 1));
        let runs = runs(outcome);
        let marks = transitions(outcome);
        accuracy_panel(&panels[0], &runs, &marks, steps)?;
        loss_panel(&panels[1], &runs, &marks, steps)?;
        alpha_panel(&panels[2], outcome, &marks, steps)?;
        root.present()?;
    }
    Ok(svg)
}

type Panel<'a, 'b> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// (name, run, colour) of the runs present.
fn runs(outcome: &Outcome) -> Vec<(&'static str, &RunStats, RGBColor)> {
    let all = [
        ("baseline", Some(&outcome.baseline)),
        ("seeded", Some(&outcome.seeded)),
        ("static", outcome.static_run.as_ref()),
    ];
    all.into_iter().zip(RUN_COLOURS).filter_map(|((name, run), colour)| run.map(|r| (name, r, colour))).collect()
}

/// A lifecycle transition: step, seed colour, seed id, new stage.
struct Mark {
    step: u64,
    colour: RGBColor,
    seed: String,
    stage: String,
}

fn transitions(outcome: &Outcome) -> Vec<Mark> {
    let mut seeds: Vec<&str> = outcome.timeline.iter().map(|t| t.seed_id.as_str()).filter(|s| *s != "-").collect();
    seeds.sort_unstable();
    seeds.dedup();
    outcome
        .timeline
        .iter()
        // DORMANT is the slot's registration; GERMINATED is one step before
        // TRAINING and EMBARGOED the same step as CULLED: their marks would
        // only sit on top of the next one.
        .filter(|t| t.kind == "transition" && !matches!(t.what.as_str(), "DORMANT" | "GERMINATED" | "EMBARGOED"))
        .map(|t| Mark {
            step: t.step,
            colour: seed_colour(&seeds, &t.seed_id),
            seed: t.seed_id.clone(),
            stage: t.what.clone(),
        })
        .collect()
}

fn seed_colour(seeds: &[&str], seed: &str) -> RGBColor {
    let i = seeds.iter().position(|s| *s == seed).unwrap_or(0);
    SEED_COLOURS[i % SEED_COLOURS.len()]
}

fn accuracy_panel(
    area: &Panel<'_, '_>,
    runs: &[(&str, &RunStats, RGBColor)],
    marks: &[Mark],
    steps: u64,
) -> Result<()> {
    let points = |r: &RunStats| -> Vec<(u64, f64)> {
        r.curve.iter().filter_map(|p| p.val_accuracy.map(|v| (p.step, v))).collect()
    };
    // The interesting range is the last 90 % of the run; earlier points are clamped to its floor.
    let floor = runs
        .iter()
        .flat_map(|(_, r, _)| points(r))
        .filter(|(s, _)| *s >= steps / 10)
        .map(|(_, v)| v)
        .fold(1.0f64, f64::min);
    let lo = ((floor - 0.02) * 50.0).floor() / 50.0;
    let mut chart = ChartBuilder::on(area)
        .caption("validation accuracy", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..steps, lo.max(0.0)..1.0)?;
    chart.configure_mesh().x_desc("step").light_line_style(RGBColor(238, 238, 238)).draw()?;
    draw_marks(&mut chart, marks, lo.max(0.0), 1.0)?;
    for (name, run, colour) in runs {
        let colour = *colour;
        let clamped = points(run).into_iter().map(|(s, v)| (s, v.max(lo)));
        chart
            .draw_series(LineSeries::new(clamped, colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn loss_panel(area: &Panel<'_, '_>, runs: &[(&str, &RunStats, RGBColor)], marks: &[Mark], steps: u64) -> Result<()> {
    // log10 of a moving mean: the loss spans orders of magnitude.
    let smoothed = |r: &RunStats| -> Vec<(u64, f64)> {
        let losses: Vec<f64> = r.curve.iter().map(|p| p.loss).collect();
        r.curve
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let window = &losses[i.saturating_sub(LOSS_SMOOTHING - 1)..=i];
                (p.step, (window.iter().sum::<f64>() / window.len() as f64).max(1e-6).log10())
            })
            .collect()
    };
    let all: Vec<(u64, f64)> = runs.iter().flat_map(|(_, r, _)| smoothed(r)).collect();
    let lo = all.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min).floor();
    let hi = all.iter().map(|(_, v)| *v).fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("training loss (log10, {LOSS_SMOOTHING}-step mean)"), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..steps, lo..hi)?;
    chart.configure_mesh().x_desc("step").light_line_style(RGBColor(238, 238, 238)).draw()?;
    draw_marks(&mut chart, marks, lo, hi)?;
    for (name, run, colour) in runs {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(smoothed(run), colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn alpha_panel(area: &Panel<'_, '_>, outcome: &Outcome, marks: &[Mark], steps: u64) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(
            "seeded run: α of each seed; transitions T training, B blending, S shadowing, P probationary, F fossilized, C culled",
            ("sans-serif", 14),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..steps, -0.05..1.25)?;
    chart.configure_mesh().x_desc("step").y_desc("α").light_line_style(RGBColor(238, 238, 238)).draw()?;
    let mut seeds: Vec<(&str, RGBColor)> = marks.iter().map(|m| (m.seed.as_str(), m.colour)).collect();
    seeds.sort_by(|a, b| a.0.cmp(b.0));
    seeds.dedup_by(|a, b| a.0 == b.0);
    let alpha_at = |seed: &str, step: u64| -> f64 {
        outcome.seeded.curve.iter().find(|p| p.step == step).and_then(|p| p.alpha.get(seed).copied()).unwrap_or(0.0)
    };
    for (row, (seed, colour)) in seeds.iter().enumerate() {
        let colour = *colour;
        let line: Vec<(u64, f64)> =
            outcome.seeded.curve.iter().filter_map(|p| p.alpha.get(*seed).map(|a| (p.step, *a))).collect();
        let blueprint = outcome.seeds.iter().find(|s| s.seed_id == *seed).and_then(|s| s.blueprint_id.clone());
        let label = format!("{seed} ({})", blueprint.unwrap_or_else(|| "-".to_owned()));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        // Labels of different seeds sit at different heights so they do not overlap.
        let lift = 0.06 + 0.07 * row as f64;
        for m in marks.iter().filter(|m| m.seed == *seed) {
            let a = alpha_at(seed, m.step);
            chart.draw_series(std::iter::once(Circle::new((m.step, a), 4, colour.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                short(&m.stage).to_owned(),
                (m.step, a + lift),
                ("sans-serif", 12).into_font().color(&colour),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Faint vertical lines at every transition, in the seed's colour.
fn draw_marks<'a>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordu64, plotters::coord::types::RangedCoordf64>,
    >,
    marks: &[Mark],
    lo: f64,
    hi: f64,
) -> Result<()> {
    chart.draw_series(marks.iter().map(|m| PathElement::new(vec![(m.step, lo), (m.step, hi)], m.colour.mix(0.35))))?;
    Ok(())
}

/// One letter per stage, as the α panel's caption explains.
fn short(stage: &str) -> &str {
    match stage {
        "GERMINATED" => "G",
        "TRAINING" => "T",
        "BLENDING" => "B",
        "SHADOWING" => "S",
        "PROBATIONARY" => "P",
        "FOSSILIZED" => "F",
        "CULLED" => "C",
        "EMBARGOED" => "E",
        other => other,
    }
}
