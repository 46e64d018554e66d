//! GERMINATE: a DORMANT slot takes a blueprint. The blend spec is checked
//! with the contract's rules, admission (plugin) and G0 (plugin) decide,
//! then the seed is GERMINATED and its kernel prefetched.

use kasmina_kernels::CatalogEntry;
use kasmina_plugin_host::annotation::ParsedAnnotations;
use kasmina_plugin_host::blueprint::AdmissionContext;
use leyline::annotations as keys;
use leyline::api::BlendSpec;
use leyline::command::SeedCommand;
use leyline::prefetch::PrefetchRequest;
use leyline::{BlueprintDescriptor, GateId, ReasonCode, SeedStage, TelemetryEvent};

use super::seed::SeedCall;
use super::{Accepted, OpResult, Refusal};
use crate::gates::{FinishedVerdict, GateDecision};
use crate::seeds::blend::{blend_spec, mode_source};
use crate::seeds::{SeedContext, SeedManager, State};

/// Puts what a GERMINATE asks for onto `seed` (before G0 judges it): the
/// same staging for the verdict computed ahead of the lock and for the
/// command itself.
pub(super) fn stage_germination(
    seed: &mut SeedContext,
    sc: &SeedCommand,
    parsed: &ParsedAnnotations,
    blend: BlendSpec,
    descriptor: Option<&BlueprintDescriptor>,
) {
    seed.blueprint_id = Some(sc.blueprint_id.clone());
    seed.parameters = sc.parameters.clone();
    seed.mesh_layers = parsed.mesh_layers.clone();
    seed.blend = Some(blend);
    seed.descriptor = descriptor.cloned();
}

/// Whether the seed `germinate` is handed still needs staging.
#[derive(Debug)]
// Lives on the stack for one call: a box would be one more allocation
// under the state lock.
#[allow(clippy::large_enum_variant)]
pub(super) enum Staging {
    /// It is the seed as stored: stage it now and ask G0 about it.
    Now,
    /// It was staged before the lock for this very command (see
    /// `StagedGermination`), with the G0 verdict finished on it if one was
    /// and the DORMANT → GERMINATED event, unless G0 is known to fail.
    Done { g0: Option<FinishedVerdict>, germinated: Option<TelemetryEvent>, accepted: Accepted },
}

/// What an accepted GERMINATE reports (built before the lock for a staged
/// one).
pub(super) fn accepted_germination(
    seed_id: &str,
    sc: &SeedCommand,
    parsed: &ParsedAnnotations,
    blend: &BlendSpec,
) -> Accepted {
    Accepted::new(format!("germinated {seed_id} with {}", sc.blueprint_id))
        .with(keys::BLEND_MODE, blend.mode.as_str())
        .with(keys::BLEND_MODE_SOURCE, mode_source(parsed))
        .with("alpha_clamped", u64::from(parsed.alpha_clamped))
}

/// Why a seed leaves DORMANT.
pub(super) const G0_PASSED: &str = "G0 passed";

impl SeedManager {
    /// `entry`: the catalog's entry for the command's blueprint, if it has
    /// one (looked up once by the caller). `spent`: receives G0's decision
    /// once it is no longer needed, for the caller to free after the lock.
    pub(super) fn germinate(
        &self,
        st: &State,
        call: &SeedCall<'_>,
        seed: &mut SeedContext,
        entry: Option<&CatalogEntry>,
        staging: Staging,
        spent: &mut Option<GateDecision>,
    ) -> OpResult {
        let (command, sc, parsed) = (call.command, call.sc, call.parsed);
        if seed.stage != SeedStage::Dormant {
            let mut detail = format!("GERMINATE needs a DORMANT seed; {} is {}", seed.seed_id, seed.stage);
            if let Some(until) = seed.embargo_until_ms {
                detail.push_str(&format!(" (embargo ends in {} ms)", until.saturating_sub(self.clock.now_ms())));
            }
            return Err(Refusal::new(ReasonCode::InvalidStage, detail));
        }
        let (g0, germinated, accepted) = match staging {
            // Its blend spec passed the same check in prepare.
            Staging::Done { g0, germinated, accepted } => (g0, germinated, accepted),
            Staging::Now => {
                // Refused here, before any state changes, with the key
                // named: a spec the trainer would refuse must never
                // germinate a seed.
                let blend = blend_spec(parsed).map_err(|r| Refusal::new(r.reason, r.detail).key(r.key))?;
                let accepted = accepted_germination(&seed.seed_id, sc, parsed, &blend);
                // The seed takes its own copy of the descriptor.
                stage_germination(seed, sc, parsed, blend, entry.map(|e| &e.descriptor));
                (None, None, accepted)
            }
        };
        if let Some(entry) = entry {
            // Asked before the lock; asked here only if that was skipped.
            let asked_now;
            let verdict = match &call.pre.admission {
                Some(verdict) => verdict,
                None => {
                    let context = AdmissionContext {
                        training_run_id: call.run_id.to_owned(),
                        quarantine: false,
                        approved: false,
                    };
                    asked_now = self.policies.blueprints.current().admit(&entry.descriptor, &sc.parameters, &context);
                    &asked_now
                }
            };
            if !verdict.passed {
                let mut refusal = Refusal::new(ReasonCode::BlueprintRefused, verdict.reason.clone());
                for (k, v) in &verdict.attributes {
                    refusal = refusal.with(format!("policy.{k}"), v.to_string());
                }
                return Err(refusal);
            }
        }
        // G0 guards DORMANT → GERMINATED; a failure leaves the slot dormant
        // (the table has no DORMANT → CULLED edge).
        let decision = match g0 {
            Some(verdict) => self.gate_precomputed(seed, verdict),
            None => self.gate(st, seed, GateId::G0Sanity, call.expected),
        };
        if !decision.passed {
            let mut refusal =
                Refusal::new(ReasonCode::GateFailed, decision.reason.clone()).with("gate", GateId::G0Sanity.as_str());
            for (k, v) in decision.attributes {
                refusal = refusal.with(format!("gate.{k}"), v.to_string());
            }
            return Err(refusal);
        }
        *spent = Some(decision);
        self.transition_with(seed, SeedStage::Germinated, st.last_step, G0_PASSED, germinated);
        seed.metric_baseline = st.latest_metric;
        let request = PrefetchRequest {
            request_id: command.command_id.clone(),
            seed_id: seed.seed_id.clone(),
            blueprint_id: sc.blueprint_id.clone(),
            training_run_id: call.run_id.to_owned(),
            issued_at_ms: self.clock.now_ms(),
            timeout_ms: self.settings.kernels.prefetch_timeout_ms,
        };
        match self.kernels.prefetch(request) {
            Ok(()) => seed.prefetch_request = Some(command.command_id.clone()),
            Err(err) => {
                // Germinated but no kernel will come: the step after this
                // finds no prefetch and fails G1 (kernel not verified).
                seed.kernel_failure = Some("prefetch_refused".to_owned());
                seed.last_failure = Some(format!("prefetch refused: {err}"));
            }
        }
        Ok(accepted)
    }
}
