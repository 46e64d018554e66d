//! `[daemon]`: the connection timeouts of `kasmina serve`. The embedded
//! host has no connections and ignores this section.

use serde::Deserialize;

use super::SettingsError;
use super::defaults as d;

/// Connection timeouts of the daemon (`kasmina serve`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSettings {
    /// Time a client has from a frame's first byte to its last, ms; a peer
    /// that starts a frame and stalls (or trickles it) is closed.
    pub frame_timeout_ms: u64,
    /// Silence between frames, s, after which a connection that is not
    /// subscribed to telemetry is closed as half-open (a peer gone without a
    /// close). A subscribed observer only reads and is never reaped for it.
    pub idle_timeout_s: u64,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings { frame_timeout_ms: d::FRAME_TIMEOUT_MS, idle_timeout_s: d::IDLE_TIMEOUT_S }
    }
}

impl DaemonSettings {
    /// Refuses a value outside its allowed range, naming the key and the range.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        within(
            "daemon.frame_timeout_ms",
            self.frame_timeout_ms,
            d::FRAME_TIMEOUT_MS_MIN,
            d::FRAME_TIMEOUT_MS_MAX,
            "ms",
        )?;
        within("daemon.idle_timeout_s", self.idle_timeout_s, d::IDLE_TIMEOUT_S_MIN, d::IDLE_TIMEOUT_S_MAX, "s")
    }
}

fn within(key: &'static str, value: u64, min: u64, max: u64, unit: &str) -> Result<(), SettingsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::Invalid {
            key,
            problem: format!("{value} {unit} is outside the allowed range {min}..={max} {unit}"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::settings::Settings;

    #[test]
    fn defaults_are_10_s_and_30_min() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!((s.daemon.frame_timeout_ms, s.daemon.idle_timeout_s), (10_000, 1_800));
    }

    #[test]
    fn values_are_read_and_bounded_with_the_key_and_range_named() {
        let s = Settings::from_toml("[daemon]\nframe_timeout_ms = 2500\nidle_timeout_s = 5").unwrap();
        assert_eq!((s.daemon.frame_timeout_ms, s.daemon.idle_timeout_s), (2_500, 5));
        for (toml, needle) in [
            (
                "[daemon]\nframe_timeout_ms = 0",
                "`daemon.frame_timeout_ms`: 0 ms is outside the allowed range 100..=300000 ms",
            ),
            ("[daemon]\nframe_timeout_ms = 300001", "daemon.frame_timeout_ms"),
            ("[daemon]\nidle_timeout_s = 0", "`daemon.idle_timeout_s`: 0 s is outside the allowed range 1..=86400 s"),
            ("[daemon]\nidle_timeout_s = 86401", "daemon.idle_timeout_s"),
            ("[daemon]\nidle_timeout = 5", "idle_timeout"),
        ] {
            let err = Settings::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml}: {err}");
        }
    }
}
