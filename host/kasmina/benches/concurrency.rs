//! Commands from several controller threads to different seeds, through
//! the whole seed manager (issue 13): verify → validate → annotation
//! plugin → blueprint-policy plugin → G0 plugin (all before the state
//! lock) → apply → conclude, for one signed GERMINATE of a cached
//! blueprint per command, each to its own dormant slot.
//!
//! Run: `cargo bench -p kasmina --bench concurrency -- --warm-up-time 1 --measurement-time 5`
//!
//! Measured in both plugin isolations (`per-call`, the default: a fresh
//! plugin instance per call; `reuse`).
//!
//! Goal: 4 threads reach ≥ 1.6× the throughput of 1 thread. On a 2-core
//! machine the ceiling is 2×: what is left is the work done under the
//! state lock (the decision itself) plus the cores the kernel prefetch
//! workers take. Every GERMINATE also queues a prefetch (a cache hit
//! after the first); the host is built, the slots registered and the
//! kernel loaded (a warm-up GERMINATE on the last slot) outside the timed
//! part, and the host rebuilt when its other 4 095 slots are used up.
//! Until the seventh session the first timed GERMINATE of every host
//! started that load, which then ran beside the timed threads.
//!
//! Instruction counts (repeatable on a loaded machine): with
//! `KASMINA_PROFILE=per-call|reuse` set, the binary skips criterion, builds
//! one seed manager, submits `KASMINA_PROFILE_WARMUP` commands (default 100;
//! the first loads the kernel) and then `KASMINA_PROFILE_COMMANDS` (default
//! 1 000) from `KASMINA_PROFILE_THREADS` threads (default 1) inside
//! `measured`. Valgrind cannot map the address space of the host's default
//! instance pool (128 slots of ~4 GiB), so this mode assembles the manager
//! as `HostBuilder::build` does — same parts, same settings, the same kind
//! of listener as the embedded host's outbox — on a pool of
//! `KASMINA_PROFILE_POOL` slots (default 8). Under
//! `valgrind --tool=callgrind --toggle-collect='*concurrency::submit_all*'`
//! the submitting threads' instructions are isolated (whole-process totals
//! are not a measure: idle rayon workers spin, so they grow with wall
//! time). The warm-up waits for the kernel load the first GERMINATE starts
//! and for the prefetches it queued. The mode also prints how often the
//! submitting threads slept (a contended lock: voluntary context switches)
//! or were descheduled, from `/proc/thread-self/status`.
//!
//! Nothing here reads prefetch results (a trainer's step reports would), so
//! once the result channel and the in-flight cap (256 each) are full —
//! after about 512 commands per host — every further GERMINATE's prefetch
//! is refused (`prefetch_refused`, still accepted): most of what this bench
//! times, in both modes, is that path.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use kasmina::security::{NoncePurger, sign_in_place};
use kasmina::telemetry::HeldEvents;
use kasmina::{CommandValidator, EmbeddedHost, HmacKey, HostBuilder, SeedManager, Settings, TelemetryHub};
use kasmina_core::ManualClock;
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec, TelemetryListener};
use leyline::command::{SeedCommand, SeedOperation};
use leyline::{AdaptationCommand, CommandPayload, Dim, Outcome, TelemetryEvent, TelemetryLevel};

const T0: u64 = 1_800_000_000_000;
const SLOTS: usize = 4_096;

struct Env {
    key: HmacKey,
    urza: std::path::PathBuf,
    cache: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let urza = dir.path().join("urza");
    let library = kasmina_kernels::UrzaLibrary::open(&urza).unwrap();
    kasmina_kernels::fixtures::publish_all(&library).unwrap();
    let cache = dir.path().join("plugin-cache");
    Env { key: HmacKey::from_bytes(&[7u8; 32]).unwrap(), urza, cache, _dir: dir }
}

fn host(env: &Env, isolation: &str) -> EmbeddedHost {
    let toml = format!("[plugins]\ndeadline_ms = 250\nisolation = {isolation:?}\n");
    let mut settings = Settings::from_toml(&toml).unwrap();
    settings.plugins.cache_dir = Some(env.cache.clone());
    let host = HostBuilder::new(settings)
        .clock(Arc::new(ManualClock::new(T0)))
        .hmac_key(env.key.clone())
        .urza_dir(&env.urza)
        .build()
        .unwrap();
    host.register_host(registration()).unwrap();
    host
}

/// A fresh host whose kernel is already loaded: the first GERMINATE of a
/// host starts that load (TorchScript load and prewarm) in the background,
/// and on 2 cores it must not run beside the timed part. The warm-up takes
/// the last slot.
fn warm_host(env: &Env, isolation: &str) -> EmbeddedHost {
    let host = host(env, isolation);
    let outcome = host.submit(germinate(SLOTS - 1, &env.key));
    assert!(outcome.accepted, "{outcome:?}");
    wait_for_kernel(host.manager().kernels());
    host
}

/// Waits until the fixture kernel is cached and no prefetch is in flight
/// (cache hits from then on).
fn wait_for_kernel(kernels: &kasmina_kernels::KernelLoadManager) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while (kernels.cached(kasmina_kernels::fixtures::MLP_ADAPTER_64).is_none() || kernels.prefetches_in_flight() > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn registration() -> HostRegistration {
    HostRegistration::new(
        "run-1",
        vec![SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..SLOTS).map(|i| SlotSpec { seed_id: format!("seed-{i}"), site: "hidden".to_owned() }).collect(),
    )
}

fn germinate(n: usize, key: &HmacKey) -> AdaptationCommand {
    let annotations = BTreeMap::from([
        ("training_run_id".to_owned(), "run-1".to_owned()),
        ("mesh_layers".to_owned(), "hidden".to_owned()),
        ("blend_mode".to_owned(), "RESIDUAL".to_owned()),
    ]);
    let mut cmd = AdaptationCommand {
        version: leyline::CONTRACT_VERSION,
        command_id: format!("bench-{n}"),
        target_seed_id: format!("seed-{n}"),
        execution_deadline_ms: None,
        issued_at_ms: Some(T0),
        issued_by: "bench".to_owned(),
        payload: CommandPayload::Seed(SeedCommand {
            operation: SeedOperation::Germinate,
            blueprint_id: kasmina_kernels::fixtures::MLP_ADAPTER_64.to_owned(),
            parameters: BTreeMap::new(),
        }),
        annotations,
        signature: None,
    };
    sign_in_place(&mut cmd, key);
    cmd
}

/// Submits `count` commands over `threads` threads (each its own seeds) to
/// fresh hosts; returns the time spent submitting. Panics on a refusal, so
/// a broken pipeline cannot measure as fast.
fn run(env: &Env, isolation: &str, threads: usize, count: u64) -> Duration {
    let mut left = usize::try_from(count).unwrap();
    let mut total = Duration::ZERO;
    while left > 0 {
        // The last slot is the warm-up's.
        let batch = left.min(SLOTS - 1);
        left -= batch;
        let host = warm_host(env, isolation);
        let per_thread: Vec<Vec<AdaptationCommand>> = (0..threads)
            .map(|t| (0..batch).filter(|n| n % threads == t).map(|n| germinate(n, &env.key)).collect())
            .collect();
        let started = Instant::now();
        measured(&host, per_thread);
        total += started.elapsed();
        host.shutdown();
    }
    total
}

fn bench(c: &mut Criterion) {
    let env = env();
    for isolation in ["per-call", "reuse"] {
        let mut group = c.benchmark_group(format!("germinate_threads_{isolation}"));
        group.throughput(Throughput::Elements(1)).sample_size(10);
        for threads in [1usize, 4] {
            group.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &threads| {
                b.iter_custom(|iters| run(&env, isolation, threads, iters));
            });
        }
        group.finish();
    }
}

/// One submitting thread's commands; what callgrind's `--toggle-collect`
/// names (see the module docs).
#[inline(never)]
fn submit_all<H: Submit>(host: &H, commands: Vec<AdaptationCommand>) {
    for cmd in commands {
        let outcome = host.submit(cmd);
        assert!(outcome.accepted, "{outcome:?}");
    }
    // How often this thread slept on a lock (voluntary switches) or was
    // descheduled (involuntary): the profile mode prints the totals.
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let count = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    SWITCHES[0].fetch_add(count("voluntary_ctxt_switches:"), Ordering::Relaxed);
    SWITCHES[1].fetch_add(count("nonvoluntary_ctxt_switches:"), Ordering::Relaxed);
}

/// Submitting threads' context switches: [slept, descheduled].
static SWITCHES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

#[inline(never)]
fn measured<H: Submit>(host: &H, per_thread: Vec<Vec<AdaptationCommand>>) {
    std::thread::scope(|s| {
        for commands in per_thread {
            // Named, so that a profiler (`perf report --comm submitter`) can
            // select these threads alone.
            let submitter = std::thread::Builder::new().name("submitter".to_owned());
            submitter.spawn_scoped(s, move || submit_all(host, commands)).unwrap();
        }
    });
}

/// The embedded host's outbox, as far as cost goes: every non-CRITICAL
/// event cloned into a bounded queue.
#[derive(Default)]
struct Outbox(std::sync::Mutex<std::collections::VecDeque<TelemetryEvent>>);

impl TelemetryListener for Outbox {
    fn event(&self, event: &TelemetryEvent) {
        if event.level == TelemetryLevel::Critical {
            return;
        }
        let mut events = self.0.lock().unwrap();
        if events.len() == kasmina::host::OUTBOX_CAPACITY {
            events.pop_front();
        }
        events.push_back(event.clone());
    }
}

/// A seed manager assembled as `HostBuilder::build` assembles it, on a
/// small instance pool (see the module docs).
struct Manager {
    manager: SeedManager,
    _hub: Arc<TelemetryHub>,
    _purger: std::sync::Mutex<NoncePurger>,
}

/// Where the commands go: the embedded host (criterion) or the manager
/// assembled for valgrind (profile mode).
trait Submit: Sync {
    fn submit(&self, command: AdaptationCommand) -> Outcome;
}

impl Submit for EmbeddedHost {
    fn submit(&self, command: AdaptationCommand) -> Outcome {
        self.submit_command(command).unwrap()
    }
}

impl Submit for Manager {
    fn submit(&self, command: AdaptationCommand) -> Outcome {
        self.manager.submit_command(command)
    }
}

fn manager(env: &Env, isolation: &str, pool: u32) -> Manager {
    use kasmina::gates::GateService;
    use kasmina::isolation::IsolationBreakers;
    use kasmina::rollback::RollbackSla;
    use kasmina::security::CommandVerifier;
    use kasmina::seeds::{Policies, SeedManagerParts};
    use kasmina_core::{CircuitBreaker, Clock, TelemetrySink};
    use kasmina_kernels::{KernelLoadManager, UrzaLibrary};
    use kasmina_plugin_host::conformance::CheckOptions;
    use kasmina_plugin_host::reload::{PluginSlot, Reloadable};
    use kasmina_plugin_host::runtime::{Pin, PluginRuntime, PluginSpec, RuntimeConfig};
    use kasmina_plugin_host::{InstanceAllocation, Isolation, PluginLimits};

    let toml = format!("[plugins]\ndeadline_ms = 250\nisolation = {isolation:?}\n");
    let settings = Arc::new(Settings::from_toml(&toml).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let hub = Arc::new(TelemetryHub::from_settings(&settings.telemetry, Arc::clone(&clock)));
    hub.add_listener(Arc::new(Outbox::default()));
    let held = Arc::new(HeldEvents::new(hub.clone()));
    let sink: Arc<dyn TelemetrySink> = held.clone();
    let verifier =
        CommandVerifier::from_settings(&settings.security, env.key.clone(), Arc::clone(&clock), Arc::clone(&sink))
            .unwrap();
    let purger = NoncePurger::spawn(
        Arc::clone(verifier.ledger()),
        Arc::clone(&clock),
        Arc::clone(&sink),
        Duration::from_secs(settings.security.nonce_purge_interval_s),
    )
    .unwrap();
    let validator = CommandValidator::new(&settings.annotations, Arc::clone(&clock), Arc::clone(&sink));
    let mut config = RuntimeConfig::new(&env.cache);
    config.instance_allocation = InstanceAllocation::Pooled { instances: pool };
    let runtime = PluginRuntime::new(config).unwrap();
    let p = &settings.plugins;
    let limits = PluginLimits {
        deadline: Duration::from_millis(p.deadline_ms),
        memory_bytes: usize::try_from(p.memory_bytes).unwrap(),
        fuel: None,
        isolation: if isolation == "reuse" { Isolation::Reuse } else { Isolation::PerCall },
    };
    fn slot<P: Reloadable>(
        runtime: &PluginRuntime,
        name: &str,
        bytes: &'static [u8],
        sha: &str,
        limits: &PluginLimits,
    ) -> Arc<PluginSlot<P>> {
        let spec =
            PluginSpec { limits: limits.clone(), ..PluginSpec::embedded(name, bytes, Pin::sha256(sha).unwrap()) };
        Arc::new(PluginSlot::new(runtime, &spec, CheckOptions::smoke()).unwrap())
    }
    use kasmina_default_plugins as d;
    let gates = slot(&runtime, "kasmina-gates-plugin", d::GATES, d::GATES_SHA256, &limits);
    let annotations = slot(&runtime, "kasmina-annotations-plugin", d::ANNOTATIONS, d::ANNOTATIONS_SHA256, &limits);
    let blueprints =
        slot(&runtime, "kasmina-blueprint-policy-plugin", d::BLUEPRINT_POLICY, d::BLUEPRINT_POLICY_SHA256, &limits);
    let fetch_breaker =
        Arc::new(CircuitBreaker::new("fetch", settings.breaker_config(), Arc::clone(&clock), Arc::clone(&sink)));
    let isolation_breakers =
        Arc::new(IsolationBreakers::new(settings.isolation_config(), Arc::clone(&clock), Arc::clone(&sink)));
    let urza = Arc::new(UrzaLibrary::open_with_clock(&env.urza, Arc::clone(&clock)).unwrap());
    let kernel_config = settings.kernel_manager_config(tch::Device::Cpu);
    let (kernels, prefetch_events) =
        KernelLoadManager::new(urza, kernel_config, Arc::clone(&fetch_breaker), Arc::clone(&sink), Arc::clone(&clock))
            .unwrap();
    let rollback = Arc::new(kasmina::RollbackLedger::new(
        RollbackSla::from_settings(&settings.rollback),
        kasmina::host::ROLLBACK_CAPACITY,
        Arc::clone(&clock),
        Arc::clone(&sink),
    ));
    let gates = GateService::new(gates, settings.gates.clone(), Arc::clone(&sink), Arc::clone(&clock));
    let manager = SeedManager::new(SeedManagerParts {
        settings: Arc::clone(&settings),
        clock,
        sink: held,
        verifier,
        validator,
        policies: Policies { annotations, blueprints },
        gates,
        kernels: Arc::new(kernels),
        prefetch_events,
        rollback,
        fetch_breaker,
        isolation: isolation_breakers,
        recorder: None,
    });
    let _critical = hub.subscribe_critical();
    manager.register_host(registration()).unwrap();
    Manager { manager, _hub: hub, _purger: std::sync::Mutex::new(purger) }
}

/// The criterion-free driver for instruction counts (module docs).
fn profile(isolation: &str) {
    assert!(matches!(isolation, "per-call" | "reuse"), "KASMINA_PROFILE={isolation}: expected per-call or reuse");
    let var = |name: &str, default: usize| std::env::var(name).map_or(default, |v| v.parse().expect(name));
    let warmup = var("KASMINA_PROFILE_WARMUP", 100);
    let count = var("KASMINA_PROFILE_COMMANDS", 1_000);
    let threads = var("KASMINA_PROFILE_THREADS", 1).max(1);
    let pool = u32::try_from(var("KASMINA_PROFILE_POOL", 8)).unwrap();
    assert!(warmup + count <= SLOTS, "at most {SLOTS} commands per host");
    let env = env();
    let host = manager(&env, isolation, pool);
    for n in 0..warmup {
        let outcome = host.submit(germinate(n, &env.key));
        assert!(outcome.accepted, "{outcome:?}");
    }
    // The first GERMINATE loads the kernel in the background: wait for it
    // and for the warm-up's prefetches (cache hits from then on).
    let kernels = host.manager.kernels();
    wait_for_kernel(kernels);
    let per_thread: Vec<Vec<AdaptationCommand>> = (0..threads)
        .map(|t| (warmup..warmup + count).filter(|n| n % threads == t).map(|n| germinate(n, &env.key)).collect())
        .collect();
    let started = Instant::now();
    measured(&host, per_thread);
    let elapsed = started.elapsed();
    kernels.shutdown();
    println!("{isolation}: {count} commands on {threads} thread(s) after {warmup} in {elapsed:?}");
    let [slept, descheduled] = [&SWITCHES[0], &SWITCHES[1]].map(|c| c.load(Ordering::Relaxed));
    println!("submitting threads: slept {slept} times (a contended lock), descheduled {descheduled} times");
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var("KASMINA_PROFILE") {
        Ok(isolation) => profile(&isolation),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
