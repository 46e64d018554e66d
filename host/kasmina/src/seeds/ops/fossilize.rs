//! FOSSILIZE: a PROBATIONARY seed that the host, the controller and the
//! trainer all see as PROBATIONARY, after its probation, becomes a
//! permanent part of the model (α = 1). A durable rollback point is taken
//! first, since the model changes for good.

use leyline::api::GraftDirective;
use leyline::{ReasonCode, SeedStage};

use super::seed::SeedCall;
use super::{Accepted, OpResult, Refusal};
use crate::rollback::RollbackReason;
use crate::seeds::checkpoints::PointCtx;
use crate::seeds::{SeedContext, SeedManager, State};

impl SeedManager {
    pub(super) fn fossilize(
        &self,
        st: &State,
        call: &SeedCall<'_>,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
    ) -> OpResult {
        let expected = call.expected;
        if seed.stage != SeedStage::Probationary
            || expected != SeedStage::Probationary
            || seed.reported_stage != SeedStage::Probationary
        {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                format!(
                    "FOSSILIZE needs PROBATIONARY; host holds {}, controller expects {expected}, trainer reports {}",
                    seed.stage, seed.reported_stage
                ),
            ));
        }
        let needed = self.settings.lifecycle.probation_steps;
        if seed.steps_in_stage < needed {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                format!("probation not complete: {}/{needed} steps", seed.steps_in_stage),
            ));
        }
        self.record_point(&PointCtx::of(st), &[&*seed], RollbackReason::Retired, directives);
        self.transition(seed, SeedStage::Fossilized, None, "fossilized by command");
        seed.alpha = 1.0;
        directives.push(GraftDirective::Stage {
            seed_id: seed.seed_id.clone(),
            stage: SeedStage::Fossilized,
            alpha: 1.0,
        });
        Ok(Accepted::new(format!("{} fossilized", seed.seed_id)))
    }
}
