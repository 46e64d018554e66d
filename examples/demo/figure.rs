//! The demo's picture: one SVG with three panels over the training steps —
//! validation accuracy and training loss of the three runs, and each seed's
//! α with its lifecycle transitions marked. Transitions also show as faint
//! vertical lines in the two upper panels, so a change in a curve can be
//! read against what the seeds were doing then.
//!
//! Over several repeats (`--repeats N`, N > 1) the two upper panels draw each
//! run's mean over the repeats with a shaded band from the smallest to the
//! largest value at each step (min–max, not ± sd: with 3 to 5 seeds the
//! extremes are the honest spread); the transition marks and the α panel
//! stay those of the first repeat, and a line under the title says so. With
//! one repeat there is no band and the figure is that run's curves.
//!
//! plotters with only its SVG backend: text is written as SVG `<text>` and
//! laid out with plotters' built-in size estimate (no font files needed).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use plotters::prelude::*;

use super::Outcome;
use super::hosts::HostKind;
use super::trainer::RunStats;

/// Width and height in pixels (one repeat).
const SIZE: (u32, u32) = (960, 1000);
/// Height of the title area (one repeat).
const TITLE: u32 = 70;
/// Extra height of the title area over several repeats: the line saying
/// what the lines, the bands and the marks show.
const NOTE: u32 = 24;
/// Steps in the moving mean of the training loss (one batch is noisy).
const LOSS_SMOOTHING: usize = 10;
/// Colours of the runs: baseline, seeded, static.
const RUN_COLOURS: [RGBColor; 3] = [RGBColor(90, 90, 90), RGBColor(214, 39, 40), RGBColor(31, 119, 180)];
/// Opacity of a run's min–max band (filled in the run's colour).
pub const BAND_OPACITY: f64 = 0.18;
/// Colours of the seeds, in slot order.
const SEED_COLOURS: [RGBColor; 4] =
    [RGBColor(148, 103, 189), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(140, 86, 75)];

/// Writes the figure of `outcomes` (the repeats, at least one; the first
/// gives the transition marks and the α panel) to `path`; `headline` is the
/// verdict line printed under the title.
pub fn write_svg(path: &Path, outcomes: &[Outcome], host: HostKind, headline: &str) -> Result<()> {
    let svg = render_svg(outcomes, host, headline)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// The figure as SVG text: pure, from the runs' curves in memory.
pub fn render_svg(outcomes: &[Outcome], host: HostKind, headline: &str) -> Result<String> {
    let first = outcomes.first().context("the figure needs at least one repeat")?;
    let steps = first.seeded.curve.len() as u64;
    ensure!(
        outcomes.iter().all(|o| o.seeded.curve.len() as u64 == steps),
        "the repeats differ in their number of steps"
    );
    let repeats = outcomes.len();
    let note = if repeats > 1 { NOTE } else { 0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, SIZE.1 + note)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(TITLE + note);
        let seeds = if repeats > 1 {
            format!("random seeds {}", seed_list(outcomes))
        } else {
            format!("random seed {}", first.seed)
        };
        title.draw(&Text::new(
            format!("Kasmina digits demo: {} host, {seeds}, {steps} steps per run", host.as_str()),
            (20, 12),
            ("sans-serif", 22).into_font(),
        ))?;
        title.draw(&Text::new(headline.to_owned(), (20, 42), ("sans-serif", 14).into_font()))?;
        if repeats > 1 {
            title.draw(&Text::new(band_note(outcomes), (20, 66), ("sans-serif", 14).into_font()))?;
        }
        let panels = body.split_evenly((3, 1));
        let runs = runs(outcomes);
        let marks = transitions(first);
        accuracy_panel(&panels[0], &runs, &marks, steps, repeats)?;
        loss_panel(&panels[1], &runs, &marks, steps, repeats)?;
        alpha_panel(&panels[2], first, &marks, steps)?;
        root.present()?;
    }
    Ok(svg)
}

type Panel<'a, 'b> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordu64, plotters::coord::types::RangedCoordf64>,
>;

/// A run over the repeats that have it.
struct Run<'a> {
    name: &'static str,
    colour: RGBColor,
    repeats: Vec<&'a RunStats>,
}

impl Run<'_> {
    /// Whether a band is drawn: more than one repeat to spread over.
    fn banded(&self) -> bool {
        self.repeats.len() > 1
    }
}

/// The runs present in at least one repeat, in the order baseline, seeded,
/// static.
fn runs(outcomes: &[Outcome]) -> Vec<Run<'_>> {
    let pick: [fn(&Outcome) -> Option<&RunStats>; 3] =
        [|o| Some(&o.baseline), |o| Some(&o.seeded), |o| o.static_run.as_ref()];
    ["baseline", "seeded", "static"]
        .into_iter()
        .zip(RUN_COLOURS)
        .zip(pick)
        .map(|((name, colour), pick)| Run { name, colour, repeats: outcomes.iter().filter_map(pick).collect() })
        .filter(|r| !r.repeats.is_empty())
        .collect()
}

/// `7–11` for consecutive seeds, else `7, 9, 12`.
fn seed_list(outcomes: &[Outcome]) -> String {
    let seeds: Vec<u64> = outcomes.iter().map(|o| o.seed).collect();
    let consecutive = seeds.windows(2).all(|w| w[1] == w[0] + 1);
    match (seeds.first(), seeds.last()) {
        (Some(a), Some(b)) if consecutive => format!("{a}–{b}"),
        _ => seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// The line under the title over several repeats.
fn band_note(outcomes: &[Outcome]) -> String {
    let n = outcomes.len();
    let with_static = outcomes.iter().filter(|o| o.static_run.is_some()).count();
    let statics =
        if with_static < n { format!(" (static: the {with_static} with a static run)") } else { String::new() };
    format!(
        "lines: mean over the {n} random seeds{statics}, shaded: min–max; transition marks and α: first repeat only \
         (random seed {})",
        outcomes[0].seed
    )
}

/// One run's series over the repeats, per step: (step, mean, min, max).
type Series = Vec<(u64, f64, f64, f64)>;

/// [`Series`] of `run`: `series` gives one repeat's (step, value) points; a step is averaged
/// over the repeats that have it.
fn over_repeats(run: &Run<'_>, series: impl Fn(&RunStats) -> Vec<(u64, f64)>) -> Series {
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in &run.repeats {
        for (step, v) in series(r) {
            by_step.entry(step).or_default().push(v);
        }
    }
    by_step
        .into_iter()
        .map(|(step, vs)| {
            let mean = vs.iter().sum::<f64>() / vs.len() as f64;
            let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (step, mean, lo, hi)
        })
        .collect()
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

fn accuracy_panel(area: &Panel<'_, '_>, runs: &[Run<'_>], marks: &[Mark], steps: u64, repeats: usize) -> Result<()> {
    let series: Vec<Series> = runs
        .iter()
        .map(|run| over_repeats(run, |r| r.curve.iter().filter_map(|p| p.val_accuracy.map(|v| (p.step, v))).collect()))
        .collect();
    // The interesting range is the last 90 % of the run; earlier points are clamped to its floor.
    let floor =
        series.iter().flatten().filter(|(s, ..)| *s >= steps / 10).map(|(_, _, lo, _)| *lo).fold(1.0f64, f64::min);
    let lo = ((floor - 0.02) * 50.0).floor() / 50.0;
    let clamped: Vec<Series> = series
        .into_iter()
        .map(|s| s.into_iter().map(|(step, m, a, b)| (step, m.max(lo), a.max(lo), b.max(lo))).collect())
        .collect();
    let caption = match repeats {
        1 => "validation accuracy".to_owned(),
        n => format!("validation accuracy: mean of {n} random seeds, min–max shaded"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..steps, lo.max(0.0)..1.0)?;
    chart.configure_mesh().x_desc("step").light_line_style(RGBColor(238, 238, 238)).draw()?;
    draw_marks(&mut chart, marks, lo.max(0.0), 1.0)?;
    draw_runs(&mut chart, runs, &clamped)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn loss_panel(area: &Panel<'_, '_>, runs: &[Run<'_>], marks: &[Mark], steps: u64, repeats: usize) -> Result<()> {
    // A moving mean per repeat (one batch is noisy), then mean, min and max
    // over the repeats, then log10: the loss spans orders of magnitude.
    let smoothed = |r: &RunStats| -> Vec<(u64, f64)> {
        let losses: Vec<f64> = r.curve.iter().map(|p| p.loss).collect();
        r.curve
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let window = &losses[i.saturating_sub(LOSS_SMOOTHING - 1)..=i];
                (p.step, window.iter().sum::<f64>() / window.len() as f64)
            })
            .collect()
    };
    let log = |v: f64| v.max(1e-6).log10();
    let series: Vec<Series> = runs
        .iter()
        .map(|run| over_repeats(run, smoothed).into_iter().map(|(s, m, a, b)| (s, log(m), log(a), log(b))).collect())
        .collect();
    let values = || series.iter().flatten().flat_map(|(_, m, a, b)| [*m, *a, *b]);
    let lo = values().fold(f64::INFINITY, f64::min).floor();
    let hi = values().fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
    let caption = match repeats {
        1 => format!("training loss (log10, {LOSS_SMOOTHING}-step mean)"),
        n => format!("training loss (log10, {LOSS_SMOOTHING}-step mean): mean of {n} random seeds, min–max shaded"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..steps, lo..hi)?;
    chart.configure_mesh().x_desc("step").light_line_style(RGBColor(238, 238, 238)).draw()?;
    draw_marks(&mut chart, marks, lo, hi)?;
    draw_runs(&mut chart, runs, &series)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Every run's min–max band (over several repeats), then every run's mean
/// line with its legend entry: bands never hide a line.
fn draw_runs<'a>(chart: &mut Chart<'a>, runs: &[Run<'_>], series: &[Series]) -> Result<()> {
    for (run, s) in runs.iter().zip(series).filter(|(run, _)| run.banded()) {
        // The upper edge left to right, then the lower edge back.
        let outline: Vec<(u64, f64)> = s
            .iter()
            .map(|(step, _, _, hi)| (*step, *hi))
            .chain(s.iter().rev().map(|(step, _, lo, _)| (*step, *lo)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(outline, run.colour.mix(BAND_OPACITY).filled())))?;
    }
    for (run, s) in runs.iter().zip(series) {
        let colour = run.colour;
        chart
            .draw_series(LineSeries::new(s.iter().map(|(step, mean, ..)| (*step, *mean)), colour.stroke_width(2)))?
            .label(run.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
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
fn draw_marks<'a>(chart: &mut Chart<'a>, marks: &[Mark], lo: f64, hi: f64) -> Result<()> {
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
