//! The part of a step report that runs before the state lock: waiting for
//! the kernels germinated seeds need, and asking the gate plugin about every
//! gate the step will run, on staged copies of the seeds with the report
//! folded in.
//!
//! Why: a kernel load can take up to `prefetch_timeout_ms` (30 s by
//! default) and a gate plugin call up to its deadline; holding the state
//! lock meanwhile stalled every command, `status` and `seed_states`. Here
//! only the prefetch receiver is held while waiting. The verdicts are
//! advice: the step applies one only if the gate's facts are exactly the
//! same when it runs (see [`crate::gates::GateService::evaluate_with`]).

use std::collections::BTreeSet;
use std::time::Duration;

use kasmina_kernels::{PrefetchEvent, RecvError};
use leyline::api::StepReport;
use leyline::{GateId, SeedStage};

use super::{SeedContext, SeedManager, State};
use crate::gates::GateDecision;

/// Gate verdicts computed for one step report before its lock.
#[derive(Debug, Default)]
pub struct PreparedStep {
    pub(super) gates: Vec<GateDecision>,
    /// Seeds whose kernel was waited for and did not come (timed out):
    /// not waited for again.
    pub(super) waited: BTreeSet<String>,
}

impl SeedManager {
    /// Waits for kernels, then precomputes the step's gate verdicts.
    pub fn prepare_step(&self, report: &StepReport) -> PreparedStep {
        self.await_prefetches();
        let waited = Self::seeds_waiting_for_kernels(&self.read());
        let jobs = {
            let st = self.read();
            if Self::rollback_frozen(&st) { Vec::new() } else { self.staged_gates(&st, report) }
        };
        let gates = jobs
            .into_iter()
            .filter_map(|(gate, seed, expected, env)| self.gates.precompute(gate, &seed, expected, &env));
        PreparedStep { gates: gates.collect(), waited }
    }

    /// Whether some germinated seed is still waiting for its kernel.
    fn kernel_pending(st: &State) -> bool {
        st.seeds.values().any(|s| waits_for_kernel(st, s))
    }

    /// The germinated seeds still waiting for their kernel.
    pub(super) fn seeds_waiting_for_kernels(st: &State) -> BTreeSet<String> {
        st.seeds.values().filter(|s| waits_for_kernel(st, s)).map(|s| s.seed_id.clone()).collect()
    }

    /// Moves finished prefetches into the state. A germinated seed still
    /// waiting is waited for, bounded by the prefetch timeout, so the step
    /// at which a kernel attaches does not depend on thread timing — with
    /// the state lock released while waiting.
    pub(super) fn await_prefetches(&self) {
        let mut events = self.prefetch_events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let waiting = Self::kernel_pending(&self.read());
            let next = if waiting {
                events.recv_timeout(Duration::from_millis(self.settings.kernels.prefetch_timeout_ms))
            } else {
                events.try_recv()
            };
            match next {
                Ok(event) => {
                    self.lock().prefetch_results.insert(event.seed_id().to_owned(), event);
                }
                Err(RecvError::Empty) => break,
                Err(other) => {
                    // Timed out or closed: leave the seeds waiting; the
                    // advance step fails them for want of a kernel.
                    tracing::warn!(error = ?other, "kasmina.prefetch.wait_ended");
                    break;
                }
            }
        }
    }

    /// Every seed with the report folded in, and the gate it will face this
    /// step with the facts it will be judged on.
    fn staged_gates(
        &self,
        st: &State,
        report: &StepReport,
    ) -> Vec<(GateId, SeedContext, SeedStage, crate::gates::GateEnvironment)> {
        let window = self.settings.gates.loss_window;
        let metric = report.global_metric.filter(|m| m.is_finite()).or(st.latest_metric);
        let mut jobs = Vec::new();
        for seed in st.seeds.values() {
            let mut staged = seed.clone();
            match report.seeds.iter().find(|r| r.seed_id == seed.seed_id) {
                Some(r) => staged.absorb(r, window),
                None => staged.absent_from_report(),
            }
            if staged.stage.is_active() && staged.metric_baseline.is_none() {
                staged.metric_baseline = metric;
            }
            if let Some((gate, expected)) = self.due_gate(st, &staged) {
                let mut env = self.environment(st, &staged);
                env.latest_metric = metric;
                jobs.push((gate, staged, expected, env));
            }
        }
        jobs
    }

    /// The gate `seed` will run at this step, if any: the same conditions
    /// as the advance (a miss only costs a plugin call under the lock).
    fn due_gate(&self, st: &State, seed: &SeedContext) -> Option<(GateId, SeedStage)> {
        if seed.resync_pending || seed.paused {
            return None;
        }
        let l = &self.settings.lifecycle;
        let next = seed.steps_in_stage.saturating_add(1);
        let due = match seed.stage {
            SeedStage::Germinated if seed.kernel.is_none() => {
                let failed = matches!(st.prefetch_results.get(&seed.seed_id), Some(PrefetchEvent::Failed(_)));
                let none = seed.prefetch_request.is_none() && !st.prefetch_results.contains_key(&seed.seed_id);
                failed || none
            }
            SeedStage::Germinated => {
                let confirmed = seed.reported_stage == SeedStage::Germinated && seed.reported_kernel_sha256.is_some();
                seed.attach_sent && !seed.hold && (confirmed || next > l.attach_timeout_steps)
            }
            SeedStage::Training => !seed.hold && next >= l.training_steps,
            SeedStage::Blending => !seed.hold && next >= l.blend_steps,
            SeedStage::Shadowing => !seed.hold && next >= l.shadow_steps,
            SeedStage::Resetting => true,
            _ => false,
        };
        let gate = leyline::lifecycle::ALL_GATES.into_iter().find(|g| g.edge().0 == seed.stage)?;
        due.then_some((gate, seed.stage))
    }
}

/// A germinated seed whose kernel has neither arrived nor failed yet.
fn waits_for_kernel(st: &State, s: &SeedContext) -> bool {
    s.stage == SeedStage::Germinated && s.prefetch_request.is_some() && !st.prefetch_results.contains_key(&s.seed_id)
}
