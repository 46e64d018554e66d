//! Rollback readiness (SPEC.md §8): a rollback point is recorded on every
//! gate failure and retire, and the time taken to capture what a restore
//! needs is measured against the SLA (fast ≤ 500 ms, full ≤ 12 s by default)
//! and exposed as metrics: counts within and over each budget, last latency.
//!
//! What a point holds is the caller's (`S`): the control plane stores seed
//! metadata, the tensor plane may store parameter snapshots. The ledger
//! times the capture, bounds how many points it keeps (oldest evicted,
//! counted), and resolves restores by id or latest-for-seed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kasmina_core::{Clock, TelemetrySink};
use leyline::{GateId, Metric, SeedStage, TelemetryEvent, TelemetryLevel};

use crate::settings::RollbackSettings;
use crate::telemetry::clip;

/// Rollback points kept before the oldest is evicted.
pub const MAX_ROLLBACK_POINTS: usize = 1_024;
/// Longest capture-error text copied into errors and telemetry.
const DETAIL_CAP: usize = 512;

/// Which readiness budget a capture is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollbackKind {
    /// In-memory state (seed metadata, α, blend config): fast SLA.
    Fast,
    /// Everything needed for a full restore (parameters, optimizer): full SLA.
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
}

impl std::fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackReason::GateFailed(gate) => write!(f, "gate_failed:{gate:?}"),
            RollbackReason::Culled => f.write_str("culled"),
            RollbackReason::Retired => f.write_str("retired"),
            RollbackReason::Emergency => f.write_str("emergency"),
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

/// One recorded rollback point.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPoint<S> {
    /// Unique id (`rb-<created_at_ms>-<sequence>`).
    pub id: String,
    /// Seed it restores.
    pub seed_id: String,
    /// Stage the seed was in when recorded.
    pub stage: SeedStage,
    /// Why it was recorded.
    pub reason: RollbackReason,
    /// Budget it was measured against.
    pub kind: RollbackKind,
    /// When capture started (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Time the capture took, ms.
    pub readiness_latency_ms: u64,
    /// Whether that was within the budget for `kind`.
    pub within_sla: bool,
    /// What was captured.
    pub state: S,
}

/// Why a record or lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// A point must name its seed.
    #[error("rollback point needs a seed id")]
    EmptySeedId,
    /// The capture itself failed; no point was recorded.
    #[error("capturing rollback state for seed {seed_id} failed: {detail}")]
    CaptureFailed {
        /// Seed.
        seed_id: String,
        /// The capture's error.
        detail: String,
    },
    /// No point has this id (never recorded, or evicted).
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
    /// The point exists but belongs to another seed.
    #[error("rollback point {id} belongs to seed {point_seed}, not {requested_seed}")]
    SeedMismatch {
        /// Id asked for.
        id: String,
        /// The point's seed.
        point_seed: String,
        /// The seed asked for.
        requested_seed: String,
    },
}

/// Compliance counters for one kind.
#[derive(Debug, Default)]
struct KindCounters {
    within: AtomicU64,
    over: AtomicU64,
    last_latency_ms: AtomicU64,
}

/// Compliance of one kind at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaStats {
    /// Budget, ms.
    pub budget_ms: u64,
    /// Captures within the budget.
    pub within: u64,
    /// Captures over the budget.
    pub over: u64,
    /// Latency of the last capture, ms.
    pub last_latency_ms: u64,
}

/// Ledger counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackStats {
    /// Fast path compliance.
    pub fast: SlaStats,
    /// Full path compliance.
    pub full: SlaStats,
    /// Captures that failed (no point recorded).
    pub capture_failures: u64,
    /// Points held now.
    pub points: usize,
    /// Points evicted for capacity.
    pub evicted: u64,
}

#[derive(Debug)]
struct Inner<S> {
    by_seq: BTreeMap<u64, Arc<RollbackPoint<S>>>,
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
    fast: KindCounters,
    full: KindCounters,
    capture_failures: AtomicU64,
    evicted: AtomicU64,
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
            fast: KindCounters::default(),
            full: KindCounters::default(),
            capture_failures: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// A ledger with the settings' SLA and [`MAX_ROLLBACK_POINTS`].
    pub fn from_settings(rollback: &RollbackSettings, clock: Arc<dyn Clock>, sink: Arc<dyn TelemetrySink>) -> Self {
        Self::new(RollbackSla::from_settings(rollback), MAX_ROLLBACK_POINTS, clock, sink)
    }

    /// Captures state with `capture` (timed against the SLA for `kind`) and
    /// records a point. A capture over budget is still recorded — the point
    /// is usable — but counted and reported as an ERROR event. A failed
    /// capture records nothing and is reported.
    pub fn record<E: std::fmt::Display>(
        &self,
        seed_id: &str,
        stage: SeedStage,
        reason: RollbackReason,
        kind: RollbackKind,
        capture: impl FnOnce() -> Result<S, E>,
    ) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        if seed_id.is_empty() {
            return Err(RollbackError::EmptySeedId);
        }
        let _span = tracing::debug_span!("kasmina.rollback.record", seed_id, kind = kind.as_str()).entered();
        let started = self.clock.now_ms();
        let captured = capture();
        let finished = self.clock.now_ms();
        let latency = finished.saturating_sub(started);
        let state = match captured {
            Ok(state) => state,
            Err(err) => {
                self.capture_failures.fetch_add(1, Ordering::Relaxed);
                let detail = clip(&err.to_string(), DETAIL_CAP);
                self.sink.emit(
                    TelemetryEvent::new(
                        "kasmina.rollback.capture_failed",
                        TelemetryLevel::Error,
                        "rollback capture failed",
                        finished,
                    )
                    .seed(seed_id)
                    .attr("reason", reason.to_string())
                    .attr("kind", kind.as_str())
                    .attr("detail", detail.clone()),
                );
                return Err(RollbackError::CaptureFailed { seed_id: seed_id.to_owned(), detail });
            }
        };
        let budget = self.sla.budget_ms(kind);
        let within_sla = latency <= budget;
        let counters = self.counters(kind);
        counters.last_latency_ms.store(latency, Ordering::Relaxed);
        if within_sla { &counters.within } else { &counters.over }.fetch_add(1, Ordering::Relaxed);

        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let point = Arc::new(RollbackPoint {
            id: format!("rb-{started}-{seq}"),
            seed_id: seed_id.to_owned(),
            stage,
            reason,
            kind,
            created_at_ms: started,
            readiness_latency_ms: latency,
            within_sla,
            state,
        });
        if inner.by_seq.len() >= self.capacity
            && let Some((old_seq, old)) = inner.by_seq.pop_first()
        {
            inner.by_id.remove(&old.id);
            if let Some(set) = inner.by_seed.get_mut(&old.seed_id) {
                set.remove(&old_seq);
                if set.is_empty() {
                    inner.by_seed.remove(&old.seed_id);
                }
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        inner.by_seq.insert(seq, Arc::clone(&point));
        inner.by_id.insert(point.id.clone(), seq);
        inner.by_seed.entry(seed_id.to_owned()).or_default().insert(seq);
        drop(inner);

        let (level, name) = if within_sla {
            (TelemetryLevel::Info, "kasmina.rollback.recorded")
        } else {
            (TelemetryLevel::Error, "kasmina.rollback.sla_exceeded")
        };
        self.sink.emit(
            TelemetryEvent::new(
                name,
                level,
                format!("rollback point {} ready in {latency} ms (budget {budget} ms)", point.id),
                finished,
            )
            .seed(seed_id)
            .attr("rollback_point_id", point.id.as_str())
            .attr("reason", reason.to_string())
            .attr("kind", kind.as_str())
            .attr("latency_ms", latency)
            .attr("budget_ms", budget)
            .attr("within_sla", within_sla),
        );
        Ok(point)
    }

    /// The point with this id.
    pub fn get(&self, id: &str) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        let inner = self.lock();
        inner
            .by_id
            .get(id)
            .and_then(|seq| inner.by_seq.get(seq))
            .cloned()
            .ok_or_else(|| RollbackError::NotFound { id: id.to_owned() })
    }

    /// The latest point for a seed.
    pub fn latest_for_seed(&self, seed_id: &str) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        let inner = self.lock();
        inner
            .by_seed
            .get(seed_id)
            .and_then(BTreeSet::last)
            .and_then(|seq| inner.by_seq.get(seq))
            .cloned()
            .ok_or_else(|| RollbackError::NoPointForSeed { seed_id: seed_id.to_owned() })
    }

    /// What a ROLLBACK command asks for: the point `id` (which must belong
    /// to `seed_id`), or the seed's latest when `id` is `None`.
    pub fn resolve(&self, seed_id: &str, id: Option<&str>) -> Result<Arc<RollbackPoint<S>>, RollbackError> {
        match id {
            None => self.latest_for_seed(seed_id),
            Some(id) => {
                let point = self.get(id)?;
                if point.seed_id != seed_id {
                    return Err(RollbackError::SeedMismatch {
                        id: id.to_owned(),
                        point_seed: point.seed_id.clone(),
                        requested_seed: seed_id.to_owned(),
                    });
                }
                Ok(point)
            }
        }
    }

    /// Counters and compliance now.
    pub fn stats(&self) -> RollbackStats {
        let sla = |kind: RollbackKind| {
            let c = self.counters(kind);
            SlaStats {
                budget_ms: self.sla.budget_ms(kind),
                within: c.within.load(Ordering::Relaxed),
                over: c.over.load(Ordering::Relaxed),
                last_latency_ms: c.last_latency_ms.load(Ordering::Relaxed),
            }
        };
        RollbackStats {
            fast: sla(RollbackKind::Fast),
            full: sla(RollbackKind::Full),
            capture_failures: self.capture_failures.load(Ordering::Relaxed),
            points: self.lock().by_seq.len(),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Compliance as metrics: `kasmina.rollback.<kind>.{within_sla,over_sla,
    /// last_latency,budget}` plus capture failures, points held and evicted.
    pub fn metrics(&self) -> Vec<Metric> {
        let stats = self.stats();
        let metric = |name: String, value: u64, unit: &str| Metric {
            name,
            value: value as f64,
            unit: unit.to_owned(),
            labels: BTreeMap::new(),
        };
        let mut out = Vec::new();
        for (kind, s) in [(RollbackKind::Fast, stats.fast), (RollbackKind::Full, stats.full)] {
            let k = kind.as_str();
            out.push(metric(format!("kasmina.rollback.{k}.within_sla"), s.within, "count"));
            out.push(metric(format!("kasmina.rollback.{k}.over_sla"), s.over, "count"));
            out.push(metric(format!("kasmina.rollback.{k}.last_latency"), s.last_latency_ms, "ms"));
            out.push(metric(format!("kasmina.rollback.{k}.budget"), s.budget_ms, "ms"));
        }
        out.push(metric("kasmina.rollback.capture_failures".to_owned(), stats.capture_failures, "count"));
        out.push(metric("kasmina.rollback.points".to_owned(), stats.points as u64, "count"));
        out.push(metric("kasmina.rollback.evicted".to_owned(), stats.evicted, "count"));
        out
    }

    fn counters(&self, kind: RollbackKind) -> &KindCounters {
        match kind {
            RollbackKind::Fast => &self.fast,
            RollbackKind::Full => &self.full,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // Indexes are updated together after the point is built; a panic
        // cannot interleave, so a poisoned lock still guards coherent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
