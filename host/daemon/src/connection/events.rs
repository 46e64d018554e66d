//! The telemetry side of a connection: waiting for the next event,
//! coalescing what is already queued into one write (CRITICAL first), and
//! framing events for the socket. Split from `connection` to keep each file
//! to one concern.

use std::sync::Arc;

use leyline::api::{ApiError, ApiErrorCode};
use leyline::protocol::ServerFrame;
use leyline::{TelemetryEvent, TelemetryLevel};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use kasmina_client::codec::{self, FrameError};

use super::WRITE_BATCH_BYTES;
use crate::telemetry::{self, TelemetryReceivers};
use crate::transport::ServerSettings;

pub(super) enum Next {
    Shutdown,
    Subscribed(Option<TelemetryReceivers>),
    Critical(Result<Arc<TelemetryEvent>, broadcast::error::RecvError>),
    Normal(Result<Arc<TelemetryEvent>, broadcast::error::RecvError>),
}

/// Next event of a receiver, or never when there is none yet.
pub(super) async fn recv_from(
    rx: Option<&mut broadcast::Receiver<Arc<TelemetryEvent>>>,
) -> Result<Arc<TelemetryEvent>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Adds events that are already waiting to the same write, CRITICAL first.
pub(super) fn coalesce_events(
    rx: &mut TelemetryReceivers,
    min: TelemetryLevel,
    out: &mut Vec<u8>,
    settings: &ServerSettings,
) {
    let mut frames = 1usize;
    for (critical, level) in [(true, TelemetryLevel::Critical), (false, min)] {
        let channel = if critical { &mut rx.critical } else { &mut rx.normal };
        while frames < settings.outgoing_queue && out.len() < WRITE_BATCH_BYTES {
            let ev = match channel.try_recv() {
                Ok(ev) => Ok(ev),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                Err(_) => break,
            };
            push_event(ev, critical, level, out, settings);
            frames += 1;
        }
    }
}

pub(super) fn drain_into(
    rx: &mut broadcast::Receiver<Arc<TelemetryEvent>>,
    critical: bool,
    events: &mut Vec<TelemetryEvent>,
) {
    loop {
        match rx.try_recv() {
            Ok(ev) => events.push((*ev).clone()),
            Err(broadcast::error::TryRecvError::Lagged(n)) => events.push(telemetry::lag_notice(n, critical)),
            Err(_) => break,
        }
    }
}

pub(super) fn push_event(
    ev: Result<Arc<TelemetryEvent>, broadcast::error::RecvError>,
    critical: bool,
    min: TelemetryLevel,
    buf: &mut Vec<u8>,
    settings: &ServerSettings,
) {
    let event = match ev {
        Ok(ev) if ev.level >= min => (*ev).clone(),
        Ok(_) => return,
        Err(broadcast::error::RecvError::Lagged(n)) => telemetry::lag_notice(n, critical),
        // The hub lives as long as the server; nothing to forward.
        Err(broadcast::error::RecvError::Closed) => return,
    };
    push_frame(ServerFrame::Telemetry(event), buf, settings);
}

/// Encodes a frame; a response too large for the cap becomes an error
/// response with the same correlation id, never a silent drop.
pub(super) fn push_frame(frame: ServerFrame, buf: &mut Vec<u8>, settings: &ServerSettings) {
    let max = settings.max_response_bytes;
    if let Err(err) = codec::encode_frame(&frame, max, buf) {
        tracing::error!(%err, "kasmina.daemon.response_unencodable");
        if let ServerFrame::Response { correlation_id, .. } = frame {
            let body = Err(ApiError::new(ApiErrorCode::Internal, format!("response could not be sent: {err}")));
            let _ = codec::encode_frame(&ServerFrame::Response { correlation_id, body }, max, buf);
        }
    }
}

pub(super) async fn write_one<W: AsyncWrite + Unpin>(
    wr: &mut W,
    frame: &ServerFrame,
    settings: &ServerSettings,
) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    codec::encode_frame(frame, settings.max_response_bytes, &mut buf)?;
    match tokio::time::timeout(settings.write_timeout, async {
        wr.write_all(&buf).await?;
        wr.flush().await
    })
    .await
    {
        Ok(res) => Ok(res?),
        Err(_) => Err(FrameError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))),
    }
}
