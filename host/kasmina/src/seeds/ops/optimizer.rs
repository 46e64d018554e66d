//! OPTIMIZER: new hyperparameters for one of the trainer's optimizers,
//! delivered as a directive with the next step's answer.

use leyline::ReasonCode;
use leyline::api::GraftDirective;
use leyline::command::OptimizerCommand;

use super::{Accepted, OpResult, Refusal};
use crate::seeds::SeedManager;

impl SeedManager {
    pub(super) fn optimizer(&self, o: &OptimizerCommand) -> OpResult {
        if o.optimizer_id.is_empty() {
            return Err(Refusal::new(ReasonCode::MissingField, "optimizer_id is empty"));
        }
        if let Some((k, v)) = o.hyperparameters.iter().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(Refusal::new(
                ReasonCode::InvalidField,
                format!("hyperparameter {k}={v} must be finite and >= 0"),
            ));
        }
        let mut st = self.lock();
        st.optimizer.insert(o.optimizer_id.clone(), o.hyperparameters.clone());
        st.directives.push(GraftDirective::Optimizer {
            optimizer_id: o.optimizer_id.clone(),
            hyperparameters: o.hyperparameters.clone(),
        });
        Ok(Accepted::new(format!("optimizer {} reconfigured", o.optimizer_id)))
    }
}
