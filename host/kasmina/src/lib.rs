//! Kasmina control plane.
//!
//! Module map (grows with the control-plane issues), in the order a command
//! meets them:
//! - [`settings`]: the one TOML-backed settings object, with every SPEC.md
//!   default as a named constant and validation that names the bad key.
//! - [`security`]: the envelope — HMAC key loading, canonical-bytes HMAC
//!   verification, the nonce ledger and its timer purger, freshness; every
//!   rejection counted per reason, reported, and free of side effects.
//! - [`validator`]: per-command-type field checks returning a structured
//!   [`leyline::Outcome`] (STRUCTURAL_PRUNING refused as unsupported).
//! - [`telemetry`]: the hub every component emits into — bounded per-step
//!   queue, CRITICAL fast path, per-seed packets and health.
//! - [`rollback`]: rollback points recorded on gate failure and retire, with
//!   readiness latency measured against the SLA.

pub mod rollback;
pub mod security;
pub mod settings;
pub mod telemetry;
pub mod validator;

pub use rollback::{RollbackLedger, RollbackPoint};
pub use security::{CommandVerifier, HmacKey, NonceLedger, VerifiedCommand};
pub use settings::Settings;
pub use telemetry::TelemetryHub;
pub use validator::CommandValidator;
