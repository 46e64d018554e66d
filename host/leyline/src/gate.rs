//! What a lifecycle gate decides on (SPEC.md §2): [`GateInputs`], filled by
//! the host's gate service from real seed state for one seed.
//!
//! The type lives in the contract, with serde, because three parties use
//! the same record: the gate service hands it to the gate plugin, the
//! decision journal stores it verbatim with every verdict (postcard keeps
//! NaN and ±inf bit for bit, so no hand-written field codec is needed), and
//! `journal replay` re-feeds it to a candidate plugin.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ParameterBounds, SeedStage};

/// Performance status of a seed's kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PerformanceStatus {
    /// Own verified kernel at expected speed.
    Nominal,
    /// Own verified kernel within tolerances.
    Healthy,
    /// Outside tolerances.
    Degraded,
    /// Something other than the seed's own kernel ran.
    Fallback,
    /// Failing.
    Critical,
}

impl PerformanceStatus {
    /// Stable lower-case name (as in `wit/gate-policy.wit`).
    pub const fn as_str(self) -> &'static str {
        match self {
            PerformanceStatus::Nominal => "nominal",
            PerformanceStatus::Healthy => "healthy",
            PerformanceStatus::Degraded => "degraded",
            PerformanceStatus::Fallback => "fallback",
            PerformanceStatus::Critical => "critical",
        }
    }
}

/// A seed's blend over its recent steps (plugin API 0.2.0 `blend-stats`):
/// the last `steps` step reports that carried blend statistics, at most the
/// gate loss window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendStats {
    /// Step reports covered (at least 1).
    pub steps: u32,
    /// Mean of the per-step mean effective α.
    pub alpha_mean: f64,
    /// 95th percentile (nearest rank) of the per-step α p95.
    pub alpha_p95: f64,
    /// Mean share of samples whose α was clamped (CONFIDENCE; 0 otherwise).
    pub clamped_fraction: f64,
    /// Mean confidence gate g (CONFIDENCE only; `None` when no step had one).
    pub gate_mean: Option<f64>,
    /// 95th percentile (nearest rank) of the seed's kernel latency, µs.
    pub kernel_latency_p95_us: f64,
}

impl BlendStats {
    fn same_facts(&self, other: &BlendStats) -> bool {
        let f = |a: f64, b: f64| a.to_bits() == b.to_bits();
        let BlendStats { steps, alpha_mean, alpha_p95, clamped_fraction, gate_mean, kernel_latency_p95_us } = self;
        *steps == other.steps
            && f(*alpha_mean, other.alpha_mean)
            && f(*alpha_p95, other.alpha_p95)
            && f(*clamped_fraction, other.clamped_fraction)
            && match (gate_mean, other.gate_mean) {
                (Some(a), Some(b)) => f(*a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && f(*kernel_latency_p95_us, other.kernel_latency_p95_us)
    }
}

/// Whether the ranks of a data-parallel job agreed on one seed (plugin API
/// 0.2.0 `rank-agreement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankAgreement {
    /// Ranks in the job (2 or more).
    pub world_size: u32,
    /// Every rank applied the same stage, α and kernel digest so far.
    pub agreed: bool,
}

/// Everything a gate needs (SPEC.md §2), for one seed. See
/// `wit/since_v0.2.0/gate-policy.wit` for each field's meaning; a plugin of
/// API 0.1.0 sees every field but the last two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateInputs {
    /// Seed id.
    pub seed_id: String,
    /// Seed site.
    pub site: String,
    /// Blueprint id (empty if none).
    pub blueprint_id: String,
    /// Whether Urza knows the blueprint.
    pub blueprint_known: bool,
    /// Stage the host holds now.
    pub current_stage: SeedStage,
    /// Stage the controller expects.
    pub expected_stage: SeedStage,
    /// Stage the host last reported.
    pub reported_stage: SeedStage,
    /// Requested parameters.
    pub parameters: BTreeMap<String, f64>,
    /// Declared parameter bounds.
    pub parameter_bounds: BTreeMap<String, ParameterBounds>,
    /// Kernel attached to the slot.
    pub kernel_attached: bool,
    /// Kernel fetched from Urza and SHA-256 verified.
    pub kernel_verified: bool,
    /// Anything other than the seed's own verified kernel ran.
    pub fallback_used: bool,
    /// Gradient-isolation violations in the current window.
    pub isolation_violations: u32,
    /// Largest host/seed gradient cosine observed.
    pub max_cosine: f64,
    /// Recent seed outputs all finite.
    pub outputs_finite: bool,
    /// Recent losses, oldest first.
    pub loss_window: Vec<f64>,
    /// Largest allowed loss variance.
    pub loss_variance_threshold: f64,
    /// Measured kernel latency (µs).
    pub kernel_latency_us: f64,
    /// Kernel latency budget (µs).
    pub latency_budget_us: f64,
    /// Host model registered.
    pub host_registered: bool,
    /// Layers this seed's site requires.
    pub required_layers: Vec<String>,
    /// Layers the mesh covers.
    pub available_layers: Vec<String>,
    /// Kernel I/O shapes match the site.
    pub interface_matches: bool,
    /// Kernel path status.
    pub performance_status: PerformanceStatus,
    /// Global metric change (positive is better).
    pub metric_delta: f64,
    /// Largest tolerated regression.
    pub metric_tolerance: f64,
    /// Slot clean (no cache/registry entries left).
    pub reset_clean: bool,
    /// Recent blend statistics (`None` before the seed's first blended step).
    pub blend: Option<BlendStats>,
    /// Rank agreement (`None` for a single-process trainer).
    pub ranks: Option<RankAgreement>,
}

impl GateInputs {
    /// Whether `other` states exactly the same facts: like `==`, except that
    /// floats compare bit for bit, so NaN (no metric yet, no measurement)
    /// equals NaN. The host uses it to tell whether a verdict computed ahead
    /// of its state lock still applies. Destructured in full, so a new field
    /// cannot be forgotten here.
    pub fn same_facts(&self, other: &GateInputs) -> bool {
        let GateInputs {
            seed_id,
            site,
            blueprint_id,
            blueprint_known,
            current_stage,
            expected_stage,
            reported_stage,
            parameters,
            parameter_bounds,
            kernel_attached,
            kernel_verified,
            fallback_used,
            isolation_violations,
            max_cosine,
            outputs_finite,
            loss_window,
            loss_variance_threshold,
            kernel_latency_us,
            latency_budget_us,
            host_registered,
            required_layers,
            available_layers,
            interface_matches,
            performance_status,
            metric_delta,
            metric_tolerance,
            reset_clean,
            blend,
            ranks,
        } = self;
        let f = |a: f64, b: f64| a.to_bits() == b.to_bits();
        *seed_id == other.seed_id
            && *site == other.site
            && *blueprint_id == other.blueprint_id
            && *blueprint_known == other.blueprint_known
            && *current_stage == other.current_stage
            && *expected_stage == other.expected_stage
            && *reported_stage == other.reported_stage
            && parameters.len() == other.parameters.len()
            && parameters.iter().zip(&other.parameters).all(|((k, v), (k2, v2))| k == k2 && f(*v, *v2))
            && parameter_bounds.len() == other.parameter_bounds.len()
            && parameter_bounds
                .iter()
                .zip(&other.parameter_bounds)
                .all(|((k, b), (k2, b2))| k == k2 && f(b.min, b2.min) && f(b.max, b2.max))
            && *kernel_attached == other.kernel_attached
            && *kernel_verified == other.kernel_verified
            && *fallback_used == other.fallback_used
            && *isolation_violations == other.isolation_violations
            && f(*max_cosine, other.max_cosine)
            && *outputs_finite == other.outputs_finite
            && loss_window.len() == other.loss_window.len()
            && loss_window.iter().zip(&other.loss_window).all(|(a, b)| f(*a, *b))
            && f(*loss_variance_threshold, other.loss_variance_threshold)
            && f(*kernel_latency_us, other.kernel_latency_us)
            && f(*latency_budget_us, other.latency_budget_us)
            && *host_registered == other.host_registered
            && *required_layers == other.required_layers
            && *available_layers == other.available_layers
            && *interface_matches == other.interface_matches
            && *performance_status == other.performance_status
            && f(*metric_delta, other.metric_delta)
            && f(*metric_tolerance, other.metric_tolerance)
            && *reset_clean == other.reset_clean
            && match (blend, &other.blend) {
                (Some(a), Some(b)) => a.same_facts(b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && *ranks == other.ranks
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record with every awkward value the journal must keep exactly.
    pub(crate) fn awkward() -> GateInputs {
        GateInputs {
            seed_id: "s\"1".to_owned(),
            site: "hidden".to_owned(),
            blueprint_id: "bp".to_owned(),
            blueprint_known: true,
            current_stage: SeedStage::Training,
            expected_stage: SeedStage::Training,
            reported_stage: SeedStage::Germinated,
            parameters: BTreeMap::from([("lr".to_owned(), 0.1 + 0.2), ("nan".to_owned(), f64::NAN)]),
            parameter_bounds: BTreeMap::from([("lr".to_owned(), ParameterBounds { min: 1e-5, max: f64::INFINITY })]),
            kernel_attached: true,
            kernel_verified: false,
            fallback_used: false,
            isolation_violations: 3,
            max_cosine: -0.25,
            outputs_finite: true,
            loss_window: vec![0.5, f64::NEG_INFINITY, 1e-300],
            loss_variance_threshold: 1.0,
            kernel_latency_us: f64::INFINITY,
            latency_budget_us: 5000.0,
            host_registered: true,
            required_layers: vec!["hidden".to_owned()],
            available_layers: vec!["a,b".to_owned(), "hidden".to_owned()],
            interface_matches: true,
            performance_status: PerformanceStatus::Degraded,
            metric_delta: f64::NAN,
            metric_tolerance: 0.02,
            reset_clean: false,
            blend: Some(BlendStats {
                steps: 4,
                alpha_mean: 0.25,
                alpha_p95: f64::NAN,
                clamped_fraction: 0.0,
                gate_mean: Some(f64::NAN),
                kernel_latency_p95_us: 120.5,
            }),
            ranks: Some(RankAgreement { world_size: 2, agreed: true }),
        }
    }

    #[test]
    fn postcard_round_trip_is_bit_exact_including_non_finite_floats() {
        let inputs = awkward();
        let bytes = postcard::to_allocvec(&inputs).unwrap_or_default();
        let Ok(back) = postcard::from_bytes::<GateInputs>(&bytes) else {
            panic!("gate inputs do not decode");
        };
        // NaN != NaN, so compare the encodings, then spot-check the floats.
        assert_eq!(postcard::to_allocvec(&back).unwrap_or_default(), bytes);
        assert!(back.metric_delta.is_nan() && back.kernel_latency_us == f64::INFINITY);
        assert_eq!(back.parameters["lr"].to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(back.loss_window[1], f64::NEG_INFINITY);
        assert_eq!(back.parameter_bounds["lr"].max, f64::INFINITY);
    }

    #[test]
    fn same_facts_treats_nan_as_equal_and_any_other_difference_as_different() {
        let a = awkward();
        assert_ne!(a, a.clone(), "derived equality never matches NaN");
        assert!(a.same_facts(&a.clone()));
        let mut b = a.clone();
        b.loss_window[0] = 0.5000000000000001;
        assert!(!a.same_facts(&b));
        let mut c = a.clone();
        c.metric_delta = 0.0;
        assert!(!a.same_facts(&c));
        let mut d = a.clone();
        if let Some(blend) = d.blend.as_mut() {
            blend.gate_mean = None;
        }
        assert!(!a.same_facts(&d), "a blend statistic that differs is a different fact");
        let mut e = a.clone();
        e.ranks = Some(RankAgreement { world_size: 2, agreed: false });
        assert!(!a.same_facts(&e));
    }
}
