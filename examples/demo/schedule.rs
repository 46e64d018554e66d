//! The schedule every run of the comparison shares: the same shuffled
//! batch order (seeded by the run's seed) and the same learning-rate decay,
//! so baseline, seeded and static runs differ only in what grafts at the
//! sites.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use tch::{Device, Tensor};

use super::trainer::TrainConfig;
use crate::digits::Split;

/// The same shuffled batch order with and without seeds: the comparison is fair.
pub(super) struct Batches {
    order: Vec<usize>,
    n: usize,
    batch: usize,
    rng: rand::rngs::StdRng,
}

impl Batches {
    pub(super) fn new(n: usize, config: &TrainConfig) -> Self {
        Batches {
            order: Vec::new(),
            n,
            batch: config.batch as usize,
            rng: rand::rngs::StdRng::seed_from_u64(config.seed),
        }
    }

    pub(super) fn next(&mut self, data: &Split, device: Device) -> (Tensor, Tensor) {
        let mut idx = Vec::with_capacity(self.batch);
        while idx.len() < self.batch {
            if self.order.is_empty() {
                self.order = (0..self.n).collect();
                self.order.shuffle(&mut self.rng);
            }
            idx.extend(self.order.pop().map(|i| i as i64));
        }
        let idx = Tensor::from_slice(&idx).to(device);
        (data.train_x.index_select(0, &idx), data.train_y.index_select(0, &idx))
    }
}

pub(super) fn learning_rate_at(config: &TrainConfig, step: u64) -> f64 {
    let progress = step as f64 / config.steps.max(1) as f64;
    let floor = 0.05;
    config.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}
