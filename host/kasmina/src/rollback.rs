//! Rollback readiness (SPEC.md §8): a rollback point is recorded on every
//! gate failure, cull and retire; it holds what is needed to return to it,
//! and the time its capture and its restore take are measured against the
//! SLA (fast ≤ 500 ms, full ≤ 12 s by default) and exposed as metrics.
//!
//! A point has two halves. The control plane's half (`S`: every seed's
//! state and the breakers) is captured by [`RollbackLedger::record`], timed
//! with a monotonic clock around the real capture. The trainer's half — a
//! checkpoint of the weights, in memory (fast) or on disk (full) — is
//! captured when the trainer applies the checkpoint directive and timed by
//! the trainer around the real copy or write; it is confirmed with
//! [`RollbackLedger::confirm_capture`]. Readiness latency is the sum, and
//! only a confirmed point resolves: a pending, failed or evicted one is
//! refused with its reason. Restores are accounted the same way
//! ([`RollbackLedger::record_restore`]).
//!
//! The ledger bounds how many points it keeps (oldest evicted, counted).

mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use kasmina_core::{Clock, TelemetrySink};
use leyline::{GateId, Metric, SeedStage, TelemetryEvent, TelemetryLevel};

use self::stats::LedgerCounters;
pub use self::stats::{RollbackStats, SlaStats};
use crate::settings::RollbackSettings;
use crate::telemetry::clip;

/// Rollback points kept before the oldest is evicted.
pub const MAX_ROLLBACK_POINTS: usize = 1_024;
/// Longest error text copied into errors and telemetry.
const DETAIL_CAP: usize = 512;

/// Which readiness budget a point is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollbackKind {
    /// Weights checkpointed in the trainer's memory: fast SLA.
    Fast,
    /// Weights checkpointed on the trainer's disk (survives a trainer crash): full SLA.
    Full,
}

impl RollbackKind {
    /// Stable lower-case name used in metric names.
    pub const fn as_str(self) -> &'static str {
        match self {
            RollbackKind::Fast => "fast",
            RollbackKind::Full => "full",
        }
    }

    /// Whether the trainer writes the checkpoint to disk.
    pub const fn durable(self) -> bool {
        matches!(self, RollbackKind::Full)
    }
}

/// Why a rollback point was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackReason {
    /// A lifecycle gate failed.
    GateFailed(GateId),
    /// The seed was culled by command.
    Culled,
    /// The seed was retired (fossilized or terminated).
    Retired,
    /// Emergency cleanup.
    Emergency,
    /// The trainer did not take a seed back after a restart or reconnect.
    ResyncFailed,
}

impl RollbackReason {
    /// The path a point recorded for this reason takes: retiring a seed
    /// changes the model for good, so its point is durable (full path);
    /// every other point is kept in memory (fast path).
    pub const fn kind(self) -> RollbackKind {
        match self {
            RollbackReason::Retired => RollbackKind::Full,
            _ => RollbackKind::Fast,
        }
    }
}

impl std::fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackReason::GateFailed(gate) => write!(f, "gate_failed:{gate:?}"),
            RollbackReason::Culled => f.write_str("culled"),
            RollbackReason::Retired => f.write_str("retired"),
            RollbackReason::Emergency => f.write_str("emergency"),
            RollbackReason::ResyncFailed => f.write_str("resync_failed"),
        }
    }
}

/// The SLA budgets, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackSla {
    /// Fast path budget.
    pub fast_ms: u64,
    /// Full path budget.
    pub full_ms: u64,
}

impl RollbackSla {
    /// The budgets from the settings.
    pub fn from_settings(rollback: &RollbackSettings) -> Self {
        RollbackSla { fast_ms: rollback.fast_sla_ms, full_ms: rollback.full_sla_ms }
    }

    /// The budget for `kind`.
    pub const fn budget_ms(&self, kind: RollbackKind) -> u64 {
        match kind {
            RollbackKind::Fast => self.fast_ms,
            RollbackKind::Full => self.full_ms,
        }
    }
}

/// One recorded rollback point (the control plane's half).
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPoint<S> {
    /// Unique id (`rb-<created_at_ms>-<sequence>`).
    pub id: String,
    /// The seed whose event recorded it.
    pub seed_id: String,
    /// Every seed a ROLLBACK may name to reach this point (the recording
    /// seed first; an emergency point covers every seed it culled).
    pub seed_ids: Vec<String>,
    /// Stage the recording seed was in.
    pub stage: SeedStage,
    /// Why it was recorded.
    pub reason: RollbackReason,
    /// Budget it is measured against (and where the trainer keeps the weights).
    pub kind: RollbackKind,
    /// When capture started (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Time the control plane's own capture took, µs.
    pub host_capture_us: u64,
    /// What the control plane captured.
    pub state: S,
}

/// Whether a point can be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointStatus {
    /// The trainer has not confirmed its checkpoint yet.
    Pending,
    /// Both halves are captured: restorable.
    Ready {
        /// Readiness latency (control plane + trainer capture), µs.
        readiness_us: u64,
        /// Whether that was within the budget of the point's kind.
        within_sla: bool,
        /// Bytes the trainer holds for it.
        bytes: u64,
    },
    /// It can no longer be restored, and why.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// Why a record, lookup or update failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// A point must name its seed.
    #[error("rollback point needs a seed id")]
    EmptySeedId,
    /// The control plane's capture failed; no point was recorded.
    #[error("capturing rollback state for seed {seed_id} failed: {detail}")]
    CaptureFailed {
        /// Seed.
        seed_id: String,
        /// The capture's error.
        detail: String,
    },
    /// No point has this id (never recorded, evicted, or from before a restart).
    #[error("no rollback point {id}")]
    NotFound {
        /// Id asked for.
        id: String,
    },
    /// The seed has no rollback point.
    #[error("seed {seed_id} has no rollback point")]
    NoPointForSeed {
        /// Seed asked for.
        seed_id: String,
    },
    /// The point exists but does not cover the seed asked for.
    #[error("rollback point {id} belongs to seed {point_seed}, not {requested_seed}")]
    SeedMismatch {
        /// Id asked for.
        id: String,
        /// The point's seed.
        point_seed: String,
        /// The seed asked for.
        requested_seed: String,
    },
    /// The trainer has not confirmed the point's checkpoint yet.
    #[error("rollback point {id} is not ready: the trainer has not confirmed its weights checkpoint yet")]
    NotReady {
        /// Point id.
        id: String,
    },
    /// The point can no longer be restored.
    #[error("rollback point {id} can no longer be restored: {reason}")]
    Unavailable {
        /// Point id.
        id: String,
        /// Why.
        reason: String,
    },
}

struct Entry<S> {
    point: Arc<RollbackPoint<S>>,
    status: PointStatus,
}

struct Inner<S> {
    by_seq: BTreeMap<u64, Entry<S>>,
    by_id: HashMap<String, u64>,
    by_seed: HashMap<String, BTreeSet<u64>>,
    next_seq: u64,
}

/// Rollback points, bounded, with SLA accounting. Thread-safe.
pub struct RollbackLedger<S> {
    sla: RollbackSla,
    capacity: usize,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TelemetrySink>,
    inner: Mutex<Inner<S>>,
    counters: LedgerCounters,
}

impl<S> std::fmt::Debug for RollbackLedger<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollbackLedger").field("sla", &self.sla).field("stats", &self.stats()).finish()
    }
}

impl<S> RollbackLedger<S> {
    /// A ledger keeping at most `capacity` (≥ 1) points.
    pub fn new(sla: RollbackSla, capacity: usize, clock: Arc<dyn Clock>, sink: Arc<dyn TelemetrySink>) -> Self {
        RollbackLedger {
            sla,
            capacity: capacity.max(1),
            clock,
            sink,
            inner: Mutex::new(Inner {
                by_seq: BTreeMap::new(),
                by_id: HashMap::new(),
                by_seed: HashMap::new(),
                next_seq: 0,
            }),
            counters: LedgerCounters::default(),
        }
    }

    /// A ledger with the settings' SLA and [`MAX_ROLLBACK_POINTS`].
    pub fn from_settings(rollback: &RollbackSettings, clock: Arc<dyn Clock>, sink: Arc<dyn TelemetrySink>) -> Self {
        Self::new(RollbackSla::from_settings(rollback), MAX_ROLLBACK_POINTS, clock, sink)
    }

    /// The SLA budgets.
    pub fn sla(&self) -> RollbackSla {
        self.sla
    }

    /// Captures the control plane's half with `capture` (timed around the
    /// call) and records a **pending** point covering `seed_ids` (the first
    /// is the recording seed). It resolves only once the trainer's half is
    /// confirmed. A failed capture records nothing and is reported.
    pub fn record<E: std::fmt::Display>(
        &self,
        seed_ids: &[&str],
        stage: SeedStage,
        reason: RollbackReason,
        kind: RollbackKind,
        capture: impl FnOnce() -> Result<S, E>,
    ) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        let Some(seed_id) = seed_ids.first().copied().filter(|s| !s.is_empty()) else {
            return Err(RollbackError::EmptySeedId);
        };
        let _span = tracing::debug_span!("kasmina.rollback.record", seed_id, kind = kind.as_str()).entered();
        let created_at_ms = self.clock.now_ms();
        let started = Instant::now();
        let captured = capture();
        let host_capture_us = elapsed_us(started);
        let state = match captured {
            Ok(state) => state,
            Err(err) => {
                self.counters.capture_failures.fetch_add(1, Ordering::Relaxed);
                let detail = clip(&err.to_string(), DETAIL_CAP);
                self.emit(
                    self.event("kasmina.rollback.capture_failed", TelemetryLevel::Error, "rollback capture failed")
                        .seed(seed_id)
                        .attr("reason", reason.to_string())
                        .attr("kind", kind.as_str())
                        .attr("detail", detail.clone()),
                );
                return Err(RollbackError::CaptureFailed { seed_id: seed_id.to_owned(), detail });
            }
        };
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let mut covered: Vec<String> = Vec::new();
        for id in seed_ids.iter().filter(|s| !s.is_empty()) {
            if !covered.iter().any(|c| c == id) {
                covered.push((*id).to_owned());
            }
        }
        let point = Arc::new(RollbackPoint {
            id: format!("rb-{created_at_ms}-{seq}"),
            seed_id: seed_id.to_owned(),
            seed_ids: covered,
            stage,
            reason,
            kind,
            created_at_ms,
            host_capture_us,
            state,
        });
        if inner.by_seq.len() >= self.capacity
            && let Some((old_seq, old)) = inner.by_seq.pop_first()
        {
            inner.by_id.remove(&old.point.id);
            for seed in &old.point.seed_ids {
                if let Some(set) = inner.by_seed.get_mut(seed) {
                    set.remove(&old_seq);
                    if set.is_empty() {
                        inner.by_seed.remove(seed);
                    }
                }
            }
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        inner.by_seq.insert(seq, Entry { point: Arc::clone(&point), status: PointStatus::Pending });
        inner.by_id.insert(point.id.clone(), seq);
        for seed in &point.seed_ids {
            inner.by_seed.entry(seed.clone()).or_default().insert(seq);
        }
        Ok(point)
    }

    /// The trainer captured its half in `trainer_us`: the point is ready.
    /// Readiness latency (control plane + trainer) is counted against the
    /// point's budget; over budget it is still usable but reported as an
    /// ERROR event.
    pub fn confirm_capture(&self, id: &str, trainer_us: u64, bytes: u64) -> Result<PointStatus, RollbackError> {
        let (point, status) = {
            let mut inner = self.lock();
            let entry = find_mut(&mut inner, id)?;
            if entry.status != PointStatus::Pending {
                return Err(RollbackError::Unavailable {
                    id: id.to_owned(),
                    reason: format!("a capture was already reported ({:?})", entry.status),
                });
            }
            let readiness_us = entry.point.host_capture_us.saturating_add(trainer_us);
            let within_sla =
                self.counters.capture(entry.point.kind).count(readiness_us, self.sla.budget_ms(entry.point.kind));
            entry.status = PointStatus::Ready { readiness_us, within_sla, bytes };
            (Arc::clone(&entry.point), entry.status.clone())
        };
        let PointStatus::Ready { readiness_us, within_sla, .. } = status else { return Ok(status) };
        let budget = self.sla.budget_ms(point.kind);
        let (level, name) = if within_sla {
            (TelemetryLevel::Info, "kasmina.rollback.recorded")
        } else {
            (TelemetryLevel::Error, "kasmina.rollback.sla_exceeded")
        };
        let message =
            format!("rollback point {} ready in {:.3} ms (budget {budget} ms)", point.id, readiness_us as f64 / 1e3);
        self.emit(
            self.point_event(name, level, message, &point)
                .attr("latency_us", readiness_us)
                .attr("host_capture_us", point.host_capture_us)
                .attr("trainer_capture_us", trainer_us)
                .attr("bytes", bytes)
                .attr("budget_ms", budget)
                .attr("within_sla", within_sla),
        );
        Ok(status)
    }

    /// The point can no longer be restored. `capture_failed` says whether
    /// its capture failed (counted as a capture failure) or a ready point
    /// was lost later (the trainer evicted or no longer holds it).
    pub fn mark_unavailable(&self, id: &str, reason: &str, capture_failed: bool) -> Result<(), RollbackError> {
        let reason = clip(reason, DETAIL_CAP);
        let point = {
            let mut inner = self.lock();
            let entry = find_mut(&mut inner, id)?;
            if matches!(entry.status, PointStatus::Unavailable { .. }) {
                return Ok(());
            }
            entry.status = PointStatus::Unavailable { reason: reason.clone() };
            Arc::clone(&entry.point)
        };
        let (counter, name, level) = if capture_failed {
            (&self.counters.capture_failures, "kasmina.rollback.capture_failed", TelemetryLevel::Error)
        } else {
            (&self.counters.unavailable, "kasmina.rollback.unavailable", TelemetryLevel::Warning)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let message = format!("rollback point {} can no longer be restored: {reason}", point.id);
        self.emit(self.point_event(name, level, message, &point).attr("detail", reason));
        Ok(())
    }

    /// A restore to `id` completed: the trainer's half took `trainer_us`,
    /// the control plane's `host_us`. Counted against the point's budget;
    /// returns whether it was within.
    pub fn record_restore(&self, id: &str, host_us: u64, trainer_us: u64) -> Result<bool, RollbackError> {
        let point = self.get(id)?;
        let latency = host_us.saturating_add(trainer_us);
        let budget = self.sla.budget_ms(point.kind);
        let within = self.counters.restore(point.kind).count(latency, budget);
        let level = if within { TelemetryLevel::Info } else { TelemetryLevel::Error };
        let message =
            format!("restored rollback point {} in {:.3} ms (budget {budget} ms)", point.id, latency as f64 / 1e3);
        self.emit(
            self.point_event("kasmina.rollback.restored", level, message, &point)
                .attr("latency_us", latency)
                .attr("host_restore_us", host_us)
                .attr("trainer_restore_us", trainer_us)
                .attr("budget_ms", budget)
                .attr("within_sla", within),
        );
        Ok(within)
    }

    /// A restore to `id` failed; nothing was changed. Counted and reported.
    pub fn restore_failed(&self, id: &str, reason: &str) {
        self.counters.restore_failures.fetch_add(1, Ordering::Relaxed);
        let mut event = self
            .event(
                "kasmina.rollback.restore_failed",
                TelemetryLevel::Error,
                format!("rollback to {id} failed: {reason}"),
            )
            .attr("rollback_point_id", id)
            .attr("detail", clip(reason, DETAIL_CAP));
        if let Ok(point) = self.get(id) {
            event = event.seed(point.seed_id.as_str()).attr("kind", point.kind.as_str());
        }
        self.emit(event);
    }

    /// The point with this id, whatever its status.
    pub fn get(&self, id: &str) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        let inner = self.lock();
        inner
            .by_id
            .get(id)
            .and_then(|seq| inner.by_seq.get(seq))
            .map(|e| Arc::clone(&e.point))
            .ok_or_else(|| RollbackError::NotFound { id: id.to_owned() })
    }

    /// The status of the point with this id.
    pub fn status(&self, id: &str) -> Result<PointStatus, RollbackError> {
        let inner = self.lock();
        inner
            .by_id
            .get(id)
            .and_then(|seq| inner.by_seq.get(seq))
            .map(|e| e.status.clone())
            .ok_or_else(|| RollbackError::NotFound { id: id.to_owned() })
    }

    /// The latest point covering a seed, whatever its status.
    pub fn latest_for_seed(&self, seed_id: &str) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        let inner = self.lock();
        inner
            .by_seed
            .get(seed_id)
            .and_then(BTreeSet::last)
            .and_then(|seq| inner.by_seq.get(seq))
            .map(|e| Arc::clone(&e.point))
            .ok_or_else(|| RollbackError::NoPointForSeed { seed_id: seed_id.to_owned() })
    }

    /// What a ROLLBACK command asks for: the point `id` (which must cover
    /// `seed_id`), or the seed's latest when `id` is `None` — and it must be
    /// ready. There is no falling back to an older point: a latest point
    /// that cannot be restored is refused, naming why.
    pub fn resolve(&self, seed_id: &str, id: Option<&str>) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        let point = match id {
            None => self.latest_for_seed(seed_id)?,
            Some(id) => {
                let point = self.get(id)?;
                if !point.seed_ids.iter().any(|s| s == seed_id) {
                    return Err(RollbackError::SeedMismatch {
                        id: id.to_owned(),
                        point_seed: point.seed_id.clone(),
                        requested_seed: seed_id.to_owned(),
                    });
                }
                point
            }
        };
        match self.status(&point.id)? {
            PointStatus::Ready { .. } => Ok(point),
            PointStatus::Pending => Err(RollbackError::NotReady { id: point.id.clone() }),
            PointStatus::Unavailable { reason } => Err(RollbackError::Unavailable { id: point.id.clone(), reason }),
        }
    }

    /// Ids of ready points (to check against what a trainer still holds).
    pub fn ready_ids(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .by_seq
            .values()
            .filter(|e| matches!(e.status, PointStatus::Ready { .. }))
            .map(|e| e.point.id.clone())
            .collect()
    }

    /// Counters and compliance now.
    pub fn stats(&self) -> RollbackStats {
        let (points, pending) = {
            let inner = self.lock();
            (inner.by_seq.len(), inner.by_seq.values().filter(|e| e.status == PointStatus::Pending).count())
        };
        self.counters.stats(self.sla, points, pending)
    }

    /// Compliance as metrics (see [`RollbackStats::metrics`]).
    pub fn metrics(&self) -> Vec<Metric> {
        self.stats().metrics()
    }

    fn event(&self, name: &str, level: TelemetryLevel, message: impl Into<String>) -> TelemetryEvent {
        TelemetryEvent::new(name, level, message, self.clock.now_ms())
    }

    fn point_event(
        &self,
        name: &str,
        level: TelemetryLevel,
        message: String,
        point: &RollbackPoint<S>,
    ) -> TelemetryEvent {
        self.event(name, level, message)
            .seed(point.seed_id.as_str())
            .attr("rollback_point_id", point.id.as_str())
            .attr("reason", point.reason.to_string())
            .attr("kind", point.kind.as_str())
    }

    fn emit(&self, event: TelemetryEvent) {
        self.sink.emit(event);
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // Indexes are updated together after the point is built; a panic
        // cannot interleave, so a poisoned lock still guards coherent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn find_mut<'a, S>(inner: &'a mut Inner<S>, id: &str) -> Result<&'a mut Entry<S>, RollbackError> {
    let seq = *inner.by_id.get(id).ok_or_else(|| RollbackError::NotFound { id: id.to_owned() })?;
    inner.by_seq.get_mut(&seq).ok_or_else(|| RollbackError::NotFound { id: id.to_owned() })
}

/// Microseconds since `started` (monotonic), at least 1 so that a measured
/// capture is never indistinguishable from an unmeasured one.
pub(crate) fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
}
