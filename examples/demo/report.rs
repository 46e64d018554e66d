//! What a person wants to see: a lifecycle timeline per seed, the accuracy
//! table, and a JSON summary for scripts.

use std::fmt::Write as _;

use leyline::{Outcome as CommandOutcome, SeedState, TelemetryEvent};
use serde::Serialize;

use super::Outcome;

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
    /// The whole outcome.
    pub outcome: &'a Outcome,
}

/// The human report: timeline per seed, final states, accuracy table.
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
    let (b, w) = (&outcome.baseline, &outcome.seeded);
    let _ = writeln!(out, "\n  {:<22} {:>10} {:>12}", "", "baseline", "with seeds");
    let _ = writeln!(out, "  {:<22} {:>10.4} {:>12.4}", "test accuracy", b.test_accuracy, w.test_accuracy);
    let _ = writeln!(out, "  {:<22} {:>10.4} {:>12.4}", "validation accuracy", b.val_accuracy, w.val_accuracy);
    let _ = writeln!(out, "  {:<22} {:>10.4} {:>12.4}", "final train loss", b.final_loss, w.final_loss);
    let _ = writeln!(out, "  {:<22} {:>10} {:>12}", "host parameters", b.host_parameters, w.host_parameters);
    let _ = writeln!(out, "  {:<22} {:>10} {:>12}", "parameters added", b.parameters_added, w.parameters_added);
    let _ = writeln!(out, "  {:<22} {:>10.2} {:>12.2}", "ms per step", b.ms_per_step, w.ms_per_step);
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
