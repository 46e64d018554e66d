//! CULL and CANCEL: an active seed is culled (a rollback point first, then
//! detached and embargoed); anything else is refused.

use leyline::ReasonCode;
use leyline::api::GraftDirective;

use super::seed::SeedCall;
use super::{Accepted, OpResult, Refusal};
use crate::rollback::RollbackReason;
use crate::seeds::checkpoints::PointCtx;
use crate::seeds::{SeedContext, SeedManager, State};

impl SeedManager {
    pub(super) fn cull_command(
        &self,
        st: &State,
        call: &SeedCall<'_>,
        seed: &mut SeedContext,
        directives: &mut Vec<GraftDirective>,
    ) -> OpResult {
        if !seed.stage.is_active() {
            return Err(Refusal::new(ReasonCode::InvalidStage, format!("cannot cull a seed in {}", seed.stage)));
        }
        let why = format!("{} by command {}", call.sc.operation.as_str(), call.command.command_id);
        self.cull(&PointCtx::of(st), directives, seed, RollbackReason::Culled, &why, st.last_step);
        Ok(Accepted::new(why))
    }
}
