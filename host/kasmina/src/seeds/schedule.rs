//! α during BLENDING: a sigmoid ramp over `blend_steps`, midpoint at half,
//! advanced once per reported training step (SPEC.md §5).
//!
//! The control plane decides α and sends it to the trainer in a
//! `GraftDirective::Stage`, so embedded and daemon runs apply identical
//! values; the tensor plane only applies what it is told.

/// α for `step` (0-based) of a ramp of `total` steps with `temperature`
/// (fraction of the ramp over which most of the rise happens). The ramp is
/// normalised so it starts at exactly 0 and ends at exactly 1.
pub fn ramp_alpha(step: u64, total: u64, temperature: f64) -> f64 {
    if total == 0 {
        return 1.0;
    }
    let x = |s: u64| {
        let t = s.min(total) as f64 / total as f64;
        1.0 / (1.0 + (-(t - 0.5) / temperature).exp())
    };
    let (lo, hi) = (x(0), x(total));
    ((x(step) - lo) / (hi - lo)).clamp(0.0, 1.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ramp_starts_at_zero_ends_at_one_and_is_monotonic() {
        let total = 50;
        assert_eq!(ramp_alpha(0, total, 0.1), 0.0);
        assert!((ramp_alpha(total, total, 0.1) - 1.0).abs() < 1e-12);
        assert!((ramp_alpha(total / 2, total, 0.1) - 0.5).abs() < 1e-9);
        let mut prev = -1.0;
        for s in 0..=total {
            let a = ramp_alpha(s, total, 0.1);
            assert!(a >= prev, "not monotonic at {s}");
            prev = a;
        }
        assert_eq!(ramp_alpha(total + 10, total, 0.1), 1.0);
    }

    #[test]
    fn lower_temperature_is_steeper() {
        assert!(ramp_alpha(20, 50, 0.05) < ramp_alpha(20, 50, 0.2));
    }
}
