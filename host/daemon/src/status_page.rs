//! The live status page's data: what an operator watching a run wants at
//! a glance — the run, every seed (stage, α, blend mode, health, its last
//! gate verdicts), a timeline of transitions and α/loss sparklines.
//!
//! Fed by push, never by polling the host: [`LiveFeed`] is a
//! [`TelemetryListener`] (gate verdicts, transitions) and [`Observed`]
//! wraps the served [`KasminaApi`] to see each step report as it passes
//! (per-seed loss, then α as the host decided it). Every store is bounded
//! (the constants below); the page itself (`status_page/page.html`, served
//! by [`crate::http`]) is a static file with no external assets that
//! renders [`Snapshot`]s streamed as server-sent events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use leyline::api::{
    ApiError, GraftDirective, HostRegistration, HostStatus, KasminaApi, KernelArtifact, StepReport, TelemetryListener,
    TrainerSettings,
};
use leyline::{AdaptationCommand, Outcome, SeedState, TelemetryEvent};
use serde::Serialize;
use tokio::sync::watch;

/// The page, served at `/` (no build step, no external assets).
pub const PAGE_HTML: &str = include_str!("status_page/page.html");

/// Points kept per sparkline (the run's task loss; α and loss per seed).
pub const SERIES_POINTS: usize = 240;
/// Transitions kept on the timeline.
pub const TIMELINE_ENTRIES: usize = 200;
/// Gate verdicts kept per seed.
pub const VERDICTS_PER_SEED: usize = 6;
/// Seeds tracked; events about further seeds are not kept (a registration
/// declares the slots, and a run with more is refused long before this).
pub const MAX_SEEDS: usize = 1_024;
/// Longest text kept from an event field (reasons are short codes; this
/// caps what a hostile or buggy emitter could make the page hold).
pub const MAX_TEXT: usize = 256;

/// One gate verdict as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerdictView {
    /// `G0`…`G5`.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// The reason (empty when passed).
    pub reason: String,
    /// Event level (`CRITICAL` failures are highlighted).
    pub level: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// One transition on the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransitionView {
    /// Seed.
    pub seed_id: String,
    /// From stage.
    pub from: String,
    /// To stage.
    pub to: String,
    /// Why.
    pub reason: String,
    /// Training step, when known.
    pub step: Option<i64>,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// A seed row of the page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeedView {
    /// The host's state of the seed.
    #[serde(flatten)]
    pub state: SeedState,
    /// The stage as operators read it (`BLENDING`).
    pub stage_name: String,
    /// The blend mode as operators read it (`CONVEX`), if any.
    pub blend_name: Option<String>,
    /// The health as operators read it (`Healthy`).
    pub health_name: String,
    /// Its last gate verdicts, oldest first.
    pub verdicts: Vec<VerdictView>,
    /// α per reported step, oldest first: `[step, alpha]`.
    pub alpha_series: Vec<(u64, f64)>,
    /// Seed loss per reported step, oldest first: `[step, loss]`.
    pub loss_series: Vec<(u64, f64)>,
}

/// What the page shows, in one JSON document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    /// The host's summary (run, seeds, commands, last step).
    pub status: HostStatus,
    /// Every seed, in the host's order.
    pub seeds: Vec<SeedView>,
    /// Transitions, oldest first.
    pub timeline: Vec<TransitionView>,
    /// The run's task loss per reported step, oldest first: `[step, loss]`
    /// (what the trainer reports for the whole model, seeds included).
    pub task_loss_series: Vec<(u64, f64)>,
    /// Bumped on every change the page shows.
    pub version: u64,
}

#[derive(Debug, Default)]
struct Store {
    verdicts: BTreeMap<String, VecDeque<VerdictView>>,
    alpha: BTreeMap<String, VecDeque<(u64, f64)>>,
    loss: BTreeMap<String, VecDeque<(u64, f64)>>,
    task_loss: VecDeque<(u64, f64)>,
    timeline: VecDeque<TransitionView>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(item);
}

fn capped(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Collects what the page shows as it happens; cheap to call from the
/// emitting thread (one short lock, no I/O).
#[derive(Debug)]
pub struct LiveFeed {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed { store: Mutex::default(), changed: watch::channel(0).0 }
    }
}

impl LiveFeed {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // Every update is a few pushes: a panic cannot leave it half-made.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records a step report's task loss, per-seed losses and the α the
    /// host decided.
    pub fn record_step(&self, report: &StepReport, states: &[SeedState]) {
        {
            let mut st = self.store();
            if report.task_loss.is_finite() {
                push_bounded(&mut st.task_loss, (report.step, report.task_loss), SERIES_POINTS);
            }
            for seed in &report.seeds {
                if let Some(loss) = seed.loss.filter(|l| l.is_finite())
                    && (st.loss.contains_key(&seed.seed_id) || st.loss.len() < MAX_SEEDS)
                {
                    let q = st.loss.entry(seed.seed_id.clone()).or_default();
                    push_bounded(q, (report.step, loss), SERIES_POINTS);
                }
            }
            for s in states {
                if st.alpha.contains_key(&s.seed_id) || st.alpha.len() < MAX_SEEDS {
                    let q = st.alpha.entry(s.seed_id.clone()).or_default();
                    push_bounded(q, (report.step, s.alpha), SERIES_POINTS);
                }
            }
        }
        self.bump();
    }

    /// The page's document now, over `states` and `status` read from the host.
    pub fn snapshot(&self, status: HostStatus, states: Vec<SeedState>) -> Snapshot {
        let st = self.store();
        let seeds = states
            .into_iter()
            .map(|state| {
                let id = &state.seed_id;
                SeedView {
                    stage_name: state.stage.as_str().to_owned(),
                    blend_name: state.blend_mode.map(|m| m.as_str().to_owned()),
                    health_name: format!("{:?}", state.health),
                    verdicts: st.verdicts.get(id).map(|q| q.iter().cloned().collect()).unwrap_or_default(),
                    alpha_series: st.alpha.get(id).map(|q| q.iter().copied().collect()).unwrap_or_default(),
                    loss_series: st.loss.get(id).map(|q| q.iter().copied().collect()).unwrap_or_default(),
                    state,
                }
            })
            .collect();
        Snapshot {
            status,
            seeds,
            timeline: st.timeline.iter().cloned().collect(),
            task_loss_series: st.task_loss.iter().copied().collect(),
            version: *self.changed.borrow(),
        }
    }
}

impl TelemetryListener for LiveFeed {
    fn event(&self, e: &TelemetryEvent) {
        // Any event may change what the page shows (command counts, α):
        // wake the streams; they coalesce bursts.
        let Some(seed) = e.seed_id.as_deref() else {
            self.bump();
            return;
        };
        let attr = |k: &str| e.attributes.get(k).map(|v| capped(&v.to_string())).unwrap_or_default();
        match e.name.as_str() {
            "kasmina.gate.verdict" => {
                let mut st = self.store();
                if st.verdicts.contains_key(seed) || st.verdicts.len() < MAX_SEEDS {
                    let view = VerdictView {
                        gate: attr("gate"),
                        passed: attr("passed") == "true",
                        reason: attr("reason"),
                        level: e.level.as_str().to_owned(),
                        at_ms: e.timestamp_ms,
                    };
                    push_bounded(st.verdicts.entry(capped(seed)).or_default(), view, VERDICTS_PER_SEED);
                }
            }
            "kasmina.seed.transition" => {
                let view = TransitionView {
                    seed_id: capped(seed),
                    from: attr("from"),
                    to: attr("to"),
                    reason: attr("reason"),
                    step: attr("step").parse().ok().filter(|s: &i64| *s >= 0),
                    at_ms: e.timestamp_ms,
                };
                push_bounded(&mut self.store().timeline, view, TIMELINE_ENTRIES);
            }
            _ => {}
        }
        self.bump();
    }
}

/// The served API with the page's tap on step reports: every call goes to
/// `inner` unchanged; a step report that the host accepted is recorded in
/// the feed afterwards (its losses, and α as the host now holds it).
pub struct Observed {
    inner: Arc<dyn KasminaApi>,
    feed: Arc<LiveFeed>,
}

impl Observed {
    /// `inner`, observed by `feed`.
    pub fn new(inner: Arc<dyn KasminaApi>, feed: Arc<LiveFeed>) -> Self {
        Observed { inner, feed }
    }
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

impl KasminaApi for Observed {
    fn submit_command(&self, command: AdaptationCommand) -> Result<Outcome, ApiError> {
        self.inner.submit_command(command)
    }
    fn register_host(&self, registration: HostRegistration) -> Result<TrainerSettings, ApiError> {
        self.inner.register_host(registration)
    }
    fn fetch_kernel(&self, blueprint_id: &str) -> Result<KernelArtifact, ApiError> {
        self.inner.fetch_kernel(blueprint_id)
    }
    fn step_report(&self, report: StepReport) -> Result<Vec<GraftDirective>, ApiError> {
        let seen = report.clone();
        let directives = self.inner.step_report(report)?;
        if let Ok(states) = self.inner.seed_states() {
            self.feed.record_step(&seen, &states);
        }
        Ok(directives)
    }
    fn seed_states(&self) -> Result<Vec<SeedState>, ApiError> {
        self.inner.seed_states()
    }
    fn status(&self) -> Result<HostStatus, ApiError> {
        self.inner.status()
    }
    fn drain_telemetry(&self) -> Result<Vec<TelemetryEvent>, ApiError> {
        self.inner.drain_telemetry()
    }
    fn subscribe_telemetry(&self, listener: Arc<dyn TelemetryListener>) -> Result<(), ApiError> {
        self.inner.subscribe_telemetry(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leyline::TelemetryLevel;

    #[test]
    fn the_feed_keeps_verdicts_and_transitions_bounded() {
        let feed = LiveFeed::default();
        for i in 0..(TIMELINE_ENTRIES + 10) {
            feed.event(
                &TelemetryEvent::new("kasmina.seed.transition", TelemetryLevel::Info, "t", i as u64)
                    .seed("s")
                    .attr("from", "DORMANT")
                    .attr("to", "GERMINATED")
                    .attr("reason", "x".repeat(10 * MAX_TEXT))
                    .attr("step", i as i64),
            );
            feed.event(
                &TelemetryEvent::new("kasmina.gate.verdict", TelemetryLevel::Critical, "v", i as u64)
                    .seed("s")
                    .attr("gate", "G1")
                    .attr("passed", false)
                    .attr("reason", "kernel_digest_mismatch"),
            );
        }
        let st = feed.store();
        assert_eq!(st.timeline.len(), TIMELINE_ENTRIES);
        assert!(st.timeline.iter().all(|t| t.reason.chars().count() <= MAX_TEXT + 1));
        assert_eq!(st.verdicts["s"].len(), VERDICTS_PER_SEED);
        assert_eq!(st.verdicts["s"][0].level, "CRITICAL");
    }

    #[test]
    fn the_run_task_loss_is_kept_bounded_and_non_finite_losses_are_skipped() {
        let feed = LiveFeed::default();
        let report = |step: u64, loss: f64| StepReport {
            step,
            training_run_id: "run".to_owned(),
            task_loss: loss,
            global_metric: None,
            seeds: Vec::new(),
            distillation: None,
            checkpoints: Vec::new(),
            ranks: None,
        };
        feed.record_step(&report(1, f64::NAN), &[]);
        assert!(feed.store().task_loss.is_empty(), "a NaN loss is not plotted");
        for step in 1..=(SERIES_POINTS as u64 + 5) {
            feed.record_step(&report(step, 1.0 / step as f64), &[]);
        }
        let status = HostStatus {
            contract_version: leyline::CONTRACT_VERSION,
            training_run_id: Some("run".to_owned()),
            seeds: 0,
            commands_accepted: 0,
            commands_rejected: 0,
            last_step: Some(SERIES_POINTS as u64 + 5),
        };
        let snapshot = feed.snapshot(status, Vec::new());
        assert_eq!(snapshot.task_loss_series.len(), SERIES_POINTS);
        assert_eq!(snapshot.task_loss_series.first().map(|p| p.0), Some(6), "the oldest points went first");
        assert_eq!(
            snapshot.task_loss_series.last(),
            Some(&(SERIES_POINTS as u64 + 5, 1.0 / (SERIES_POINTS as f64 + 5.0)))
        );
    }
}
