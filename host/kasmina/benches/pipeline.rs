//! The whole decision pipeline for one signed GERMINATE of a cached
//! blueprint, without tensor work (issue 6, item 9):
//! verify (HMAC + nonce + freshness) → validate → annotation plugin →
//! blueprint-policy plugin → G0 through the gate plugin.
//!
//! Run: `cargo bench -p kasmina --bench pipeline -- --warm-up-time 1 --measurement-time 3`
//!
//! Measured twice: plugins in `reuse` isolation (one instance per plugin,
//! replaced after any failure) and in `per-call` isolation (a fresh store
//! and instance for every plugin call — three per command). Goals: ≥ 50 000
//! commands/s in `reuse`, ≥ 10 000/s in `per-call`. The Python prototype
//! handles one signed GERMINATE in ~610 µs (~1 600/s).
//!
//! Commands are signed in the (untimed) setup of each batch, as a
//! controller would; the nonce ledger fills to its 10 000 cap and then
//! evicts, as in a long run.
//!
//! Instruction counts (repeatable on a loaded machine): with
//! `KASMINA_PROFILE=reuse|per_call` set, the binary skips criterion and
//! runs `KASMINA_PROFILE_WARMUP` commands (default 10 100: the ledger is
//! full and evicting, as in the criterion run) and then
//! `KASMINA_PROFILE_COMMANDS` (default 1 000) inside `measured`, which
//! callgrind can isolate:
//!
//! ```text
//! KASMINA_PROFILE=per_call valgrind --tool=callgrind --toggle-collect='pipeline::measured' \
//!     target/release/deps/pipeline-<hash>
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Total instructions in `measured` ÷ `KASMINA_PROFILE_COMMANDS` is the
//! cost of one command.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use kasmina::security::{CommandVerifier, HmacKey, sign_in_place};
use kasmina::{CommandValidator, Settings};
use kasmina_core::{ManualClock, TelemetrySink};
use kasmina_plugin_host::{
    AdmissionContext, AnnotationLimits, AnnotationPlugin, BlueprintPlugin, GateInputs, GatePlugin, InstanceAllocation,
    Isolation, PerformanceStatus, Pin, PluginLimits, PluginRuntime, PluginSpec, RuntimeConfig,
};
use leyline::command::{SeedCommand, SeedOperation};
use leyline::{AdaptationCommand, CommandPayload, GateId, SeedStage, TelemetryEvent};

const T0: u64 = 1_800_000_000_000;

struct Discard;
impl TelemetrySink for Discard {
    fn emit(&self, _: TelemetryEvent) {}
}

struct Pipeline {
    verifier: CommandVerifier,
    validator: CommandValidator,
    annotations: AnnotationPlugin,
    blueprints: BlueprintPlugin,
    gates: GatePlugin,
    descriptor: leyline::BlueprintDescriptor,
    limits: AnnotationLimits,
}

fn spec(path: &str, sha: &str, isolation: Isolation) -> PluginSpec {
    let limits = PluginLimits { deadline: Duration::from_millis(100), isolation, ..PluginLimits::default() };
    PluginSpec { limits, ..PluginSpec::new(path, Pin::sha256(sha).unwrap()) }
}

fn pipeline(
    isolation: Isolation,
    key: &HmacKey,
    clock: Arc<ManualClock>,
    cache: &std::path::Path,
    allocation: InstanceAllocation,
) -> Pipeline {
    let settings = Settings::default();
    let sink: Arc<dyn TelemetrySink> = Arc::new(Discard);
    let verifier =
        CommandVerifier::from_settings(&settings.security, key.clone(), clock.clone(), sink.clone()).unwrap();
    let validator = CommandValidator::new(&settings.annotations, clock, sink);
    let mut config = RuntimeConfig::new(cache);
    config.instance_allocation = allocation;
    let runtime = PluginRuntime::new(config).unwrap();
    use kasmina_plugin_artifacts as a;
    let annotations =
        AnnotationPlugin::load(&runtime, &spec(a::ANNOTATIONS, a::ANNOTATIONS_SHA256, isolation)).unwrap();
    let blueprints =
        BlueprintPlugin::load(&runtime, &spec(a::BLUEPRINT_POLICY, a::BLUEPRINT_POLICY_SHA256, isolation)).unwrap();
    let gates = GatePlugin::load(&runtime, &spec(a::GATES, a::GATES_SHA256, isolation)).unwrap();
    let descriptor = kasmina_kernels::fixtures::get(kasmina_kernels::fixtures::MLP_ADAPTER_64).unwrap().descriptor;
    let a = &settings.annotations;
    let limits = AnnotationLimits {
        alpha_vec_cap: a.alpha_vec_cap,
        mesh_layers_cap: a.mesh_layers_cap,
        annotation_bytes_cap: a.total_bytes_cap,
    };
    Pipeline { verifier, validator, annotations, blueprints, gates, descriptor, limits }
}

fn command(n: u64, key: &HmacKey) -> AdaptationCommand {
    let mut annotations = BTreeMap::new();
    annotations.insert("training_run_id".to_owned(), "run-1".to_owned());
    annotations.insert("mesh_layers".to_owned(), "hidden".to_owned());
    annotations.insert("blend_mode".to_owned(), "RESIDUAL".to_owned());
    let mut parameters = BTreeMap::new();
    parameters.insert("learning_rate".to_owned(), 0.01);
    let mut cmd = AdaptationCommand {
        version: leyline::CONTRACT_VERSION,
        command_id: format!("bench-{n}"),
        target_seed_id: "seed-a".to_owned(),
        execution_deadline_ms: None,
        issued_at_ms: Some(T0),
        issued_by: "bench".to_owned(),
        payload: CommandPayload::Seed(SeedCommand {
            operation: SeedOperation::Germinate,
            blueprint_id: kasmina_kernels::fixtures::MLP_ADAPTER_64.to_owned(),
            parameters,
        }),
        annotations,
        signature: None,
    };
    sign_in_place(&mut cmd, key);
    cmd
}

/// One GERMINATE through every decision step; panics if any refuses, so a
/// broken pipeline cannot benchmark as fast.
fn decide(p: &Pipeline, cmd: AdaptationCommand) -> bool {
    let verified = p.verifier.verify(cmd).expect("verified");
    let cmd = verified.command();
    assert!(p.validator.validate(cmd).accepted);
    let parsed = p.annotations.parse(&cmd.annotations, &p.limits).expect("parsed");
    let CommandPayload::Seed(seed) = &cmd.payload else { unreachable!() };
    let context = AdmissionContext {
        training_run_id: parsed.training_run_id.clone().unwrap_or_default(),
        quarantine: false,
        approved: false,
    };
    assert!(p.blueprints.admit(&p.descriptor, &seed.parameters, &context).passed);
    let inputs = GateInputs {
        seed_id: cmd.target_seed_id.clone(),
        site: "hidden".to_owned(),
        blueprint_id: seed.blueprint_id.clone(),
        blueprint_known: true,
        current_stage: SeedStage::Dormant,
        expected_stage: SeedStage::Dormant,
        reported_stage: SeedStage::Dormant,
        parameters: seed.parameters.clone(),
        parameter_bounds: p.descriptor.parameter_bounds.clone(),
        kernel_attached: false,
        kernel_verified: false,
        fallback_used: false,
        isolation_violations: 0,
        max_cosine: 0.0,
        outputs_finite: true,
        loss_window: Vec::new(),
        loss_variance_threshold: 1.0,
        kernel_latency_us: f64::INFINITY,
        latency_budget_us: 5_000.0,
        host_registered: true,
        required_layers: vec!["hidden".to_owned()],
        available_layers: parsed.mesh_layers,
        interface_matches: true,
        performance_status: PerformanceStatus::Nominal,
        metric_delta: f64::NAN,
        metric_tolerance: 0.02,
        reset_clean: true,
        blend: None,
        ranks: None,
    };
    let verdict = p.gates.evaluate(GateId::G0Sanity, &inputs);
    assert!(verdict.passed, "{verdict:?}");
    verdict.passed
}

fn bench(c: &mut Criterion) {
    let key = HmacKey::from_bytes(&[7u8; 32]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("germinate_pipeline");
    group.throughput(Throughput::Elements(1));
    for (name, isolation) in [("reuse", Isolation::Reuse), ("per_call", Isolation::PerCall)] {
        let clock = Arc::new(ManualClock::new(T0));
        let p = pipeline(isolation, &key, clock, cache.path(), InstanceAllocation::default());
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    command(n, &key)
                },
                |cmd| black_box(decide(&p, cmd)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Runs `commands` through [`decide`]; the function callgrind's
/// `--toggle-collect` names (see the module docs).
#[inline(never)]
fn measured(p: &Pipeline, commands: Vec<AdaptationCommand>) -> usize {
    commands.into_iter().map(|cmd| usize::from(decide(p, cmd))).sum()
}

/// The criterion-free driver for instruction counts (module docs).
fn profile(mode: &str) {
    let isolation = match mode {
        "reuse" => Isolation::Reuse,
        "per_call" | "per-call" => Isolation::PerCall,
        other => panic!("KASMINA_PROFILE={other}: expected reuse or per_call"),
    };
    let var = |name: &str, default: u64| std::env::var(name).map_or(default, |v| v.parse().expect(name));
    let warmup = var("KASMINA_PROFILE_WARMUP", 10_100);
    let count = var("KASMINA_PROFILE_COMMANDS", 1_000);
    let key = HmacKey::from_bytes(&[7u8; 32]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Valgrind cannot map the default pool's address space (128 slots of
    // ~4 GiB); a smaller pool recycles slots the same way.
    let pool = u32::try_from(var("KASMINA_PROFILE_POOL", 8)).unwrap();
    let allocation = InstanceAllocation::Pooled { instances: pool };
    let p = pipeline(isolation, &key, Arc::new(ManualClock::new(T0)), cache.path(), allocation);
    for n in 0..warmup {
        decide(&p, command(n, &key));
    }
    let commands: Vec<AdaptationCommand> = (warmup..warmup + count).map(|n| command(n, &key)).collect();
    let passed = measured(&p, commands);
    assert_eq!(passed as u64, count);
    println!("{mode}: {count} commands measured after {warmup}");
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var("KASMINA_PROFILE") {
        Ok(mode) => profile(&mode),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
