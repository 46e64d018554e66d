//! The scripted controller: what Tamiyo would decide, as a fixed plan.

use std::collections::BTreeMap;

use anyhow::Result;
use kasmina::HmacKey;
use kasmina::security::sign_in_place;
use leyline::api::KasminaApi;
use leyline::command::{CommandPayload, SeedCommand};
use leyline::{AdaptationCommand, BlendMode, Outcome, SeedOperation, SeedStage, SeedState};

use super::report::TimelineEntry;

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

/// The annotations that configure a blend `mode` for the demo's 64-wide site.
pub fn blend_annotations(mode: BlendMode) -> Vec<(&'static str, String)> {
    let mut out = vec![("blend_mode", mode.as_str().to_owned())];
    match mode {
        BlendMode::Convex | BlendMode::Residual => {}
        BlendMode::Channel => {
            // Every other channel at half strength, the rest fully blended.
            let alpha: Vec<&str> = (0..64).map(|i| if i % 2 == 0 { "1.0" } else { "0.5" }).collect();
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

/// Sends signed commands according to a [`Plan`].
pub struct Controller {
    key: HmacKey,
    plan: Plan,
    run_id: String,
    good_seed: String,
    bad_seed: String,
    good_blueprint: String,
    bad_blueprint: String,
    site: String,
    sent: u64,
    fossilize_sent: bool,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("plan", &self.plan).finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller signing with `key` for training run `run_id`.
    pub fn new(
        key: HmacKey,
        plan: Plan,
        run_id: &str,
        site: &str,
        seeds: (&str, &str),
        blueprints: (&str, &str),
    ) -> Self {
        Controller {
            key,
            plan,
            run_id: run_id.to_owned(),
            good_seed: seeds.0.to_owned(),
            bad_seed: seeds.1.to_owned(),
            good_blueprint: blueprints.0.to_owned(),
            bad_blueprint: blueprints.1.to_owned(),
            site: site.to_owned(),
            sent: 0,
            fossilize_sent: false,
        }
    }

    /// The demo's controller: `seed-a` grows the good blueprint, `seed-b`
    /// the unstable one, both at the `hidden` site.
    pub fn demo(key: HmacKey, plan: Plan) -> Self {
        use super::setup::{BAD_BLUEPRINT, GOOD_BLUEPRINT};
        use super::trainer::{RUN_ID, SITE, SLOTS};
        Controller::new(key, plan, RUN_ID, SITE, (SLOTS[0], SLOTS[1]), (GOOD_BLUEPRINT, BAD_BLUEPRINT))
    }

    /// Called before every training step; sends what the plan says.
    pub fn before_step(&mut self, step: u64, api: &dyn KasminaApi, timeline: &mut Vec<TimelineEntry>) -> Result<()> {
        if step == self.plan.good_at {
            let (seed, bp) = (self.good_seed.clone(), self.good_blueprint.clone());
            let outcome = self.send(api, &seed, SeedOperation::Germinate, &bp, self.plan.good_blend)?;
            timeline.push(TimelineEntry::command(step, &seed, "GERMINATE", &bp, &outcome));
        }
        if step == self.plan.bad_at {
            let (seed, bp) = (self.bad_seed.clone(), self.bad_blueprint.clone());
            let outcome = self.send(api, &seed, SeedOperation::Germinate, &bp, BlendMode::Convex)?;
            timeline.push(TimelineEntry::command(step, &seed, "GERMINATE", &bp, &outcome));
        }
        if !self.fossilize_sent {
            let states = api.seed_states()?;
            if let Some(s) = states.iter().find(|s| s.seed_id == self.good_seed)
                && ready_to_fossilize(s, self.plan.probation_steps)
            {
                let (seed, bp) = (self.good_seed.clone(), self.good_blueprint.clone());
                let outcome = self.send(api, &seed, SeedOperation::Fossilize, &bp, self.plan.good_blend)?;
                timeline.push(TimelineEntry::command(step, &seed, "FOSSILIZE", &bp, &outcome));
                self.fossilize_sent = true;
            }
        }
        Ok(())
    }

    fn send(
        &mut self,
        api: &dyn KasminaApi,
        seed: &str,
        op: SeedOperation,
        blueprint: &str,
        blend: BlendMode,
    ) -> Result<Outcome> {
        self.sent += 1;
        let mut annotations = BTreeMap::new();
        annotations.insert("training_run_id".to_owned(), self.run_id.clone());
        annotations.insert("mesh_layers".to_owned(), self.site.clone());
        for (key, value) in blend_annotations(blend) {
            annotations.insert(key.to_owned(), value);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let mut command = AdaptationCommand {
            version: leyline::CONTRACT_VERSION,
            command_id: format!("{}-{}-{}", self.run_id, self.sent, now),
            target_seed_id: seed.to_owned(),
            execution_deadline_ms: None,
            issued_at_ms: Some(u64::try_from(now)?),
            issued_by: "digits-demo-controller".to_owned(),
            payload: CommandPayload::Seed(SeedCommand {
                operation: op,
                blueprint_id: blueprint.to_owned(),
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
