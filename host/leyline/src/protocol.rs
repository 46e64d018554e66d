//! Daemon wire protocol, version [`PROTOCOL_VERSION`].
//!
//! Framing (the daemon's codec): each frame is a 4-byte big-endian length
//! followed by that many bytes of postcard-encoded [`ClientFrame`] or
//! [`ServerFrame`]; frames over the configured maximum are refused before
//! they are read. The first client frame must be [`ClientFrame::Hello`]; the
//! server answers [`ServerFrame::Welcome`] or [`ServerFrame::Refused`] (a
//! version mismatch names both versions) and closes on refusal.

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, GraftDirective, HostRegistration, HostStatus, KernelArtifact, StepReport};
use crate::{AdaptationCommand, Outcome, SeedState, TelemetryEvent, TelemetryLevel};

/// Protocol version; a client and server must agree exactly.
/// Version 3: registrations declare `world_size`, step reports may carry a
/// rank summary (data-parallel ranks).
/// Version 4: the `JournalUnavailable` API error code (was `Internal` with a
/// `journal_unavailable:` message).
/// Version 5: the `InvalidMesh` reason code (a malformed `mesh_layers` was
/// `InvalidField`).
pub const PROTOCOL_VERSION: u32 = 5;

/// What a client is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Sends signed commands; reads state.
    Controller,
    /// Registers a model, fetches kernels, sends step reports.
    Trainer,
    /// Reads state and subscribes to telemetry.
    Observer,
}

impl Role {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Trainer => "trainer",
            Role::Observer => "observer",
        }
    }
}

/// Frames a client sends.
// Hello is small and a request carries a whole command; frames are built,
// encoded and dropped, so boxing would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Must be first.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Declared role.
        role: Role,
        /// Free-form client name for logs.
        client_name: String,
    },
    /// A request; the response carries the same correlation id.
    Request {
        /// Chosen by the client; echoed back.
        correlation_id: u64,
        /// What is asked.
        body: RequestBody,
    },
}

/// Requests (each maps to one [`crate::api::KasminaApi`] call, plus
/// subscription).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Controller: execute a signed command.
    SubmitCommand(AdaptationCommand),
    /// Trainer: register the model.
    RegisterHost(HostRegistration),
    /// Trainer: fetch a verified kernel artifact.
    FetchKernel {
        /// Blueprint id.
        blueprint_id: String,
    },
    /// Trainer: report a step, receive directives.
    StepReport(StepReport),
    /// Anyone: list seeds.
    SeedStates,
    /// Anyone: host summary.
    Status,
    /// Observer: stream telemetry at or above `min_level` (CRITICAL always
    /// first, on the fast path).
    SubscribeTelemetry {
        /// Lowest level delivered.
        min_level: TelemetryLevel,
    },
    /// Anyone: telemetry events published since this connection's previous
    /// drain (or since it connected), CRITICAL first; the polling twin of
    /// [`RequestBody::SubscribeTelemetry`] that backs
    /// [`crate::api::KasminaApi::drain_telemetry`] over a socket.
    DrainTelemetry,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Handshake accepted.
    Welcome {
        /// The server's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Server name and version.
        server: String,
    },
    /// Handshake refused; the connection closes after this frame.
    Refused {
        /// Why (names both versions on a mismatch).
        reason: String,
    },
    /// Answer to one request.
    Response {
        /// The request's correlation id.
        correlation_id: u64,
        /// The answer.
        body: Result<ResponseBody, ApiError>,
    },
    /// A pushed telemetry event (subscribers only).
    Telemetry(TelemetryEvent),
    /// The server is closing this connection after the responses already
    /// sent; the error says why ([`crate::api::ApiErrorCode::ShuttingDown`]
    /// on shutdown, `BadRequest` on a protocol violation, `Transport` for a
    /// slow consumer).
    Closing(ApiError),
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Outcome of a submitted command.
    CommandOutcome(Outcome),
    /// Host registered; the settings the trainer must apply.
    Registered(crate::api::TrainerSettings),
    /// The kernel artifact.
    Kernel(KernelArtifact),
    /// Directives for the next step.
    Directives(Vec<GraftDirective>),
    /// Seed states.
    SeedStates(Vec<SeedState>),
    /// Host summary.
    Status(HostStatus),
    /// Subscription active; events follow as [`ServerFrame::Telemetry`].
    Subscribed,
    /// Answer to [`RequestBody::DrainTelemetry`].
    Telemetry(Vec<TelemetryEvent>),
}
