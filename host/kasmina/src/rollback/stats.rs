//! SLA accounting of the rollback ledger: per budget (fast, full) and per
//! half of the path (capture, restore), how many finished within and over
//! the budget and how long the last one took; exported as metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use leyline::Metric;

use super::{RollbackKind, RollbackSla};

/// Compliance counters of one kind and phase.
#[derive(Debug, Default)]
pub(super) struct PhaseCounters {
    within: AtomicU64,
    over: AtomicU64,
    last_latency_us: AtomicU64,
}

impl PhaseCounters {
    /// Counts one measured latency against `budget_ms`; returns whether it was within.
    pub(super) fn count(&self, latency_us: u64, budget_ms: u64) -> bool {
        let within = latency_us <= budget_ms.saturating_mul(1_000);
        self.last_latency_us.store(latency_us, Ordering::Relaxed);
        if within { &self.within } else { &self.over }.fetch_add(1, Ordering::Relaxed);
        within
    }

    fn stats(&self, budget_ms: u64) -> SlaStats {
        SlaStats {
            budget_ms,
            within: self.within.load(Ordering::Relaxed),
            over: self.over.load(Ordering::Relaxed),
            last_latency_us: self.last_latency_us.load(Ordering::Relaxed),
        }
    }
}

/// Every counter of the ledger.
#[derive(Debug, Default)]
pub(super) struct LedgerCounters {
    pub(super) fast_capture: PhaseCounters,
    pub(super) full_capture: PhaseCounters,
    pub(super) fast_restore: PhaseCounters,
    pub(super) full_restore: PhaseCounters,
    pub(super) capture_failures: AtomicU64,
    pub(super) restore_failures: AtomicU64,
    pub(super) unavailable: AtomicU64,
    pub(super) evicted: AtomicU64,
}

impl LedgerCounters {
    pub(super) fn capture(&self, kind: RollbackKind) -> &PhaseCounters {
        match kind {
            RollbackKind::Fast => &self.fast_capture,
            RollbackKind::Full => &self.full_capture,
        }
    }

    pub(super) fn restore(&self, kind: RollbackKind) -> &PhaseCounters {
        match kind {
            RollbackKind::Fast => &self.fast_restore,
            RollbackKind::Full => &self.full_restore,
        }
    }

    pub(super) fn stats(&self, sla: RollbackSla, points: usize, pending: usize) -> RollbackStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RollbackStats {
            fast: self.fast_capture.stats(sla.fast_ms),
            full: self.full_capture.stats(sla.full_ms),
            fast_restore: self.fast_restore.stats(sla.fast_ms),
            full_restore: self.full_restore.stats(sla.full_ms),
            capture_failures: load(&self.capture_failures),
            restore_failures: load(&self.restore_failures),
            unavailable: load(&self.unavailable),
            points,
            pending,
            evicted: load(&self.evicted),
        }
    }
}

/// Compliance of one kind and phase at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaStats {
    /// Budget, ms.
    pub budget_ms: u64,
    /// Completed within the budget.
    pub within: u64,
    /// Completed over the budget.
    pub over: u64,
    /// Latency of the last one, µs.
    pub last_latency_us: u64,
}

/// Ledger counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackStats {
    /// Readiness (capture) on the fast path.
    pub fast: SlaStats,
    /// Readiness (capture) on the full path.
    pub full: SlaStats,
    /// Restores on the fast path.
    pub fast_restore: SlaStats,
    /// Restores on the full path.
    pub full_restore: SlaStats,
    /// Captures that failed (host or trainer half); the point is unusable.
    pub capture_failures: u64,
    /// Restores that failed; nothing was changed.
    pub restore_failures: u64,
    /// Points that became unrestorable after they were ready (the trainer
    /// evicted or lost the checkpoint).
    pub unavailable: u64,
    /// Points held now.
    pub points: usize,
    /// Points still waiting for the trainer's half.
    pub pending: usize,
    /// Points evicted for the ledger's capacity.
    pub evicted: u64,
}

impl RollbackStats {
    /// Compliance as metrics: `kasmina.rollback.<kind>.{within_sla,over_sla,
    /// last_latency,budget}` for readiness, `…restore_{within_sla,over_sla,
    /// last_latency}` for restores (latencies in ms, fractional), and the
    /// failure, pending, points and eviction counts.
    pub fn metrics(&self) -> Vec<Metric> {
        let metric = |name: String, value: f64, unit: &str| Metric {
            name,
            value,
            unit: unit.to_owned(),
            labels: BTreeMap::new(),
        };
        let ms = |us: u64| us as f64 / 1_000.0;
        let mut out = Vec::new();
        for (kind, capture, restore) in
            [(RollbackKind::Fast, self.fast, self.fast_restore), (RollbackKind::Full, self.full, self.full_restore)]
        {
            let k = kind.as_str();
            out.push(metric(format!("kasmina.rollback.{k}.within_sla"), capture.within as f64, "count"));
            out.push(metric(format!("kasmina.rollback.{k}.over_sla"), capture.over as f64, "count"));
            out.push(metric(format!("kasmina.rollback.{k}.last_latency"), ms(capture.last_latency_us), "ms"));
            out.push(metric(format!("kasmina.rollback.{k}.budget"), capture.budget_ms as f64, "ms"));
            out.push(metric(format!("kasmina.rollback.{k}.restore_within_sla"), restore.within as f64, "count"));
            out.push(metric(format!("kasmina.rollback.{k}.restore_over_sla"), restore.over as f64, "count"));
            out.push(metric(format!("kasmina.rollback.{k}.restore_last_latency"), ms(restore.last_latency_us), "ms"));
        }
        for (name, value) in [
            ("capture_failures", self.capture_failures),
            ("restore_failures", self.restore_failures),
            ("unavailable", self.unavailable),
            ("points", self.points as u64),
            ("pending", self.pending as u64),
            ("evicted", self.evicted),
        ] {
            out.push(metric(format!("kasmina.rollback.{name}"), value as f64, "count"));
        }
        out
    }
}
