//! One client connection: handshake, then three parts joined by bounded
//! queues, so a slow or hostile client can block only itself:
//!
//! ```text
//! socket ─▶ reader (async) ─work─▶ worker (thread: host calls, in order) ─out─▶ writer (async) ─▶ socket
//!                                                     telemetry hub ─(critical first)─▶ writer
//! ```
//! The reader stops reading when the work queue is full (the client feels
//! backpressure through its socket); the worker blocks when the writer's
//! queue is full; the writer gives up on a client that does not read within
//! the write timeout. Requests of one connection run in arrival order.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use leyline::api::{ApiError, ApiErrorCode, KasminaApi};
use leyline::protocol::{ClientFrame, PROTOCOL_VERSION, RequestBody, ResponseBody, Role, ServerFrame};
use leyline::{TelemetryEvent, TelemetryLevel};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc};

use crate::codec::{self, FrameError};
use crate::server::ServerSettings;
use crate::telemetry::{self, TelemetryHub, TelemetryReceivers};

/// State shared by every connection.
pub(crate) struct Shared {
    pub api: Arc<dyn KasminaApi>,
    pub settings: ServerSettings,
    pub hub: TelemetryHub,
}

/// What the reader hands the worker.
enum Work {
    Call { id: u64, body: RequestBody },
    Reply { id: u64, result: Result<ResponseBody, ApiError> },
    Close(ApiError),
}

/// What the worker hands the writer.
enum Outgoing {
    Frame(ServerFrame),
    Subscribe { id: u64, min_level: TelemetryLevel },
    Drain { id: u64 },
    Close(ApiError),
}

/// Whether `role` may make this request: controllers command, trainers
/// drive training, observers only read.
pub fn check_role(role: Role, body: &RequestBody) -> Result<(), ApiError> {
    let allowed = match body {
        RequestBody::SubmitCommand(_) => role == Role::Controller,
        RequestBody::RegisterHost(_) | RequestBody::FetchKernel { .. } | RequestBody::StepReport(_) => role == Role::Trainer,
        RequestBody::SubscribeTelemetry { .. } => matches!(role, Role::Observer | Role::Controller),
        RequestBody::SeedStates | RequestBody::Status | RequestBody::DrainTelemetry => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(ApiErrorCode::BadRequest, format!("role {} may not send {}", role.as_str(), request_name(body))))
    }
}

fn request_name(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::SubmitCommand(_) => "SubmitCommand",
        RequestBody::RegisterHost(_) => "RegisterHost",
        RequestBody::FetchKernel { .. } => "FetchKernel",
        RequestBody::StepReport(_) => "StepReport",
        RequestBody::SeedStates => "SeedStates",
        RequestBody::Status => "Status",
        RequestBody::SubscribeTelemetry { .. } => "SubscribeTelemetry",
        RequestBody::DrainTelemetry => "DrainTelemetry",
    }
}

/// Serves one accepted connection until the client leaves, breaks the
/// protocol, or the server shuts down (in-flight requests are answered).
pub(crate) async fn serve<S>(stream: S, peer: String, shared: Arc<Shared>, mut shutdown: broadcast::Receiver<()>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let settings = &shared.settings;
    let mut buf = Vec::new();
    let hello = tokio::time::timeout(settings.handshake_timeout, codec::read_frame::<_, ClientFrame>(&mut rd, settings.max_request_bytes, &mut buf)).await;
    let role = match hello {
        Ok(Ok(ClientFrame::Hello { protocol_version, role, client_name })) if protocol_version == PROTOCOL_VERSION => {
            tracing::info!(%peer, role = role.as_str(), client = %client_name, "kasmina.daemon.connected");
            role
        }
        refused => {
            let reason = match refused {
                Ok(Ok(ClientFrame::Hello { protocol_version, .. })) => {
                    format!("protocol version mismatch: client speaks version {protocol_version}, server speaks version {PROTOCOL_VERSION}")
                }
                Ok(Ok(ClientFrame::Request { .. })) => "the first frame must be Hello".to_owned(),
                Ok(Err(FrameError::Eof)) => return,
                Ok(Err(err)) => format!("bad handshake frame: {err}"),
                Err(_) => format!("no Hello within {} ms", settings.handshake_timeout.as_millis()),
            };
            tracing::warn!(%peer, %reason, "kasmina.daemon.handshake_refused");
            let _ = write_one(&mut wr, &ServerFrame::Refused { reason }, settings).await;
            return;
        }
    };
    let welcome = ServerFrame::Welcome { protocol_version: PROTOCOL_VERSION, server: format!("kasminad {}", env!("CARGO_PKG_VERSION")) };
    if write_one(&mut wr, &welcome, settings).await.is_err() {
        return;
    }
    let receivers = shared.hub.subscribe();
    let (work_tx, work_rx) = mpsc::channel::<Work>(settings.max_in_flight_per_connection);
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(settings.outgoing_queue);
    let worker_shared = Arc::clone(&shared);
    let spawned = std::thread::Builder::new().name("kasmina-conn".into()).spawn(move || worker(work_rx, out_tx, &worker_shared));
    if let Err(err) = spawned {
        tracing::error!(%err, "kasmina.daemon.worker_spawn_failed");
        return;
    }
    let writer = tokio::spawn(writer(wr, out_rx, receivers, Arc::clone(&shared)));

    let close = loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown.recv() => break Some(ApiError::new(ApiErrorCode::ShuttingDown, "server shutting down")),
            _ = work_tx.closed() => break None,
            frame = codec::read_frame::<_, ClientFrame>(&mut rd, settings.max_request_bytes, &mut buf) => frame,
        };
        let work = match frame {
            Ok(ClientFrame::Request { correlation_id: id, body }) => match check_role(role, &body) {
                Ok(()) => Work::Call { id, body },
                Err(err) => Work::Reply { id, result: Err(err) },
            },
            Ok(ClientFrame::Hello { .. }) => break Some(ApiError::new(ApiErrorCode::BadRequest, "protocol violation: second Hello")),
            Err(FrameError::Eof) => break None,
            Err(err) => {
                tracing::warn!(%peer, %err, "kasmina.daemon.bad_frame");
                break Some(ApiError::new(ApiErrorCode::BadRequest, format!("bad frame: {err}")));
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.recv() => break Some(ApiError::new(ApiErrorCode::ShuttingDown, "server shutting down")),
            sent = work_tx.send(work) => if sent.is_err() { break None },
        }
    };
    if let Some(reason) = close {
        // Queued behind the requests already read, so those are answered first.
        let _ = work_tx.send(Work::Close(reason)).await;
    }
    drop(work_tx);
    let _ = writer.await;
    tracing::debug!(%peer, "kasmina.daemon.disconnected");
}

/// Runs host calls for one connection, in order, off the async reactor.
fn worker(mut work_rx: mpsc::Receiver<Work>, out_tx: mpsc::Sender<Outgoing>, shared: &Shared) {
    while let Some(work) = work_rx.blocking_recv() {
        let out = match work {
            Work::Call { id, body: RequestBody::SubscribeTelemetry { min_level } } => Outgoing::Subscribe { id, min_level },
            Work::Call { id, body: RequestBody::DrainTelemetry } => Outgoing::Drain { id },
            Work::Call { id, body } => {
                let api = &*shared.api;
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| dispatch(api, body)))
                    .unwrap_or_else(|_| Err(ApiError::new(ApiErrorCode::Internal, "the host panicked while serving this request")));
                shared.hub.pump(api);
                Outgoing::Frame(ServerFrame::Response { correlation_id: id, body: result })
            }
            Work::Reply { id, result } => Outgoing::Frame(ServerFrame::Response { correlation_id: id, body: result }),
            Work::Close(reason) => Outgoing::Close(reason),
        };
        if out_tx.blocking_send(out).is_err() {
            break; // writer gone: client vanished or was dropped as too slow
        }
    }
}

fn dispatch(api: &dyn KasminaApi, body: RequestBody) -> Result<ResponseBody, ApiError> {
    match body {
        RequestBody::SubmitCommand(cmd) => api.submit_command(cmd).map(ResponseBody::CommandOutcome),
        RequestBody::RegisterHost(reg) => api.register_host(reg).map(|()| ResponseBody::Registered),
        RequestBody::FetchKernel { blueprint_id } => api.fetch_kernel(&blueprint_id).map(ResponseBody::Kernel),
        RequestBody::StepReport(report) => api.step_report(report).map(ResponseBody::Directives),
        RequestBody::SeedStates => api.seed_states().map(ResponseBody::SeedStates),
        RequestBody::Status => api.status().map(ResponseBody::Status),
        RequestBody::SubscribeTelemetry { .. } | RequestBody::DrainTelemetry => {
            Err(ApiError::new(ApiErrorCode::Internal, "telemetry requests are served by the connection writer"))
        }
    }
}

enum Next {
    Out(Option<Outgoing>),
    Critical(Result<Arc<TelemetryEvent>, broadcast::error::RecvError>),
    Normal(Result<Arc<TelemetryEvent>, broadcast::error::RecvError>),
}

/// Writes responses and telemetry; CRITICAL telemetry always goes first.
async fn writer<W: AsyncWrite + Unpin>(mut wr: W, mut out_rx: mpsc::Receiver<Outgoing>, mut rx: TelemetryReceivers, shared: Arc<Shared>) {
    let settings = &shared.settings;
    let mut subscribed: Option<TelemetryLevel> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let next = tokio::select! {
            biased;
            ev = rx.critical.recv(), if subscribed.is_some() => Next::Critical(ev),
            out = out_rx.recv() => Next::Out(out),
            ev = rx.normal.recv(), if subscribed.is_some() => Next::Normal(ev),
        };
        let mut closing = false;
        match next {
            Next::Out(None) => break,
            Next::Out(Some(out)) => closing = push_outgoing(out, &mut buf, &mut subscribed, &mut rx, settings),
            Next::Critical(ev) => push_event(ev, true, TelemetryLevel::Critical, &mut buf, settings),
            Next::Normal(ev) => push_event(ev, false, subscribed.unwrap_or(TelemetryLevel::Info), &mut buf, settings),
        }
        // Coalesce whatever else is ready into the same write.
        while !closing && buf.len() < 64 * 1024 {
            match out_rx.try_recv() {
                Ok(out) => closing = push_outgoing(out, &mut buf, &mut subscribed, &mut rx, settings),
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            match tokio::time::timeout(settings.write_timeout, wr.write_all(&buf)).await {
                Ok(Ok(())) => buf.clear(),
                Ok(Err(err)) => {
                    tracing::debug!(%err, "kasmina.daemon.write_failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(timeout_ms = settings.write_timeout.as_millis() as u64, "kasmina.daemon.slow_consumer_dropped");
                    return;
                }
            }
        }
        if closing {
            break;
        }
    }
    let _ = tokio::time::timeout(settings.write_timeout, wr.shutdown()).await;
}

/// Encodes one outgoing item; returns whether the connection closes after it.
fn push_outgoing(out: Outgoing, buf: &mut Vec<u8>, subscribed: &mut Option<TelemetryLevel>, rx: &mut TelemetryReceivers, settings: &ServerSettings) -> bool {
    match out {
        Outgoing::Frame(frame) => push_frame(frame, buf, settings),
        Outgoing::Subscribe { id, min_level } => {
            *subscribed = Some(min_level);
            push_frame(ServerFrame::Response { correlation_id: id, body: Ok(ResponseBody::Subscribed) }, buf, settings);
        }
        Outgoing::Drain { id } => {
            let mut events = Vec::new();
            drain_into(&mut rx.critical, true, &mut events);
            drain_into(&mut rx.normal, false, &mut events);
            push_frame(ServerFrame::Response { correlation_id: id, body: Ok(ResponseBody::Telemetry(events)) }, buf, settings);
        }
        Outgoing::Close(reason) => {
            push_frame(ServerFrame::Closing(reason), buf, settings);
            return true;
        }
    }
    false
}

fn drain_into(rx: &mut broadcast::Receiver<Arc<TelemetryEvent>>, critical: bool, events: &mut Vec<TelemetryEvent>) {
    loop {
        match rx.try_recv() {
            Ok(ev) => events.push((*ev).clone()),
            Err(broadcast::error::TryRecvError::Lagged(n)) => events.push(telemetry::lag_notice(n, critical)),
            Err(_) => break,
        }
    }
}

fn push_event(ev: Result<Arc<TelemetryEvent>, broadcast::error::RecvError>, critical: bool, min: TelemetryLevel, buf: &mut Vec<u8>, settings: &ServerSettings) {
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
fn push_frame(frame: ServerFrame, buf: &mut Vec<u8>, settings: &ServerSettings) {
    let max = settings.max_response_bytes;
    if let Err(err) = codec::encode_frame(&frame, max, buf) {
        tracing::error!(%err, "kasmina.daemon.response_unencodable");
        if let ServerFrame::Response { correlation_id, .. } = frame {
            let body = Err(ApiError::new(ApiErrorCode::Internal, format!("response could not be sent: {err}")));
            let _ = codec::encode_frame(&ServerFrame::Response { correlation_id, body }, max, buf);
        }
    }
}

async fn write_one<W: AsyncWrite + Unpin>(wr: &mut W, frame: &ServerFrame, settings: &ServerSettings) -> Result<(), FrameError> {
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
