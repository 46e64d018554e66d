//! The α schedule of the BLENDING stage (SPEC.md §5): a sigmoid ramp over a
//! configured number of steps, midpoint at half, with a temperature,
//! advanced once per training step.
//!
//! `α(s) = sigmoid((s/N − ½) / T)` for step `s` of `N`. With the SPEC
//! defaults (N = 50, T = 0.1) α rises from 0.007 to 0.993.
//!
//! The hysteresis band `h` makes the ends exact and stable: once α reaches
//! `1 − h` (or the last step) the ramp is *complete* and the effective α is exactly 1; it stays
//! complete until α falls below `1 − 2h` (only possible when the step is set
//! back, e.g. on rollback), so a schedule hovering at the threshold cannot
//! flap between "blending" and "done". Below `h` the effective α is exactly 0.

use crate::error::{Result, TensorError};

/// Hysteresis band used when the settings do not name one (SPEC.md is silent;
/// 1 % keeps the snapped ends within the ramp's last step at the defaults).
pub const DEFAULT_HYSTERESIS: f64 = 0.01;

/// Shape of the ramp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleConfig {
    /// Steps of the ramp (`N` ≥ 1); kasmina's `lifecycle.blend_steps`.
    pub steps: u64,
    /// Temperature `T` (> 0); kasmina's `lifecycle.blend_temperature`.
    pub temperature: f64,
    /// Hysteresis band `h` in [0, 0.25).
    pub hysteresis: f64,
}

/// A running α ramp.
#[derive(Debug, Clone, PartialEq)]
pub struct AlphaSchedule {
    config: ScheduleConfig,
    step: u64,
    last_train_step: Option<u64>,
    complete: bool,
}

impl AlphaSchedule {
    /// A ramp at step 0. Refuses unusable configurations.
    pub fn new(config: ScheduleConfig) -> Result<Self> {
        if config.steps == 0 {
            return Err(TensorError::InvalidConfig { name: "schedule.steps", rule: "must be ≥ 1".into() });
        }
        if !(config.temperature.is_finite() && config.temperature > 0.0) {
            return Err(TensorError::InvalidConfig {
                name: "schedule.temperature",
                rule: "must be finite and > 0".into(),
            });
        }
        if !(0.0..0.25).contains(&config.hysteresis) {
            return Err(TensorError::InvalidConfig {
                name: "schedule.hysteresis",
                rule: "must be in [0, 0.25)".into(),
            });
        }
        let mut s = AlphaSchedule { config, step: 0, last_train_step: None, complete: false };
        s.update_latch();
        Ok(s)
    }

    /// The configuration.
    pub fn config(&self) -> ScheduleConfig {
        self.config
    }

    /// Ramp steps taken so far (saturates at `N`).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The raw sigmoid value at the current step.
    pub fn raw_alpha(&self) -> f64 {
        let ScheduleConfig { steps, temperature, .. } = self.config;
        let x = (self.step as f64 / steps as f64 - 0.5) / temperature;
        1.0 / (1.0 + (-x).exp())
    }

    /// The α the blend uses: the raw value with the ends snapped (see module docs).
    pub fn alpha(&self) -> f64 {
        let raw = self.raw_alpha();
        if self.complete {
            1.0
        } else if raw <= self.config.hysteresis {
            0.0
        } else {
            raw
        }
    }

    /// Whether the ramp has finished (α latched at 1).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Advances one step for training step `train_step` and returns the new
    /// α. Training steps must strictly increase: a second call for the same
    /// step is refused, so a trainer calling twice cannot double the ramp speed.
    pub fn advance(&mut self, train_step: u64) -> Result<f64> {
        if let Some(last) = self.last_train_step
            && train_step <= last
        {
            return Err(TensorError::StepOrder { last, got: train_step });
        }
        self.last_train_step = Some(train_step);
        self.step = (self.step + 1).min(self.config.steps);
        self.update_latch();
        Ok(self.alpha())
    }

    /// Sets the ramp position (restore from a rollback point). Clamped to `N`.
    pub fn set_step(&mut self, step: u64) {
        self.step = step.min(self.config.steps);
        self.last_train_step = None;
        self.update_latch();
    }

    fn update_latch(&mut self) {
        let raw = self.raw_alpha();
        let h = self.config.hysteresis;
        // The last step ends the ramp by definition (a raw sigmoid never reaches 1).
        let at_end = self.step >= self.config.steps;
        let threshold = if self.complete { 1.0 - 2.0 * h } else { 1.0 - h };
        self.complete = at_end || raw >= threshold;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(steps: u64, temperature: f64, hysteresis: f64) -> AlphaSchedule {
        AlphaSchedule::new(ScheduleConfig { steps, temperature, hysteresis }).unwrap()
    }

    #[test]
    fn ramp_is_a_monotone_sigmoid_with_midpoint_at_half() {
        let mut s = schedule(50, 0.1, 0.0);
        let mut prev = s.alpha();
        assert!((prev - 1.0 / (1.0 + 5f64.exp())).abs() < 1e-12);
        for step in 1..=50 {
            let a = s.advance(step).unwrap();
            assert!(a > prev, "step {step}: {a} <= {prev}");
            if step == 25 {
                assert!((a - 0.5).abs() < 1e-12);
            }
            prev = a;
        }
        // Saturates at N.
        assert_eq!(s.advance(51).unwrap(), prev);
        assert_eq!(s.step(), 50);
    }

    #[test]
    fn advance_refuses_the_same_training_step_twice() {
        let mut s = schedule(10, 0.1, 0.0);
        s.advance(7).unwrap();
        assert!(matches!(s.advance(7), Err(TensorError::StepOrder { last: 7, got: 7 })));
        assert_eq!(s.step(), 1);
    }

    #[test]
    fn hysteresis_snaps_ends_and_latches_completion() {
        // T = 0.1, N = 10: raw at step 9 = sigmoid(4) = 0.982, step 10 = 0.993.
        let mut s = schedule(10, 0.1, 0.02);
        assert_eq!(s.alpha(), 0.0, "raw 0.0067 is inside the lower band");
        s.set_step(10);
        assert!(s.is_complete());
        assert_eq!(s.alpha(), 1.0);
        // Back to step 9: raw 0.982 ≥ 1 − 2h = 0.96 → still complete (no flapping).
        s.set_step(9);
        assert!(s.is_complete());
        // Step 8: raw 0.953 < 0.96 → leaves the latch.
        s.set_step(8);
        assert!(!s.is_complete());
        assert!((s.alpha() - 1.0 / (1.0 + (-3f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn bad_configs_are_refused() {
        for (steps, t, h) in [(0, 0.1, 0.0), (5, 0.0, 0.0), (5, f64::NAN, 0.0), (5, 0.1, 0.3), (5, 0.1, -0.1)] {
            assert!(AlphaSchedule::new(ScheduleConfig { steps, temperature: t, hysteresis: h }).is_err());
        }
    }
}
