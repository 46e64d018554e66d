//! The trainer runtime used the way a training loop uses it, against a real
//! embedded host (real plugins, real Urza library, real TorchScript kernels):
//! the settings reach the trainer, bad input never crashes the run, a
//! tampered kernel is never grafted, KD and DropTeacher work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use kasmina::{EmbeddedHost, Settings};
use kasmina_trainer::{Trainer, TrainerConfig, TrainerEvent};
use leyline::api::{
    ApiError, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport, TrainerSettings,
};
use leyline::command::{CommandPayload, EmergencyCommand, SeedCommand};
use leyline::{AdaptationCommand, Dim, Outcome, SeedOperation, SeedStage, SeedState, TelemetryEvent};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Tensor};

mod support;

use support::{BLUEPRINT, RUN, SITE, config, fixture, model, stage_of, train};

#[test]
fn registration_answers_with_the_hosts_isolation_and_distillation_settings() {
    let f = fixture();
    let t = Trainer::register(&f.host, config()).unwrap();
    assert_eq!(t.settings().isolation.cosine_threshold, 0.5);
    assert_eq!(t.settings().distillation.weight, 0.25);
    // A negative control: the defaults differ, so the values did travel.
    let defaults = Settings::default().trainer_settings();
    assert_ne!(defaults.isolation.cosine_threshold, 0.5);
    assert_ne!(defaults.distillation.weight, 0.25);
}

#[test]
fn a_misdeclared_trainer_is_refused_before_registration() {
    let f = fixture();
    let bad = TrainerConfig::new(RUN, Device::Cpu).site(SITE, [Dim::Batch, Dim::Fixed(64)]).slot("seed-a", "nowhere");
    let err = Trainer::register(&f.host, bad).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert!(f.host.status().unwrap().training_run_id.is_none(), "nothing was registered");
}

#[test]
fn bad_blend_parameters_are_refused_at_admission_and_training_continues() {
    let f = fixture();
    let m = model();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    train(&mut t, &m, &mut opt, 1..=2, true);
    let mut step = 2;
    let confidence = |k: &'static str, lo: &'static str, hi: &'static str| {
        vec![("blend_mode", "CONFIDENCE"), ("gate_k", k), ("gate_tau", "0.1"), ("alpha_lo", lo), ("alpha_hi", hi)]
    };
    for (annotations, key) in [
        (confidence("0", "0.0", "1.0"), "gate_k"),
        (confidence("-2", "0.0", "1.0"), "gate_k"),
        (confidence("4", "0.8", "0.2"), "alpha_lo"),
        (vec![("blend_mode", "CONFIDENCE"), ("gate_k", "4"), ("gate_tau", "0.1"), ("alpha_lo", "0.0")], "alpha_hi"),
        (vec![("blend_mode", "CHANNEL")], "alpha_vec"),
    ] {
        let outcome = f.germinate("seed-a", &annotations);
        assert!(!outcome.accepted, "{annotations:?} was accepted");
        let text = format!("{:?} {:?}", outcome.reason, outcome.attributes);
        assert!(text.contains(key), "refusal of {annotations:?} does not name {key}: {text}");
        assert_eq!(stage_of(&f.host, "seed-a"), SeedStage::Dormant, "a refusal changes no state");
        // The training run goes on after every refusal.
        step += 1;
        train(&mut t, &m, &mut opt, step..=step, true);
        assert!(t.seeds().is_empty(), "nothing was grafted for a refused command");
    }
    // Positive control: the same command with valid values is accepted and grafts.
    let outcome = f.germinate("seed-a", &confidence("4", "0.0", "1.0"));
    assert!(outcome.accepted, "{outcome:?}");
    let events = train(&mut t, &m, &mut opt, step + 1..=step + 3, true);
    assert!(
        events.iter().any(|e| matches!(e, TrainerEvent::Attached { seed_id, .. } if seed_id == "seed-a")),
        "{events:?}"
    );
}

#[test]
fn confidence_without_logits_fails_the_seed_not_the_run() {
    let f = fixture();
    let m = model();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    let blend = [
        ("blend_mode", "CONFIDENCE"),
        ("gate_k", "4"),
        ("gate_tau", "0.1"),
        ("alpha_lo", "0.0"),
        ("alpha_hi", "1.0"),
        ("confidence_logits_required", "true"),
    ];
    assert!(f.germinate("seed-a", &blend).accepted);
    // No logits ever reach the site: the seed cannot blend, so it must fail
    // a gate, while every training step completes.
    train(&mut t, &m, &mut opt, 1..=30, false);
    let stage = stage_of(&f.host, "seed-a");
    assert!(matches!(stage, SeedStage::Culled | SeedStage::Embargoed), "seed-a is {stage:?}");
    assert!(t.seed_stage("seed-a").is_none(), "the culled seed was detached from the model");
}

/// Passes everything through, but flips one byte of every kernel artifact.
struct Tampering<'a>(&'a EmbeddedHost);

impl KasminaApi for Tampering<'_> {
    fn submit_command(&self, c: AdaptationCommand) -> Result<Outcome, ApiError> {
        self.0.submit_command(c)
    }
    fn register_host(&self, r: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.0.register_host(r)
    }
    fn fetch_kernel(&self, b: &str) -> Result<KernelArtifact, ApiError> {
        let mut artifact = self.0.fetch_kernel(b)?;
        let mid = artifact.bytes.len() / 2;
        artifact.bytes[mid] ^= 0x01;
        Ok(artifact)
    }
    fn step_report(&self, r: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        self.0.step_report(r)
    }
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        self.0.seed_states()
    }
    fn status(&self) -> Result<HostStatus, ApiError> {
        self.0.status()
    }
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        self.0.drain_telemetry()
    }
    fn subscribe_telemetry(
        &self,
        listener: std::sync::Arc<dyn leyline::api::TelemetryListener>,
    ) -> Result<(), ApiError> {
        self.0.subscribe_telemetry(listener)
    }
}

#[test]
fn a_tampered_kernel_is_never_grafted_and_the_seed_is_culled() {
    let f = fixture();
    let m = model();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let api = Tampering(&f.host);
    let mut t = Trainer::register(&api, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    assert!(f.germinate("seed-a", &[("blend_mode", "RESIDUAL")]).accepted);
    let events = train(&mut t, &m, &mut opt, 1..=10, true);
    let refused = events.iter().find_map(|e| match e {
        TrainerEvent::KernelRefused { seed_id, reason, .. } if seed_id == "seed-a" => Some(reason.clone()),
        _ => None,
    });
    assert!(refused.as_deref().is_some_and(|r| r.contains("digest")), "{events:?}");
    assert!(t.seed_stage("seed-a").is_none(), "tampered bytes were never grafted");
    let stage = stage_of(&f.host, "seed-a");
    assert!(matches!(stage, SeedStage::Culled | SeedStage::Embargoed), "seed-a is {stage:?}");
}

#[test]
fn a_seed_grows_to_fossilized_with_blend_statistics_and_kd_reported() {
    let f = fixture();
    let m = model();
    let mut opt = nn::Adam::default().build(&m.vs, 1e-2).unwrap();
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.watch_host_parameters(m.vs.trainable_variables());
    // A teacher: a traced, frozen copy of the host (constants, so immutable).
    let mut frozen = model();
    frozen.vs.freeze();
    let mut forward = |inputs: &[Tensor]| vec![frozen.fc2.forward(&frozen.fc1.forward(&inputs[0]))];
    let teacher = tch::CModule::create_by_tracing("teacher", "forward", &[m.x.shallow_clone()], &mut forward).unwrap();
    assert!(t.set_teacher(teacher).unwrap() > 0);
    assert!(f.germinate("seed-a", &[("blend_mode", "CONVEX")]).accepted);
    let mut blending_seen = None;
    for step in 1..=40u64 {
        train(&mut t, &m, &mut opt, step..=step, true);
        let state = f.host.seed_states().unwrap().into_iter().find(|s| s.seed_id == "seed-a").unwrap();
        if state.stage == SeedStage::Blending && blending_seen.is_none() {
            blending_seen = state.blend.clone();
        }
        if state.stage == SeedStage::Probationary && state.epoch >= 2 {
            let payload = CommandPayload::Seed(SeedCommand {
                operation: SeedOperation::Fossilize,
                blueprint_id: BLUEPRINT.to_owned(),
                parameters: BTreeMap::new(),
            });
            let cmd = f.command(
                "seed-a",
                payload,
                &[("training_run_id", RUN), ("mesh_layers", SITE), ("blend_mode", "CONVEX")],
            );
            assert!(f.host.submit_command(cmd).unwrap().accepted);
        }
        if state.stage == SeedStage::Fossilized {
            break;
        }
    }
    assert_eq!(stage_of(&f.host, "seed-a"), SeedStage::Fossilized);
    assert_eq!(t.seed_stage("seed-a"), Some(SeedStage::Fossilized));
    assert!(t.fossilized_parameters() > 0);
    let blend = blending_seen.expect("blend statistics reached the host while blending");
    assert_eq!(blend.mode, leyline::BlendMode::Convex);
    assert!((0.0..=1.0).contains(&blend.alpha_mean));
    assert!(t.seed_failure("seed-a").is_none());
    // The KD term and the teacher's memory reached the host.
    let kd = f.host.manager().latest_distillation().expect("distillation reported");
    assert!(kd.kd_loss.is_finite() && kd.teacher_memory_bytes > 0 && kd.weight == 0.25, "{kd:?}");
    // DropTeacher via EMERGENCY include_teacher reaches the trainer.
    assert!(t.has_teacher());
    let emergency =
        f.command("seed-a", CommandPayload::Emergency(EmergencyCommand { cleanup: true, include_teacher: true }), &[]);
    assert!(f.host.submit_command(emergency).unwrap().accepted);
    let events = train(&mut t, &m, &mut opt, 100..=100, true);
    assert!(events.contains(&TrainerEvent::TeacherDropped { had_teacher: true }), "{events:?}");
    assert!(!t.has_teacher());
    train(&mut t, &m, &mut opt, 101..=101, true);
    assert!(f.host.manager().latest_distillation().is_none(), "no KD term once the teacher is gone");
}

#[test]
fn steps_must_increase() {
    let f = fixture();
    let mut t = Trainer::register(&f.host, config()).unwrap();
    t.end_step(5, 0.5, None).unwrap();
    assert!(matches!(t.end_step(5, 0.5, None), Err(kasmina_trainer::TrainerError::StepOrder { last: 5, got: 5 })));
}
