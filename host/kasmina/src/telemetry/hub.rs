//! The telemetry hub: every component's [`TelemetrySink`].
//!
//! Normal events and metrics accumulate in one bounded buffer until
//! [`TelemetryHub::finalize_step`] turns them into one packet per seed plus a
//! global packet. When the buffer is full new items are dropped and counted:
//! the hub never blocks and never grows. CRITICAL events never enter that
//! buffer: they go at once to every subscriber's own bounded channel and to a
//! ring of recent CRITICAL events, so they arrive even when the normal queue
//! is saturated. Every event is also pushed, as it is emitted, to every
//! [`TelemetryListener`] (the daemon's fan-out to observers, the embedded
//! host's outbox): nothing waits for a step to be finalized or for a poll.
//! Every event is also written to `tracing`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kasmina_core::{Clock, TelemetrySink};
use leyline::api::TelemetryListener;
use leyline::{HealthStatus, Metric, TelemetryEvent, TelemetryLevel, TelemetryPacket};
use tokio::sync::mpsc;

use super::counters::IntervalCounter;
use super::health::HealthTracker;
use crate::settings::TelemetrySettings;

/// Finalized steps over which a seed's worst event sets its health.
pub const HEALTH_WINDOW_STEPS: u64 = 10;
/// Most seeds whose health is tracked at once; beyond it events still flow
/// but the seed's health is not tracked (counted in `untracked_seed_events`).
pub const MAX_TRACKED_SEEDS: usize = 65_536;

/// Sizes of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// Normal items (events + metrics) held between steps.
    pub queue_capacity: usize,
    /// Per-subscriber CRITICAL channel capacity, and the recent-CRITICAL ring.
    pub critical_capacity: usize,
    /// See [`HEALTH_WINDOW_STEPS`].
    pub health_window_steps: u64,
    /// See [`MAX_TRACKED_SEEDS`].
    pub max_tracked_seeds: usize,
}

impl HubConfig {
    /// Sizes from the settings (health constants from this module).
    pub fn from_settings(telemetry: &TelemetrySettings) -> Self {
        HubConfig {
            queue_capacity: telemetry.queue_capacity.max(1),
            critical_capacity: telemetry.critical_capacity.max(1),
            health_window_steps: HEALTH_WINDOW_STEPS,
            max_tracked_seeds: MAX_TRACKED_SEEDS,
        }
    }
}

/// A call the hub refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// Steps must increase, or packets of two steps would be mixed.
    #[error("finalize_step({step}) after step {last}: steps must increase")]
    StepNotIncreasing {
        /// Step asked for.
        step: u64,
        /// Last finalized step.
        last: u64,
    },
}

/// Hub counters (cumulative or one interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Normal items accepted into the queue.
    pub queued: u64,
    /// Normal items dropped because the queue was full.
    pub dropped: u64,
    /// CRITICAL events handled (always accepted).
    pub critical: u64,
    /// CRITICAL deliveries to subscribers.
    pub critical_delivered: u64,
    /// CRITICAL deliveries refused because a subscriber's channel was full.
    pub critical_subscriber_full: u64,
    /// Packets produced by `finalize_step`.
    pub packets: u64,
}

#[derive(Debug, Default)]
struct StepBuffer {
    events: Vec<TelemetryEvent>,
    metrics: Vec<(Option<String>, Metric)>,
}

#[derive(Debug)]
struct Critical {
    subscribers: Vec<mpsc::Sender<TelemetryEvent>>,
    recent: VecDeque<TelemetryEvent>,
}

#[derive(Debug, Default)]
struct Counters {
    queued: IntervalCounter,
    dropped: IntervalCounter,
    critical: IntervalCounter,
    critical_delivered: IntervalCounter,
    critical_subscriber_full: IntervalCounter,
    packets: IntervalCounter,
}

/// Receives CRITICAL events as they happen. Works from sync code
/// (`try_recv`, `blocking_recv` outside a runtime) and async code (`recv`).
#[derive(Debug)]
pub struct CriticalReceiver(mpsc::Receiver<TelemetryEvent>);

impl CriticalReceiver {
    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<TelemetryEvent> {
        self.0.try_recv().ok()
    }

    /// Waits for the next event; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<TelemetryEvent> {
        self.0.recv().await
    }

    /// Blocks for the next event. Must not be called inside an async runtime.
    pub fn blocking_recv(&mut self) -> Option<TelemetryEvent> {
        self.0.blocking_recv()
    }
}

/// The telemetry hub. Thread-safe; share it as `Arc<dyn TelemetrySink>`.
pub struct TelemetryHub {
    listeners: std::sync::RwLock<Vec<Arc<dyn TelemetryListener>>>,
    config: HubConfig,
    clock: Arc<dyn Clock>,
    buffer: Mutex<StepBuffer>,
    critical: Mutex<Critical>,
    health: Mutex<HealthTracker>,
    last_step: Mutex<Option<u64>>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded value is updated in single steps; a panic elsewhere cannot
    // leave it half-written, so the data behind a poisoned lock is usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TelemetryHub {
    /// A hub of the given sizes.
    pub fn new(config: HubConfig, clock: Arc<dyn Clock>) -> Self {
        let config = HubConfig {
            queue_capacity: config.queue_capacity.max(1),
            critical_capacity: config.critical_capacity.max(1),
            ..config
        };
        TelemetryHub {
            listeners: std::sync::RwLock::new(Vec::new()),
            config,
            clock,
            buffer: Mutex::new(StepBuffer::default()),
            critical: Mutex::new(Critical { subscribers: Vec::new(), recent: VecDeque::new() }),
            health: Mutex::new(HealthTracker::new(config.health_window_steps, config.max_tracked_seeds)),
            last_step: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    /// A hub sized by the settings.
    pub fn from_settings(telemetry: &TelemetrySettings, clock: Arc<dyn Clock>) -> Self {
        Self::new(HubConfig::from_settings(telemetry), clock)
    }

    /// A new receiver of every CRITICAL event from now on, with its own
    /// bounded channel (a slow subscriber loses events, counted; it never
    /// slows the hub or other subscribers).
    pub fn subscribe_critical(&self) -> CriticalReceiver {
        let (tx, rx) = mpsc::channel(self.config.critical_capacity);
        lock(&self.critical).subscribers.push(tx);
        CriticalReceiver(rx)
    }

    /// Adds a listener that receives every event from now on, as emitted.
    pub fn add_listener(&self, listener: Arc<dyn TelemetryListener>) {
        self.listeners.write().unwrap_or_else(PoisonError::into_inner).push(listener);
    }

    /// The most recent CRITICAL events, oldest first (bounded ring).
    pub fn recent_critical(&self) -> Vec<TelemetryEvent> {
        lock(&self.critical).recent.iter().cloned().collect()
    }

    /// Records a metric for `seed_id` (or the host when `None`) in this step.
    pub fn record_metric(&self, seed_id: Option<&str>, metric: Metric) {
        let mut buffer = lock(&self.buffer);
        if buffer.events.len() + buffer.metrics.len() >= self.config.queue_capacity {
            self.counters.dropped.incr();
            return;
        }
        buffer.metrics.push((seed_id.map(str::to_owned), metric));
        self.counters.queued.incr();
    }

    /// Health of one seed now.
    pub fn health(&self, seed_id: &str) -> HealthStatus {
        lock(&self.health).status(seed_id)
    }

    /// Stops tracking a seed's health (slot reset or retired).
    pub fn forget_seed(&self, seed_id: &str) {
        lock(&self.health).forget(seed_id);
    }

    /// Normal items waiting for the next `finalize_step`.
    pub fn queued_len(&self) -> usize {
        let buffer = lock(&self.buffer);
        buffer.events.len() + buffer.metrics.len()
    }

    /// Ends a training step: one packet per seed with activity (events,
    /// metrics or CRITICAL events this step) and one global packet, last.
    pub fn finalize_step(&self, step: u64) -> Result<Vec<TelemetryPacket>, TelemetryError> {
        let _span = tracing::debug_span!("kasmina.telemetry.finalize_step", step).entered();
        {
            let mut last = lock(&self.last_step);
            if let Some(prev) = *last
                && step <= prev
            {
                return Err(TelemetryError::StepNotIncreasing { step, last: prev });
            }
            *last = Some(step);
        }
        let taken = std::mem::take(&mut *lock(&self.buffer));
        let mut per_seed: BTreeMap<String, TelemetryPacket> = BTreeMap::new();
        let mut global = TelemetryPacket { step, seed_id: None, health: None, events: Vec::new(), metrics: Vec::new() };
        for event in taken.events {
            match event.seed_id.clone() {
                Some(seed) => entry(&mut per_seed, step, seed).events.push(event),
                None => global.events.push(event),
            }
        }
        for (seed, metric) in taken.metrics {
            match seed {
                Some(seed) => entry(&mut per_seed, step, seed).metrics.push(metric),
                None => global.metrics.push(metric),
            }
        }
        let mut health = lock(&self.health);
        for seed in health.seeds_with_critical().map(str::to_owned).collect::<Vec<_>>() {
            let count = health.critical_this_epoch(&seed);
            entry(&mut per_seed, step, seed).metrics.push(count_metric("kasmina.telemetry.critical_events", count));
        }
        for packet in per_seed.values_mut() {
            packet.health = packet.seed_id.as_deref().map(|s| health.status(s));
        }
        global.health = Some(health.worst());
        let untracked = health.untracked();
        health.advance();
        drop(health);

        let interval = self.take_interval_stats();
        global.metrics.extend([
            count_metric("kasmina.telemetry.queued", interval.queued),
            count_metric("kasmina.telemetry.dropped", interval.dropped),
            count_metric("kasmina.telemetry.critical", interval.critical),
            count_metric("kasmina.telemetry.critical_subscriber_full", interval.critical_subscriber_full),
            count_metric("kasmina.telemetry.untracked_seed_events_total", untracked),
        ]);
        let mut packets: Vec<TelemetryPacket> = per_seed.into_values().collect();
        packets.push(global);
        // Interval counters were just reset, so the packet count restarts here.
        self.counters.packets.add(packets.len() as u64);
        Ok(packets)
    }

    /// Cumulative counters.
    pub fn stats(&self) -> HubStats {
        let c = &self.counters;
        HubStats {
            queued: c.queued.total(),
            dropped: c.dropped.total(),
            critical: c.critical.total(),
            critical_delivered: c.critical_delivered.total(),
            critical_subscriber_full: c.critical_subscriber_full.total(),
            packets: c.packets.total(),
        }
    }

    /// Counters since the last call (snapshot-and-reset). `finalize_step`
    /// takes them too, so each global packet reports its own step.
    pub fn take_interval_stats(&self) -> HubStats {
        let c = &self.counters;
        HubStats {
            queued: c.queued.take_interval(),
            dropped: c.dropped.take_interval(),
            critical: c.critical.take_interval(),
            critical_delivered: c.critical_delivered.take_interval(),
            critical_subscriber_full: c.critical_subscriber_full.take_interval(),
            packets: c.packets.take_interval(),
        }
    }

    fn deliver_critical(&self, event: TelemetryEvent) {
        self.counters.critical.incr();
        let mut critical = lock(&self.critical);
        let mut delivered = 0;
        let mut full = 0;
        critical.subscribers.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                full += 1;
                true
            }
            // The receiver was dropped: forget the subscriber.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if critical.recent.len() >= self.config.critical_capacity {
            critical.recent.pop_front();
        }
        critical.recent.push_back(event);
        drop(critical);
        self.counters.critical_delivered.add(delivered);
        self.counters.critical_subscriber_full.add(full);
    }

    fn enqueue(&self, event: TelemetryEvent) {
        let mut buffer = lock(&self.buffer);
        if buffer.events.len() + buffer.metrics.len() >= self.config.queue_capacity {
            drop(buffer);
            self.counters.dropped.incr();
            return;
        }
        buffer.events.push(event);
        drop(buffer);
        self.counters.queued.incr();
    }

    /// The hub's clock (for components that stamp events through it).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

impl std::fmt::Debug for TelemetryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryHub")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TelemetrySink for TelemetryHub {
    fn emit(&self, event: TelemetryEvent) {
        trace_event(&event);
        if let Some(seed) = event.seed_id.as_deref() {
            lock(&self.health).observe(seed, event.level);
        }
        for listener in self.listeners.read().unwrap_or_else(PoisonError::into_inner).iter() {
            listener.event(&event);
        }
        if event.level == TelemetryLevel::Critical {
            self.deliver_critical(event);
        } else {
            self.enqueue(event);
        }
    }
}

fn entry(map: &mut BTreeMap<String, TelemetryPacket>, step: u64, seed: String) -> &mut TelemetryPacket {
    map.entry(seed.clone()).or_insert_with(|| TelemetryPacket {
        step,
        seed_id: Some(seed),
        health: None,
        events: Vec::new(),
        metrics: Vec::new(),
    })
}

fn count_metric(name: &str, value: u64) -> Metric {
    Metric { name: name.to_owned(), value: value as f64, unit: "count".to_owned(), labels: BTreeMap::new() }
}

fn trace_event(e: &TelemetryEvent) {
    let seed = e.seed_id.as_deref().unwrap_or("-");
    match e.level {
        TelemetryLevel::Info => tracing::info!(event = %e.name, seed, attrs = ?e.attributes, "{}", e.message),
        TelemetryLevel::Warning => tracing::warn!(event = %e.name, seed, attrs = ?e.attributes, "{}", e.message),
        TelemetryLevel::Error => tracing::error!(event = %e.name, seed, attrs = ?e.attributes, "{}", e.message),
        TelemetryLevel::Critical => {
            tracing::error!(event = %e.name, level = "CRITICAL", seed, attrs = ?e.attributes, "{}", e.message)
        }
    }
}
