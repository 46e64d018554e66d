//! The digits scenario: seeds grow in a running model.
//!
//! - `setup`: the embedded host for the demo (settings, Urza library with
//!   the blueprint fixtures, a fresh HMAC key);
//! - `controller`: the scripted controller (Tamiyo's stand-in) — signed
//!   commands at set steps;
//! - `trainer`: the trainer (Tolaria's stand-in) — host network, seed
//!   slots, directives in, step reports out;
//! - `report`: timeline, accuracy table and JSON summary.

pub mod controller;
pub mod report;
pub mod setup;
pub mod trainer;

use std::time::Instant;

use anyhow::Result;
use leyline::SeedState;
use leyline::api::KasminaApi;
use serde::Serialize;

use crate::digits::Split;
pub use controller::{Controller, Plan};
pub use report::{Summary, TimelineEntry};
pub use trainer::{RunStats, TrainConfig};

/// Everything one scenario run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Host alone, same data order.
    pub baseline: RunStats,
    /// Host with seeds.
    pub seeded: RunStats,
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

/// Runs the baseline and then the seeded run.
pub fn run(
    config: &TrainConfig,
    data: &Split,
    apis: Apis<'_>,
    controller: &mut Controller,
    progress: bool,
) -> Result<Outcome> {
    let started = Instant::now();
    if progress {
        eprintln!("baseline: the host network alone");
    }
    let baseline = trainer::train(config, data, None, progress)?;
    if progress {
        eprintln!("baseline done in {:.1} s; now with seeds", started.elapsed().as_secs_f64());
    }
    let mut timeline = Vec::new();
    let seeded =
        trainer::train(config, data, Some(trainer::Control { apis, controller, timeline: &mut timeline }), progress)?;
    let seeds = apis.controller.seed_states()?;
    Ok(Outcome { baseline, seeded, timeline, seeds })
}
