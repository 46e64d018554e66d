//! The digits scenario: seeds grow in a running model, and a fair comparison
//! says whether growing helped.
//!
//! - `hosts`: the host networks (linear: one site; conv: two conv blocks,
//!   a site after each) with their sites and seed slots;
//! - `setup`: the embedded host for the demo (settings, the Urza library
//!   the blueprints are published to, a fresh HMAC key);
//! - `controller`: the scripted controller (Tamiyo's stand-in) — signed
//!   commands at set steps;
//! - `trainer`: the trainer (Tolaria's stand-in) — one training loop for the
//!   three runs, directives in, step reports out; `schedule`: the batch
//!   order and learning rate all three share;
//! - `fossils`: the static run's grafts (the seeded run's fossils, built in
//!   from step 0);
//! - `stats`: mean ± spread over repeats and the verdict;
//! - `report`: timeline, table and JSON summary; `figure`: the SVG.
//!
//! [`run`] trains the three runs of one seed: baseline (the host alone),
//! seeded (the controller grows seeds through Kasmina) and static (the
//! seeded run's final architecture from step 0), all with the same
//! initialisation of the host and the same batch order.

pub mod controller;
pub mod figure;
pub mod fossils;
pub mod hosts;
pub mod report;
mod schedule;
pub mod setup;
pub mod stats;
pub mod trainer;

use std::time::Instant;

use anyhow::Result;
use leyline::SeedState;
use leyline::api::KasminaApi;
use serde::Serialize;

use crate::digits::Split;
pub use controller::{Controller, Plan};
pub use hosts::HostKind;
pub use report::{Summary, TimelineEntry};
pub use trainer::{RunStats, TrainConfig};

/// Everything one scenario run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Seed of the split, the initialisation and the batch order.
    pub seed: u64,
    /// Host alone, same data order.
    pub baseline: RunStats,
    /// Host with seeds.
    pub seeded: RunStats,
    /// The seeded run's final architecture trained from step 0; `None` when
    /// a fossil's blend cannot be reproduced statically (CONFIDENCE).
    #[serde(rename = "static")]
    pub static_run: Option<RunStats>,
    /// Lifecycle timeline (transitions, gate verdicts, commands).
    pub timeline: Vec<TimelineEntry>,
    /// Seed states at the end.
    pub seeds: Vec<SeedState>,
}

/// The two connections a scenario uses. Embedded, both are the same host;
/// beside a daemon, the trainer and the controller connect with their own
/// roles.
#[derive(Clone, Copy)]
pub struct Apis<'a> {
    /// Registers the model, fetches kernels, reports steps.
    pub trainer: &'a dyn KasminaApi,
    /// Sends signed commands, reads seed states.
    pub controller: &'a dyn KasminaApi,
}

/// Runs the baseline, the seeded run and the static run.
pub fn run(
    config: &TrainConfig,
    data: &Split,
    apis: Apis<'_>,
    controller: &mut Controller,
    progress: bool,
) -> Result<Outcome> {
    let started = Instant::now();
    let say = |what: &str| {
        if progress {
            eprintln!("{what} ({:.1} s)", started.elapsed().as_secs_f64());
        }
    };
    say("baseline: the host network alone");
    let baseline = trainer::train(config, data, None, progress)?;
    say("seeded: the same run while the controller grows seeds");
    let mut timeline = Vec::new();
    let seeded =
        trainer::train(config, data, Some(trainer::Control { apis, controller, timeline: &mut timeline }), progress)?;
    let seeds = apis.controller.seed_states()?;
    let static_run = if seeded.fossils.iter().all(|f| fossils::supported(f.blend)) {
        say("static: the seeded run's final architecture from step 0");
        Some(trainer::train_static(config, data, &seeded.fossils, progress)?)
    } else {
        say(
            "static: skipped (a fossil's blend gates on the host's logits; only residual, convex and channel blends are rebuilt)",
        );
        None
    };
    say("done");
    Ok(Outcome { seed: config.seed, baseline, seeded, static_run, timeline, seeds })
}
