//! Shared set-up for the trainer tests: a real embedded host (real plugins,
//! a real Urza library of TorchScript fixtures), a tiny classifier with one
//! 64-wide site, and an ordinary training loop driving the trainer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use kasmina::security::sign_in_place;
use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use kasmina_trainer::{ForwardCtx, Trainer, TrainerConfig, TrainerEvent};
use leyline::api::KasminaApi;
use leyline::command::{CommandPayload, SeedCommand};
use leyline::{AdaptationCommand, Dim, Outcome, SeedOperation, SeedStage};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

pub const RUN: &str = "trainer-test";
pub const SITE: &str = "hidden";
pub const BLUEPRINT: &str = kasmina_kernels::fixtures::MLP_ADAPTER_64;

pub const SETTINGS: &str = r#"
[lifecycle]
attach_timeout_steps = 3
training_steps = 4
blend_steps = 4
shadow_steps = 2
probation_steps = 2
[gates]
latency_budget_us = 50000
[plugins]
deadline_ms = 250
[isolation]
cosine_threshold = 0.5
[distillation]
weight = 0.25
"#;

pub struct Fixture {
    pub host: EmbeddedHost,
    pub key: HmacKey,
    next_id: std::cell::Cell<u64>,
    _dir: tempfile::TempDir,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let urza_dir = dir.path().join("urza");
    let urza = kasmina_kernels::UrzaLibrary::open(&urza_dir).unwrap();
    kasmina_kernels::fixtures::publish_all(&urza).unwrap();
    let mut settings = Settings::from_toml(SETTINGS).unwrap();
    settings.plugins.cache_dir = Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"));
    let key = HmacKey::from_bytes(&[9u8; 32]).unwrap();
    let host = HostBuilder::new(settings).hmac_key(key.clone()).urza_dir(&urza_dir).build().unwrap();
    Fixture { host, key, next_id: std::cell::Cell::new(0), _dir: dir }
}

impl Fixture {
    pub fn command(&self, seed: &str, payload: CommandPayload, annotations: &[(&str, &str)]) -> AdaptationCommand {
        self.next_id.set(self.next_id.get() + 1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let mut cmd = AdaptationCommand {
            version: leyline::CONTRACT_VERSION,
            command_id: format!("trainer-test-{}-{now}", self.next_id.get()),
            target_seed_id: seed.to_owned(),
            execution_deadline_ms: None,
            issued_at_ms: Some(now),
            issued_by: "trainer-test".to_owned(),
            payload,
            annotations: annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            signature: None,
        };
        sign_in_place(&mut cmd, &self.key);
        cmd
    }

    pub fn germinate(&self, seed: &str, blend: &[(&str, &str)]) -> Outcome {
        let mut annotations = vec![("training_run_id", RUN), ("mesh_layers", SITE)];
        annotations.extend_from_slice(blend);
        let payload = CommandPayload::Seed(SeedCommand {
            operation: SeedOperation::Germinate,
            blueprint_id: BLUEPRINT.to_owned(),
            parameters: BTreeMap::new(),
        });
        let cmd = self.command(seed, payload, &annotations);
        self.host.submit_command(cmd).unwrap()
    }
}

/// A tiny classifier with one 64-wide site, trained on a fixed random task.
pub struct Model {
    pub vs: nn::VarStore,
    pub fc1: nn::Linear,
    pub fc2: nn::Linear,
    pub x: Tensor,
    pub y: Tensor,
}

pub fn model() -> Model {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let fc1 = nn::linear(vs.root() / "fc1", 16, 64, Default::default());
    let fc2 = nn::linear(vs.root() / "fc2", 64, 4, Default::default());
    let x = Tensor::randn([32, 16], (Kind::Float, Device::Cpu));
    let y = x.narrow(1, 0, 4).argmax(1, false);
    Model { vs, fc1, fc2, x, y }
}

pub fn config() -> TrainerConfig {
    TrainerConfig::new(RUN, Device::Cpu)
        .site(SITE, [Dim::Batch, Dim::Fixed(64)])
        .slot("seed-a", SITE)
        .slot("seed-b", SITE)
}

/// Runs `steps` ordinary training steps; `logits` decides whether the
/// batch's host logits reach the site (CONFIDENCE needs them).
pub fn train<A: KasminaApi>(
    t: &mut Trainer<A>,
    m: &Model,
    opt: &mut nn::Optimizer,
    steps: std::ops::RangeInclusive<u64>,
    logits: bool,
) -> Vec<TrainerEvent> {
    let mut events = Vec::new();
    for step in steps {
        let h = m.fc1.forward(&m.x);
        let host_logits = tch::no_grad(|| m.fc2.forward(&h));
        let ctx = if logits { ForwardCtx::train().with_logits(&host_logits) } else { ForwardCtx::train() };
        let out = m.fc2.forward(&t.site(SITE, &h, &ctx).unwrap());
        let task = out.cross_entropy_for_logits(&m.y);
        let loss = t.distill(&task, &out, &m.x).unwrap();
        opt.zero_grad();
        t.zero_grad().unwrap();
        loss.backward();
        t.after_backward(step).unwrap();
        opt.step();
        t.optimizer_step().unwrap();
        let result = t.end_step(step, task.double_value(&[]), Some(0.5)).unwrap();
        events.extend(result.events);
    }
    events
}

pub fn stage_of(host: &EmbeddedHost, seed: &str) -> SeedStage {
    host.seed_states().unwrap().into_iter().find(|s| s.seed_id == seed).unwrap().stage
}
