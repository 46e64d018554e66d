//! Telemetry contract: events, metrics, per-step packets, health (SPEC.md §9).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Severity of an event. CRITICAL bypasses every queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TelemetryLevel {
    /// Normal operation.
    Info,
    /// Something to look at.
    Warning,
    /// An operation failed.
    Error,
    /// Safety or security event; delivered on the priority channel.
    Critical,
}

impl TelemetryLevel {
    /// Stable upper-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TelemetryLevel::Info => "INFO",
            TelemetryLevel::Warning => "WARNING",
            TelemetryLevel::Error => "ERROR",
            TelemetryLevel::Critical => "CRITICAL",
        }
    }
}

/// Health of one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HealthStatus {
    /// All signals nominal.
    Healthy,
    /// Some signals off; still progressing.
    Degraded,
    /// Failing checks; likely to be culled.
    Unhealthy,
    /// Safety breach (isolation breaker open, security event).
    Critical,
}

/// A typed attribute value. Floats are kept as f64; maps stay ordered so
/// encodings are deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// Signed integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Float(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Float(x) => write!(f, "{x}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// One telemetry event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    /// Dotted event name, e.g. `kasmina.command.rejected`.
    pub name: String,
    /// Severity.
    pub level: TelemetryLevel,
    /// Seed the event concerns, if any.
    pub seed_id: Option<String>,
    /// Human-readable message.
    pub message: String,
    /// Structured detail.
    pub attributes: BTreeMap<String, AttrValue>,
    /// When it happened (ms since the Unix epoch).
    pub timestamp_ms: u64,
}

impl TelemetryEvent {
    /// A new event with no attributes.
    pub fn new(name: impl Into<String>, level: TelemetryLevel, message: impl Into<String>, timestamp_ms: u64) -> Self {
        TelemetryEvent {
            name: name.into(),
            level,
            seed_id: None,
            message: message.into(),
            attributes: BTreeMap::new(),
            timestamp_ms,
        }
    }

    /// Sets the seed (builder style).
    pub fn seed(mut self, seed_id: impl Into<String>) -> Self {
        self.seed_id = Some(seed_id.into());
        self
    }

    /// Adds an attribute (builder style).
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<AttrValue>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// One named measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Dotted metric name, e.g. `kasmina.cache.hits`.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit, e.g. `count`, `us`, `bytes`, `ratio`.
    pub unit: String,
    /// Labels (seed, blueprint, reason …).
    pub labels: BTreeMap<String, String>,
}

/// Everything one seed (or the host, when `seed_id` is `None`) reports for
/// one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryPacket {
    /// Training step.
    pub step: u64,
    /// Seed, or `None` for the global packet.
    pub seed_id: Option<String>,
    /// Health at the end of the step.
    pub health: Option<HealthStatus>,
    /// Events raised during the step (non-CRITICAL; CRITICAL travel alone).
    pub events: Vec<TelemetryEvent>,
    /// Metrics for the step.
    pub metrics: Vec<Metric>,
}
