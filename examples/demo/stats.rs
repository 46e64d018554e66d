//! Mean ± spread over repeated scenarios, and the verdict.
//!
//! Every number here is computed from the runs' [`RunStats`]; nothing is a
//! constant. Comparisons are paired — each repeat trains all three runs on
//! the same split, initialisation and batch order — so the verdict looks at
//! per-seed differences, with a 95 % Student-t interval on their mean.

use serde::Serialize;

use super::Outcome;
use super::trainer::RunStats;

/// One number over the repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for a single value).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread { mean, std: var.sqrt(), min, max, n }
    }

    /// Half-width of the 95 % confidence interval of the mean (Student t);
    /// `None` for a single value.
    pub fn half_width_95(&self) -> Option<f64> {
        // Two-sided 97.5 % quantiles of Student's t for 1..=10 degrees of freedom.
        const T: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
        let dof = self.n.checked_sub(1).filter(|d| *d > 0)?;
        let t = T.get(dof - 1).copied().unwrap_or(1.96);
        Some(t * self.std / (self.n as f64).sqrt())
    }
}

/// One run over the repeats.
#[derive(Debug, Clone, Serialize)]
pub struct RunSpread {
    /// Final test accuracy.
    pub test_accuracy: Spread,
    /// Final validation accuracy.
    pub val_accuracy: Spread,
    /// Mean training loss over the last steps.
    pub final_loss: Spread,
    /// Parameters (host plus added) of the first repeat's run.
    pub parameters: i64,
}

impl RunSpread {
    fn of(runs: &[&RunStats]) -> Self {
        let take = |f: fn(&RunStats) -> f64| Spread::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        RunSpread {
            test_accuracy: take(|r| r.test_accuracy),
            val_accuracy: take(|r| r.val_accuracy),
            final_loss: take(|r| r.final_loss),
            parameters: runs.first().map_or(0, |r| r.parameters()),
        }
    }
}

/// Run `a` against run `b` on test accuracy, paired by seed.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The first run's name.
    pub a: &'static str,
    /// The second run's name.
    pub b: &'static str,
    /// Per-seed differences a − b of test accuracy, in percentage points.
    pub diff_points: Spread,
    /// Seeds on which `a` scored higher.
    pub a_higher: usize,
    /// Seeds on which `b` scored higher.
    pub b_higher: usize,
    /// `a better`, `b better`, `no clear difference` (the 95 % interval of
    /// the mean difference contains 0) or `single run`.
    pub verdict: String,
    /// The comparison in one sentence.
    pub text: String,
}

impl Comparison {
    fn of(a: &'static str, b: &'static str, pairs: &[(f64, f64)]) -> Self {
        let diffs: Vec<f64> = pairs.iter().map(|(x, y)| (x - y) * 100.0).collect();
        let diff = Spread::of(&diffs);
        let a_higher = diffs.iter().filter(|d| **d > 0.0).count();
        let b_higher = diffs.iter().filter(|d| **d < 0.0).count();
        let verdict = match diff.half_width_95() {
            None => "single run".to_owned(),
            Some(h) if diff.mean - h > 0.0 => format!("{a} better"),
            Some(h) if diff.mean + h < 0.0 => format!("{b} better"),
            Some(_) => "no clear difference".to_owned(),
        };
        let text = match diff.half_width_95() {
            None => format!(
                "{a} vs {b}: test accuracy {:+.2} points on one random seed (no spread: run --repeats 5)",
                diff.mean
            ),
            Some(h) => format!(
                "{a} vs {b}: test accuracy {:+.2} ± {:.2} points (mean ± sd over {} paired random seeds; 95 % CI ±{h:.2}); \
                 {a} higher on {a_higher}, {b} higher on {b_higher}: {verdict}",
                diff.mean, diff.std, diff.n
            ),
        };
        Comparison { a, b, diff_points: diff, a_higher, b_higher, verdict, text }
    }
}

/// One repeat's headline numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RepeatRow {
    /// Seed of the repeat.
    pub seed: u64,
    /// Test accuracy of baseline, seeded and static.
    pub test_accuracy: [Option<f64>; 3],
}

/// The three runs over every repeat, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    /// Repeats (seeds).
    pub repeats: usize,
    /// Per-repeat test accuracy.
    pub per_seed: Vec<RepeatRow>,
    /// The host alone.
    pub baseline: RunSpread,
    /// Grown by the controller.
    pub seeded: RunSpread,
    /// The final architecture from step 0 (absent when no repeat had one).
    #[serde(rename = "static")]
    pub static_run: Option<RunSpread>,
    /// Did growing beat the host alone?
    pub seeded_vs_baseline: Comparison,
    /// Did growing beat training the grown architecture from the start?
    pub seeded_vs_static: Option<Comparison>,
    /// Does the bigger architecture alone beat the host?
    pub static_vs_baseline: Option<Comparison>,
}

impl Aggregate {
    /// Aggregates the outcomes (at least one) of the repeats.
    pub fn of(outcomes: &[Outcome]) -> Self {
        let baseline: Vec<&RunStats> = outcomes.iter().map(|o| &o.baseline).collect();
        let seeded: Vec<&RunStats> = outcomes.iter().map(|o| &o.seeded).collect();
        // Static comparisons only over repeats that have a static run.
        let with_static: Vec<&Outcome> = outcomes.iter().filter(|o| o.static_run.is_some()).collect();
        let statics: Vec<&RunStats> = with_static.iter().filter_map(|o| o.static_run.as_ref()).collect();
        let pair = |a: fn(&Outcome) -> f64, b: fn(&Outcome) -> f64, set: &[&Outcome]| -> Vec<(f64, f64)> {
            set.iter().map(|o| (a(o), b(o))).collect()
        };
        let all: Vec<&Outcome> = outcomes.iter().collect();
        let st = |o: &Outcome| o.static_run.as_ref().map_or(f64::NAN, |s| s.test_accuracy);
        let have_static = !statics.is_empty();
        Aggregate {
            repeats: outcomes.len(),
            per_seed: outcomes
                .iter()
                .map(|o| RepeatRow {
                    seed: o.seed,
                    test_accuracy: [
                        Some(o.baseline.test_accuracy),
                        Some(o.seeded.test_accuracy),
                        o.static_run.as_ref().map(|s| s.test_accuracy),
                    ],
                })
                .collect(),
            baseline: RunSpread::of(&baseline),
            seeded: RunSpread::of(&seeded),
            static_run: have_static.then(|| RunSpread::of(&statics)),
            seeded_vs_baseline: Comparison::of(
                "seeded",
                "baseline",
                &pair(|o| o.seeded.test_accuracy, |o| o.baseline.test_accuracy, &all),
            ),
            seeded_vs_static: have_static
                .then(|| Comparison::of("seeded", "static", &pair(|o| o.seeded.test_accuracy, st, &with_static))),
            static_vs_baseline: have_static
                .then(|| Comparison::of("static", "baseline", &pair(st, |o| o.baseline.test_accuracy, &with_static))),
        }
    }

    /// The verdict, one sentence per comparison.
    pub fn verdict(&self) -> Vec<String> {
        [Some(&self.seeded_vs_baseline), self.seeded_vs_static.as_ref(), self.static_vs_baseline.as_ref()]
            .into_iter()
            .flatten()
            .map(|c| c.text.clone())
            .collect()
    }
}
