//! Data-parallel ranks (SPEC.md §10), the control plane's side: the
//! registration's `world_size` is checked, a step report of a job with more
//! than one rank must carry a [`RankSummary`] of that size, and a seed the
//! ranks disagree on is marked — a CRITICAL `kasmina.ranks.divergence`
//! event at once, and its next gate fails with `rank_divergence`, whatever
//! the gate plugin would say.
//!
//! Kept apart from the step path and the gate service so that each of them
//! calls in with one line: [`validate_report`] before a report is applied,
//! [`absorb`] after the seeds absorbed it, [`precheck`] before a gate asks
//! its plugin.

use std::collections::BTreeMap;

use leyline::api::StepReport;
use leyline::ranks::{MAX_WORLD_SIZE, RankSummary};
use leyline::{AttrValue, GateId, TelemetryEvent, TelemetryLevel};

use super::SeedContext;

/// Gate reason of a seed whose ranks applied different things.
pub const RANK_DIVERGENCE: &str = "rank_divergence";

/// A registration's `world_size`: at least 1, at most [`MAX_WORLD_SIZE`].
pub fn validate_world_size(world_size: u32) -> Result<(), String> {
    if world_size == 0 || world_size > MAX_WORLD_SIZE {
        return Err(format!("world_size = {world_size}; between 1 and {MAX_WORLD_SIZE} required"));
    }
    Ok(())
}

/// Checks a report's rank summary against the registered `world_size` and
/// the known seeds, before anything of the report is applied.
pub fn validate_report(
    report: &StepReport,
    world_size: u32,
    known: &BTreeMap<String, SeedContext>,
) -> Result<(), String> {
    let Some(summary) = &report.ranks else {
        if world_size > 1 {
            return Err(format!(
                "the job registered {world_size} ranks but the report carries no rank summary: \
                 rank 0 must merge every rank's report (leyline::ranks::merge_rank_reports)"
            ));
        }
        return Ok(());
    };
    if summary.world_size != world_size {
        return Err(format!(
            "the rank summary covers {} ranks; the job registered world_size = {world_size}",
            summary.world_size
        ));
    }
    if !summary.is_consistent() {
        return Err("the rank summary says the ranks agreed but lists divergent seeds, or the reverse".to_owned());
    }
    for seed in &summary.seeds {
        if !known.contains_key(&seed.seed_id) {
            return Err(format!("the rank summary names unknown seed {:?}", seed.seed_id));
        }
        if seed.divergent.iter().any(|d| d.rank == 0 || d.rank >= world_size) {
            return Err(format!("the rank summary of seed {} names a rank outside 1..{world_size}", seed.seed_id));
        }
    }
    Ok(())
}

/// Marks every seed the ranks disagreed on (its next gate fails) and
/// returns one CRITICAL event per such seed.
pub fn absorb(seeds: &mut BTreeMap<String, SeedContext>, report: &StepReport, now_ms: u64) -> Vec<TelemetryEvent> {
    let Some(summary) = &report.ranks else { return Vec::new() };
    divergences(summary)
        .filter_map(|(seed_id, detail)| {
            let seed = seeds.get_mut(seed_id)?;
            seed.rank_divergence = Some(detail.clone());
            Some(
                TelemetryEvent::new(
                    "kasmina.ranks.divergence",
                    TelemetryLevel::Critical,
                    format!(
                        "{seed_id}: data-parallel ranks applied different things at step {}: {detail}",
                        report.step
                    ),
                    now_ms,
                )
                .seed(seed_id)
                .attr("step", report.step)
                .attr("world_size", u64::from(summary.world_size))
                .attr("detail", detail),
            )
        })
        .collect()
}

fn divergences(summary: &RankSummary) -> impl Iterator<Item = (&str, String)> {
    summary.seeds.iter().filter(|s| !s.divergent.is_empty()).map(|s| {
        let others: Vec<String> = s.divergent.iter().map(|d| format!("rank {} {}", d.rank, d.digest)).collect();
        (s.seed_id.as_str(), format!("rank 0 {}; {}", s.digest, others.join("; ")))
    })
}

/// The host's verdict before any plugin: a seed whose ranks diverged fails
/// its next gate (G5, which only checks that a reset slot is clean, is
/// exempt: the slot holds nothing the ranks could disagree on).
pub fn precheck(gate: GateId, seed: &SeedContext) -> Option<(String, BTreeMap<String, AttrValue>)> {
    if gate == GateId::G5Reset {
        return None;
    }
    let detail = seed.rank_divergence.as_ref()?;
    let mut attributes = BTreeMap::new();
    attributes.insert("rank_digests".to_owned(), AttrValue::Str(detail.clone()));
    attributes.insert("checked_by".to_owned(), AttrValue::from("host"));
    Some((RANK_DIVERGENCE.to_owned(), attributes))
}
