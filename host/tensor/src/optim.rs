//! Optimizer integration: a seed's parameters join an optimizer when it
//! starts training and leave it when it is culled.
//!
//! libtorch optimizers can add parameter groups but not remove them, and
//! tch's `nn::Optimizer` tracks a whole `VarStore` (and panics on libtorch
//! errors). So each seed gets **its own** `COptimizer` over exactly its
//! kernel's parameters: joining builds it, leaving drops it (and with it the
//! seed's moment estimates), and the host's optimizer is never touched. The
//! trainer calls [`SeedOptimizers::zero_grad`] / [`SeedOptimizers::step`]
//! beside its own optimizer. Every parameter is checked with
//! [`ParameterRegistry::validate_update`] before it joins, so a teacher or
//! foreign parameter can never be trained by a seed.

use std::collections::BTreeMap;

use tch::{COptimizer, Tensor};

use crate::error::{Result, TensorError};
use crate::registry::{ParameterRegistry, UpdateRefusal};

/// Optimizer algorithm and hyper-parameters for seed training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeedOptimizerConfig {
    /// Stochastic gradient descent.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum.
        momentum: f64,
        /// Weight decay.
        weight_decay: f64,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// Weight decay.
        weight_decay: f64,
    },
}

impl SeedOptimizerConfig {
    fn build(self) -> Result<COptimizer> {
        let finite_pos = |name, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(TensorError::InvalidParameter { name, value: v, rule: "must be finite and > 0" })
            }
        };
        let r = match self {
            SeedOptimizerConfig::Sgd { lr, momentum, weight_decay } => {
                finite_pos("lr", lr)?;
                COptimizer::sgd(lr, momentum, 0.0, weight_decay, false)
            }
            SeedOptimizerConfig::Adam { lr, beta1, beta2, weight_decay } => {
                finite_pos("lr", lr)?;
                COptimizer::adam(lr, beta1, beta2, weight_decay, 1e-8, false)
            }
        };
        r.map_err(TensorError::torch("build optimizer"))
    }
}

/// A parameter refused at join time.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The seed already has an optimizer.
    #[error("seed {0} already joined")]
    AlreadyJoined(String),
    /// The registry refused one of the parameters.
    #[error("parameter {index} of seed {seed_id} refused: {refusal}")]
    Refused {
        /// The seed.
        seed_id: String,
        /// Index of the parameter in the list given.
        index: usize,
        /// Why.
        refusal: UpdateRefusal,
    },
    /// libtorch failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Per-seed optimizers.
#[derive(Debug, Default)]
pub struct SeedOptimizers {
    per_seed: BTreeMap<String, COptimizer>,
}

impl SeedOptimizers {
    /// No seed training.
    pub fn new() -> Self {
        Self::default()
    }

    /// The seed starts training: its parameters join a new optimizer.
    pub fn join(
        &mut self,
        seed_id: &str,
        params: &[Tensor],
        registry: &ParameterRegistry,
        config: SeedOptimizerConfig,
    ) -> Result<(), JoinError> {
        if self.per_seed.contains_key(seed_id) {
            return Err(JoinError::AlreadyJoined(seed_id.to_owned()));
        }
        for (index, p) in params.iter().enumerate() {
            registry.validate_update(seed_id, p).map_err(|refusal| JoinError::Refused {
                seed_id: seed_id.to_owned(),
                index,
                refusal,
            })?;
        }
        let mut opt = config.build()?;
        for p in params {
            opt.add_parameters(p, 0).map_err(TensorError::torch("optimizer add_parameters"))?;
        }
        self.per_seed.insert(seed_id.to_owned(), opt);
        Ok(())
    }

    /// The seed was culled (or fossilized into the host's optimizer): its
    /// parameters leave. Returns whether it had joined.
    pub fn leave(&mut self, seed_id: &str) -> bool {
        self.per_seed.remove(seed_id).is_some()
    }

    /// Whether the seed is training.
    pub fn contains(&self, seed_id: &str) -> bool {
        self.per_seed.contains_key(seed_id)
    }

    /// Seeds currently training.
    pub fn seeds(&self) -> impl Iterator<Item = &str> {
        self.per_seed.keys().map(String::as_str)
    }

    /// Zeroes every training seed's gradients.
    pub fn zero_grad(&self) -> Result<()> {
        self.per_seed.values().try_for_each(|o| o.zero_grad().map_err(TensorError::torch("optimizer zero_grad")))
    }

    /// Sets the learning rate of every seed's optimizer (the trainer's
    /// schedule applies to seeds as to the host).
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TensorError::InvalidConfig {
                name: "learning_rate",
                rule: format!("{lr} must be finite and > 0"),
            });
        }
        self.per_seed
            .values_mut()
            .try_for_each(|o| o.set_learning_rate(lr).map_err(TensorError::torch("optimizer set_learning_rate")))
    }

    /// Steps every training seed's optimizer.
    pub fn step(&self) -> Result<()> {
        self.per_seed.values().try_for_each(|o| o.step().map_err(TensorError::torch("optimizer step")))
    }
}
