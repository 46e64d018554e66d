//! Per-step blend statistics (SPEC.md §5 telemetry): mode, α mean and p95,
//! clamped fraction, sparsity (CHANNEL), gate mean (CONFIDENCE), kernel time.

use leyline::{BlendMode, Metric};

/// What one blend did. For CONVEX/RESIDUAL α_eff is the scalar α, so mean and
/// p95 equal it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlendStats {
    /// Blend mode.
    pub mode: BlendMode,
    /// The schedule's α for this step.
    pub alpha: f64,
    /// Mean of the effective α (over channels for CHANNEL, samples for CONFIDENCE).
    pub alpha_mean: f64,
    /// 95th percentile (nearest rank) of the effective α.
    pub alpha_p95: f64,
    /// Share of samples whose α·g was clamped to [α_lo, α_hi] (CONFIDENCE; 0 otherwise).
    pub clamped_fraction: f64,
    /// Share of channels with α_eff = 0 (CHANNEL only).
    pub sparsity: Option<f64>,
    /// Mean confidence gate g (CONFIDENCE only).
    pub gate_mean: Option<f64>,
    /// Wall time of the fused blend op, µs. On CUDA this is launch time
    /// unless the caller synchronises: kernels run asynchronously there.
    pub kernel_us: f64,
}

impl BlendStats {
    /// Stats of a scalar-α blend, before the kernel ran.
    pub(crate) fn scalar(mode: BlendMode, alpha: f64) -> Self {
        BlendStats {
            mode,
            alpha,
            alpha_mean: alpha,
            alpha_p95: alpha,
            clamped_fraction: 0.0,
            sparsity: None,
            gate_mean: None,
            kernel_us: 0.0,
        }
    }

    /// The stats as telemetry metrics labelled with the seed and site.
    pub fn to_metrics(&self, seed_id: &str, site: &str) -> Vec<Metric> {
        let labels: std::collections::BTreeMap<String, String> = [
            ("seed_id".to_owned(), seed_id.to_owned()),
            ("site".to_owned(), site.to_owned()),
            ("mode".to_owned(), self.mode.as_str().to_owned()),
        ]
        .into_iter()
        .collect();
        let metric = |name: &str, value: f64, unit: &str| Metric {
            name: format!("kasmina.blend.{name}"),
            value,
            unit: unit.to_owned(),
            labels: labels.clone(),
        };
        let mut out = vec![
            metric("alpha", self.alpha, "ratio"),
            metric("alpha_mean", self.alpha_mean, "ratio"),
            metric("alpha_p95", self.alpha_p95, "ratio"),
            metric("clamped_fraction", self.clamped_fraction, "ratio"),
            metric("kernel_time", self.kernel_us, "us"),
        ];
        if let Some(s) = self.sparsity {
            out.push(metric("sparsity", s, "ratio"));
        }
        if let Some(g) = self.gate_mean {
            out.push(metric("gate_mean", g, "ratio"));
        }
        out
    }
}

/// Nearest-rank 95th percentile; 0 for an empty set. NaNs sort last.
pub(crate) fn p95(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (0.95 * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p95(v), 95.0);
        assert_eq!(p95(vec![0.2]), 0.2);
        assert_eq!(p95(vec![0.1, 0.9]), 0.9);
        assert_eq!(p95(Vec::new()), 0.0);
    }

    #[test]
    fn metrics_carry_mode_specific_fields_only_when_present() {
        let mut s = BlendStats::scalar(BlendMode::Channel, 0.5);
        assert_eq!(s.to_metrics("s1", "block2").len(), 5);
        s.sparsity = Some(0.25);
        let m = s.to_metrics("s1", "block2");
        assert_eq!(m.len(), 6);
        assert!(m.iter().any(|m| m.name == "kasmina.blend.sparsity" && m.value == 0.25));
        assert_eq!(m[0].labels.get("mode").map(String::as_str), Some("CHANNEL"));
    }
}
