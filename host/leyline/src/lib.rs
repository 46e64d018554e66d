//! Leyline: the contract every Kasmina component and client shares.
//!
//! Module map, in the order a command meets them:
//! - [`api`]: the [`api::KasminaApi`] trait (embedded host and daemon serve
//!   the same one), graft directives, step reports, kernel artifacts;
//! - [`command`]: the signed [`AdaptationCommand`] with one typed payload per
//!   command type, and [`command::canonical_bytes`], the deterministic
//!   encoding the HMAC is computed over (signature excluded);
//! - [`outcome`]: the structured accepted/rejected result every validation
//!   step returns, with machine-readable reason codes;
//! - [`annotations`]: the SPEC.md §4 annotation keys, one constant each, and
//!   [`annotations::SPEC_KEYS`];
//! - [`blend`]: the [`BlendSpec`] a germinated seed blends with and
//!   [`BlendSpec::validate`], the one set of blend rules the host (at
//!   admission), the trainers and the tensor plane all call;
//! - [`lifecycle`]: the eleven seed stages plus bootstrap, the one transition
//!   table (an exhaustive `match`) and the gate that guards each edge;
//! - [`blueprint`]: blueprint descriptors (tier, parameter bounds, kernel
//!   interface) as Urza publishes them;
//! - [`checkpoint`]: rollback checkpoints the trainer captures and restores
//!   on directive, and the seeds a re-registering trainer still holds;
//! - [`gate`]: [`GateInputs`], everything a gate decides on, as the gate
//!   plugin sees it and the journal stores it;
//! - [`journal`]: decision-journal records (commands, transitions, gate
//!   verdicts with their inputs, snapshots, in-stage progress and breakers);
//! - [`prefetch`]: kernel prefetch request/ready/error messages;
//! - [`protocol`]: daemon wire frames (hello, requests, responses, pushes);
//! - [`ranks`]: data-parallel ranks — the rank summary a step report
//!   carries and how rank 0 merges every rank's report (SPEC.md §10);
//! - [`seed`]: the exported state of one seed;
//! - [`telemetry`]: levels, events, metrics, per-step packets, health;
//! - [`enums`]: small shared enums (breaker states, blend modes, priorities).
//!
//! This crate depends on serde, postcard and thiserror only, so clients can
//! use the contract without pulling in wasmtime or libtorch.

pub mod annotations;
pub mod api;
pub mod blend;
pub mod blueprint;
pub mod checkpoint;
pub mod command;
pub mod enums;
pub mod gate;
pub mod journal;
pub mod lifecycle;
pub mod outcome;
pub mod prefetch;
pub mod protocol;
pub mod ranks;
pub mod seed;
pub mod telemetry;

pub use blend::{BlendSpec, BlendSpecError, MAX_ALPHA_VEC_LEN};
pub use blueprint::{BlueprintDescriptor, BlueprintTier, DType, Dim, KernelInterface, ParameterBounds, TensorSpec};
pub use command::{AdaptationCommand, CommandPayload, CommandType, SeedCommand, SeedOperation};
pub use enums::{BlendMode, BreakerState, MessagePriority};
pub use gate::{BlendStats, GateInputs, PerformanceStatus, RankAgreement};
pub use lifecycle::{GateId, SeedStage, TransitionError};
pub use outcome::{Outcome, ReasonCode};
pub use seed::SeedState;
pub use telemetry::{AttrValue, HealthStatus, Metric, TelemetryEvent, TelemetryLevel, TelemetryPacket};

/// Version of this contract. Bumped on any change to a wire type; frozen
/// versions are never edited.
pub const CONTRACT_VERSION: u32 = 1;
