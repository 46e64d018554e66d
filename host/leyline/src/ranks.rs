//! Data-parallel ranks (SPEC.md §10): what a job of several ranks tells the
//! control plane about them, and how one rank's reports are folded into the
//! single report the control plane receives.
//!
//! Only global rank 0 talks to the control plane. Every step each rank
//! builds its own [`StepReport`]; rank 0 gathers them over the trainer's own
//! distributed engine and calls [`merge_rank_reports`], which reduces the
//! measurements (loss mean, outputs finite on every rank, isolation
//! violations summed, cosine and latency max) and attaches a
//! [`RankSummary`]: per seed, what each rank applied (stage, α, kernel
//! digest) as a [`seed_digest`], and which ranks differ from rank 0. The
//! control plane treats any difference as CRITICAL and fails the seed's
//! next gate with `rank_divergence`.

use serde::{Deserialize, Serialize};

use crate::SeedStage;
use crate::api::{CheckpointEvent, SeedStepReport, StepReport};

/// Largest `world_size` a registration may declare.
pub const MAX_WORLD_SIZE: u32 = 65_536;

/// The digest of a seed a rank does not hold at all.
pub const ABSENT_DIGEST: &str = "absent";

/// What every rank applied this step, and whether they agreed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSummary {
    /// Ranks whose reports were folded in (the job's world size).
    pub world_size: u32,
    /// Every rank applied the same stage, α and kernel to every seed.
    pub agreed: bool,
    /// One entry per seed any rank holds, in seed-id order.
    pub seeds: Vec<RankSeedDigest>,
}

/// One seed across the ranks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSeedDigest {
    /// Seed id.
    pub seed_id: String,
    /// Rank 0's [`seed_digest`] (or [`ABSENT_DIGEST`]).
    pub digest: String,
    /// Ranks whose digest differs from rank 0's, with theirs; empty when
    /// every rank agreed.
    pub divergent: Vec<RankDigest>,
}

/// One rank's digest of a seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankDigest {
    /// Global rank.
    pub rank: u32,
    /// Its [`seed_digest`] (or [`ABSENT_DIGEST`]).
    pub digest: String,
}

impl RankSummary {
    /// Whether `agreed` is what the per-seed entries say.
    pub fn is_consistent(&self) -> bool {
        self.agreed == self.seeds.iter().all(|s| s.divergent.is_empty())
    }
}

/// What a rank applied to a seed, canonically: `stage:α-bits:kernel`
/// (`TRAINING:3fd0000000000000:<sha256>`). Equal strings mean the same
/// stage, bit-identical α and the same verified kernel.
pub fn seed_digest(stage: SeedStage, alpha: f64, kernel_sha256: Option<&str>) -> String {
    format!("{}:{:016x}:{}", stage.as_str(), alpha.to_bits(), kernel_sha256.unwrap_or("-"))
}

fn report_digest(r: &SeedStepReport) -> String {
    seed_digest(r.stage, r.alpha, r.kernel_sha256.as_deref())
}

/// Why ranks' reports cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// No report at all.
    #[error("no rank reports to merge")]
    Empty,
    /// More ranks than [`MAX_WORLD_SIZE`].
    #[error("{0} rank reports; at most {MAX_WORLD_SIZE}")]
    TooMany(usize),
    /// Ranks are at different steps or runs: they are not in lockstep.
    #[error(
        "rank {rank} reported step {step} of run {run:?}, rank 0 step {step0} of run {run0:?}: ranks are not in lockstep"
    )]
    NotInLockstep {
        /// The rank that differs.
        rank: u32,
        /// Its step.
        step: u64,
        /// Its run.
        run: String,
        /// Rank 0's step.
        step0: u64,
        /// Rank 0's run.
        run0: String,
    },
}

/// Folds the reports of every rank (index = global rank) into the one report
/// rank 0 sends: task loss and seed losses are means, `outputs_finite` and
/// `output_shape_ok` hold only if they hold on every rank that holds the
/// seed, isolation violations are summed, cosine, latency and blend kernel
/// time are maxima, a fallback on any rank is a fallback; stage, α, kernel
/// and blend statistics are rank 0's (the others are compared through the
/// [`RankSummary`]). Checkpoint events are rank 0's, except that a point
/// any rank failed to capture or restore is reported failed.
pub fn merge_rank_reports(reports: Vec<StepReport>) -> Result<StepReport, MergeError> {
    let n = reports.len();
    if n == 0 {
        return Err(MergeError::Empty);
    }
    let world_size = u32::try_from(n).ok().filter(|w| *w <= MAX_WORLD_SIZE).ok_or(MergeError::TooMany(n))?;
    let (step0, run0) = (reports[0].step, reports[0].training_run_id.clone());
    for (rank, r) in (0u32..).zip(&reports) {
        if r.step != step0 || r.training_run_id != run0 {
            return Err(MergeError::NotInLockstep { rank, step: r.step, run: r.training_run_id.clone(), step0, run0 });
        }
    }
    let mut ids: Vec<&str> = reports.iter().flat_map(|r| r.seeds.iter().map(|s| s.seed_id.as_str())).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut seeds = Vec::with_capacity(ids.len());
    let mut digests = Vec::with_capacity(ids.len());
    for id in ids {
        let per_rank: Vec<Option<&SeedStepReport>> =
            reports.iter().map(|r| r.seeds.iter().find(|s| s.seed_id == id)).collect();
        let digest_of = |s: &Option<&SeedStepReport>| s.map_or_else(|| ABSENT_DIGEST.to_owned(), report_digest);
        let digest0 = digest_of(&per_rank[0]);
        let divergent = (0u32..)
            .zip(&per_rank)
            .skip(1)
            .map(|(rank, s)| RankDigest { rank, digest: digest_of(s) })
            .filter(|d| d.digest != digest0)
            .collect();
        digests.push(RankSeedDigest { seed_id: id.to_owned(), digest: digest0, divergent });
        seeds.push(merge_seed(&per_rank));
    }
    let agreed = digests.iter().all(|d| d.divergent.is_empty());
    let metrics: Vec<f64> = reports.iter().filter_map(|r| r.global_metric).collect();
    let checkpoints = merge_checkpoints(&reports);
    let task_loss = reports.iter().map(|r| r.task_loss).sum::<f64>() / n as f64;
    let first = reports.into_iter().next().ok_or(MergeError::Empty)?;
    Ok(StepReport {
        step: first.step,
        training_run_id: first.training_run_id,
        task_loss,
        global_metric: (!metrics.is_empty()).then(|| metrics.iter().sum::<f64>() / metrics.len() as f64),
        seeds,
        distillation: first.distillation,
        checkpoints,
        ranks: Some(RankSummary { world_size, agreed, seeds: digests }),
    })
}

/// One seed's report, reduced over the ranks that hold it (at least one does).
fn merge_seed(per_rank: &[Option<&SeedStepReport>]) -> SeedStepReport {
    let held: Vec<&SeedStepReport> = per_rank.iter().flatten().copied().collect();
    // Rank 0's view leads; a seed rank 0 lacks is described by the first rank holding it.
    let mut out = held[0].clone();
    let losses: Vec<f64> = held.iter().filter_map(|s| s.loss).collect();
    out.loss = (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64);
    out.outputs_finite = held.iter().all(|s| s.outputs_finite);
    out.output_shape_ok = held.iter().all(|s| s.output_shape_ok);
    out.kernel_latency_us = held.iter().map(|s| s.kernel_latency_us).max().unwrap_or(0);
    out.isolation_violations = held.iter().fold(0u32, |acc, s| acc.saturating_add(s.isolation_violations));
    // NaN is kept: a cosine that could not be computed on one rank is not hidden by another.
    out.max_gradient_cosine = held
        .iter()
        .map(|s| s.max_gradient_cosine)
        .fold(f64::NEG_INFINITY, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) });
    out.fallback_used = held.iter().any(|s| s.fallback_used);
    if let Some(blend) = &mut out.blend {
        blend.kernel_us =
            held.iter().filter_map(|s| s.blend.as_ref()).map(|b| b.kernel_us).fold(blend.kernel_us, f64::max);
    }
    out
}

fn merge_checkpoints(reports: &[StepReport]) -> Vec<CheckpointEvent> {
    reports[0]
        .checkpoints
        .iter()
        .map(|event| {
            let failed = reports[1..]
                .iter()
                .flat_map(|r| &r.checkpoints)
                .find(|e| matches!(e, CheckpointEvent::Failed { .. }) && e.point_id() == event.point_id());
            match failed {
                Some(f) if !matches!(event, CheckpointEvent::Failed { .. }) => f.clone(),
                _ => event.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn seed(id: &str, stage: SeedStage, alpha: f64, finite: bool, violations: u32, cosine: f64) -> SeedStepReport {
        SeedStepReport {
            seed_id: id.to_owned(),
            stage,
            kernel_attached: true,
            kernel_sha256: Some("ab".repeat(32)),
            loss: Some(1.0 + alpha),
            outputs_finite: finite,
            output_shape_ok: true,
            kernel_latency_us: 10 + u64::from(violations),
            isolation_violations: violations,
            max_gradient_cosine: cosine,
            fallback_used: false,
            alpha,
            blend: None,
        }
    }

    fn report(step: u64, loss: f64, seeds: Vec<SeedStepReport>) -> StepReport {
        StepReport {
            step,
            training_run_id: "run".into(),
            task_loss: loss,
            global_metric: None,
            seeds,
            distillation: None,
            checkpoints: Vec::new(),
            ranks: None,
        }
    }

    #[test]
    fn measurements_are_reduced_and_agreement_recorded() {
        let merged = merge_rank_reports(vec![
            report(7, 1.0, vec![seed("a", SeedStage::Training, 0.0, true, 1, 0.1)]),
            report(7, 3.0, vec![seed("a", SeedStage::Training, 0.0, false, 2, 0.4)]),
        ])
        .unwrap();
        assert_eq!(merged.task_loss, 2.0);
        let a = &merged.seeds[0];
        assert!(!a.outputs_finite, "finite only if finite on every rank");
        assert_eq!(a.isolation_violations, 3);
        assert_eq!(a.max_gradient_cosine, 0.4);
        assert_eq!(a.kernel_latency_us, 12);
        let ranks = merged.ranks.unwrap();
        assert!(ranks.agreed && ranks.is_consistent());
        assert_eq!(ranks.world_size, 2);
        assert_eq!(ranks.seeds[0].digest, seed_digest(SeedStage::Training, 0.0, Some(&"ab".repeat(32))));
    }

    #[test]
    fn a_rank_that_applied_something_else_or_nothing_is_divergent() {
        let merged = merge_rank_reports(vec![
            report(3, 1.0, vec![seed("a", SeedStage::Blending, 0.5, true, 0, 0.0)]),
            report(3, 1.0, vec![seed("a", SeedStage::Blending, 0.25, true, 0, 0.0)]),
            report(3, 1.0, vec![]),
        ])
        .unwrap();
        let ranks = merged.ranks.unwrap();
        assert!(!ranks.agreed && ranks.is_consistent());
        let divergent: Vec<(u32, &str)> =
            ranks.seeds[0].divergent.iter().map(|d| (d.rank, d.digest.as_str())).collect();
        assert_eq!(divergent.len(), 2);
        assert_eq!(divergent[1], (2, ABSENT_DIGEST));
        assert!(divergent[0].1.starts_with("BLENDING:"));
    }

    #[test]
    fn ranks_at_different_steps_are_refused() {
        let err = merge_rank_reports(vec![report(3, 1.0, vec![]), report(4, 1.0, vec![])]).unwrap_err();
        assert!(matches!(err, MergeError::NotInLockstep { rank: 1, step: 4, step0: 3, .. }), "{err}");
        assert_eq!(merge_rank_reports(Vec::new()).unwrap_err(), MergeError::Empty);
    }
}
