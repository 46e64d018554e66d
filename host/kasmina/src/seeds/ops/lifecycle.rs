//! Lifecycle operations on a running seed: START_TRAINING and
//! START_GRAFTING (run the guarding gate now), EVALUATE (a gate dry run),
//! STABILIZE (hold automatic advancement) and FINE_TUNE (resume it, with
//! parameters inside the blueprint's bounds).

use leyline::api::GraftDirective;
use leyline::{GateId, ReasonCode};

use super::seed::SeedCall;
use super::{Accepted, OpResult, Refusal};
use crate::seeds::{SeedContext, SeedManager, State};

impl SeedManager {
    pub(super) fn advance_now(
        &self,
        st: &State,
        call: &SeedCall<'_>,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
        gate: GateId,
    ) -> OpResult {
        let (from, to) = gate.edge();
        if seed.stage != from {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                format!("{gate} needs {from}; {} is {}", seed.seed_id, seed.stage),
            ));
        }
        match self.pass_gate(st, seed, directives, gate, call.expected, st.last_step) {
            Ok(()) => Ok(Accepted::new(format!("{} advanced to {to}", seed.seed_id))),
            Err(reason) => Err(Refusal::new(ReasonCode::GateFailed, reason)
                .with("gate", gate.as_str())
                .with("seed_culled", "true")),
        }
    }

    pub(super) fn set_hold(seed: &mut SeedContext, hold: bool) -> OpResult {
        if !seed.stage.is_active() {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                format!("{} is {}, not active", seed.seed_id, seed.stage),
            ));
        }
        seed.hold = hold;
        Ok(Accepted::new(if hold { "automatic advancement held" } else { "automatic advancement resumed" }))
    }

    pub(super) fn fine_tune(call: &SeedCall<'_>, seed: &mut SeedContext) -> OpResult {
        if let Some(descriptor) = &seed.descriptor {
            for (name, value) in &call.sc.parameters {
                let admitted = descriptor.parameter_bounds.get(name).is_some_and(|b| b.admits(*value));
                if !admitted {
                    return Err(Refusal::new(
                        ReasonCode::InvalidField,
                        format!("parameter {name}={value} is outside the blueprint's bounds"),
                    ));
                }
            }
        }
        let accepted = Self::set_hold(seed, false)?;
        seed.parameters.extend(call.sc.parameters.iter().map(|(k, v)| (k.clone(), *v)));
        Ok(accepted)
    }

    /// A dry run: the verdict is reported, nothing transitions.
    pub(super) fn evaluate_now(&self, st: &State, call: &SeedCall<'_>, seed: &SeedContext) -> OpResult {
        let Some(gate) = leyline::lifecycle::ALL_GATES.into_iter().find(|g| g.edge().0 == seed.stage) else {
            return Err(Refusal::new(ReasonCode::InvalidStage, format!("no gate leaves {}", seed.stage)));
        };
        let decision = self.gate(st, seed, gate, call.expected);
        let verdict = if decision.passed { "passed" } else { "failed" };
        // The verdict's reason is `verdict_reason`: an accepted outcome has
        // no reason of its own, and a bare `reason` attribute read as one.
        let mut accepted = Accepted::new(format!("{gate} dry run: {verdict}"))
            .with("gate", gate.as_str())
            .with("passed", decision.passed)
            .with("verdict_reason", decision.reason.as_str());
        for (k, v) in decision.attributes {
            accepted = accepted.with(format!("gate.{k}"), v);
        }
        Ok(accepted)
    }
}
