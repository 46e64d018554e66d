//! `/metrics`: the host's counters in OpenMetrics text, encoded by the
//! `prometheus-client` crate (served by [`crate::http`], off unless
//! `kasmina serve --metrics 127.0.0.1:PORT`).
//!
//! The numbers live where they are counted (kernel cache, breakers, gate
//! service, verifier, rollback, journal recorder); a [`HostCollector`]
//! reads them at scrape time, so there is no second copy to keep in step.
//! Names and units follow Prometheus conventions: counters end in
//! `_total`, durations are `_seconds`, sizes `_bytes`; the README's
//! metrics table lists every family.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kasmina::gates::PLUGIN_LATENCY_BUCKETS_US;
use leyline::{BreakerState, Metric};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::daemon_host::DaemonHost;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Fmt = Result<(), std::fmt::Error>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// One family with any number of labelled samples.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: &[(Labels, f64)],
) -> Fmt {
    let mut metric = enc.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (l, v) in samples {
        if l.is_empty() {
            sample(&mut metric, kind, *v)?;
        } else {
            sample(&mut metric.encode_family(l)?, kind, *v)?;
        }
    }
    Ok(())
}

/// One sample; whole numbers print as integers (`1`, not `1.0`), as counts read.
fn sample(enc: &mut prometheus_client::encoding::MetricEncoder<'_>, kind: MetricType, v: f64) -> Fmt {
    let whole = (v.fract() == 0.0 && (0.0..9.0e15).contains(&v)).then_some(v as u64);
    match (kind, whole) {
        (MetricType::Counter, Some(n)) => enc.encode_counter::<NoLabelSet, _, u64>(&n, None),
        (MetricType::Counter, None) => enc.encode_counter::<NoLabelSet, _, f64>(&v, None),
        (_, Some(n)) => enc.encode_gauge(&i64::try_from(n).unwrap_or(i64::MAX)),
        (_, None) => enc.encode_gauge(&v),
    }
}

/// Reads a [`DaemonHost`]'s counters at every scrape.
#[derive(Debug)]
pub struct HostCollector {
    host: Arc<DaemonHost>,
}

impl HostCollector {
    /// A collector over `host`.
    pub fn new(host: Arc<DaemonHost>) -> Self {
        HostCollector { host }
    }
}

impl Collector for HostCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        encode_host(&self.host, &mut enc)
    }
}

/// The exposition text for `host` now (OpenMetrics, ending in `# EOF`).
pub fn render(host: &DaemonHost) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(render_families(host))));
    encode(&registry)
}

/// A registry's exposition text; on an encoding fault (none is expected:
/// the writer is a `String`) an empty exposition rather than half of one.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        tracing::warn!("kasmina.metrics.encode_failed");
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// Families read ahead of time (a registry wants owned collectors).
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        for f in &self.0 {
            write_family(&mut enc, f)?;
        }
        Ok(())
    }
}

/// One family, read from the host.
#[derive(Debug, Clone)]
struct Family {
    name: String,
    help: &'static str,
    unit: Option<Unit>,
    kind: FamilyKind,
}

#[derive(Debug, Clone)]
enum FamilyKind {
    Gauge(Vec<(Labels, f64)>),
    Counter(Vec<(Labels, f64)>),
    Histogram { sum: f64, count: u64, buckets: Vec<(f64, u64)> },
}

fn write_family(enc: &mut DescriptorEncoder, f: &Family) -> Fmt {
    match &f.kind {
        FamilyKind::Gauge(samples) => family(enc, &f.name, f.help, f.unit.clone(), MetricType::Gauge, samples),
        FamilyKind::Counter(samples) => family(enc, &f.name, f.help, f.unit.clone(), MetricType::Counter, samples),
        FamilyKind::Histogram { sum, count, buckets } => {
            let mut metric = enc.encode_descriptor(&f.name, f.help, f.unit.as_ref(), MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
        }
    }
}

fn encode_host(host: &DaemonHost, enc: &mut DescriptorEncoder) -> Fmt {
    for f in render_families(host) {
        write_family(enc, &f)?;
    }
    Ok(())
}

fn g(name: &str, help: &'static str, unit: Option<Unit>, samples: Vec<(Labels, f64)>) -> Family {
    Family { name: name.to_owned(), help, unit, kind: FamilyKind::Gauge(samples) }
}

fn c(name: &str, help: &'static str, unit: Option<Unit>, samples: Vec<(Labels, f64)>) -> Family {
    Family { name: name.to_owned(), help, unit, kind: FamilyKind::Counter(samples) }
}

fn one(v: f64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), v)]
}

/// Every family, read from `host` now. Counter names are given without
/// `_total` (the encoder appends it) and with their unit passed apart (the
/// encoder appends `_seconds`, `_bytes`).
fn render_families(host: &DaemonHost) -> Vec<Family> {
    let mut out = Vec::with_capacity(64);
    let embedded = host.host();
    let manager = embedded.manager();
    let kernels = manager.kernels();

    // `cache_entries` settles the cache first (TTL expiries, pending
    // inserts), so the events read after it are current too.
    let entries = kernels.cache_entries();
    let cache = kernels.stats().cumulative;
    out.push(c(
        "kasmina_kernel_cache_events",
        "Kernel cache and load events since start, by event.",
        None,
        [
            ("hit", cache.hits),
            ("miss", cache.misses),
            ("load", cache.loads),
            ("load_failure", cache.load_failures),
            ("breaker_refusal", cache.breaker_refusals),
            ("eviction", cache.evictions),
            ("expiration", cache.expirations),
        ]
        .into_iter()
        .map(|(event, v)| (labels(&[("event", event)]), v as f64))
        .collect(),
    ));
    out.push(g("kasmina_kernel_cache_entries", "Kernels in the cache now.", None, one(entries as f64)));
    out.push(g(
        "kasmina_kernel_cache_weight",
        "Memory charged to cached kernels.",
        Some(Unit::Bytes),
        one((kernels.cache_weight_kib() * 1024) as f64),
    ));
    out.push(c(
        "kasmina_kernel_load",
        "Time spent loading kernels (fetch, verify, TorchScript load, prewarm).",
        Some(Unit::Seconds),
        one(cache.load_latency_total_us as f64 / 1e6),
    ));
    out.push(g(
        "kasmina_kernel_load_max",
        "Longest kernel load since start.",
        Some(Unit::Seconds),
        one(cache.load_latency_max_us as f64 / 1e6),
    ));

    // Isolation breakers are per seed (`isolation/<seed_id>`): the seed is
    // a label of its own, as Prometheus queries expect.
    let breakers = manager.breakers();
    let breaker_labels = |name: &str| -> Labels {
        match name.split_once('/') {
            Some((kind, seed)) => labels(&[("breaker", kind), ("seed_id", seed)]),
            None => labels(&[("breaker", name)]),
        }
    };
    let mut states = Vec::new();
    let mut transitions = Vec::new();
    for breaker in &breakers {
        let now = breaker.state();
        for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            let mut l = breaker_labels(breaker.name());
            l.push(("state".to_owned(), state.as_str().to_owned()));
            states.push((l, f64::from(u8::from(now == state))));
        }
        transitions.push((breaker_labels(breaker.name()), breaker.transitions() as f64));
    }
    out.push(g("kasmina_breaker_state", "Circuit breaker state (1 for the current state).", None, states));
    out.push(c("kasmina_breaker_transitions", "Circuit breaker state changes.", None, transitions));

    let (accepted, rejected) = manager.command_counts();
    out.push(c(
        "kasmina_commands",
        "Commands by outcome.",
        None,
        vec![
            (labels(&[("outcome", "accepted")]), accepted as f64),
            (labels(&[("outcome", "rejected")]), rejected as f64),
        ],
    ));
    from_contract(&mut out, &manager.verifier().stats().to_metrics());

    let gates = manager.gate_service().call_stats();
    // Per-bucket counts: the encoder accumulates them into `le` buckets.
    let mut buckets = Vec::with_capacity(gates.buckets.len());
    for (i, count) in gates.buckets.iter().enumerate() {
        // `f64::MAX` is how the encoder spells the `+Inf` bucket.
        let le = PLUGIN_LATENCY_BUCKETS_US.get(i).map_or(f64::MAX, |us| *us as f64 / 1e6);
        buckets.push((le, *count));
    }
    out.push(Family {
        name: "kasmina_gate_plugin_call".to_owned(),
        help: "Gate plugin call latency.",
        unit: Some(Unit::Seconds),
        kind: FamilyKind::Histogram { sum: gates.total_us as f64 / 1e6, count: gates.calls, buckets },
    });
    out.push(c(
        "kasmina_gate_shadow_evaluations",
        "Shadow gate evaluations by agreement with the active plugin.",
        None,
        vec![
            (labels(&[("result", "agree")]), gates.shadow_agreements as f64),
            (labels(&[("result", "disagree")]), gates.shadow_disagreements as f64),
            (labels(&[("result", "dropped")]), gates.shadow_dropped as f64),
        ],
    ));
    out.push(c(
        "kasmina_gate_plugin_calls_under_lock",
        "Gate plugin calls made under the seed manager's state lock.",
        None,
        one(gates.calls_under_lock as f64),
    ));

    from_contract(&mut out, &manager.rollback().metrics());

    if let Some(recorder) = host.recorder() {
        let s = recorder.stats();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.push(c(
            "kasmina_gate_verdicts",
            "Gate verdicts journaled, by result.",
            None,
            vec![
                (labels(&[("result", "passed")]), n(&s.gates_passed)),
                (labels(&[("result", "failed")]), n(&s.gates_failed)),
            ],
        ));
        out.push(c("kasmina_journal_appends", "Journal records appended.", None, one(n(&s.appends))));
        out.push(c("kasmina_journal_fsyncs", "Journal fsyncs.", None, one(n(&s.syncs))));
        out.push(c(
            "kasmina_journal_fsync",
            "Time spent in journal fsync.",
            Some(Unit::Seconds),
            one(n(&s.sync_us) / 1e6),
        ));
        out.push(c(
            "kasmina_journal_progress_records",
            "In-stage progress records journaled (α, epoch, windows, breakers).",
            None,
            one(n(&s.progress_records)),
        ));
        out.push(c("kasmina_journal_compactions", "Journal compactions.", None, one(n(&s.compactions))));
        out.push(c(
            "kasmina_journal_failures",
            "Journal write or fsync failures; each refused the call it happened in (journal_unavailable).",
            None,
            one(n(&s.failures)),
        ));
        out.push(c(
            "kasmina_journal_recoveries",
            "Times the journal was reopened after a failure and took calls again.",
            None,
            one(n(&s.recoveries)),
        ));
        out.push(c(
            "kasmina_journal_discarded_records",
            "Records of refused calls cut from the journal when it was reopened.",
            None,
            one(n(&s.discarded_records)),
        ));
        out.push(g(
            "kasmina_journal_healthy",
            "1 while the journal accepts writes.",
            None,
            one(f64::from(u8::from(recorder.failure().is_none()))),
        ));
    }
    out.push(c(
        "kasmina_telemetry_dropped",
        "Telemetry events lost to full queues (hub and outbox) since start.",
        None,
        one(embedded.telemetry_dropped() as f64),
    ));
    let seeds = manager.export_seed_states();
    out.push(g("kasmina_seeds", "Seed slots known to the host.", None, one(seeds.len() as f64)));
    let mut by_stage: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for s in &seeds {
        *by_stage.entry(s.stage.as_str()).or_default() += 1.0;
    }
    out.push(g(
        "kasmina_seeds_by_stage",
        "Seed slots per lifecycle stage.",
        None,
        by_stage.into_iter().map(|(stage, n)| (labels(&[("stage", stage)]), n)).collect(),
    ));
    blend_gauges(&mut out, &seeds);
    if let Some(kd) = manager.latest_distillation() {
        out.push(g(
            "kasmina_teacher_memory",
            "Memory held by the KD teacher.",
            Some(Unit::Bytes),
            one(kd.teacher_memory_bytes as f64),
        ));
        out.push(g("kasmina_distillation_loss", "KD loss of the last reported step.", None, one(kd.kd_loss)));
    }
    out
}

/// Contract metrics (`kasmina.security.rejected` count, `….budget` ms)
/// under Prometheus names: cumulative counts become `_total` counters,
/// milliseconds become `_seconds`, and the few counts that go down as well
/// as up (ledger length, points held) stay gauges.
fn from_contract(out: &mut Vec<Family>, list: &[Metric]) {
    /// Counts that are levels, not cumulative totals.
    const LEVELS: [&str; 3] =
        ["kasmina_security_nonce_ledger_len", "kasmina_rollback_points", "kasmina_rollback_pending"];
    let mut families: Vec<Family> = Vec::new();
    for m in list {
        let base = prom_name(&m.name);
        let (name, unit, value, counter) = match m.unit.as_str() {
            "count" if LEVELS.contains(&base.as_str()) => (base, None, m.value, false),
            "count" => (base, None, m.value, true),
            "ms" => (base, Some(Unit::Seconds), m.value / 1e3, false),
            "us" => (base, Some(Unit::Seconds), m.value / 1e6, false),
            "bytes" => (base, Some(Unit::Bytes), m.value, false),
            other => (format!("{base}_{}", prom_name(other)), None, m.value, false),
        };
        let l: Labels = m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match families.iter_mut().find(|f| f.name == name) {
            Some(Family { kind: FamilyKind::Counter(s) | FamilyKind::Gauge(s), .. }) => s.push((l, value)),
            _ => families.push(if counter {
                c(&name, "Control-plane counter (see the README's metrics table).", unit, vec![(l, value)])
            } else {
                g(&name, "Control-plane gauge (see the README's metrics table).", unit, vec![(l, value)])
            }),
        }
    }
    out.extend(families);
}

/// `kasmina.rollback.fast.within_sla` → `kasmina_rollback_fast_within_sla`.
fn prom_name(dotted: &str) -> String {
    dotted.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Per-seed blend statistics of the last reported step (SPEC.md §5), one
/// gauge family per statistic, labelled by seed, site and mode. Seeds that
/// did not blend in the last step have no samples.
fn blend_gauges(out: &mut Vec<Family>, seeds: &[leyline::SeedState]) {
    type Pick = fn(&leyline::api::BlendReport) -> Option<f64>;
    let families: [(&str, &'static str, Option<Unit>, Pick); 6] = [
        // Prometheus spells a share `_ratio` (the crate's `Unit::Ratios` would say `_ratios`).
        ("kasmina_seed_blend_alpha_mean", "Mean effective blend alpha.", None, |b| Some(b.alpha_mean)),
        ("kasmina_seed_blend_alpha_p95", "95th percentile of the effective blend alpha.", None, |b| Some(b.alpha_p95)),
        (
            "kasmina_seed_blend_clamped",
            "Share of samples whose alpha was clamped.",
            Some(Unit::Other("ratio".to_owned())),
            |b| Some(b.clamped_fraction),
        ),
        (
            "kasmina_seed_blend_sparsity",
            "Share of channels with alpha 0 (CHANNEL).",
            Some(Unit::Other("ratio".to_owned())),
            |b| b.sparsity,
        ),
        ("kasmina_seed_blend_gate_mean", "Mean confidence gate (CONFIDENCE).", None, |b| b.gate_mean),
        ("kasmina_seed_blend_kernel", "Wall time of the blend op.", Some(Unit::Seconds), |b| Some(b.kernel_us / 1e6)),
    ];
    for (name, help, unit, pick) in families {
        let samples = seeds
            .iter()
            .filter_map(|seed| {
                let blend = seed.blend.as_ref()?;
                let value = pick(blend)?;
                Some((
                    labels(&[("seed_id", &seed.seed_id), ("site", &seed.site), ("mode", blend.mode.as_str())]),
                    value,
                ))
            })
            .collect();
        out.push(g(name, help, unit, samples));
    }
}
