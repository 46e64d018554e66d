//! [`InMemoryApi`]: the control-plane stand-in for transport load tests
//! and benches (they measure the socket, not the host's plugin calls).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use leyline::api::{
    ApiError, ApiErrorCode, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport,
    TelemetryListener, TrainerSettings,
};
use leyline::{
    AdaptationCommand, BlendMode, BlueprintDescriptor, BlueprintTier, CommandPayload, DType, Dim, HealthStatus,
    KernelInterface, Outcome, ReasonCode, SeedCommand, SeedOperation, SeedStage, SeedState, TelemetryEvent,
    TelemetryLevel, TensorSpec,
};

/// A small but honest in-memory control plane: verifies that commands are
/// signed and not replayed, keeps seed states, moves stages on SEED
/// operations, checks registration on step reports, and buffers telemetry
/// (CRITICAL for security rejections) like the embedded host does.
#[derive(Default)]
pub struct InMemoryApi {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    registration: Option<HostRegistration>,
    seeds: BTreeMap<String, SeedState>,
    seen_commands: BTreeSet<String>,
    accepted: u64,
    rejected: u64,
    last_step: Option<u64>,
    telemetry: std::collections::VecDeque<TelemetryEvent>,
    listeners: Vec<Arc<dyn TelemetryListener>>,
}

fn seed(seed_id: &str, site: &str) -> SeedState {
    SeedState {
        seed_id: seed_id.to_owned(),
        site: site.to_owned(),
        stage: SeedStage::Dormant,
        blueprint_id: None,
        alpha: 0.0,
        epoch: 0,
        blend_mode: None,
        health: HealthStatus::Healthy,
        paused: false,
        blend: None,
    }
}

impl State {
    /// Pushes to listeners at once (as the real host does) and keeps the
    /// newest events for `drain_telemetry`.
    fn emit(&mut self, event: TelemetryEvent) {
        for listener in &self.listeners {
            listener.event(&event);
        }
        if self.telemetry.len() == 10_000 {
            self.telemetry.pop_front();
        }
        self.telemetry.push_back(event);
    }

    fn reject(&mut self, cmd: &AdaptationCommand, reason: ReasonCode, detail: &str) -> Outcome {
        self.rejected += 1;
        let level = if reason.is_security_critical() { TelemetryLevel::Critical } else { TelemetryLevel::Warning };
        self.emit(
            TelemetryEvent::new("kasmina.command.rejected", level, detail, 0)
                .seed(&cmd.target_seed_id)
                .attr("reason", reason.as_str()),
        );
        Outcome::rejected(reason, detail)
    }
}

impl KasminaApi for InMemoryApi {
    fn submit_command(&self, cmd: AdaptationCommand) -> Result<Outcome, ApiError> {
        let mut st = self.state.lock().unwrap();
        st.emit(TelemetryEvent::new("kasmina.command.received", TelemetryLevel::Info, cmd.command_id.clone(), 0));
        if cmd.signature.as_ref().is_none_or(|s| s.is_empty()) {
            return Ok(st.reject(&cmd, ReasonCode::MissingSignature, "command is not signed"));
        }
        if cmd.command_id.is_empty() {
            return Ok(st.reject(&cmd, ReasonCode::MissingCommandId, "empty command id"));
        }
        if !st.seen_commands.insert(cmd.command_id.clone()) {
            return Ok(st.reject(&cmd, ReasonCode::NonceReplayed, "command id already used"));
        }
        let CommandPayload::Seed(SeedCommand { operation, blueprint_id, .. }) = &cmd.payload else {
            return Ok(st.reject(&cmd, ReasonCode::UnsupportedCommand, "only SEED commands are supported here"));
        };
        let Some(current) = st.seeds.get(&cmd.target_seed_id).map(|s| s.stage) else {
            return Ok(st.reject(&cmd, ReasonCode::InvalidField, "unknown seed"));
        };
        let next = match (operation, current) {
            (SeedOperation::Germinate, SeedStage::Dormant) => SeedStage::Germinated,
            (SeedOperation::StartTraining, SeedStage::Germinated) => SeedStage::Training,
            (SeedOperation::Cull | SeedOperation::Cancel, _) => SeedStage::Culled,
            (SeedOperation::Stabilize | SeedOperation::Evaluate, s) => s,
            _ => {
                return Ok(st.reject(
                    &cmd,
                    ReasonCode::InvalidStage,
                    &format!("{} not allowed in {current:?}", operation.as_str()),
                ));
            }
        };
        let s = st.seeds.get_mut(&cmd.target_seed_id).unwrap();
        s.stage = next;
        if *operation == SeedOperation::Germinate {
            s.blueprint_id = Some(blueprint_id.clone());
            s.blend_mode = Some(BlendMode::Convex);
        }
        st.accepted += 1;
        st.emit(
            TelemetryEvent::new("kasmina.command.accepted", TelemetryLevel::Info, cmd.command_id.clone(), 0)
                .seed(&cmd.target_seed_id),
        );
        Ok(Outcome::accepted().with("stage", format!("{next:?}")))
    }

    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        let mut st = self.state.lock().unwrap();
        if registration.sites.is_empty() {
            return Err(ApiError::new(ApiErrorCode::BadRequest, "a host needs at least one site"));
        }
        for slot in &registration.slots {
            if !registration.sites.iter().any(|s| s.name == slot.site) {
                return Err(ApiError::new(
                    ApiErrorCode::BadRequest,
                    format!("slot {} names unknown site {}", slot.seed_id, slot.site),
                ));
            }
            st.seeds.entry(slot.seed_id.clone()).or_insert_with(|| seed(&slot.seed_id, &slot.site));
        }
        st.registration = Some(registration);
        Ok(kasmina::settings::Settings::default().trainer_settings())
    }

    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        let st = self.state.lock().unwrap();
        if !st.seeds.values().any(|s| s.blueprint_id.as_deref() == Some(blueprint_id)) {
            return Err(ApiError::new(
                ApiErrorCode::NotFound,
                format!("no germinated seed uses blueprint {blueprint_id}"),
            ));
        }
        let bytes = format!("torchscript for {blueprint_id}").into_bytes();
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let spec = TensorSpec { shape: vec![Dim::Batch, Dim::Fixed(64)], dtype: DType::F32 };
        let descriptor = BlueprintDescriptor {
            blueprint_id: blueprint_id.to_owned(),
            name: blueprint_id.to_owned(),
            tier: BlueprintTier::Safe,
            parameter_bounds: BTreeMap::new(),
            risk: 0.1,
            quarantine_only: false,
            approval_required: false,
            interface: KernelInterface { inputs: vec![spec.clone()], outputs: vec![spec] },
        };
        Ok(KernelArtifact { blueprint_id: blueprint_id.to_owned(), sha256, bytes, descriptor })
    }

    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        let mut st = self.state.lock().unwrap();
        let Some(reg) = &st.registration else {
            return Err(ApiError::new(ApiErrorCode::NotRegistered, "register the host before reporting steps"));
        };
        if reg.training_run_id != report.training_run_id {
            return Err(ApiError::new(
                ApiErrorCode::BadRequest,
                format!("run {} is not registered", report.training_run_id),
            ));
        }
        st.last_step = Some(report.step);
        let directives = st
            .seeds
            .values_mut()
            .filter(|s| s.stage == SeedStage::Training)
            .map(|s| {
                s.epoch += 1;
                GraftDirective::Stage { seed_id: s.seed_id.clone(), stage: s.stage, alpha: s.alpha }
            })
            .collect();
        Ok(directives)
    }

    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        Ok(self.state.lock().unwrap().seeds.values().cloned().collect())
    }

    fn status(&self) -> Result<HostStatus, ApiError> {
        let st = self.state.lock().unwrap();
        Ok(HostStatus {
            contract_version: leyline::CONTRACT_VERSION,
            training_run_id: st.registration.as_ref().map(|r| r.training_run_id.clone()),
            seeds: st.seeds.len() as u64,
            commands_accepted: st.accepted,
            commands_rejected: st.rejected,
            last_step: st.last_step,
        })
    }

    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        Ok(self.state.lock().unwrap().telemetry.drain(..).collect())
    }
    fn subscribe_telemetry(&self, listener: Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        self.state.lock().unwrap().listeners.push(listener);
        Ok(())
    }
}
