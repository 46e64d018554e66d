//! A seed's recent blend statistics, as gate plugins of API 0.2.0 see them
//! (`blend-stats` in `wit/since_v0.2.0/gate-policy.wit`).
//!
//! Why a window and not the last step: a gate decides whether a seed may
//! leave a stage, and one step's α or latency says little about that; the
//! window has the same length as the loss window the gates already judge.

use std::collections::VecDeque;

use leyline::api::BlendReport;
use leyline::gate::BlendStats;

/// One blended step, reduced to what the statistics need.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    alpha_mean: f64,
    alpha_p95: f64,
    clamped_fraction: f64,
    gate_mean: Option<f64>,
    kernel_latency_us: f64,
}

/// The last few blended steps of one seed (at most the gate loss window).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlendWindow {
    samples: VecDeque<Sample>,
}

impl BlendWindow {
    /// Folds in one step's blend report and the seed's kernel latency that
    /// step, keeping at most `cap` steps (`cap` 0 keeps none).
    pub fn push(&mut self, blend: &BlendReport, kernel_latency_us: u64, cap: usize) {
        if cap == 0 {
            return;
        }
        while self.samples.len() >= cap {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            alpha_mean: blend.alpha_mean,
            alpha_p95: blend.alpha_p95,
            clamped_fraction: blend.clamped_fraction,
            gate_mean: blend.gate_mean,
            kernel_latency_us: kernel_latency_us as f64,
        });
    }

    /// The statistics over the window; `None` before the first blended step.
    /// A NaN in a step's figures makes the mean NaN (a policy then sees that
    /// the blend broke) and sorts last for the percentiles.
    pub fn stats(&self) -> Option<BlendStats> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let mean = |f: fn(&Sample) -> f64| self.samples.iter().map(f).sum::<f64>() / n as f64;
        let gates: Vec<f64> = self.samples.iter().filter_map(|s| s.gate_mean).collect();
        Some(BlendStats {
            steps: u32::try_from(n).unwrap_or(u32::MAX),
            alpha_mean: mean(|s| s.alpha_mean),
            alpha_p95: p95(self.samples.iter().map(|s| s.alpha_p95).collect()),
            clamped_fraction: mean(|s| s.clamped_fraction),
            gate_mean: (!gates.is_empty()).then(|| gates.iter().sum::<f64>() / gates.len() as f64),
            kernel_latency_p95_us: p95(self.samples.iter().map(|s| s.kernel_latency_us).collect()),
        })
    }
}

/// Nearest-rank 95th percentile of a non-empty list (NaN sorts last).
fn p95(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = (values.len() as f64 * 0.95).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use leyline::BlendMode;

    use super::*;

    fn report(alpha: f64, clamped: f64, gate: Option<f64>) -> BlendReport {
        BlendReport {
            mode: BlendMode::Confidence,
            alpha_mean: alpha,
            alpha_p95: alpha + 0.1,
            clamped_fraction: clamped,
            sparsity: None,
            gate_mean: gate,
            kernel_us: 3.0,
        }
    }

    #[test]
    fn statistics_cover_the_last_cap_steps_only() {
        let mut w = BlendWindow::default();
        assert_eq!(w.stats(), None, "no blended step yet");
        w.push(&report(0.9, 1.0, Some(0.9)), 1_000, 3); // falls out of the window
        for (alpha, latency) in [(0.1, 100), (0.2, 300), (0.3, 200)] {
            w.push(&report(alpha, 0.5, None), latency, 3);
        }
        let Some(s) = w.stats() else { panic!("three steps in the window") };
        assert_eq!(s.steps, 3);
        assert!((s.alpha_mean - 0.2).abs() < 1e-12, "{}", s.alpha_mean);
        assert!((s.alpha_p95 - 0.4).abs() < 1e-12, "{}", s.alpha_p95);
        assert!((s.clamped_fraction - 0.5).abs() < 1e-12);
        assert_eq!(s.gate_mean, None, "the only step with a gate fell out");
        assert_eq!(s.kernel_latency_p95_us, 300.0);
    }

    #[test]
    fn a_nan_alpha_reaches_the_mean_and_a_zero_cap_keeps_nothing() {
        let mut w = BlendWindow::default();
        w.push(&report(f64::NAN, 0.0, Some(0.5)), 10, 4);
        w.push(&report(0.5, 0.0, Some(0.7)), 10, 4);
        let Some(s) = w.stats() else { panic!("two steps") };
        assert!(s.alpha_mean.is_nan());
        assert!(s.alpha_p95.is_nan(), "NaN sorts last, so the nearest-rank p95 of two is it");
        assert!((s.gate_mean.unwrap_or_default() - 0.6).abs() < 1e-12);
        let mut none = BlendWindow::default();
        none.push(&report(0.5, 0.0, None), 10, 0);
        assert_eq!(none.stats(), None);
    }
}
