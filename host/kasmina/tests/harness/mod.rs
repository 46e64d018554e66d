//! A control plane on real parts for integration tests: real plugin
//! components built from this workspace, a real Urza library of TorchScript
//! fixtures in a temp dir, real libtorch kernel loads, signed commands and an
//! injected clock. `SimTrainer` plays the trainer: it applies directives and
//! reports what a trainer would measure; tests override the measurements.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kasmina::security::sign_in_place;
use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use kasmina_core::ManualClock;
use leyline::api::{
    CheckpointAction, CheckpointEvent, GraftDirective, HeldSeed, HostRegistration, KasminaApi, SeedStepReport,
    SiteSpec, SlotSpec, StepReport,
};
use leyline::command::{CommandPayload, SeedCommand};
use leyline::{AdaptationCommand, Dim, Outcome, SeedOperation, SeedStage, SeedState, TelemetryEvent};

pub const RUN: &str = "run-1";
pub const T0: u64 = 1_800_000_000_000;
pub const SITE: &str = "hidden";

/// Short lifecycle so a whole seed life fits in a few dozen steps.
pub const SETTINGS: &str = r#"
[lifecycle]
embargo_s = 2
attach_timeout_steps = 3
training_steps = 3
blend_steps = 4
shadow_steps = 2
probation_steps = 2
[gates]
latency_budget_us = 50000
# The 10 ms default is for a quiet production host; parallel debug-build tests
# on 2 shared cores get descheduled for longer than that.
[plugins]
deadline_ms = 250
"#;

pub struct Harness {
    pub host: EmbeddedHost,
    pub key: HmacKey,
    pub clock: Arc<ManualClock>,
    pub trainer: SimTrainer,
    pub step: u64,
    next_id: u64,
    /// Holds the Urza library (`urza/`) for the test's lifetime.
    pub dir: tempfile::TempDir,
}

pub fn harness() -> Harness {
    harness_with(SETTINGS)
}

pub fn harness_with(settings_toml: &str) -> Harness {
    harness_with_library(settings_toml, |_| {})
}

/// Like [`harness_with`], with `publish` adding blueprints to the library
/// (after the fixtures) before the host opens it.
pub fn harness_with_library(settings_toml: &str, publish: impl FnOnce(&kasmina_kernels::UrzaLibrary)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let urza_dir = dir.path().join("urza");
    let urza = kasmina_kernels::UrzaLibrary::open(&urza_dir).expect("urza");
    kasmina_kernels::fixtures::publish_all(&urza).expect("publish fixtures");
    publish(&urza);
    let mut settings = Settings::from_toml(settings_toml).expect("settings");
    // Compiled plugin artifacts are shared by every test run (content-keyed).
    settings.plugins.cache_dir = Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"));
    let key = HmacKey::from_bytes(&[7u8; 32]).expect("key");
    let clock = Arc::new(ManualClock::new(T0));
    let host = HostBuilder::new(settings)
        .clock(clock.clone())
        .hmac_key(key.clone())
        .urza_dir(&urza_dir)
        .build()
        .expect("host builds");
    host.register_host(registration(Vec::new(), Vec::new())).expect("register");
    Harness { host, key, clock, trainer: SimTrainer::default(), step: 0, next_id: 0, dir }
}

/// The harness's registration, declaring `held` seeds and `checkpoints`.
pub fn registration(held: Vec<HeldSeed>, checkpoints: Vec<String>) -> HostRegistration {
    HostRegistration {
        training_run_id: RUN.to_owned(),
        sites: vec![SiteSpec { name: SITE.to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        slots: vec![
            SlotSpec { seed_id: "seed-a".to_owned(), site: SITE.to_owned() },
            SlotSpec { seed_id: "seed-b".to_owned(), site: SITE.to_owned() },
        ],
        held,
        checkpoints,
        world_size: 1,
    }
}

impl Harness {
    /// Re-registers the simulated trainer, declaring what it holds.
    pub fn reregister(&mut self) {
        let registration = registration(self.trainer.held(), self.trainer.checkpoints.keys().cloned().collect());
        self.host.register_host(registration).expect("re-register");
    }

    /// A signed command with fresh id and timestamp.
    pub fn signed(&mut self, seed: &str, payload: CommandPayload, annotations: &[(&str, &str)]) -> AdaptationCommand {
        self.next_id += 1;
        let mut cmd = AdaptationCommand {
            version: leyline::CONTRACT_VERSION,
            command_id: format!("cmd-{}", self.next_id),
            target_seed_id: seed.to_owned(),
            execution_deadline_ms: None,
            issued_at_ms: Some(kasmina_core::Clock::now_ms(self.clock.as_ref())),
            issued_by: "tamiyo-test".to_owned(),
            payload,
            annotations: annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            signature: None,
        };
        sign_in_place(&mut cmd, &self.key);
        cmd
    }

    pub fn seed_op(
        &mut self,
        seed: &str,
        op: SeedOperation,
        blueprint: &str,
        extra: &[(&str, &str)],
    ) -> AdaptationCommand {
        let mut annotations = vec![("training_run_id", RUN), ("mesh_layers", SITE), ("blend_mode", "RESIDUAL")];
        annotations.extend_from_slice(extra);
        self.signed(
            seed,
            CommandPayload::Seed(SeedCommand {
                operation: op,
                blueprint_id: blueprint.to_owned(),
                parameters: BTreeMap::new(),
            }),
            &annotations,
        )
    }

    pub fn submit(&self, cmd: AdaptationCommand) -> Outcome {
        self.host.submit_command(cmd).expect("api")
    }

    pub fn germinate(&mut self, seed: &str, blueprint: &str) -> Outcome {
        let cmd = self.seed_op(seed, SeedOperation::Germinate, blueprint, &[]);
        self.submit(cmd)
    }

    /// One training step: report, then apply the returned directives.
    pub fn step(&mut self) -> Vec<GraftDirective> {
        self.step += 1;
        let report = self.trainer.report(self.step);
        let directives = self.host.step_report(report).expect("step report accepted");
        self.trainer.apply(&directives);
        directives
    }

    /// Runs `steps` training steps; whether any of them told the trainer to
    /// attach a kernel.
    pub fn any_attach_in(&mut self, steps: usize) -> bool {
        let mut attached = false;
        for _ in 0..steps {
            attached |= self.step().iter().any(|d| matches!(d, GraftDirective::Attach { .. }));
        }
        attached
    }

    /// Steps until `seed` reaches `stage` (or `limit` steps pass).
    pub fn run_until(&mut self, seed: &str, stage: SeedStage, limit: u64) -> bool {
        for _ in 0..limit {
            if self.state(seed).stage == stage {
                return true;
            }
            self.step();
        }
        self.state(seed).stage == stage
    }

    pub fn state(&self, seed: &str) -> SeedState {
        self.host.seed_states().expect("states").into_iter().find(|s| s.seed_id == seed).expect("seed exists")
    }

    pub fn events(&self) -> Vec<TelemetryEvent> {
        self.host.drain_telemetry().expect("telemetry")
    }

    /// Stages `seed` went through, from transition events.
    pub fn stages_of(events: &[TelemetryEvent], seed: &str) -> Vec<String> {
        events
            .iter()
            .filter(|e| e.name == "kasmina.seed.transition" && e.seed_id.as_deref() == Some(seed))
            .filter_map(|e| e.attributes.get("to").map(ToString::to_string))
            .collect()
    }
}

/// What the simulated trainer runs for one seed.
#[derive(Debug, Clone)]
pub struct SimSeed {
    pub stage: SeedStage,
    pub attached_sha: Option<String>,
    pub alpha: f64,
    pub paused: bool,
}

/// Measurements the trainer reports; tests change them to provoke gates.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub loss: f64,
    pub loss_jitter: f64,
    pub outputs_finite: bool,
    pub latency_us: u64,
    pub violations: u32,
    /// Per-seed isolation violations, overriding `violations`.
    pub violations_by_seed: BTreeMap<String, u32>,
    pub fallback_used: bool,
    pub metric: Option<f64>,
    /// Ignore Attach directives (a trainer that never grafts).
    pub refuse_attach: bool,
    /// Report this digest instead of the attached one.
    pub report_sha: Option<String>,
}

impl Default for Measurements {
    fn default() -> Self {
        Measurements {
            loss: 0.5,
            loss_jitter: 0.001,
            outputs_finite: true,
            latency_us: 200,
            violations: 0,
            violations_by_seed: BTreeMap::new(),
            fallback_used: false,
            metric: Some(0.9),
            refuse_attach: false,
            report_sha: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct SimTrainer {
    pub seeds: BTreeMap<String, SimSeed>,
    pub m: Measurements,
    pub teacher_dropped: bool,
    /// Checkpoints by rollback point id: the seeds as they were.
    pub checkpoints: BTreeMap<String, BTreeMap<String, SimSeed>>,
    /// What the next report says about checkpoints.
    pub checkpoint_events: Vec<CheckpointEvent>,
    /// Ignore checkpoint directives (a trainer that never answers them).
    pub ignore_checkpoints: bool,
    /// Fail restores with this reason.
    pub fail_restore: Option<String>,
}

impl SimTrainer {
    pub fn apply(&mut self, directives: &[GraftDirective]) {
        for d in directives {
            match d {
                GraftDirective::Attach { seed_id, artifact_sha256, .. } => {
                    if !self.m.refuse_attach {
                        self.seeds.insert(
                            seed_id.clone(),
                            SimSeed {
                                stage: SeedStage::Germinated,
                                attached_sha: Some(artifact_sha256.clone()),
                                alpha: 0.0,
                                paused: false,
                            },
                        );
                    }
                }
                GraftDirective::Stage { seed_id, stage, alpha } => {
                    if let Some(s) = self.seeds.get_mut(seed_id) {
                        s.stage = *stage;
                        s.alpha = *alpha;
                    }
                }
                GraftDirective::Detach { seed_id, .. } => {
                    self.seeds.remove(seed_id);
                }
                GraftDirective::Pause { seed_id, paused } => {
                    if let Some(s) = self.seeds.get_mut(seed_id) {
                        s.paused = *paused;
                    }
                }
                GraftDirective::DropTeacher => self.teacher_dropped = true,
                GraftDirective::Optimizer { .. } => {}
                GraftDirective::Checkpoint { point_id, durable } if !self.ignore_checkpoints => {
                    let started = std::time::Instant::now();
                    self.checkpoints.insert(point_id.clone(), self.seeds.clone());
                    self.checkpoint_events.push(CheckpointEvent::Captured {
                        point_id: point_id.clone(),
                        durable: *durable,
                        elapsed_us: started.elapsed().as_micros() as u64 + 1,
                        bytes: 64,
                    });
                }
                GraftDirective::RestoreCheckpoint { point_id } if !self.ignore_checkpoints => {
                    let event = match (&self.fail_restore, self.checkpoints.get(point_id)) {
                        (Some(reason), _) => CheckpointEvent::Failed {
                            point_id: point_id.clone(),
                            action: CheckpointAction::Restore,
                            reason: reason.clone(),
                        },
                        (None, Some(seeds)) => {
                            self.seeds = seeds.clone();
                            CheckpointEvent::Restored { point_id: point_id.clone(), elapsed_us: 5 }
                        }
                        (None, None) => CheckpointEvent::Failed {
                            point_id: point_id.clone(),
                            action: CheckpointAction::Restore,
                            reason: "no such checkpoint".to_owned(),
                        },
                    };
                    self.checkpoint_events.push(event);
                }
                GraftDirective::Checkpoint { .. } | GraftDirective::RestoreCheckpoint { .. } => {}
            }
        }
    }

    /// The seeds it holds, as a re-registration declares them.
    pub fn held(&self) -> Vec<HeldSeed> {
        self.seeds
            .iter()
            .filter_map(|(id, s)| {
                Some(HeldSeed {
                    seed_id: id.clone(),
                    blueprint_id: "sim".to_owned(),
                    kernel_sha256: s.attached_sha.clone()?,
                    stage: s.stage,
                    alpha: s.alpha,
                    paused: s.paused,
                })
            })
            .collect()
    }

    pub fn report(&mut self, step: u64) -> StepReport {
        let jitter = if step.is_multiple_of(2) { self.m.loss_jitter } else { -self.m.loss_jitter };
        let seeds = self
            .seeds
            .iter()
            .map(|(id, s)| (id, s, self.m.violations_by_seed.get(id).copied().unwrap_or(self.m.violations)))
            .map(|(id, s, violations)| SeedStepReport {
                seed_id: id.clone(),
                stage: s.stage,
                kernel_attached: s.attached_sha.is_some(),
                kernel_sha256: self.m.report_sha.clone().or_else(|| s.attached_sha.clone()),
                loss: Some(self.m.loss + jitter),
                outputs_finite: self.m.outputs_finite,
                output_shape_ok: true,
                kernel_latency_us: self.m.latency_us,
                isolation_violations: violations,
                max_gradient_cosine: if violations > 0 { 0.9 } else { 0.01 },
                fallback_used: self.m.fallback_used,
                alpha: s.alpha,
                blend: None,
            })
            .collect();
        StepReport {
            step,
            training_run_id: RUN.to_owned(),
            task_loss: 0.5,
            global_metric: self.m.metric,
            seeds,
            distillation: None,
            checkpoints: std::mem::take(&mut self.checkpoint_events),
            ranks: None,
        }
    }
}
