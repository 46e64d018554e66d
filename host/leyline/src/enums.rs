//! Small enums shared across the contract.

use serde::{Deserialize, Serialize};

/// Circuit-breaker state (SPEC.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// A limited number of probe calls decide whether to close again.
    HalfOpen,
}

impl BreakerState {
    /// Stable name used in telemetry.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF_OPEN",
        }
    }
}

/// How a seed's output is blended with the host's (SPEC.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlendMode {
    /// `α·seed + (1−α)·host`.
    Convex,
    /// `host + α·seed`.
    Residual,
    /// Per-channel α vector broadcast over dim 1.
    Channel,
    /// Per-sample gate from classification logits.
    Confidence,
}

impl BlendMode {
    /// Stable upper-case name, as used in annotations.
    pub const fn as_str(self) -> &'static str {
        match self {
            BlendMode::Convex => "CONVEX",
            BlendMode::Residual => "RESIDUAL",
            BlendMode::Channel => "CHANNEL",
            BlendMode::Confidence => "CONFIDENCE",
        }
    }

    /// Parses an exact upper-case name. Anything else is `None`: there is no
    /// default mode to fall back to.
    pub fn parse(name: &str) -> Option<BlendMode> {
        match name {
            "CONVEX" => Some(BlendMode::Convex),
            "RESIDUAL" => Some(BlendMode::Residual),
            "CHANNEL" => Some(BlendMode::Channel),
            "CONFIDENCE" => Some(BlendMode::Confidence),
            _ => None,
        }
    }
}

/// Delivery priority of a message or telemetry event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MessagePriority {
    /// Background information.
    Low,
    /// Regular per-step traffic.
    Normal,
    /// Should be delivered ahead of normal traffic.
    High,
    /// Bypasses every queue (CRITICAL telemetry).
    Critical,
}
