//! What a person wants to see: a lifecycle timeline per seed, the table of
//! the three runs (and over repeats, mean ± spread with the verdict), and a
//! JSON summary for scripts.

use std::fmt::Write as _;

use leyline::{Outcome as CommandOutcome, SeedState, TelemetryEvent};
use serde::Serialize;

use super::Outcome;
use super::hosts::HostKind;
use super::stats::{Aggregate, RunSpread, Spread};
use super::trainer::RunStats;

/// One line of the lifecycle timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Training step at which it happened.
    pub step: u64,
    /// Seed.
    pub seed_id: String,
    /// `command`, `transition`, `gate` or `note`.
    pub kind: String,
    /// Command name, new stage, or gate id.
    pub what: String,
    /// Gate verdict / command acceptance.
    pub passed: Option<bool>,
    /// Reason or detail.
    pub reason: String,
}

impl TimelineEntry {
    /// A command and its outcome.
    pub fn command(step: u64, seed: &str, op: &str, blueprint: &str, outcome: &CommandOutcome) -> Self {
        let reason = match &outcome.reason {
            None => format!("{op} {blueprint}"),
            Some(r) => {
                format!("{op} {blueprint}: {r} {}", outcome.attributes.get("detail").map(String::as_str).unwrap_or(""))
            }
        };
        TimelineEntry {
            step,
            seed_id: seed.to_owned(),
            kind: "command".to_owned(),
            what: op.to_owned(),
            passed: Some(outcome.accepted),
            reason,
        }
    }

    /// A trainer-side note.
    pub fn note(step: u64, seed: &str, text: String) -> Self {
        TimelineEntry {
            step,
            seed_id: seed.to_owned(),
            kind: "note".to_owned(),
            what: String::new(),
            passed: None,
            reason: text,
        }
    }

    /// The timeline line for a telemetry event, if it is one.
    pub fn from_event(step: u64, e: &TelemetryEvent) -> Option<Self> {
        let seed = e.seed_id.clone()?;
        let attr = |k: &str| e.attributes.get(k).map(ToString::to_string).unwrap_or_default();
        match e.name.as_str() {
            "kasmina.seed.transition" => Some(TimelineEntry {
                step,
                seed_id: seed,
                kind: "transition".to_owned(),
                what: attr("to"),
                passed: None,
                reason: attr("reason"),
            }),
            "kasmina.gate.verdict" => Some(TimelineEntry {
                step,
                seed_id: seed,
                kind: "gate".to_owned(),
                what: attr("gate"),
                passed: Some(attr("passed") == "true"),
                reason: attr("reason"),
            }),
            _ => None,
        }
    }
}

/// The JSON summary written for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary<'a> {
    /// Mode: `embedded` or `daemon`.
    pub mode: &'a str,
    /// Host network: `conv` or `linear`.
    pub host: HostKind,
    /// The first repeat's whole outcome (the runs' curves, the timeline).
    pub outcome: &'a Outcome,
    /// Mean ± spread over every repeat, and the comparisons.
    pub aggregate: &'a Aggregate,
    /// The verdict in words.
    pub verdict: Vec<String>,
}

/// The human report of one repeat: timeline per seed, final states, the
/// three runs side by side.
pub fn render(outcome: &Outcome) -> String {
    let mut out = String::new();
    let mut seeds: Vec<&str> = outcome.timeline.iter().map(|t| t.seed_id.as_str()).filter(|s| *s != "-").collect();
    seeds.sort_unstable();
    seeds.dedup();
    for seed in seeds {
        let _ = writeln!(out, "\nlifecycle of {seed}");
        let _ = writeln!(out, "  {:>5}  {:<10} {:<13} {:<7} reason", "step", "event", "stage/gate", "verdict");
        for t in outcome.timeline.iter().filter(|t| t.seed_id == seed) {
            let verdict = match t.passed {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "",
            };
            let _ = writeln!(out, "  {:>5}  {:<10} {:<13} {:<7} {}", t.step, t.kind, t.what, verdict, t.reason);
        }
    }
    let _ = writeln!(out, "\nfinal seed states");
    for s in &outcome.seeds {
        let _ = writeln!(out, "  {}", state_line(s));
    }
    let runs: Vec<(&str, Option<&RunStats>)> = vec![
        ("baseline", Some(&outcome.baseline)),
        ("seeded", Some(&outcome.seeded)),
        ("static", outcome.static_run.as_ref()),
    ];
    let _ =
        writeln!(out, "\nrandom seed {}: the three runs (same split, initialisation and batch order)", outcome.seed);
    let _ = write!(out, "  {:<22}", "");
    for (name, _) in &runs {
        let _ = write!(out, " {name:>10}");
    }
    let _ = writeln!(out);
    let row = |out: &mut String, label: &str, f: &dyn Fn(&RunStats) -> String| {
        let _ = write!(out, "  {label:<22}");
        for (_, run) in &runs {
            let _ = write!(out, " {:>10}", run.map_or_else(|| "n/a".to_owned(), f));
        }
        let _ = writeln!(out);
    };
    row(&mut out, "test accuracy", &|r| format!("{:.4}", r.test_accuracy));
    row(&mut out, "validation accuracy", &|r| format!("{:.4}", r.val_accuracy));
    row(&mut out, "final train loss", &|r| format!("{:.4}", r.final_loss));
    row(&mut out, "host parameters", &|r| r.host_parameters.to_string());
    row(&mut out, "parameters added", &|r| r.parameters_added.to_string());
    row(&mut out, "parameters total", &|r| r.parameters().to_string());
    row(&mut out, "ms per step", &|r| format!("{:.2}", r.ms_per_step));
    out
}

/// The table over every repeat (mean ± sample sd) and the verdict.
pub fn render_aggregate(agg: &Aggregate) -> String {
    let mut out = String::new();
    let runs = [("baseline", Some(&agg.baseline)), ("seeded", Some(&agg.seeded)), ("static", agg.static_run.as_ref())];
    if agg.repeats > 1 {
        let _ = writeln!(out, "\nover {} random seeds (mean ± sd)", agg.repeats);
        let _ = write!(out, "  {:<22}", "");
        for (name, _) in &runs {
            let _ = write!(out, " {name:>17}");
        }
        let _ = writeln!(out);
        let row = |out: &mut String, label: &str, f: &dyn Fn(&RunSpread) -> String| {
            let _ = write!(out, "  {label:<22}");
            for (_, run) in &runs {
                let _ = write!(out, " {:>17}", run.map_or_else(|| "n/a".to_owned(), f));
            }
            let _ = writeln!(out);
        };
        let pm = |s: &Spread| format!("{:.4} ± {:.4}", s.mean, s.std);
        row(&mut out, "test accuracy", &|r| pm(&r.test_accuracy));
        row(&mut out, "validation accuracy", &|r| pm(&r.val_accuracy));
        row(&mut out, "final train loss", &|r| pm(&r.final_loss));
        row(&mut out, "parameters", &|r| r.parameters.to_string());
        let _ = writeln!(out, "\n  per seed (test accuracy)  baseline   seeded   static");
        for r in &agg.per_seed {
            let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
            let [b, s, st] = r.test_accuracy;
            let _ = writeln!(
                out,
                "  {:>24}  {:>8} {:>8} {:>8}",
                format!("random seed {}", r.seed),
                cell(b),
                cell(s),
                cell(st)
            );
        }
    }
    let _ = writeln!(out, "\nverdict");
    for line in agg.verdict() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn state_line(s: &SeedState) -> String {
    format!(
        "{:<8} {:<13} blueprint {:<16} alpha {:.2} health {:?}",
        s.seed_id,
        s.stage.as_str(),
        s.blueprint_id.as_deref().unwrap_or("-"),
        s.alpha,
        s.health
    )
}
