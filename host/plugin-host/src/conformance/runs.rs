//! The corpus-driven checks, generic over what a plugin call returns, plus
//! each kind's safety invariants.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use leyline::lifecycle::ALL_GATES;
use leyline::{BlueprintTier, GateId, SeedStage};

use super::corpus::{self, Rng};
use super::{COST_SAMPLES, CheckOptions, CheckStatus, ConformanceReport, LatencySummary};
use crate::annotation::{AnnotationError, AnnotationPlugin, ParseError, ParsedAnnotations};
use crate::blueprint::BlueprintPlugin;
use crate::error::{FailureKind, PluginFailure};
use crate::gate::{GatePlugin, PerformanceStatus};
use crate::limits::{Isolation, PluginLimits};
use crate::plugin::PluginIdentity;
use crate::verdict::Verdict;

/// Stop a fuzz run after this many failures: each may cost a full deadline.
const MAX_FUZZ_FAILURES: usize = 3;

fn info_line(report: &mut ConformanceReport, identity: &PluginIdentity) {
    let info = &identity.info;
    report.push(
        "info",
        CheckStatus::Pass,
        format!("{} {} implements {} at api-version {}", info.name, info.version, info.kind, info.api_version),
    );
}

/// `fuzz` and `output-caps`; true when both passed.
fn fuzz<C: Debug, O>(
    report: &mut ConformanceReport,
    cases: &[C],
    call: impl Fn(&C) -> Result<O, PluginFailure>,
) -> bool {
    let mut contained: Option<String> = None;
    let mut bad_output: Option<String> = None;
    let mut failures = 0;
    for (index, case) in cases.iter().enumerate() {
        if let Err(failure) = call(case) {
            failures += 1;
            let line = format!("{failure} (input #{index})");
            if failure.kind == FailureKind::BadOutput {
                bad_output.get_or_insert(line);
            } else {
                // One timeout, OOM or trap decides the check; more would
                // only cost another deadline each.
                contained.get_or_insert(line);
                break;
            }
            if failures >= MAX_FUZZ_FAILURES {
                break;
            }
        }
    }
    let n = cases.len();
    match &contained {
        None => report.push("fuzz", CheckStatus::Pass, format!("{n} generated inputs: no trap, timeout or OOM")),
        Some(line) => report.push("fuzz", CheckStatus::Fail, line.clone()),
    }
    match &bad_output {
        None if contained.is_none() => {
            report.push("output-caps", CheckStatus::Pass, format!("{n} outputs within caps"))
        }
        None => report.push("output-caps", CheckStatus::Skip, "fuzz stopped early"),
        Some(line) => report.push("output-caps", CheckStatus::Fail, line.clone()),
    }
    contained.is_none() && bad_output.is_none()
}

/// Same input twice on fresh stores and twice on one reused instance.
/// Outputs are compared by their `Debug` text, not `==`: a verdict may
/// carry a NaN attribute (API 0.2.0 numbers), and NaN never equals itself
/// although the plugin answered the same.
fn determinism<C: Debug, O: Debug>(
    report: &mut ConformanceReport,
    cases: &[C],
    fresh: impl Fn(&C) -> Result<O, PluginFailure>,
    reused: impl Fn(&C) -> Result<O, PluginFailure>,
) {
    let outcome = |r: Result<O, PluginFailure>| format!("{:?}", r.map_err(|f| f.kind));
    for (index, case) in cases.iter().enumerate() {
        let runs = [outcome(fresh(case)), outcome(fresh(case)), outcome(reused(case)), outcome(reused(case))];
        if runs.iter().any(|r| *r != runs[0]) {
            report.push("determinism", CheckStatus::Fail, format!("input #{index} gave different outputs: {runs:?}"));
            return;
        }
    }
    report.push(
        "determinism",
        CheckStatus::Pass,
        format!("{} inputs: identical on fresh stores and a reused instance", cases.len()),
    );
}

/// A metered twin of the plugin under check: `None` in a smoke run (no
/// cost measured), `Err` when the fuel-metering runtime could not load it.
pub(crate) type Twin<'a, P> = Option<&'a Result<P, String>>;

/// The `latency` check: cost in fuel on the metered twin (the verdict,
/// deterministic) and wall-clock p50/p99 on the plugin itself (reported).
fn latency<P, O>(
    report: &mut ConformanceReport,
    options: &CheckOptions,
    plugin: &P,
    twin: Twin<'_, P>,
    fuel_of: fn(&P) -> Option<u64>,
    call: impl Fn(&P, usize) -> Result<O, PluginFailure>,
) {
    if options.latency_samples == 0 {
        report.push("latency", CheckStatus::Skip, "not measured (smoke run)");
        return;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(options.latency_samples);
    for i in 0..options.latency_samples {
        let start = Instant::now();
        if let Err(failure) = call(plugin, i) {
            report.push("latency", CheckStatus::Fail, format!("call failed while timing: {failure}"));
            return;
        }
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    let metered = match twin {
        Some(Ok(metered)) => metered,
        Some(Err(e)) => {
            report.push("latency", CheckStatus::Fail, format!("cannot measure cost on a fuel-metering runtime: {e}"));
            return;
        }
        None => {
            report.push("latency", CheckStatus::Fail, "cost not measured: no fuel-metering twin was loaded");
            return;
        }
    };
    let mut fuel = Vec::with_capacity(COST_SAMPLES);
    for i in 0..options.latency_samples.min(COST_SAMPLES) {
        match call(metered, i).map(|_| fuel_of(metered)) {
            Ok(Some(f)) => fuel.push(f),
            Ok(None) => {
                report.push("latency", CheckStatus::Fail, "the metering runtime reported no fuel for a call");
                return;
            }
            Err(failure) => {
                let over = failure.kind == FailureKind::Timeout;
                let detail = if over {
                    format!(
                        "a call ran out of its fuel ceiling (at least {}× the budget {} per call): {failure}",
                        super::FUEL_CEILING_FACTOR,
                        options.fuel_budget_per_call
                    )
                } else {
                    format!("call failed while measuring cost: {failure}")
                };
                report.push("latency", CheckStatus::Fail, detail);
                return;
            }
        }
    }
    fuel.sort_unstable();
    let fuel_max = fuel.last().copied().unwrap_or(0);
    let summary = LatencySummary {
        p50: at(50),
        p99: at(99),
        samples: samples.len(),
        fuel_p50: fuel[fuel.len() / 2],
        fuel_max,
        fuel_budget: options.fuel_budget_per_call,
    };
    report.latency = Some(summary);
    let line = format!(
        "cost at most {} fuel per call (median {}, budget {}) over {} calls; wall clock p50 {:?}, p99 {:?} over {} calls ({}, reported only)",
        summary.fuel_max,
        summary.fuel_p50,
        summary.fuel_budget,
        fuel.len(),
        summary.p50,
        summary.p99,
        summary.samples,
        options.limits.isolation.as_str(),
    );
    let status = if summary.fuel_max <= summary.fuel_budget { CheckStatus::Pass } else { CheckStatus::Fail };
    report.push("latency", status, line);
}

fn invariants(report: &mut ConformanceReport, violations: Vec<String>, checked: usize) {
    if violations.is_empty() {
        report.push("safety-invariants", CheckStatus::Pass, format!("{checked} invariants hold"));
    } else {
        report.push("safety-invariants", CheckStatus::Fail, violations.join("; "));
    }
}

fn reuse_limits(options: &CheckOptions) -> PluginLimits {
    PluginLimits { isolation: Isolation::Reuse, ..options.limits.clone() }
}

fn per_call_limits(options: &CheckOptions) -> PluginLimits {
    PluginLimits { isolation: Isolation::PerCall, ..options.limits.clone() }
}

pub(crate) fn gate(
    plugin: &GatePlugin,
    twin: Twin<'_, GatePlugin>,
    options: &CheckOptions,
    report: &mut ConformanceReport,
) -> PluginIdentity {
    info_line(report, plugin.identity());
    let mut rng = Rng::new(options.seed);
    let cases: Vec<_> = (0..options.fuzz_cases).map(|_| corpus::gate_case(&mut rng)).collect();
    if !fuzz(report, &cases, |(g, i)| plugin.try_evaluate(*g, i)) {
        return plugin.identity().clone();
    }
    let (Ok(fresh), Ok(reused)) =
        (plugin.with_limits(per_call_limits(options)), plugin.with_limits(reuse_limits(options)))
    else {
        report.push("determinism", CheckStatus::Fail, "cannot create per-call / reuse handles");
        return plugin.identity().clone();
    };
    let replay = &cases[..options.determinism_cases.min(cases.len())];
    determinism(report, replay, |(g, i)| fresh.try_evaluate(*g, i), |(g, i)| reused.try_evaluate(*g, i));

    // Safety invariants every gate plugin keeps, whatever its policy.
    let mut violations = Vec::new();
    let mut checked = 0;
    let mut expect_fail = |gate: GateId, what: &str, mutate: &dyn Fn(&mut crate::gate::GateInputs)| {
        checked += 1;
        let mut inputs = corpus::passing_gate_inputs(gate);
        mutate(&mut inputs);
        match plugin.try_evaluate(gate, &inputs) {
            Ok(Verdict { passed: false, .. }) => {}
            Ok(_) => violations.push(format!("{what} but {gate:?} passed")),
            Err(failure) => violations.push(format!("{what} at {gate:?}: {failure}")),
        }
    };
    for gate in [GateId::G2Stability, GateId::G4SystemImpact] {
        expect_fail(gate, "fallback used", &|i| i.fallback_used = true);
    }
    expect_fail(GateId::G4SystemImpact, "performance status fallback", &|i| {
        i.performance_status = PerformanceStatus::Fallback
    });
    for gate in ALL_GATES {
        expect_fail(gate, "expected and reported stage disagree", &|i| i.expected_stage = SeedStage::Culled);
    }
    expect_fail(GateId::G0Sanity, "NaN parameter", &|i| {
        i.parameters.insert("lr".into(), f64::NAN);
    });
    expect_fail(GateId::G0Sanity, "infinite parameter", &|i| {
        i.parameters.insert("lr".into(), f64::INFINITY);
    });
    expect_fail(GateId::G1GradientHealth, "isolation violations", &|i| i.isolation_violations = 2);
    invariants(report, violations, checked);
    latency(report, options, plugin, twin, GatePlugin::last_call_fuel, |p, n| {
        let gate = ALL_GATES[n % ALL_GATES.len()];
        p.try_evaluate(gate, &corpus::passing_gate_inputs(gate))
    });
    plugin.identity().clone()
}

type ParseOutcome = Result<ParsedAnnotations, ParseError>;

fn parse_outcome(result: Result<ParsedAnnotations, AnnotationError>) -> Result<ParseOutcome, PluginFailure> {
    match result {
        Ok(parsed) => Ok(Ok(parsed)),
        Err(AnnotationError::Rejected(e)) => Ok(Err(e)),
        Err(AnnotationError::Plugin(failure)) => Err(failure),
    }
}

pub(crate) fn annotation(
    plugin: &AnnotationPlugin,
    twin: Twin<'_, AnnotationPlugin>,
    options: &CheckOptions,
    report: &mut ConformanceReport,
) -> PluginIdentity {
    info_line(report, plugin.identity());
    let limits = options.annotation_limits;
    let mut rng = Rng::new(options.seed);
    let cases: Vec<_> = (0..options.fuzz_cases).map(|_| corpus::annotation_case(&mut rng, &limits)).collect();
    if !fuzz(report, &cases, |a| parse_outcome(plugin.parse(a, &limits))) {
        return plugin.identity().clone();
    }
    let (Ok(fresh), Ok(reused)) =
        (plugin.with_limits(per_call_limits(options)), plugin.with_limits(reuse_limits(options)))
    else {
        report.push("determinism", CheckStatus::Fail, "cannot create per-call / reuse handles");
        return plugin.identity().clone();
    };
    let replay = &cases[..options.determinism_cases.min(cases.len())];
    determinism(
        report,
        replay,
        |a| parse_outcome(fresh.parse(a, &limits)),
        |a| parse_outcome(reused.parse(a, &limits)),
    );

    let over_cap = format!("[{}]", vec!["0.5"; limits.alpha_vec_cap as usize + 1].join(","));
    let within_cap = format!("[{}]", vec!["0.5"; limits.alpha_vec_cap as usize].join(","));
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);
    let cases: [Case; 4] = [
        ("over-cap alpha_vec", vec![("blend_mode", "CHANNEL"), ("alpha_vec", &over_cap)], false),
        ("unknown blend mode", vec![("blend_mode", "LINEAR")], false),
        ("CHANNEL without alpha_vec", vec![("blend_mode", "CHANNEL")], false),
        (
            "valid CHANNEL spec at the cap",
            vec![
                ("training_run_id", "run-1"),
                ("mesh_layers", "a,b"),
                ("blend_mode", "CHANNEL"),
                ("alpha_vec", &within_cap),
            ],
            true,
        ),
    ];
    let mut violations = Vec::new();
    for (what, pairs, should_parse) in &cases {
        let map = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        match (parse_outcome(plugin.parse(&map, &limits)), should_parse) {
            (Ok(Err(_)), false) | (Ok(Ok(_)), true) => {}
            (Ok(Ok(_)), false) => violations.push(format!("{what} was accepted")),
            (Ok(Err(e)), true) => violations.push(format!("{what} was rejected: {e}")),
            (Err(failure), _) => violations.push(format!("{what}: {failure}")),
        }
    }
    invariants(report, violations, cases.len());
    let sample = cases[3].1.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    latency(report, options, plugin, twin, AnnotationPlugin::last_call_fuel, |p, _| {
        parse_outcome(p.parse(&sample, &limits))
    });
    plugin.identity().clone()
}

pub(crate) fn blueprint(
    plugin: &BlueprintPlugin,
    twin: Twin<'_, BlueprintPlugin>,
    options: &CheckOptions,
    report: &mut ConformanceReport,
) -> PluginIdentity {
    info_line(report, plugin.identity());
    let mut rng = Rng::new(options.seed);
    let cases: Vec<_> = (0..options.fuzz_cases).map(|_| corpus::blueprint_case(&mut rng)).collect();
    if !fuzz(report, &cases, |(d, p, c)| plugin.try_admit(d, p, c)) {
        return plugin.identity().clone();
    }
    let (Ok(fresh), Ok(reused)) =
        (plugin.with_limits(per_call_limits(options)), plugin.with_limits(reuse_limits(options)))
    else {
        report.push("determinism", CheckStatus::Fail, "cannot create per-call / reuse handles");
        return plugin.identity().clone();
    };
    let replay = &cases[..options.determinism_cases.min(cases.len())];
    determinism(report, replay, |(d, p, c)| fresh.try_admit(d, p, c), |(d, p, c)| reused.try_admit(d, p, c));

    let base = corpus::safe_descriptor();
    let params = corpus::passing_parameters();
    let context = corpus::plain_context();
    let mut violations = Vec::new();
    let mut refused =
        |what: &str, d: &leyline::BlueprintDescriptor, p: &std::collections::BTreeMap<String, f64>| match plugin
            .try_admit(d, p, &context)
        {
            Ok(Verdict { passed: false, .. }) => {}
            Ok(_) => violations.push(format!("{what} was admitted")),
            Err(failure) => violations.push(format!("{what}: {failure}")),
        };
    refused(
        "HIGH_RISK without approval",
        &leyline::BlueprintDescriptor { tier: BlueprintTier::HighRisk, ..base.clone() },
        &params,
    );
    refused(
        "quarantine-only outside quarantine",
        &leyline::BlueprintDescriptor { quarantine_only: true, ..base.clone() },
        &params,
    );
    refused(
        "approval-required without approval",
        &leyline::BlueprintDescriptor { approval_required: true, ..base.clone() },
        &params,
    );
    refused("NaN parameter", &base, &[("width".to_owned(), f64::NAN)].into());
    refused("out-of-bounds parameter", &base, &[("width".to_owned(), 1e9)].into());
    invariants(report, violations, 5);
    latency(report, options, plugin, twin, BlueprintPlugin::last_call_fuel, |p, _| {
        p.try_admit(&base, &params, &context)
    });
    plugin.identity().clone()
}
