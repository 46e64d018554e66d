//! Telemetry sinks: where components send [`TelemetryEvent`]s.
//!
//! The control plane's telemetry hub (queues, CRITICAL fast path, packets)
//! implements [`TelemetrySink`]; components only ever see the trait.

use std::sync::Mutex;

use leyline::{TelemetryEvent, TelemetryLevel};

/// Receives telemetry events. Must not block for long and must not panic.
pub trait TelemetrySink: Send + Sync {
    /// Delivers one event.
    fn emit(&self, event: TelemetryEvent);
}

/// Forwards every event to `tracing` at the matching level.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl TelemetrySink for TracingSink {
    fn emit(&self, e: TelemetryEvent) {
        let seed = e.seed_id.as_deref().unwrap_or("-");
        let attrs = format!("{:?}", e.attributes);
        match e.level {
            TelemetryLevel::Info => tracing::info!(event = %e.name, seed, %attrs, "{}", e.message),
            TelemetryLevel::Warning => tracing::warn!(event = %e.name, seed, %attrs, "{}", e.message),
            TelemetryLevel::Error | TelemetryLevel::Critical => {
                tracing::error!(event = %e.name, level = e.level.as_str(), seed, %attrs, "{}", e.message)
            }
        }
    }
}

/// Keeps every event in memory, bounded; for tests and for embedding hosts
/// that poll. Beyond `capacity` the oldest events are dropped and counted.
#[derive(Debug)]
pub struct MemorySink {
    capacity: usize,
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    events: std::collections::VecDeque<TelemetryEvent>,
    dropped: u64,
}

impl MemorySink {
    /// A sink holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        MemorySink { capacity: capacity.max(1), inner: Mutex::new(MemoryInner::default()) }
    }

    /// A copy of the events held, oldest first.
    pub fn events(&self) -> Vec<TelemetryEvent> {
        self.lock().events.iter().cloned().collect()
    }

    /// Events whose name equals `name`.
    pub fn named(&self, name: &str) -> Vec<TelemetryEvent> {
        self.lock().events.iter().filter(|e| e.name == name).cloned().collect()
    }

    /// How many events were dropped for capacity.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Removes and returns every event held.
    pub fn drain(&self) -> Vec<TelemetryEvent> {
        self.lock().events.drain(..).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding this lock cannot leave the deque invalid.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl TelemetrySink for MemorySink {
    fn emit(&self, event: TelemetryEvent) {
        let mut inner = self.lock();
        if inner.events.len() == self.capacity {
            inner.events.pop_front();
            inner.dropped += 1;
        }
        inner.events.push_back(event);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_sink_is_bounded_and_counts_drops() {
        let sink = MemorySink::new(2);
        for i in 0..3 {
            sink.emit(TelemetryEvent::new(format!("e{i}"), TelemetryLevel::Info, "m", i));
        }
        let names: Vec<_> = sink.events().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["e1", "e2"]);
        assert_eq!(sink.dropped(), 1);
        assert_eq!(sink.named("e2").len(), 1);
        assert_eq!(sink.drain().len(), 2);
        assert!(sink.events().is_empty());
    }
}
