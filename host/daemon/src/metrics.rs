//! `/metrics`: Prometheus text exposition on loopback HTTP (off unless
//! `kasmina serve --metrics 127.0.0.1:PORT`).
//!
//! [`render`] reads the host's own counters — kernel cache, circuit
//! breakers, gate verdicts, commands (per rejection reason), gate-plugin
//! latency histogram, shadow agreement, rollback SLA compliance, journal
//! appends and fsync cost. [`serve`] is a deliberately small HTTP/1.1
//! responder: one bounded request head, `GET /metrics` only, one response,
//! connection closed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kasmina::gates::PLUGIN_LATENCY_BUCKETS_US;
use leyline::{BreakerState, Metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::daemon_host::DaemonHost;
use crate::server::ServeError;

/// Largest request head read before the client is refused.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time a metrics client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() }
    } else {
        format!("{v}")
    }
}

/// `kasmina.rollback.fast.within_sla` → `kasmina_rollback_fast_within_sla`.
fn prom_name(dotted: &str) -> String {
    dotted.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn metrics(out: &mut Out, list: &[Metric], help: &str) {
    let mut last = String::new();
    for m in list {
        let name = format!("{}_{}", prom_name(&m.name), prom_name(&m.unit));
        if name != last {
            out.family(&name, "gauge", help);
            last.clone_from(&name);
        }
        let labels: Vec<(&str, &str)> = m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        out.sample(&name, &labels, m.value);
    }
}

/// The exposition text for `host` now.
pub fn render(host: &DaemonHost) -> String {
    let mut out = Out(String::with_capacity(8 * 1024));
    let embedded = host.host();
    let manager = embedded.manager();

    let cache = manager.kernels().stats().cumulative;
    out.family("kasmina_kernel_cache_events_total", "counter", "Kernel cache and load events since start.");
    for (event, v) in [
        ("hit", cache.hits),
        ("miss", cache.misses),
        ("load", cache.loads),
        ("load_failure", cache.load_failures),
        ("breaker_refusal", cache.breaker_refusals),
        ("eviction", cache.evictions),
        ("expiration", cache.expirations),
    ] {
        out.sample("kasmina_kernel_cache_events_total", &[("event", event)], v as f64);
    }
    out.one("kasmina_kernel_cache_entries", "gauge", "Kernels in the cache.", manager.kernels().cache_entries() as f64);
    out.one(
        "kasmina_kernel_load_latency_us_total",
        "counter",
        "Sum of kernel load latencies (µs).",
        cache.load_latency_total_us as f64,
    );
    out.one(
        "kasmina_kernel_load_latency_us_max",
        "gauge",
        "Largest kernel load latency (µs).",
        cache.load_latency_max_us as f64,
    );

    // Isolation breakers are per seed (`isolation/<seed_id>`): the seed
    // is a label of its own, as Prometheus queries expect.
    let breakers = manager.breakers();
    let labels = |name: &str| -> Vec<(&'static str, String)> {
        match name.split_once('/') {
            Some((kind, seed)) => vec![("breaker", kind.to_owned()), ("seed_id", seed.to_owned())],
            None => vec![("breaker", name.to_owned())],
        }
    };
    out.family("kasmina_breaker_state", "gauge", "Circuit breaker state (1 for the current state).");
    for breaker in &breakers {
        let now = breaker.state();
        for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            let mut l = labels(breaker.name());
            l.push(("state", state.as_str().to_owned()));
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            out.sample("kasmina_breaker_state", &l, f64::from(u8::from(now == state)));
        }
    }
    out.family("kasmina_breaker_transitions_total", "counter", "Circuit breaker state changes.");
    for breaker in &breakers {
        let l = labels(breaker.name());
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.sample("kasmina_breaker_transitions_total", &l, breaker.transitions() as f64);
    }

    let (accepted, rejected) = manager.command_counts();
    out.family("kasmina_commands_total", "counter", "Commands by outcome.");
    out.sample("kasmina_commands_total", &[("outcome", "accepted")], accepted as f64);
    out.sample("kasmina_commands_total", &[("outcome", "rejected")], rejected as f64);
    metrics(&mut out, &manager.verifier().stats().to_metrics(), "Command envelope verification.");

    let gates = manager.gate_service().call_stats();
    out.family("kasmina_gate_plugin_latency_us", "histogram", "Gate plugin call latency (µs).");
    let mut cumulative = 0;
    for (i, count) in gates.buckets.iter().enumerate() {
        cumulative += count;
        let le = PLUGIN_LATENCY_BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), u64::to_string);
        out.sample("kasmina_gate_plugin_latency_us_bucket", &[("le", &le)], cumulative as f64);
    }
    out.sample("kasmina_gate_plugin_latency_us_sum", &[], gates.total_us as f64);
    out.sample("kasmina_gate_plugin_latency_us_count", &[], gates.calls as f64);
    out.family("kasmina_gate_shadow_total", "counter", "Shadow gate evaluations by agreement with the active plugin.");
    out.sample("kasmina_gate_shadow_total", &[("result", "agree")], gates.shadow_agreements as f64);
    out.sample("kasmina_gate_shadow_total", &[("result", "disagree")], gates.shadow_disagreements as f64);
    out.sample("kasmina_gate_shadow_total", &[("result", "dropped")], gates.shadow_dropped as f64);

    metrics(&mut out, &manager.rollback().metrics(), "Rollback readiness against its SLA.");

    if let Some(recorder) = host.recorder() {
        let s = recorder.stats();
        out.family("kasmina_gate_verdicts_total", "counter", "Gate verdicts journaled, by result.");
        out.sample(
            "kasmina_gate_verdicts_total",
            &[("result", "passed")],
            s.gates_passed.load(Ordering::Relaxed) as f64,
        );
        out.sample(
            "kasmina_gate_verdicts_total",
            &[("result", "failed")],
            s.gates_failed.load(Ordering::Relaxed) as f64,
        );
        out.one(
            "kasmina_journal_appends_total",
            "counter",
            "Journal records appended.",
            s.appends.load(Ordering::Relaxed) as f64,
        );
        out.one("kasmina_journal_fsyncs_total", "counter", "Journal fsyncs.", s.syncs.load(Ordering::Relaxed) as f64);
        out.one(
            "kasmina_journal_fsync_us_total",
            "counter",
            "Time spent in journal fsync (µs).",
            s.sync_us.load(Ordering::Relaxed) as f64,
        );
        out.one(
            "kasmina_journal_progress_records_total",
            "counter",
            "In-stage progress records journaled (α, epoch, windows, breakers).",
            s.progress_records.load(Ordering::Relaxed) as f64,
        );
        out.one(
            "kasmina_journal_compactions_total",
            "counter",
            "Journal compactions.",
            s.compactions.load(Ordering::Relaxed) as f64,
        );
        out.one(
            "kasmina_journal_healthy",
            "gauge",
            "1 while the journal accepts writes.",
            f64::from(u8::from(recorder.failure().is_none())),
        );
    }
    out.one(
        "kasmina_telemetry_dropped_total",
        "counter",
        "Telemetry events lost to full queues (hub and outbox) since start.",
        embedded.telemetry_dropped() as f64,
    );
    let seeds = manager.export_seed_states();
    out.one("kasmina_seeds", "gauge", "Seed slots known to the host.", seeds.len() as f64);
    blend_gauges(&mut out, &seeds);
    if let Some(kd) = manager.latest_distillation() {
        out.one(
            "kasmina_teacher_memory_bytes",
            "gauge",
            "Memory held by the KD teacher.",
            kd.teacher_memory_bytes as f64,
        );
        out.one("kasmina_distillation_loss", "gauge", "KD loss of the last reported step.", kd.kd_loss);
    }
    out.0
}

/// Per-seed blend statistics of the last reported step (SPEC.md §5), one
/// gauge family per statistic, labelled by seed, site and mode. Seeds that
/// did not blend in the last step have no samples.
fn blend_gauges(out: &mut Out, seeds: &[leyline::SeedState]) {
    type Pick = fn(&leyline::api::BlendReport) -> Option<f64>;
    let families: [(&str, &str, Pick); 6] = [
        ("kasmina_seed_blend_alpha_mean", "Mean effective blend alpha.", |b| Some(b.alpha_mean)),
        ("kasmina_seed_blend_alpha_p95", "95th percentile of the effective blend alpha.", |b| Some(b.alpha_p95)),
        ("kasmina_seed_blend_clamped_ratio", "Share of samples whose alpha was clamped.", |b| Some(b.clamped_fraction)),
        ("kasmina_seed_blend_sparsity_ratio", "Share of channels with alpha 0 (CHANNEL).", |b| b.sparsity),
        ("kasmina_seed_blend_gate_mean", "Mean confidence gate (CONFIDENCE).", |b| b.gate_mean),
        ("kasmina_seed_blend_kernel_seconds", "Wall time of the blend op.", |b| Some(b.kernel_us / 1e6)),
    ];
    for (name, help, pick) in families {
        out.family(name, "gauge", help);
        for seed in seeds {
            if let Some(value) = seed.blend.as_ref().and_then(pick) {
                let mode = seed.blend.as_ref().map_or("", |b| b.mode.as_str());
                out.sample(name, &[("seed_id", &seed.seed_id), ("site", &seed.site), ("mode", mode)], value);
            }
        }
    }
}

/// Binds the metrics listener (loopback only).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    crate::server::bind_tcp(addr).await
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, host: Arc<DaemonHost>, shutdown: impl std::future::Future) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let host = Arc::clone(&host);
                    tokio::spawn(async move {
                        if let Err(err) = respond(stream, host).await {
                            tracing::debug!(%err, "kasmina.metrics.request_failed");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "kasmina.metrics.accept_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn respond(mut stream: tokio::net::TcpStream, host: Arc<DaemonHost>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() >= MAX_REQUEST_HEAD_BYTES {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(true)
    })
    .await;
    let complete = matches!(read, Ok(Ok(true)));
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (status, body, content_type) = match (complete, parts.next(), parts.next()) {
        (false, _, _) => ("400 Bad Request", "request head incomplete or over 8 KiB\n".to_owned(), "text/plain"),
        (true, Some("GET"), Some("/metrics")) => {
            let body = tokio::task::spawn_blocking(move || render(&host)).await.unwrap_or_else(|_| String::new());
            ("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
        }
        (true, Some("GET"), Some(_)) => ("404 Not Found", "only /metrics is served here\n".to_owned(), "text/plain"),
        (true, _, _) => ("405 Method Not Allowed", "only GET /metrics is served here\n".to_owned(), "text/plain"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
