//! ROLLBACK: the point must be ready; the trainer is told to restore its
//! weights, and the seeds freeze until it reports (see
//! [`crate::seeds::checkpoints`] for the two halves of a point).

use leyline::api::GraftDirective;
use leyline::command::RollbackCommand;
use leyline::{AdaptationCommand, ReasonCode};

use super::{Accepted, OpResult, Refusal};
use crate::rollback::RollbackError;
use crate::seeds::SeedManager;
use crate::seeds::checkpoints::InFlightRollback;

impl SeedManager {
    pub(super) fn rollback_command(&self, command: &AdaptationCommand, r: &RollbackCommand) -> OpResult {
        let mut st = self.lock();
        if st.registration.is_none() {
            return Err(Refusal::new(
                ReasonCode::InvalidStage,
                "no trainer is registered: there are no weights to restore",
            ));
        }
        if !st.seeds.contains_key(&command.target_seed_id) {
            return Err(Refusal::new(ReasonCode::InvalidField, format!("unknown seed {:?}", command.target_seed_id)));
        }
        let point = self.rollback.resolve(&command.target_seed_id, r.rollback_point_id.as_deref()).map_err(|err| {
            let code = match err {
                RollbackError::SeedMismatch { .. } => ReasonCode::InvalidField,
                _ => ReasonCode::RollbackUnavailable,
            };
            Refusal::new(code, err.to_string())
        })?;
        st.directives.push(GraftDirective::RestoreCheckpoint { point_id: point.id.clone() });
        st.rollback_in_flight =
            Some(InFlightRollback { point_id: point.id.clone(), command_id: command.command_id.clone() });
        Ok(Accepted::new(format!(
            "rollback to {} directed: applied when the trainer has restored its weights",
            point.id
        ))
        .with("rollback_point_id", point.id.as_str())
        .with("kind", point.kind.as_str())
        .with("rationale", r.reason.as_str()))
    }
}
