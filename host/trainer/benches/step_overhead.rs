//! Per-step overhead of `kasmina-trainer` over the bare tensor-plane slot.
//!
//! Run: `cargo bench -p kasmina-trainer --bench step_overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! Both sides run the same TorchScript kernel (`mlp_adapter_64`) blending
//! CONVEX at α = 0.5 on a [256, 64] batch, forward only (no backward):
//! - `bare_slot`: `SeedSlot::forward` + `SeedSlot::end_step`, what a trainer
//!   that hand-wires the tensor plane does;
//! - `trainer`: `Trainer::site` + `Trainer::end_step` — failure checks,
//!   measurements, the step report and directive handling — against an
//!   in-process control plane that answers with no directives, so only the
//!   trainer's own work is timed (the control plane has its own benches).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use criterion::{Criterion, criterion_group, criterion_main};
use kasmina_tensor::{BlendSpec, ForwardCtx, ScriptedKernel, SeedSlot};
use kasmina_trainer::{Trainer, TrainerConfig};
use leyline::api::{
    ApiError, BlendSpec as ContractBlend, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact,
    StepReport, TrainerSettings,
};
use leyline::{AdaptationCommand, Dim, Outcome, SeedStage, SeedState, TelemetryEvent};
use sha2::Digest;
use tch::{Device, Kind, Tensor};

const SITE: &str = "hidden";
const SHAPE: [i64; 2] = [256, 64];

/// Serves one kernel and walks the seed to BLENDING, then answers nothing.
struct ScriptedControlPlane {
    artifact: KernelArtifact,
    script: Mutex<Vec<Vec<GraftDirective>>>,
}

impl KasminaApi for ScriptedControlPlane {
    fn submit_command(&self, _: AdaptationCommand) -> Result<Outcome, ApiError> {
        Ok(Outcome::accepted())
    }
    fn register_host(&self, _: HostRegistration) -> Result<TrainerSettings, ApiError> {
        Ok(kasmina::Settings::default().trainer_settings())
    }
    fn fetch_kernel(&self, _: &str) -> Result<KernelArtifact, ApiError> {
        Ok(self.artifact.clone())
    }
    fn step_report(&self, _: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        Ok(self.script.lock().unwrap().pop().unwrap_or_default())
    }
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        Ok(Vec::new())
    }
    fn status(&self) -> Result<HostStatus, ApiError> {
        Err(ApiError::new(leyline::api::ApiErrorCode::Internal, "not used"))
    }
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        Ok(Vec::new())
    }
    fn subscribe_telemetry(&self, _: std::sync::Arc<dyn leyline::api::TelemetryListener>) -> Result<(), ApiError> {
        Ok(())
    }
}

fn bench_step(c: &mut Criterion) {
    tch::set_num_threads(2);
    let fixture = kasmina_kernels::fixtures::get(kasmina_kernels::fixtures::MLP_ADAPTER_64).unwrap();
    let bytes = std::fs::read(&fixture.path).unwrap();
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let h = Tensor::randn(SHAPE, (Kind::Float, Device::Cpu));

    let mut slot = SeedSlot::new("seed-a", SITE, BlendSpec::convex()).unwrap();
    slot.transition(SeedStage::Germinated).unwrap();
    slot.attach_kernel(Box::new(ScriptedKernel::from_bytes(&bytes, Device::Cpu).unwrap())).unwrap();
    slot.transition(SeedStage::Training).unwrap();
    slot.transition(SeedStage::Blending).unwrap();
    slot.set_alpha(0.5).unwrap();

    let attach = GraftDirective::Attach {
        seed_id: "seed-a".into(),
        site: SITE.into(),
        blueprint_id: fixture.descriptor.blueprint_id.clone(),
        artifact_sha256: sha256.clone(),
        blend: ContractBlend::convex(),
    };
    let stage = |stage, alpha| GraftDirective::Stage { seed_id: "seed-a".into(), stage, alpha };
    let api = ScriptedControlPlane {
        artifact: KernelArtifact {
            blueprint_id: fixture.descriptor.blueprint_id.clone(),
            sha256,
            bytes,
            descriptor: fixture.descriptor,
        },
        // Popped from the back: attach + TRAINING first, then BLENDING at α 0.5.
        script: Mutex::new(vec![vec![stage(SeedStage::Blending, 0.5)], vec![attach, stage(SeedStage::Training, 0.0)]]),
    };
    let config = TrainerConfig::new("bench", Device::Cpu).site(SITE, [Dim::Batch, Dim::Fixed(64)]).slot("seed-a", SITE);
    let mut trainer = Trainer::register(&api, config).unwrap();
    trainer.end_step(1, 0.5, None).unwrap();
    trainer.end_step(2, 0.5, None).unwrap();
    assert_eq!(trainer.seed_stage("seed-a"), Some(SeedStage::Blending));
    let mut step = 2;

    let mut g = c.benchmark_group("train_step_forward_256x64");
    g.bench_function("bare_slot", |b| {
        b.iter(|| {
            let out = slot.forward(&h, &ForwardCtx::train()).unwrap();
            let _ = std::hint::black_box(out.out);
            std::hint::black_box(slot.end_step());
        })
    });
    g.bench_function("trainer", |b| {
        b.iter(|| {
            step += 1;
            let out = trainer.site(SITE, &h, &ForwardCtx::train()).unwrap();
            let _ = std::hint::black_box(out);
            std::hint::black_box(trainer.end_step(step, 0.5, None).unwrap());
        })
    });
    g.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
