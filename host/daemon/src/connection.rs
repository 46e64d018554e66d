//! One client connection: an async handshake, then one plain std thread
//! that reads a request, calls the host and writes the answer itself:
//!
//! ```text
//! socket ─▶ connection thread (read → role check → host call → write) ─▶ socket
//!           telemetry hub ─(critical first)─▶ connection task (async) ─▶ socket
//! ```
//! A request costs one wake-up on each side (no hand-offs between threads);
//! the host is called off the async runtime, in arrival order. The thread
//! reads the next request only after answering the last, so a client that
//! floods us feels backpressure through its socket; answers to requests the
//! client has already queued are batched into one write. The async task
//! pushes telemetry to subscribers, turns a server shutdown into a read
//! shutdown (the thread answers what it has read, then says why it closes),
//! and shuts the socket if the task is aborted. Writes share one lock so
//! frames never interleave, and every write is bounded by the write timeout.
//!
//! A peer that breaks the protocol is answered and closed, never served
//! further: a request its role may not send, a second Hello, a frame that
//! does not decode, a frame not finished within the frame timeout, silence
//! past the idle timeout (half-open), and — for a trainer — a step report
//! for another run than the one this connection registered, or a
//! registration of another run or model.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kasmina_client::codec::{FrameDecoder, FrameError, LENGTH_PREFIX_BYTES};
use leyline::TelemetryLevel;
use leyline::api::{ApiError, ApiErrorCode, HostRegistration, KasminaApi};
use leyline::protocol::{ClientFrame, PROTOCOL_VERSION, RequestBody, ResponseBody, Role, ServerFrame};
use tokio::sync::{broadcast, oneshot, watch};

use crate::async_frames;

mod events;
use self::events::*;
use crate::telemetry::{TelemetryHub, TelemetryReceivers};
use crate::transport::{BlockingStream, Listener, ServerSettings};

/// Bytes of answers or telemetry gathered before a write is forced.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// State shared by every connection.
pub(crate) struct Shared {
    pub api: Arc<dyn KasminaApi>,
    pub settings: ServerSettings,
    pub hub: Arc<TelemetryHub>,
}

/// Whether `role` may make this request: controllers command, trainers
/// drive training, observers only read.
pub fn check_role(role: Role, body: &RequestBody) -> Result<(), ApiError> {
    let allowed = match body {
        RequestBody::SubmitCommand(_) => role == Role::Controller,
        RequestBody::RegisterHost(_) | RequestBody::FetchKernel { .. } | RequestBody::StepReport(_) => {
            role == Role::Trainer
        }
        RequestBody::SubscribeTelemetry { .. } => matches!(role, Role::Observer | Role::Controller),
        RequestBody::SeedStates | RequestBody::Status | RequestBody::DrainTelemetry => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            ApiErrorCode::BadRequest,
            format!("role {} may not send {}", role.as_str(), request_name(body)),
        ))
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
/// protocol, or the server shuts down (the request being served is answered).
pub(crate) async fn serve<L: Listener>(
    mut stream: L::Stream,
    peer: String,
    shared: Arc<Shared>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let settings = &shared.settings;
    let mut decoder = FrameDecoder::new(settings.max_request_bytes);
    // Unbuffered: a frame is read to its end and no further, so nothing the
    // client sent after Hello is left behind in an async buffer.
    let hello = tokio::time::timeout(
        settings.handshake_timeout,
        async_frames::read_frame::<_, ClientFrame>(&mut stream, &mut decoder),
    )
    .await;
    let role = match hello {
        Ok(Ok(ClientFrame::Hello { protocol_version, role, client_name })) if protocol_version == PROTOCOL_VERSION => {
            tracing::info!(%peer, role = role.as_str(), client = %client_name, "kasmina.daemon.connected");
            role
        }
        refused => {
            let reason = match refused {
                Ok(Ok(ClientFrame::Hello { protocol_version, .. })) => {
                    format!(
                        "protocol version mismatch: client speaks version {protocol_version}, server speaks version {PROTOCOL_VERSION}"
                    )
                }
                Ok(Ok(ClientFrame::Request { .. })) => "the first frame must be Hello".to_owned(),
                Ok(Err(FrameError::Eof)) => return,
                Ok(Err(err)) => format!("bad handshake frame: {err}"),
                Err(_) => format!("no Hello within {} ms", settings.handshake_timeout.as_millis()),
            };
            tracing::warn!(%peer, %reason, "kasmina.daemon.handshake_refused");
            let _ = write_one(&mut stream, &ServerFrame::Refused { reason }, settings).await;
            return;
        }
    };
    let welcome = ServerFrame::Welcome {
        protocol_version: PROTOCOL_VERSION,
        server: format!("kasminad {}", env!("CARGO_PKG_VERSION")),
    };
    if write_one(&mut stream, &welcome, settings).await.is_err() {
        return;
    }
    let receivers = shared.hub.subscribe();
    let (control, reader, writer) = match split_blocking::<L>(stream, settings) {
        Ok(parts) => parts,
        Err(err) => {
            tracing::error!(%peer, %err, "kasmina.daemon.socket_setup_failed");
            return;
        }
    };
    // Whatever ends this task (including an abort when the shutdown grace
    // runs out) closes the socket, so the client is never left hanging.
    let control = CloseOnDrop(control);
    let stopping = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let (pushed_tx, mut pushed_rx) = oneshot::channel::<TelemetryReceivers>();
    let (level_tx, level_rx) = watch::channel(TelemetryLevel::Info);
    let conn = Conn {
        shared: Arc::clone(&shared),
        role,
        reader: BufReader::with_capacity(WRITE_BATCH_BYTES, reader),
        writer: Arc::clone(&writer),
        stopping: Arc::clone(&stopping),
        local: Some(receivers),
        pushed_tx: Some(pushed_tx),
        level_tx,
        bound: None,
        read_timeout: None,
        _done: done_tx,
    };
    let spawned = std::thread::Builder::new().name("kasmina-conn".into()).spawn(move || conn.run());
    if let Err(err) = spawned {
        tracing::error!(%err, "kasmina.daemon.worker_spawn_failed");
        return;
    }

    let mut pushed: Option<TelemetryReceivers> = None;
    let mut handover_open = true;
    let mut shutting_down = false;
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let (critical, normal) = match pushed.as_mut() {
            Some(rx) => (Some(&mut rx.critical), Some(&mut rx.normal)),
            None => (None, None),
        };
        let next = tokio::select! {
            biased;
            _ = &mut done_rx => break,
            _ = shutdown.recv(), if !shutting_down => Next::Shutdown,
            handed = &mut pushed_rx, if handover_open => Next::Subscribed(handed.ok()),
            ev = recv_from(critical) => Next::Critical(ev),
            ev = recv_from(normal) => Next::Normal(ev),
        };
        let min = *level_rx.borrow();
        match next {
            Next::Shutdown => {
                shutting_down = true;
                stopping.store(true, Ordering::SeqCst);
                // The thread finishes the request it is serving, answers any
                // it has already read, then finds the end of input.
                let _ = control.0.shutdown(Shutdown::Read);
                continue;
            }
            Next::Subscribed(handed) => {
                handover_open = false;
                pushed = handed;
                continue;
            }
            Next::Critical(ev) => push_event(ev, true, TelemetryLevel::Critical, &mut out, settings),
            Next::Normal(ev) => push_event(ev, false, min, &mut out, settings),
        }
        if let Some(rx) = pushed.as_mut() {
            coalesce_events(rx, min, &mut out, settings);
        }
        if out.is_empty() {
            continue;
        }
        let w = Arc::clone(&writer);
        let batch = std::mem::take(&mut out);
        match tokio::task::spawn_blocking(move || {
            w.write(&batch);
            batch
        })
        .await
        {
            Ok(mut batch) => {
                batch.clear();
                out = batch;
            }
            Err(err) => tracing::error!(%err, "kasmina.daemon.telemetry_write_panicked"),
        }
    }
    tracing::debug!(%peer, "kasmina.daemon.disconnected");
}

/// Three handles on the socket: control (shutdown), the thread's reader,
/// and the shared writer.
fn split_blocking<L: Listener>(
    stream: L::Stream,
    settings: &ServerSettings,
) -> std::io::Result<(BlockingStream, BlockingStream, Arc<FrameWriter>)> {
    let stream = L::into_blocking(stream)?;
    stream.set_write_timeout(Some(settings.write_timeout))?;
    let control = stream.try_clone()?;
    let reader = stream.try_clone()?;
    Ok((control, reader, Arc::new(FrameWriter { stream: Mutex::new(Some(stream)) })))
}

struct CloseOnDrop(BlockingStream);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// The write side, shared by the connection thread (answers) and the task
/// (telemetry); the lock keeps frames whole. `None` once the connection is
/// closed: nothing may follow a Closing frame.
struct FrameWriter {
    stream: Mutex<Option<BlockingStream>>,
}

impl FrameWriter {
    /// Writes whole frames; on failure (client gone, or too slow for the
    /// write timeout) closes the socket and returns false.
    fn write(&self, bytes: &[u8]) -> bool {
        let mut guard = match self.stream.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(stream) = guard.as_mut() else { return false };
        match stream.write_all(bytes) {
            Ok(()) => true,
            Err(err) => {
                if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                    tracing::warn!(bytes = bytes.len(), "kasmina.daemon.slow_consumer_dropped");
                } else {
                    tracing::debug!(%err, "kasmina.daemon.write_failed");
                }
                let _ = stream.shutdown(Shutdown::Both);
                *guard = None;
                false
            }
        }
    }

    /// Writes the last frames and closes the socket in one step.
    fn finish(&self, bytes: &[u8]) {
        if bytes.is_empty() || self.write(bytes) {
            let mut guard = match self.stream.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(stream) = guard.take() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// How the connection thread's loop ended.
enum End {
    /// The client left between frames.
    Quiet,
    /// Tell the client why, then close.
    Close(ApiError),
    /// The socket is already closed (write failed).
    Dead,
}

/// The connection thread's state.
struct Conn {
    shared: Arc<Shared>,
    role: Role,
    reader: BufReader<BlockingStream>,
    writer: Arc<FrameWriter>,
    stopping: Arc<AtomicBool>,
    /// Receivers while the client drains telemetry itself.
    local: Option<TelemetryReceivers>,
    /// Hands the receivers to the task when the client subscribes.
    pushed_tx: Option<oneshot::Sender<TelemetryReceivers>>,
    level_tx: watch::Sender<TelemetryLevel>,
    /// The run and model this trainer connection registered, once it has.
    bound: Option<Binding>,
    /// The read timeout last set on the socket.
    read_timeout: Option<Duration>,
    /// Dropped when the thread ends: tells the task the connection is over.
    _done: oneshot::Sender<()>,
}

/// What a trainer connection registered: it reports for this run only and
/// may re-register (to resynchronise) only the same run and model.
struct Binding {
    run: String,
    /// Sites, slots and world size, encoded: the model's shape as declared.
    model: Vec<u8>,
}

impl Binding {
    fn of(reg: &HostRegistration) -> Binding {
        // Held seeds and checkpoints change between registrations; the model does not.
        let model = postcard::to_stdvec(&(&reg.sites, &reg.slots, reg.world_size)).unwrap_or_default();
        Binding { run: reg.training_run_id.clone(), model }
    }
}

/// Why the connection thread stopped reading.
enum ReadStop {
    Frame(FrameError),
    /// A frame was started and not finished in time.
    FrameTimeout(Duration),
    /// Nothing arrived between frames for this long.
    Idle(Duration),
}

impl Conn {
    fn run(mut self) {
        let settings = self.shared.settings.clone();
        let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut held = 0usize;
        let mut decoder = FrameDecoder::new(settings.max_request_bytes);
        let end = loop {
            let frame = self.next_frame(&mut decoder);
            let stopping = self.stopping.load(Ordering::SeqCst);
            match frame {
                Ok(ClientFrame::Request { correlation_id: id, body }) => {
                    if let Err(err) = check_role(self.role, &body).and_then(|()| self.check_binding(&body)) {
                        // A refusal with the request's id, then the close.
                        tracing::warn!(role = self.role.as_str(), %err, "kasmina.daemon.protocol_violation");
                        let closing = ApiError::new(err.code, format!("protocol violation: {}", err.message));
                        push_frame(ServerFrame::Response { correlation_id: id, body: Err(err) }, &mut out, &settings);
                        break End::Close(closing);
                    }
                    let subscribe = match &body {
                        RequestBody::SubscribeTelemetry { min_level } => Some(*min_level),
                        _ => {
                            let registering = match &body {
                                RequestBody::RegisterHost(reg) if self.bound.is_none() => Some(Binding::of(reg)),
                                _ => None,
                            };
                            let answer = self.answer(body);
                            if answer.is_ok() && registering.is_some() {
                                self.bound = registering;
                            }
                            push_frame(ServerFrame::Response { correlation_id: id, body: answer }, &mut out, &settings);
                            None
                        }
                    };
                    if let Some(level) = subscribe {
                        // The answer goes out before any pushed event.
                        self.level_tx.send_replace(level);
                        push_frame(
                            ServerFrame::Response { correlation_id: id, body: Ok(ResponseBody::Subscribed) },
                            &mut out,
                            &settings,
                        );
                        if !self.writer.write(&out) {
                            break End::Dead;
                        }
                        out.clear();
                        held = 0;
                        if let (Some(rx), Some(tx)) = (self.local.take(), self.pushed_tx.take()) {
                            let _ = tx.send(rx);
                        }
                        continue;
                    }
                }
                Ok(ClientFrame::Hello { .. }) => {
                    break End::Close(ApiError::new(ApiErrorCode::BadRequest, "protocol violation: second Hello"));
                }
                Err(_) if stopping => {
                    break End::Close(ApiError::new(ApiErrorCode::ShuttingDown, "server shutting down"));
                }
                Err(ReadStop::Frame(FrameError::Eof)) => break End::Quiet,
                Err(ReadStop::Frame(err)) => {
                    tracing::warn!(%err, "kasmina.daemon.bad_frame");
                    break End::Close(ApiError::new(ApiErrorCode::BadRequest, format!("bad frame: {err}")));
                }
                Err(ReadStop::FrameTimeout(limit)) => {
                    tracing::warn!(limit_ms = limit.as_millis() as u64, "kasmina.daemon.frame_timeout");
                    break End::Close(ApiError::new(
                        ApiErrorCode::BadRequest,
                        format!("frame not completed within {} ms", limit.as_millis()),
                    ));
                }
                Err(ReadStop::Idle(limit)) => {
                    tracing::info!(limit_ms = limit.as_millis() as u64, "kasmina.daemon.idle_reaped");
                    break End::Close(ApiError::new(
                        ApiErrorCode::Transport,
                        format!(
                            "no frame for {} ms: closing an idle connection (reconnect to go on)",
                            limit.as_millis()
                        ),
                    ));
                }
            }
            held += 1;
            // Hold answers back only while the client has another request
            // queued, so a lone request is answered at once.
            let more_queued = whole_frame_buffered(self.reader.buffer());
            if !more_queued || held >= settings.max_in_flight_per_connection || out.len() >= WRITE_BATCH_BYTES {
                if !self.writer.write(&out) {
                    break End::Dead;
                }
                out.clear();
                held = 0;
            }
        };
        match end {
            End::Dead => {}
            End::Quiet => self.writer.finish(&out),
            End::Close(reason) => {
                push_frame(ServerFrame::Closing(reason), &mut out, &settings);
                self.writer.finish(&out);
            }
        }
    }

    /// Reads the next frame through the one [`FrameDecoder`], enforcing the
    /// frame deadline (from a frame's first byte) and the idle deadline
    /// (between frames, unless subscribed). The socket's read timeout is
    /// set only when a read will reach the socket.
    fn next_frame(&mut self, decoder: &mut FrameDecoder) -> Result<ClientFrame, ReadStop> {
        let settings = &self.shared.settings;
        let (frame_limit, idle_limit) = (settings.frame_timeout, settings.idle_timeout);
        let waiting_since = Instant::now();
        let mut started: Option<Instant> = None;
        loop {
            if let Some(frame) = decoder.pop().map_err(ReadStop::Frame)? {
                return Ok(frame);
            }
            if started.is_none() && !decoder.is_between_frames() {
                started = Some(Instant::now());
            }
            let timeout = match started {
                Some(t0) => Some(remaining(frame_limit, t0).ok_or(ReadStop::FrameTimeout(frame_limit))?),
                // A subscriber's receivers were handed to the task: it only reads.
                None if self.local.is_none() => None,
                None => match idle_limit {
                    Some(limit) => {
                        remaining(limit, waiting_since).ok_or(ReadStop::Idle(limit))?;
                        // The whole limit, not what is left: the value then
                        // stays put and the socket option is not set per read.
                        Some(limit)
                    }
                    None => None,
                },
            };
            if self.reader.buffer().is_empty() && timeout != self.read_timeout {
                self.reader.get_ref().set_read_timeout(timeout).map_err(|e| ReadStop::Frame(e.into()))?;
                self.read_timeout = timeout;
            }
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // The loop re-checks the deadlines.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(ReadStop::Frame(e.into())),
            };
            if available.is_empty() {
                return Err(ReadStop::Frame(decoder.end_of_stream()));
            }
            let used = decoder.feed(available).map_err(ReadStop::Frame)?;
            self.reader.consume(used);
        }
    }

    /// Once a trainer connection has registered, it reports for that run
    /// only and may re-register (resynchronise) only that run with the same
    /// model. Before it registers, the host itself refuses a report for a
    /// run it does not hold.
    fn check_binding(&self, body: &RequestBody) -> Result<(), ApiError> {
        let refuse = |message: String| Err(ApiError::new(ApiErrorCode::BadRequest, message));
        match (body, &self.bound) {
            (RequestBody::StepReport(report), Some(bound)) if report.training_run_id != bound.run => refuse(format!(
                "step report for run {:?} on a connection bound to run {:?}",
                report.training_run_id, bound.run
            )),
            (RequestBody::RegisterHost(reg), Some(bound)) if reg.training_run_id != bound.run => refuse(format!(
                "registration of run {:?} on a connection bound to run {:?} (use a new connection)",
                reg.training_run_id, bound.run
            )),
            (RequestBody::RegisterHost(reg), Some(bound)) if Binding::of(reg).model != bound.model => refuse(format!(
                "registration of a different model (sites, slots or world size) for run {:?} on a connection \
                 bound to the model it registered first (use a new connection)",
                reg.training_run_id
            )),
            _ => Ok(()),
        }
    }

    /// Calls the host (never inside the async runtime). The telemetry the
    /// call produced was pushed to the hub as it was emitted, so it is
    /// published before the answer is written.
    fn answer(&mut self, body: RequestBody) -> Result<ResponseBody, ApiError> {
        if let RequestBody::DrainTelemetry = body {
            return match self.local.as_mut() {
                Some(rx) => {
                    let mut events = Vec::new();
                    drain_into(&mut rx.critical, true, &mut events);
                    drain_into(&mut rx.normal, false, &mut events);
                    Ok(ResponseBody::Telemetry(events))
                }
                None => Err(ApiError::new(
                    ApiErrorCode::BadRequest,
                    "this connection is subscribed: its telemetry is pushed, not drained",
                )),
            };
        }
        let api = &*self.shared.api;
        std::panic::catch_unwind(AssertUnwindSafe(|| dispatch(api, body))).unwrap_or_else(|_| {
            Err(ApiError::new(ApiErrorCode::Internal, "the host panicked while serving this request"))
        })
    }
}

/// Time left of `limit` since `since`; `None` once it has run out. Never
/// zero (a zero socket timeout is an error).
fn remaining(limit: Duration, since: Instant) -> Option<Duration> {
    let left = limit.checked_sub(since.elapsed())?;
    if left.is_zero() { None } else { Some(left.max(Duration::from_millis(1))) }
}

/// Whether `buffered` starts with a complete frame (length prefix and all).
fn whole_frame_buffered(buffered: &[u8]) -> bool {
    match buffered.get(..LENGTH_PREFIX_BYTES) {
        Some(prefix) => {
            let mut len = [0u8; LENGTH_PREFIX_BYTES];
            len.copy_from_slice(prefix);
            buffered.len() - LENGTH_PREFIX_BYTES >= u32::from_be_bytes(len) as usize
        }
        None => false,
    }
}

fn dispatch(api: &dyn KasminaApi, body: RequestBody) -> Result<ResponseBody, ApiError> {
    match body {
        RequestBody::SubmitCommand(cmd) => api.submit_command(cmd).map(ResponseBody::CommandOutcome),
        RequestBody::RegisterHost(reg) => api.register_host(reg).map(ResponseBody::Registered),
        RequestBody::FetchKernel { blueprint_id } => api.fetch_kernel(&blueprint_id).map(ResponseBody::Kernel),
        RequestBody::StepReport(report) => api.step_report(report).map(ResponseBody::Directives),
        RequestBody::SeedStates => api.seed_states().map(ResponseBody::SeedStates),
        RequestBody::Status => api.status().map(ResponseBody::Status),
        RequestBody::SubscribeTelemetry { .. } | RequestBody::DrainTelemetry => {
            Err(ApiError::new(ApiErrorCode::Internal, "telemetry requests are served by the connection writer"))
        }
    }
}
