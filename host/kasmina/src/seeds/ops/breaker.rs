//! CIRCUIT_BREAKER: an operator or controller forces a breaker's state —
//! `fetch`, or `isolation` for the command's target seed (isolation
//! breakers are per seed). The breaker emits the override itself.

use std::sync::Arc;

use leyline::command::CircuitBreakerCommand;
use leyline::{AdaptationCommand, ReasonCode};

use super::{Accepted, OpResult, Refusal};
use crate::seeds::SeedManager;

impl SeedManager {
    pub(super) fn force_breaker(&self, command: &AdaptationCommand, cb: &CircuitBreakerCommand) -> OpResult {
        let breaker = match cb.breaker.as_str() {
            "fetch" => Arc::clone(&self.fetch_breaker),
            "isolation" if self.read().seeds.contains_key(&command.target_seed_id) => {
                self.isolation.breaker(&command.target_seed_id)
            }
            "isolation" => {
                return Err(Refusal::new(
                    ReasonCode::InvalidField,
                    format!(
                        "isolation breakers are per seed; {:?} is not a registered seed (target the seed whose breaker to force)",
                        command.target_seed_id
                    ),
                ));
            }
            other => {
                return Err(Refusal::new(
                    ReasonCode::InvalidField,
                    format!("unknown breaker {other:?}; known: fetch, isolation"),
                ));
            }
        };
        breaker.force_state(cb.desired_state, &cb.rationale);
        Ok(Accepted::new(format!("breaker {} forced to {}", breaker.name(), cb.desired_state.as_str())))
    }
}
