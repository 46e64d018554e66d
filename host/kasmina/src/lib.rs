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
//! - [`rollback`]: the rollback ledger — points recorded on gate failure,
//!   cull and retire, usable once the trainer confirms its weights
//!   checkpoint; capture and restore latency measured against the SLA.
//! - [`gates`]: the gate service — builds `GateInputs` from real seed state,
//!   checks stage order and the safety invariants itself, asks the gate
//!   plugin; a shadow candidate runs off the step path and is judged by its
//!   own verdict ([`gates::judge()`]).
//! - [`isolation`]: one isolation breaker per seed, tripped by violations
//!   within a window and recovering through HALF_OPEN.
//! - [`seeds`]: the seed manager — executes commands (verify → validate →
//!   parse → admit → act), drives stages from step reports through G1–G5,
//!   restores ROLLBACK points, resynchronises re-registering trainers and
//!   rebuilds state from the journal.
//! - [`host`]: the embedded host — one builder assembling everything
//!   in-process, serving `leyline::api::KasminaApi` like the daemon does.

pub mod gates;
pub mod host;
pub mod isolation;
pub mod rollback;
pub mod security;
pub mod seeds;
pub mod settings;
pub mod telemetry;
pub mod validator;

pub use host::{EmbeddedHost, HostBuilder, HostError, LoadedPlugin};
pub use rollback::{RollbackLedger, RollbackPoint};
pub use security::{CommandVerifier, HmacKey, NonceLedger, VerifiedCommand};
pub use seeds::SeedManager;
pub use settings::Settings;
pub use telemetry::TelemetryHub;
pub use validator::CommandValidator;
