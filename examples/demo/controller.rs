//! The scripted controller: what Tamiyo would decide, as a fixed plan.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use kasmina::HmacKey;
use kasmina::security::sign_in_place;
use leyline::api::KasminaApi;
use leyline::command::{CommandPayload, SeedCommand};
use leyline::{AdaptationCommand, BlendMode, Outcome, SeedOperation, SeedStage, SeedState};

use super::hosts::HostKind;
use super::report::TimelineEntry;
use super::setup::{ATTENTION_BLUEPRINT, BAD_BLUEPRINT, CONV_BAD_BLUEPRINT, CONV_BLOCK_BLUEPRINT, GOOD_BLUEPRINT};
use super::trainer::RUN_ID;

/// When the controller acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Step at which the good seed is germinated.
    pub good_at: u64,
    /// Step at which the bad seed is germinated.
    pub bad_at: u64,
    /// Probation steps before FOSSILIZE is sent (the host's setting).
    pub probation_steps: u64,
    /// How the good seed blends in.
    pub good_blend: BlendMode,
}

impl Plan {
    /// The demo's plan for a run of `steps`: the good seed at 10 % of the
    /// run, the bad one at 15 %.
    pub fn for_steps(steps: u64, probation_steps: u64) -> Self {
        Plan {
            good_at: (steps / 10).max(1),
            bad_at: (steps * 3 / 20).max(2),
            probation_steps,
            good_blend: BlendMode::Residual,
        }
    }

    /// The same plan with the good seed blending in `mode`.
    pub fn with_blend(self, mode: BlendMode) -> Self {
        Plan { good_blend: mode, ..self }
    }
}

/// Per-channel blend weights for a CHANNEL blend over `channels`: every
/// other channel at half strength, the rest fully blended.
pub fn channel_alpha(channels: i64) -> Vec<f32> {
    (0..channels).map(|i| if i % 2 == 0 { 1.0 } else { 0.5 }).collect()
}

/// The annotations that configure a blend `mode` at a site `channels` wide.
pub fn blend_annotations(mode: BlendMode, channels: i64) -> Vec<(&'static str, String)> {
    let mut out = vec![("blend_mode", mode.as_str().to_owned())];
    match mode {
        BlendMode::Convex | BlendMode::Residual => {}
        BlendMode::Channel => {
            let alpha: Vec<String> = channel_alpha(channels).iter().map(|a| format!("{a:.1}")).collect();
            out.push(("alpha_vec", format!("[{}]", alpha.join(","))));
        }
        BlendMode::Confidence => {
            out.extend([
                ("gate_k", "4.0".to_owned()),
                ("gate_tau", "0.5".to_owned()),
                ("alpha_lo", "0.0".to_owned()),
                ("alpha_hi", "1.0".to_owned()),
                ("confidence_logits_required", "true".to_owned()),
            ]);
        }
    }
    out
}

/// One seed the controller germinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Germination {
    /// Step at which GERMINATE is sent.
    pub at: u64,
    /// Seed slot.
    pub seed: &'static str,
    /// Site of the slot (the `mesh_layers` annotation).
    pub site: &'static str,
    /// Blueprint to grow.
    pub blueprint: &'static str,
    /// How it blends in.
    pub blend: BlendMode,
    /// Channels at the site (CHANNEL blends weight each).
    pub channels: i64,
    /// Whether FOSSILIZE is sent once it has served its probation (the
    /// unstable blueprints are left to the gates).
    pub fossilize: bool,
}

/// The germinations of the demo on `host`. Linear: the useful adapter at
/// 10 % of the run and the unstable one at 15 %, both at `hidden`. Conv: a
/// residual conv block at `block1` (10 %), the unstable conv at `block2`
/// (15 %), channel attention at `block2` (20 %).
pub fn germinations(host: HostKind, plan: &Plan, hidden: i64) -> Vec<Germination> {
    let slot = |i: usize| host.slots()[i];
    let g = |i: usize, at: u64, blueprint: &'static str, blend: BlendMode, fossilize: bool| {
        let (seed, site) = slot(i);
        Germination { at, seed, site, blueprint, blend, channels: host.channels(site, hidden), fossilize }
    };
    match host {
        HostKind::Linear => vec![
            g(0, plan.good_at, GOOD_BLUEPRINT, plan.good_blend, true),
            g(1, plan.bad_at, BAD_BLUEPRINT, BlendMode::Convex, false),
        ],
        HostKind::Conv => vec![
            g(0, plan.good_at, CONV_BLOCK_BLUEPRINT, plan.good_blend, true),
            g(1, plan.bad_at, CONV_BAD_BLUEPRINT, BlendMode::Convex, false),
            g(2, plan.good_at * 2, ATTENTION_BLUEPRINT, plan.good_blend, true),
        ],
    }
}

/// Sends signed commands according to a list of [`Germination`]s.
pub struct Controller {
    key: HmacKey,
    run_id: String,
    germinations: Vec<Germination>,
    probation_steps: u64,
    sent: u64,
    fossilize_sent: BTreeSet<&'static str>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("germinations", &self.germinations).finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller signing with `key` for training run `run_id`.
    pub fn new(key: HmacKey, run_id: &str, germinations: Vec<Germination>, probation_steps: u64) -> Self {
        Controller {
            key,
            run_id: run_id.to_owned(),
            germinations,
            probation_steps,
            sent: 0,
            fossilize_sent: BTreeSet::new(),
        }
    }

    /// The demo's controller on the linear host: `seed-a` grows the good
    /// blueprint, `seed-b` the unstable one, both at the `hidden` site.
    pub fn demo(key: HmacKey, plan: Plan) -> Self {
        Controller::for_host(key, plan, HostKind::Linear, 64)
    }

    /// The demo's controller for `host` (`hidden`: the linear host's width).
    pub fn for_host(key: HmacKey, plan: Plan, host: HostKind, hidden: i64) -> Self {
        Controller::new(key, RUN_ID, germinations(host, &plan, hidden), plan.probation_steps)
    }

    /// How `seed` blends in, if the controller grows it.
    pub fn germination(&self, seed: &str) -> Option<&Germination> {
        self.germinations.iter().find(|g| g.seed == seed)
    }

    /// Called before every training step; sends what the plan says.
    pub fn before_step(&mut self, step: u64, api: &dyn KasminaApi, timeline: &mut Vec<TimelineEntry>) -> Result<()> {
        for g in self.germinations.clone().iter().filter(|g| g.at == step) {
            let outcome = self.send(api, g, SeedOperation::Germinate)?;
            timeline.push(TimelineEntry::command(step, g.seed, "GERMINATE", g.blueprint, &outcome));
        }
        let pending: Vec<Germination> = self
            .germinations
            .iter()
            .filter(|g| g.fossilize && g.at < step && !self.fossilize_sent.contains(g.seed))
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let states = api.seed_states()?;
        for g in pending {
            if let Some(s) = states.iter().find(|s| s.seed_id == g.seed)
                && ready_to_fossilize(s, self.probation_steps)
            {
                let outcome = self.send(api, &g, SeedOperation::Fossilize)?;
                timeline.push(TimelineEntry::command(step, g.seed, "FOSSILIZE", g.blueprint, &outcome));
                self.fossilize_sent.insert(g.seed);
            }
        }
        Ok(())
    }

    fn send(&mut self, api: &dyn KasminaApi, g: &Germination, op: SeedOperation) -> Result<Outcome> {
        self.sent += 1;
        let mut annotations = BTreeMap::new();
        annotations.insert("training_run_id".to_owned(), self.run_id.clone());
        annotations.insert("mesh_layers".to_owned(), g.site.to_owned());
        for (key, value) in blend_annotations(g.blend, g.channels) {
            annotations.insert(key.to_owned(), value);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let mut command = AdaptationCommand {
            version: leyline::CONTRACT_VERSION,
            command_id: format!("{}-{}-{}", self.run_id, self.sent, now),
            target_seed_id: g.seed.to_owned(),
            execution_deadline_ms: None,
            issued_at_ms: Some(u64::try_from(now)?),
            issued_by: "digits-demo-controller".to_owned(),
            payload: CommandPayload::Seed(SeedCommand {
                operation: op,
                blueprint_id: g.blueprint.to_owned(),
                parameters: BTreeMap::new(),
            }),
            annotations,
            signature: None,
        };
        sign_in_place(&mut command, &self.key);
        Ok(api.submit_command(command)?)
    }
}

fn ready_to_fossilize(s: &SeedState, probation_steps: u64) -> bool {
    s.stage == SeedStage::Probationary && s.epoch >= probation_steps
}
