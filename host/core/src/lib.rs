//! Runtime pieces shared by the kernel supply, tensor plane and control plane.
//!
//! - [`clock`]: an injectable wall clock ([`SystemClock`] in production,
//!   [`ManualClock`] in tests), so TTLs, embargoes and freshness windows are
//!   tested without sleeping;
//! - [`sink`]: where telemetry events go ([`TelemetrySink`]); every component
//!   takes an `Arc<dyn TelemetrySink>` so rejections are never silent;
//! - [`breaker`]: the circuit breaker (SPEC.md §8) with an explicit
//!   [`BreakerDecision`] and an event on every transition.

pub mod breaker;
pub mod clock;
pub mod sink;

pub use breaker::{BreakerConfig, BreakerDecision, CircuitBreaker};
pub use clock::{Clock, ManualClock, SystemClock};
pub use sink::{MemorySink, TelemetrySink, TracingSink};
