//! Telemetry (SPEC.md §9): the hub every component emits into, per-seed
//! health, and counters that report both totals and per-interval values.
//!
//! - [`hub`]: [`TelemetryHub`] — bounded per-step queue, CRITICAL fast path,
//!   packets per seed per step plus a global packet, `tracing` output;
//! - `health` (private): HEALTHY/DEGRADED/UNHEALTHY/CRITICAL from recent events;
//! - [`counters`]: [`IntervalCounter`] and [`ReasonCounters`], snapshot-and-reset;
//! - [`held`]: [`HeldEvents`] — events emitted under the seed manager's
//!   state lock wait for its release, in order.

pub mod counters;
mod health;
pub mod held;
pub mod hub;

pub use counters::{IntervalCounter, ReasonCounters};
pub use held::HeldEvents;
pub use hub::{CriticalReceiver, HubConfig, HubStats, TelemetryError, TelemetryHub};

/// `text` cut to at most `max` bytes on a character boundary, with `…`
/// appended when cut. Untrusted strings go through this before they are
/// copied into telemetry, so a hostile command cannot inflate every event.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::clip;

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("ééé", 3), "é…");
    }
}
