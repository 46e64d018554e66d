//! The daemon's read-only HTTP side on the metrics address (loopback unless
//! `--metrics-public`), served by axum (hyper) on the daemon's tokio runtime:
//!
//! - `GET /metrics`: OpenMetrics text ([`crate::metrics`]);
//! - `GET /`: the live status page ([`crate::status_page::PAGE_HTML`]);
//! - `GET /api/state`: the page's [`Snapshot`] as JSON;
//! - `GET /events`: the same snapshot as server-sent events, one on every
//!   change (coalesced to at most one per [`SSE_MIN_INTERVAL`]) and a
//!   keep-alive comment between.
//!
//! Nothing here changes the host: every route is a GET, anything else is
//! answered 405 by the router. Bounds: at most [`MAX_SSE_CLIENTS`] live
//! streams (more get 503), request heads are capped by hyper, and every
//! snapshot is built on a blocking thread so a slow host lock never stalls
//! the runtime.

use std::convert::Infallible;
use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use leyline::api::KasminaApi;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::daemon_host::DaemonHost;
use crate::status_page::{LiveFeed, PAGE_HTML, Snapshot};

/// Live `/events` streams served at once.
pub const MAX_SSE_CLIENTS: usize = 16;
/// Shortest gap between two snapshots on one stream: a burst of events
/// (a step report moving several seeds) becomes one update.
pub const SSE_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Keep-alive comment interval on an idle stream.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// After shutdown is asked for, how long requests in flight get before
/// the HTTP side stops regardless (live streams end at once).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every route reads.
#[derive(Clone)]
pub struct HttpState {
    host: Arc<DaemonHost>,
    feed: Arc<LiveFeed>,
    streams: Arc<Semaphore>,
    /// Turns true at shutdown: every live stream ends (a graceful shutdown
    /// would otherwise wait for streams that never end by themselves).
    stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").finish_non_exhaustive()
    }
}

impl HttpState {
    /// Routes over `host`, with the page fed by `feed` (subscribe it to the
    /// host's telemetry and wrap the served API in
    /// [`crate::status_page::Observed`] so it sees events and steps).
    pub fn new(host: Arc<DaemonHost>, feed: Arc<LiveFeed>) -> Self {
        HttpState { host, feed, streams: Arc::new(Semaphore::new(MAX_SSE_CLIENTS)), stopping: watch::channel(false).1 }
    }
}

/// The router: `/`, `/metrics`, `/api/state`, `/events`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/state", get(api_state))
        .route("/events", get(events))
        .fallback(not_found)
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes; then live
/// streams end, requests in flight get [`SHUTDOWN_GRACE`], and it returns.
pub async fn serve(listener: TcpListener, mut state: HttpState, shutdown: impl std::future::Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    state.stopping = stop_rx.clone();
    let mut graceful = stop_rx;
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|s| *s).await;
        })
        .into_future();
    tokio::pin!(server);
    let finished = tokio::select! {
        r = &mut server => Some(r),
        () = shutdown => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("kasmina.http.shutdown_grace_exceeded");
                    Ok(())
                }
            }
        }
    };
    if let Err(err) = result {
        tracing::warn!(%err, "kasmina.http.serve_failed");
    }
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // The page loads nothing from anywhere: say so to the browser too.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        Html(PAGE_HTML),
    )
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match tokio::task::spawn_blocking(move || crate::metrics::render(&state.host)).await {
        Ok(body) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering metrics failed: {err}\n")).into_response(),
    }
}

/// The page's document now, read on a blocking thread.
async fn snapshot(state: &HttpState) -> Result<Snapshot, String> {
    let (host, feed) = (Arc::clone(&state.host), Arc::clone(&state.feed));
    tokio::task::spawn_blocking(move || {
        let status = host.status().map_err(|e| e.to_string())?;
        let seeds = host.seed_states().map_err(|e| e.to_string())?;
        Ok(feed.snapshot(status, seeds))
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn api_state(State(state): State<HttpState>) -> Response {
    match snapshot(&state).await {
        Ok(s) => match serde_json::to_string(&s) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(err) => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the state failed: {err}\n")).into_response()
            }
        },
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("the host did not answer: {err}\n")).into_response(),
    }
}

async fn events(State(state): State<HttpState>) -> Response {
    let Ok(permit) = Arc::clone(&state.streams).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_SSE_CLIENTS} live streams are open already; close a status page and retry\n"),
        )
            .into_response();
    };
    Sse::new(snapshots(state, permit)).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)).into_response()
}

/// One `state` event now, then one after every change (at most one per
/// [`SSE_MIN_INTERVAL`]). The permit lives as long as the stream.
fn snapshots(state: HttpState, permit: OwnedSemaphorePermit) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = state.feed.subscribe();
    stream::unfold((state, changes, permit, true), |(mut state, mut changes, permit, first)| async move {
        if *state.stopping.borrow() {
            return None;
        }
        if !first {
            let wait = async {
                tokio::time::sleep(SSE_MIN_INTERVAL).await;
                changes.changed().await
            };
            tokio::select! {
                // The feed lives as long as the daemon; a closed channel ends the stream.
                changed = wait => changed.ok()?,
                _ = state.stopping.wait_for(|s| *s) => return None,
            }
        }
        changes.borrow_and_update();
        let event = match snapshot(&state).await {
            Ok(s) => match serde_json::to_string(&s) {
                Ok(json) => Event::default().event("state").data(json),
                Err(err) => error_event(&err.to_string()),
            },
            Err(err) => error_event(&err),
        };
        Some((Ok(event), (state, changes, permit, false)))
    })
}

fn error_event(detail: &str) -> Event {
    Event::default().event("failure").data(detail.replace('\n', " "))
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "served here: / (status page), /metrics, /api/state, /events\n")
}
