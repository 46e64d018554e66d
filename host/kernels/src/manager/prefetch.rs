//! Background prefetch on a small tokio runtime the manager owns.
//!
//! Why its own runtime, on its own thread: `prefetch()` must work from plain
//! synchronous code (a training loop) and from inside someone else's async
//! runtime (the daemon) without ever nesting runtimes. Submitting is a
//! `Handle::spawn`, which is legal from anywhere and never blocks; the
//! runtime lives and is dropped on its own thread, so dropping the manager
//! inside an async context cannot hit tokio's "drop a runtime in async
//! context" panic. Loads themselves are blocking (file I/O, libtorch) and run
//! on the runtime's bounded blocking pool.
//!
//! Each request's task races the load against its deadline (from the
//! request's `issued_at_ms + timeout_ms`, judged by the injected clock),
//! a per-request cancel (seed retired) and the manager-wide shutdown signal,
//! and delivers exactly one [`PrefetchEvent`]. A request stays counted as in
//! flight until a channel slot for its event is reserved, so the in-flight
//! cap bounds tasks as well as undelivered results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leyline::prefetch::{PrefetchError, PrefetchErrorKind, PrefetchReady, PrefetchRequest};
use leyline::{TelemetryEvent, TelemetryLevel};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use super::Core;
use crate::KernelError;
use crate::kernel::LoadedKernel;

/// Longest id accepted in a prefetch request.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// One prefetch result. Exactly one is delivered per accepted request.
#[derive(Debug, Clone)]
pub enum PrefetchEvent {
    /// The kernel is verified, loaded and prewarmed.
    Ready {
        /// The contract message.
        ready: PrefetchReady,
        /// The kernel itself, so the seed gets exactly what was prefetched.
        kernel: Arc<LoadedKernel>,
    },
    /// No kernel: the seed must not proceed.
    Failed(PrefetchError),
}

impl PrefetchEvent {
    /// The request this answers.
    pub fn request_id(&self) -> &str {
        match self {
            PrefetchEvent::Ready { ready, .. } => &ready.request_id,
            PrefetchEvent::Failed(e) => &e.request_id,
        }
    }

    /// The seed the request was for.
    pub fn seed_id(&self) -> &str {
        match self {
            PrefetchEvent::Ready { ready, .. } => &ready.seed_id,
            PrefetchEvent::Failed(e) => &e.seed_id,
        }
    }
}

/// Why no event was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing is waiting (`try_recv`).
    #[error("no prefetch event is waiting")]
    Empty,
    /// Nothing arrived in time (`recv_timeout`).
    #[error("no prefetch event within the timeout")]
    Timeout,
    /// The manager shut down and every event has been received.
    #[error("prefetch channel closed")]
    Closed,
    /// `recv_timeout` was called inside an async runtime; use `recv().await`.
    #[error("recv_timeout called inside an async runtime; use recv().await")]
    InsideRuntime,
}

/// The receiving end of prefetch results.
#[derive(Debug)]
pub struct PrefetchEvents {
    rx: mpsc::Receiver<PrefetchEvent>,
    // Built on first `recv_timeout`, only on threads with no runtime.
    local: Option<tokio::runtime::Runtime>,
}

impl Drop for PrefetchEvents {
    fn drop(&mut self) {
        // The owner (e.g. a host served by a daemon) may be dropped inside an
        // async context, where dropping a runtime panics; this one has no
        // tasks of its own, so it can be released without waiting.
        if let Some(local) = self.local.take() {
            local.shutdown_background();
        }
    }
}

impl PrefetchEvents {
    /// Next event (async callers). `None` once the manager has shut down and
    /// every event was received.
    pub async fn recv(&mut self) -> Option<PrefetchEvent> {
        self.rx.recv().await
    }

    /// Next event if one is waiting (e.g. polled once per training step).
    pub fn try_recv(&mut self) -> Result<PrefetchEvent, RecvError> {
        self.rx.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => RecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => RecvError::Closed,
        })
    }

    /// Waits up to `timeout` for the next event (synchronous callers only:
    /// inside an async runtime this returns [`RecvError::InsideRuntime`]
    /// rather than block a worker thread).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<PrefetchEvent, RecvError> {
        if Handle::try_current().is_ok() {
            return Err(RecvError::InsideRuntime);
        }
        if self.local.is_none() {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|_| RecvError::Closed)?;
            self.local = Some(rt);
        }
        let (Some(rt), rx) = (&self.local, &mut self.rx) else { return Err(RecvError::Closed) };
        // The timer must be created inside the runtime, hence the async block.
        match rt.block_on(async { tokio::time::timeout(timeout, rx.recv()).await }) {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(RecvError::Closed),
            Err(_) => Err(RecvError::Timeout),
        }
    }
}

/// What `shutdown()` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// In-flight requests cancelled.
    pub cancelled_requests: usize,
    /// Whether the runtime thread confirmed it stopped within the bound.
    pub stopped_in_time: bool,
    /// How long shutdown took, ms.
    pub elapsed_ms: u64,
    /// `true` if an earlier call had already shut the manager down.
    pub already_shut_down: bool,
}

#[derive(Debug, Clone, Copy)]
enum CancelReason {
    SeedRetired,
    Shutdown,
}

impl CancelReason {
    fn as_str(self) -> &'static str {
        match self {
            CancelReason::SeedRetired => "seed_retired",
            CancelReason::Shutdown => "shutdown",
        }
    }
}

struct InFlight {
    // Distinguishes a request from a later one reusing its id.
    token: u64,
    seed_id: String,
    cancel: oneshot::Sender<CancelReason>,
}

struct Shared {
    core: Arc<Core>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    events_tx: Mutex<Option<mpsc::Sender<PrefetchEvent>>>,
    shutdown: watch::Sender<bool>,
    closed: AtomicBool,
    next_token: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        // A map of senders: still consistent if a holder panicked.
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, name: &str, level: TelemetryLevel, message: String, req: &PrefetchRequest) -> TelemetryEvent {
        TelemetryEvent::new(name, level, message, self.core.clock.now_ms())
            .seed(req.seed_id.as_str())
            .attr("request_id", req.request_id.as_str())
            .attr("blueprint_id", req.blueprint_id.as_str())
            .attr("training_run_id", req.training_run_id.as_str())
    }
}

/// The prefetch side of the manager.
pub(crate) struct Prefetcher {
    shared: Arc<Shared>,
    handle: Handle,
    stop_tx: Mutex<Option<oneshot::Sender<()>>>,
    done_rx: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Prefetcher {
    pub(crate) fn start(core: Arc<Core>) -> Result<(Self, PrefetchEvents), KernelError> {
        let cap = core.config.prefetch_max_in_flight;
        let bound = Duration::from_millis(core.config.shutdown_timeout_ms);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel::<Result<Handle, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        // The runtime is built, run and dropped on this thread only.
        let thread = std::thread::Builder::new()
            .name("kasmina-prefetch".to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .max_blocking_threads(cap.clamp(1, 8))
                    .thread_name("kasmina-prefetch-worker")
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                // Returns when shutdown() sends, or when the Prefetcher is dropped.
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(bound);
                let _ = done_tx.send(());
            })
            .map_err(|e| KernelError::RuntimeStart { detail: e.to_string() })?;
        let handle = match handle_rx.recv() {
            Ok(Ok(h)) => h,
            Ok(Err(detail)) => return Err(KernelError::RuntimeStart { detail }),
            Err(_) => return Err(KernelError::RuntimeStart { detail: "runtime thread exited".to_owned() }),
        };
        let (events_tx, rx) = mpsc::channel(cap);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            core,
            in_flight: Mutex::new(HashMap::new()),
            events_tx: Mutex::new(Some(events_tx)),
            shutdown,
            closed: AtomicBool::new(false),
            next_token: std::sync::atomic::AtomicU64::new(0),
        });
        let prefetcher = Prefetcher {
            shared,
            handle,
            stop_tx: Mutex::new(Some(stop_tx)),
            done_rx: Mutex::new(Some(done_rx)),
            thread: Mutex::new(Some(thread)),
        };
        Ok((prefetcher, PrefetchEvents { rx, local: None }))
    }

    /// Validates and starts a request; the result arrives as an event.
    pub(crate) fn prefetch(&self, req: PrefetchRequest) -> Result<(), KernelError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(KernelError::ShutDown);
        }
        if let Err(err) = validate(&req, self.shared.core.config.prefetch_timeout_ms) {
            let event =
                self.shared.emit("kasmina.kernel.prefetch_rejected", TelemetryLevel::Error, err.to_string(), &req);
            self.shared.core.emit(event.attr("reason", err.reason()));
            return Err(err);
        }
        let cap = self.shared.core.config.prefetch_max_in_flight;
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let tx = {
            let mut registry = self.shared.registry();
            if registry.len() >= cap {
                return Err(KernelError::PrefetchQueueFull { cap });
            }
            if registry.contains_key(&req.request_id) {
                return Err(KernelError::InvalidRequest {
                    detail: format!("request_id {} is already in flight", req.request_id),
                });
            }
            let Some(tx) = lock(&self.shared.events_tx).clone() else { return Err(KernelError::ShutDown) };
            let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
            registry
                .insert(req.request_id.clone(), InFlight { token, seed_id: req.seed_id.clone(), cancel: cancel_tx });
            (tx, token)
        };
        let (tx, token) = tx;
        let shutdown_rx = self.shared.shutdown.subscribe();
        self.handle.spawn(run_request(Arc::clone(&self.shared), req, token, cancel_rx, shutdown_rx, tx));
        Ok(())
    }

    /// Cancels every in-flight request of a retired seed; returns how many.
    pub(crate) fn cancel_seed(&self, seed_id: &str) -> usize {
        let mut registry = self.shared.registry();
        let ids: Vec<String> =
            registry.iter().filter(|(_, f)| f.seed_id == seed_id).map(|(id, _)| id.clone()).collect();
        for id in &ids {
            if let Some(f) = registry.remove(id) {
                // A task that already finished dropped its receiver; nothing to cancel then.
                let _ = f.cancel.send(CancelReason::SeedRetired);
            }
        }
        ids.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.shared.registry().len()
    }

    /// Stops every background task: cancels in-flight requests, closes the
    /// event channel and shuts the runtime down, waiting at most the
    /// configured bound (plus a small margin for the thread hand-off).
    pub(crate) fn shutdown(&self) -> ShutdownReport {
        let started = Instant::now();
        let already_shut_down = self.shared.closed.swap(true, Ordering::SeqCst);
        let cancelled_requests = self.signal_stop();
        let bound = Duration::from_millis(self.shared.core.config.shutdown_timeout_ms);
        let stopped_in_time = match lock(&self.done_rx).take() {
            Some(done) => done.recv_timeout(bound + Duration::from_millis(250)).is_ok(),
            None => already_shut_down,
        };
        if stopped_in_time && let Some(t) = lock(&self.thread).take() {
            // It has signalled completion; join only reaps it.
            let _ = t.join();
        }
        ShutdownReport {
            cancelled_requests,
            stopped_in_time,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            already_shut_down,
        }
    }

    /// Non-blocking half of shutdown (also what `Drop` does).
    fn signal_stop(&self) -> usize {
        self.shared.closed.store(true, Ordering::SeqCst);
        let drained: Vec<InFlight> = self.shared.registry().drain().map(|(_, f)| f).collect();
        let n = drained.len();
        for f in drained {
            let _ = f.cancel.send(CancelReason::Shutdown);
        }
        self.shared.shutdown.send_replace(true);
        // Tasks hold their own sender clones; once they end the channel closes.
        drop(lock(&self.shared.events_tx).take());
        if let Some(stop) = lock(&self.stop_tx).take() {
            let _ = stop.send(());
        }
        n
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Never blocks: the runtime thread finishes shutting down on its own.
        self.signal_stop();
    }
}

fn validate(req: &PrefetchRequest, max_timeout_ms: u64) -> Result<(), KernelError> {
    let invalid = |detail: String| Err(KernelError::InvalidRequest { detail });
    for (field, value) in [
        ("request_id", &req.request_id),
        ("seed_id", &req.seed_id),
        ("blueprint_id", &req.blueprint_id),
        ("training_run_id", &req.training_run_id),
    ] {
        if value.trim().is_empty() {
            return invalid(format!("{field} is empty"));
        }
        if value.len() > MAX_REQUEST_ID_LEN {
            return invalid(format!("{field} is longer than {MAX_REQUEST_ID_LEN} bytes"));
        }
    }
    if req.issued_at_ms == 0 {
        return invalid("issued_at_ms is missing".to_owned());
    }
    if req.timeout_ms == 0 || req.timeout_ms > max_timeout_ms {
        return invalid(format!("timeout_ms {} is not in 1..={max_timeout_ms}", req.timeout_ms));
    }
    Ok(())
}

enum Outcome {
    Loaded(Result<(Arc<LoadedKernel>, bool), KernelError>),
    Panicked(String),
    TimedOut,
    Cancelled(CancelReason),
}

async fn run_request(
    shared: Arc<Shared>,
    req: PrefetchRequest,
    token: u64,
    cancel_rx: oneshot::Receiver<CancelReason>,
    mut shutdown_rx: watch::Receiver<bool>,
    tx: mpsc::Sender<PrefetchEvent>,
) {
    let started = Instant::now();
    let deadline_ms = req.issued_at_ms.saturating_add(req.timeout_ms);
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(shared.core.clock.now_ms()));
    let outcome = if remaining.is_zero() {
        // Stale on arrival: do no work for it.
        Outcome::TimedOut
    } else {
        let core = Arc::clone(&shared.core);
        let (bp, seed) = (req.blueprint_id.clone(), req.seed_id.clone());
        let load = tokio::task::spawn_blocking(move || core.get(&bp, Some(&seed)));
        tokio::select! {
            biased;
            reason = cancel_rx => Outcome::Cancelled(reason.unwrap_or(CancelReason::Shutdown)),
            _ = shutdown_rx.wait_for(|stop| *stop) => Outcome::Cancelled(CancelReason::Shutdown),
            joined = load => match joined {
                Ok(result) => Outcome::Loaded(result),
                Err(e) => Outcome::Panicked(e.to_string()),
            },
            () = tokio::time::sleep(remaining) => Outcome::TimedOut,
        }
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let failed = |kind: PrefetchErrorKind, detail: String| {
        PrefetchEvent::Failed(PrefetchError {
            request_id: req.request_id.clone(),
            seed_id: req.seed_id.clone(),
            blueprint_id: req.blueprint_id.clone(),
            kind,
            detail,
        })
    };
    let event = match outcome {
        Outcome::Loaded(Ok((kernel, cache_hit))) => PrefetchEvent::Ready {
            ready: PrefetchReady {
                request_id: req.request_id.clone(),
                seed_id: req.seed_id.clone(),
                blueprint_id: req.blueprint_id.clone(),
                artifact_sha256: kernel.sha256().to_owned(),
                cache_hit,
                latency_us,
            },
            kernel,
        },
        // The load path already emitted fetch telemetry and counted the failure.
        Outcome::Loaded(Err(e)) => failed(e.kind(), e.to_string()),
        Outcome::Panicked(detail) => {
            let msg = format!("kernel load task panicked: {detail}");
            shared.core.emit(shared.emit(
                "kasmina.kernel.prefetch_failed",
                TelemetryLevel::Critical,
                msg.clone(),
                &req,
            ));
            failed(PrefetchErrorKind::LoadFailed, msg)
        }
        Outcome::TimedOut => {
            let msg = format!("prefetch went stale: not ready {} ms after issue", req.timeout_ms);
            shared.core.emit(
                shared
                    .emit("kasmina.kernel.prefetch_timeout", TelemetryLevel::Critical, msg.clone(), &req)
                    .attr("timeout_ms", req.timeout_ms)
                    .attr("waited_us", latency_us),
            );
            failed(PrefetchErrorKind::TimedOut, msg)
        }
        Outcome::Cancelled(reason) => {
            let msg = format!("prefetch cancelled: {}", reason.as_str());
            shared.core.emit(
                shared
                    .emit("kasmina.kernel.prefetch_cancelled", TelemetryLevel::Info, msg.clone(), &req)
                    .attr("reason", reason.as_str()),
            );
            failed(PrefetchErrorKind::Cancelled, msg)
        }
    };
    // Reserve a slot first, leave the in-flight set, then send: the receiver
    // never sees an event for a request still counted as in flight, and the
    // cap still bounds tasks waiting on a full channel.
    let permit = if *shutdown_rx.borrow() {
        // Shutting down: never wait on a full channel.
        tx.try_reserve().ok()
    } else {
        tokio::select! {
            permit = tx.reserve() => permit.ok(),
            _ = shutdown_rx.wait_for(|stop| *stop) => tx.try_reserve().ok(),
        }
    };
    {
        let mut registry = shared.registry();
        if registry.get(&req.request_id).is_some_and(|f| f.token == token) {
            registry.remove(&req.request_id);
        }
    }
    if let Some(permit) = permit {
        permit.send(event);
    }
}
