//! Telemetry fan-out: the host pushes every event to this hub as it emits it
//! (the hub is a [`TelemetryListener`]); the hub publishes on two bounded
//! broadcast channels, CRITICAL on its own, so a backlog of normal events
//! never delays a critical one and a slow observer never slows the host (it
//! lags, and is told how many events it lost). Nothing polls: an event
//! reaches a subscribed `kasmina telemetry` whether or not a trainer runs.

use std::sync::Arc;

use leyline::TelemetryEvent;
use leyline::TelemetryLevel;
use leyline::api::TelemetryListener;
use tokio::sync::broadcast;

/// The two channels every connection can listen on.
#[derive(Debug)]
pub struct TelemetryHub {
    critical: broadcast::Sender<Arc<TelemetryEvent>>,
    normal: broadcast::Sender<Arc<TelemetryEvent>>,
}

impl TelemetryHub {
    /// Channels holding at most `normal_capacity` / `critical_capacity`
    /// events per lagging receiver.
    pub fn new(normal_capacity: usize, critical_capacity: usize) -> Self {
        TelemetryHub {
            critical: broadcast::channel(critical_capacity.max(1)).0,
            normal: broadcast::channel(normal_capacity.max(1)).0,
        }
    }

    /// Receivers that see everything published from now on.
    pub fn subscribe(&self) -> TelemetryReceivers {
        TelemetryReceivers { critical: self.critical.subscribe(), normal: self.normal.subscribe() }
    }

    /// Publishes a batch, CRITICAL events first. Events published while no
    /// connection listens are dropped by design (the daemon streams, it does
    /// not store); the count is logged.
    pub fn publish(&self, events: Vec<TelemetryEvent>) {
        let (critical, normal): (Vec<_>, Vec<_>) =
            events.into_iter().partition(|e| e.level == TelemetryLevel::Critical);
        let mut unheard = 0usize;
        for event in critical {
            unheard += usize::from(self.critical.send(Arc::new(event)).is_err());
        }
        for event in normal {
            unheard += usize::from(self.normal.send(Arc::new(event)).is_err());
        }
        if unheard > 0 {
            tracing::debug!(unheard, "kasmina.daemon.telemetry_unheard");
        }
    }
}

impl TelemetryListener for TelemetryHub {
    fn event(&self, event: &TelemetryEvent) {
        // A broadcast send never blocks; with no subscriber the event is
        // simply not streamed (the daemon streams, it does not store).
        let channel = if event.level == TelemetryLevel::Critical { &self.critical } else { &self.normal };
        let _ = channel.send(Arc::new(event.clone()));
    }
}

/// One connection's view of the hub.
#[derive(Debug)]
pub struct TelemetryReceivers {
    /// CRITICAL events.
    pub critical: broadcast::Receiver<Arc<TelemetryEvent>>,
    /// Everything else.
    pub normal: broadcast::Receiver<Arc<TelemetryEvent>>,
}

/// The event a receiver gets in place of events it lost by lagging: never a
/// silent gap.
pub fn lag_notice(lost: u64, critical: bool) -> TelemetryEvent {
    let (name, level) = if critical {
        ("kasmina.daemon.critical_telemetry_lost", TelemetryLevel::Critical)
    } else {
        ("kasmina.daemon.telemetry_dropped", TelemetryLevel::Warning)
    };
    TelemetryEvent::new(
        name,
        level,
        format!("{lost} events were dropped because this connection fell behind"),
        now_ms(),
    )
    .attr("dropped", lost)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
