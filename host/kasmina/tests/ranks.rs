//! Data-parallel ranks (SPEC.md §10) on the control plane's side, with real
//! plugins and kernels: a job registers `world_size = 2`; two simulated
//! ranks report every step and rank 0 merges them with the contract's
//! `merge_rank_reports`. While they agree the seed grows as usual; once one
//! rank runs the seed with another α, the report says so, a CRITICAL
//! `kasmina.ranks.divergence` event is emitted at once and the seed's next
//! gate fails with `rank_divergence`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Harness, SimTrainer, harness, registration};
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::api::{HostRegistration, KasminaApi, StepReport};
use leyline::ranks::merge_rank_reports;
use leyline::{SeedStage, TelemetryEvent, TelemetryLevel};

fn two_rank_job() -> (Harness, SimTrainer) {
    let h = harness();
    h.host.register_host(HostRegistration { world_size: 2, ..registration(Vec::new(), Vec::new()) }).expect("register");
    (h, SimTrainer::default())
}

/// One lockstep step: both ranks report, rank 0 merges and sends, both apply.
fn step(h: &mut Harness, rank1: &mut SimTrainer) -> Vec<TelemetryEvent> {
    h.step += 1;
    let merged = merge_rank_reports(vec![h.trainer.report(h.step), rank1.report(h.step)]).expect("merge");
    let directives = h.host.step_report(merged).expect("step report accepted");
    h.trainer.apply(&directives);
    rank1.apply(&directives);
    h.events()
}

fn divergence_events(events: &[TelemetryEvent]) -> Vec<&TelemetryEvent> {
    events.iter().filter(|e| e.name == "kasmina.ranks.divergence").collect()
}

fn failed_verdicts(events: &[TelemetryEvent], seed: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.name == "kasmina.gate.verdict" && e.seed_id.as_deref() == Some(seed))
        .filter(|e| e.attributes.get("passed").map(ToString::to_string).as_deref() == Some("false"))
        .map(|e| {
            let attr = |k: &str| e.attributes.get(k).map(ToString::to_string).unwrap_or_default();
            (attr("gate"), attr("reason"))
        })
        .collect()
}

#[test]
fn divergent_ranks_raise_a_critical_event_and_fail_the_next_gate() {
    let (mut h, mut rank1) = two_rank_job();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    let mut events = Vec::new();
    for _ in 0..20 {
        if h.state("seed-a").stage == SeedStage::Training {
            break;
        }
        events.extend(step(&mut h, &mut rank1));
    }
    assert_eq!(h.state("seed-a").stage, SeedStage::Training, "ranks in lockstep grow the seed");
    assert!(divergence_events(&events).is_empty(), "no divergence while the ranks agree");
    assert!(failed_verdicts(&events, "seed-a").is_empty());

    // Rank 1 runs the seed with another α than rank 0 (a directive applied
    // differently): the very next report carries the disagreement.
    rank1.seeds.get_mut("seed-a").expect("rank 1 holds seed-a").alpha = 0.5;
    let events = step(&mut h, &mut rank1);
    let critical = divergence_events(&events);
    assert_eq!(critical.len(), 1, "{events:?}");
    assert_eq!(critical[0].level, TelemetryLevel::Critical);
    assert_eq!(critical[0].seed_id.as_deref(), Some("seed-a"));
    let detail = critical[0].attributes.get("detail").map(ToString::to_string).unwrap_or_default();
    assert!(detail.contains("rank 1 TRAINING:3fe0000000000000:"), "{detail}");

    // The next gate (G2, at the end of TRAINING) fails on the host's own check.
    let mut later = Vec::new();
    for _ in 0..10 {
        later.extend(step(&mut h, &mut rank1));
        if !failed_verdicts(&later, "seed-a").is_empty() {
            break;
        }
    }
    assert_eq!(failed_verdicts(&later, "seed-a"), vec![("G2".to_owned(), "rank_divergence".to_owned())]);
    assert!(matches!(h.state("seed-a").stage, SeedStage::Culled | SeedStage::Embargoed));
}

#[test]
fn world_size_and_the_rank_summary_are_checked() {
    let h = harness();
    let zero = HostRegistration { world_size: 0, ..registration(Vec::new(), Vec::new()) };
    let err = h.host.register_host(zero).expect_err("world_size 0 is refused");
    assert!(err.message.contains("world_size = 0"), "{err}");
    let huge = HostRegistration { world_size: u32::MAX, ..registration(Vec::new(), Vec::new()) };
    assert!(h.host.register_host(huge).is_err());

    let (mut h, mut rank1) = two_rank_job();
    // A two-rank job must say what its ranks applied.
    let lone: StepReport = h.trainer.report(1);
    let err = h.host.step_report(lone).expect_err("no rank summary");
    assert!(err.message.contains("no rank summary"), "{err}");
    // Of exactly its size.
    let three = merge_rank_reports(vec![h.trainer.report(1), rank1.report(1), rank1.report(1)]).unwrap();
    let err = h.host.step_report(three).expect_err("summary of 3 ranks");
    assert!(err.message.contains("world_size = 2"), "{err}");
    // A summary that contradicts itself.
    let mut lying = merge_rank_reports(vec![h.trainer.report(1), rank1.report(1)]).unwrap();
    lying.ranks.as_mut().unwrap().agreed = false;
    assert!(h.host.step_report(lying).is_err());
    // None of the refused reports counted as a step.
    assert!(step(&mut h, &mut rank1).iter().all(|e| e.level != TelemetryLevel::Critical));
    assert_eq!(h.host.status().unwrap().last_step, Some(1));
}
