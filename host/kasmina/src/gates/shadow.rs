//! Shadow evaluation off the step path.
//!
//! The active decision never waits for the candidate: each plugin-decided
//! gate hands its inputs and verdict to a bounded queue and returns; one
//! worker thread runs the candidate with its own budget (the shadow plugin
//! is loaded with `plugins.shadow_deadline_ms`), judges it by its own
//! verdict beside the host's invariants, and reports a disagreement as
//! telemetry. A full queue drops the evaluation (counted, WARNING) rather
//! than block a training step; a looping candidate costs the worker one
//! deadline per evaluation and the training loop nothing.
//!
//! The worker stops when the gate service is dropped (its queue closes),
//! after the evaluation in progress, which its deadline bounds.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kasmina_core::{Clock, TelemetrySink};
use kasmina_plugin_host::PluginLimits;
use kasmina_plugin_host::conformance::{self, CheckOptions};
use kasmina_plugin_host::gate::{GateInputs, GatePlugin};
use kasmina_plugin_host::runtime::{Pin, PluginRuntime, PluginSpec};
use leyline::{GateId, SeedStage, TelemetryEvent, TelemetryLevel};

use super::GateCallStats;
use super::judge::{judge_verdict, precheck};

/// Loads the pinned shadow candidate under its own `limits`. A candidate
/// is what has not been vetted yet, so the canary does not refuse it — its
/// failures are exactly what shadowing is for — but they are reported
/// (WARNING `kasmina.gate.shadow_canary`); only a pin, version or import
/// refusal stops it.
pub(crate) fn load_candidate(
    runtime: &PluginRuntime,
    path: &std::path::Path,
    sha256: &str,
    limits: &PluginLimits,
    sink: &dyn TelemetrySink,
    now_ms: u64,
) -> Result<Arc<GatePlugin>, String> {
    let pin = Pin::sha256(sha256).map_err(|e| e.to_string())?;
    let spec = PluginSpec { limits: limits.clone(), ..PluginSpec::new(path, pin) };
    let plugin = GatePlugin::load(runtime, &spec).map_err(|e| e.to_string())?;
    let canary = CheckOptions { limits: limits.clone(), ..CheckOptions::smoke() };
    let report = conformance::check_file_with(runtime, path, &canary);
    if report.check("imports").is_some_and(|c| c.status == conformance::CheckStatus::Fail) {
        return Err(format!("refused: {report}"));
    }
    let failures: Vec<String> = report.failures().map(|c| format!("{}: {}", c.name, c.detail)).collect();
    if !failures.is_empty() {
        tracing::warn!(path = %path.display(), failures = ?failures, "kasmina.gate.shadow_canary");
        sink.emit(
            TelemetryEvent::new(
                "kasmina.gate.shadow_canary",
                TelemetryLevel::Warning,
                format!(
                    "shadow candidate {} fails the canary; it runs anyway, beside the active plugin",
                    path.display()
                ),
                now_ms,
            )
            .attr("plugin", plugin.identity().info.name.as_str())
            .attr("failures", failures.join("; ")),
        );
    }
    Ok(Arc::new(plugin))
}

/// One evaluation for the candidate: what the active plugin saw and decided.
#[derive(Debug)]
pub(super) struct ShadowJob {
    pub(super) gate: GateId,
    pub(super) inputs: GateInputs,
    pub(super) stage: SeedStage,
    pub(super) active_passed: bool,
    pub(super) active_reason: String,
}

/// Evaluations handed over and finished, for [`ShadowEvaluator::settle`].
#[derive(Debug, Default)]
struct Progress {
    queued: u64,
    finished: u64,
}

struct Shared {
    candidate: Arc<GatePlugin>,
    stats: Arc<GateCallStats>,
    sink: Arc<dyn TelemetrySink>,
    clock: Arc<dyn Clock>,
    progress: Mutex<Progress>,
    settled: Condvar,
}

/// The candidate's queue and worker.
pub(super) struct ShadowEvaluator {
    queue: SyncSender<ShadowJob>,
    shared: Arc<Shared>,
}

impl ShadowEvaluator {
    /// Starts the worker with a queue of `capacity` (≥ 1) evaluations.
    pub(super) fn start(
        candidate: Arc<GatePlugin>,
        capacity: usize,
        stats: Arc<GateCallStats>,
        sink: Arc<dyn TelemetrySink>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            candidate,
            stats,
            sink,
            clock,
            progress: Mutex::new(Progress::default()),
            settled: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new().name("kasmina-shadow-gate".to_owned()).spawn(move || run(&worker, &jobs))?;
        Ok(ShadowEvaluator { queue, shared })
    }

    /// The plugin API version the candidate speaks.
    pub(super) fn api_version(&self) -> kasmina_plugin_host::ApiVersion {
        self.shared.candidate.api_version()
    }

    /// Hands one evaluation to the worker without waiting; a full queue
    /// drops it (counted and reported).
    pub(super) fn submit(&self, job: ShadowJob) {
        if precheck(job.gate, &job.inputs).is_some() {
            return; // host-decided: there is nothing for a candidate to judge
        }
        let (seed, gate) = (job.inputs.seed_id.clone(), job.gate);
        self.lock().queued += 1;
        let refused = match self.queue.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "shadow queue full",
            Err(TrySendError::Disconnected(_)) => "shadow worker stopped",
        };
        self.finish_one();
        self.shared.stats.shadow_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.shared.sink.emit(
            TelemetryEvent::new(
                "kasmina.gate.shadow_dropped",
                TelemetryLevel::Warning,
                format!("shadow evaluation of {gate} for {seed} dropped: {refused}"),
                self.shared.clock.now_ms(),
            )
            .seed(seed.as_str())
            .attr("gate", gate.as_str())
            .attr("detail", refused),
        );
    }

    /// Waits until every handed-over evaluation has finished, at most
    /// `timeout`; `true` if they all have.
    pub(super) fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.lock();
        while progress.finished < progress.queued {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            progress = self.shared.settled.wait_timeout(progress, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    fn finish_one(&self) {
        finish(&self.shared);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.shared.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn finish(shared: &Shared) {
    shared.progress.lock().unwrap_or_else(PoisonError::into_inner).finished += 1;
    shared.settled.notify_all();
}

/// The worker: one evaluation at a time until the queue closes.
fn run(shared: &Shared, jobs: &Receiver<ShadowJob>) {
    while let Ok(job) = jobs.recv() {
        evaluate(shared, job);
        finish(shared);
    }
}

fn evaluate(shared: &Shared, job: ShadowJob) {
    let plugin = &shared.candidate;
    let span = tracing::debug_span!("kasmina.gate.shadow", gate = job.gate.as_str(), seed = %job.inputs.seed_id);
    let _entered = span.enter();
    let verdict = plugin.evaluate(job.gate, &job.inputs);
    let seed = job.inputs.seed_id.clone();
    let judgement = judge_verdict(job.gate, verdict, job.inputs);
    let counters = &shared.stats;
    if !judgement.disagrees_with(job.active_passed) {
        counters.shadow_agreements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    counters.shadow_disagreements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let active_word = if job.active_passed { "passed" } else { "failed" };
    let mut event = TelemetryEvent::new(
        "kasmina.gate.shadow_disagreement",
        TelemetryLevel::Warning,
        format!(
            "{} for {seed}: active {active_word} ({}), {}",
            job.gate,
            if job.active_reason.is_empty() { "-" } else { &job.active_reason },
            judgement.describe()
        ),
        shared.clock.now_ms(),
    )
    .seed(seed.as_str())
    .attr("gate", job.gate.as_str())
    .attr("stage", job.stage.as_str())
    .attr("active_passed", job.active_passed)
    .attr("active_reason", job.active_reason.as_str())
    .attr("shadow_passed", judgement.candidate_passed)
    .attr("shadow_reason", judgement.candidate_reason.as_str())
    .attr("shadow_effective_passed", judgement.effective.passed)
    .attr("shadow_plugin", plugin.identity().info.name.as_str());
    if let Some(invariant) = judgement.override_invariant {
        event = event.attr("shadow_invariant_override", invariant);
    }
    for (k, v) in &judgement.effective.attributes {
        event = event.attr(format!("shadow.{k}"), v.clone());
    }
    shared.sink.emit(event);
}
