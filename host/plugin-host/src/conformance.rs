//! The conformance kit: proves a plugin file is safe and correct before an
//! operator loads it. `kasmina plugin check <file>` prints
//! [`ConformanceReport`] (one `PASS|FAIL|SKIP name: detail` line per check)
//! and exits non-zero unless [`ConformanceReport::passed`];
//! `kasmina plugin info <file>` prints [`info_file`]'s [`PluginSummary`].
//!
//! Checks, in order: `load`, `api-version`, `declares-kind`, `imports`,
//! `info`, then on a generated corpus `fuzz` (no trap, timeout or OOM),
//! `output-caps`, `determinism` (per-call vs reused instance, twice each),
//! `safety-invariants` (per kind) and `latency`.
//!
//! The `latency` verdict is deterministic: each call's cost is the fuel it
//! consumes (wasmtime's count of executed wasm operations, instantiation
//! included) on a second, fuel-metering runtime, judged against
//! [`CheckOptions::fuel_budget_per_call`] — the same input always costs the
//! same, however busy the machine. Wall-clock p50/p99 on the production
//! (unmetered) runtime are reported beside it, never judged: on a loaded
//! 2-core machine a p99 budget in µs failed the default gate plugin about
//! one run in three (issue 16).

pub mod corpus;
pub(crate) mod runs;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::annotation::{AnnotationLimits, AnnotationPlugin};
use crate::blueprint::BlueprintPlugin;
use crate::error::PluginError;
use crate::gate::GatePlugin;
use crate::inspect::{interface_name, refused_import};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::PluginIdentity;
use crate::runtime::{Pin, PluginRuntime, PluginSpec, RuntimeConfig};
use crate::version::ApiVersion;

/// Default cost budget per call, in fuel units (wasmtime's count of
/// executed wasm operations). Measured on the default plugins with
/// per-call isolation, instantiation included: the heaviest call of the
/// gate plugin costs 11,533, of the annotation parser 61,239, of the
/// blueprint policy 6,484. The budget is about 4× the heaviest default;
/// for scale, those calls take 35–55 µs of wall clock at the median.
pub const DEFAULT_FUEL_BUDGET_PER_CALL: u64 = 250_000;

/// The metered twin's fuel ceiling is this many times the budget (at
/// least [`MIN_FUEL_CEILING`], which loading and `info()` need), so an
/// over-budget call still finishes and its cost is reported.
pub const FUEL_CEILING_FACTOR: u64 = 10;

/// Lowest fuel ceiling of the metered twin.
pub const MIN_FUEL_CEILING: u64 = 10_000_000;

/// Calls whose cost is measured (fuel is deterministic, so a handful
/// covering each call variant suffices).
pub const COST_SAMPLES: usize = 60;

/// How thorough a check is.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Generated inputs for the fuzz / output-caps checks.
    pub fuzz_cases: usize,
    /// Inputs replayed by the determinism check.
    pub determinism_cases: usize,
    /// Timed calls for the latency check (0 skips it).
    pub latency_samples: usize,
    /// Cost budget per call in fuel units: the `latency` verdict.
    pub fuel_budget_per_call: u64,
    /// Limits the plugin runs under (isolation mode included).
    pub limits: PluginLimits,
    /// Annotation limits passed to annotation parsers.
    pub annotation_limits: AnnotationLimits,
    /// Corpus seed (same seed → same corpus).
    pub seed: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            fuzz_cases: 256,
            determinism_cases: 32,
            latency_samples: 500,
            fuel_budget_per_call: DEFAULT_FUEL_BUDGET_PER_CALL,
            limits: PluginLimits::default(),
            annotation_limits: AnnotationLimits::default(),
            seed: 0x006b_6173_6d69_6e61,
        }
    }
}

impl CheckOptions {
    /// A quick subset for hot-reload canaries.
    pub fn smoke() -> Self {
        CheckOptions { fuzz_cases: 32, determinism_cases: 4, latency_samples: 0, ..CheckOptions::default() }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// Not run (an earlier check made it meaningless).
    Skip,
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Check name (`fuzz`, `safety-invariants`, ...).
    pub name: &'static str,
    /// Outcome.
    pub status: CheckStatus,
    /// Why.
    pub detail: String,
}

/// Per-call cost and latency measured by the `latency` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Wall-clock median (reported, not judged).
    pub p50: Duration,
    /// Wall-clock 99th percentile (reported, not judged).
    pub p99: Duration,
    /// Calls timed.
    pub samples: usize,
    /// Median fuel per call.
    pub fuel_p50: u64,
    /// Most fuel any measured call consumed: what the budget judges.
    pub fuel_max: u64,
    /// The budget it was judged against.
    pub fuel_budget: u64,
}

/// Everything a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceReport {
    /// The file checked.
    pub path: PathBuf,
    /// What it was loaded as, once known.
    pub identity: Option<PluginIdentity>,
    /// Check results in order.
    pub checks: Vec<CheckResult>,
    /// Latency, if measured.
    pub latency: Option<LatencySummary>,
}

impl ConformanceReport {
    pub(crate) fn new(path: &Path) -> Self {
        ConformanceReport { path: path.to_owned(), identity: None, checks: Vec::new(), latency: None }
    }

    pub(crate) fn push(&mut self, name: &'static str, status: CheckStatus, detail: impl Into<String>) {
        self.checks.push(CheckResult { name, status, detail: detail.into() });
    }

    fn skip_rest(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            if self.check(name).is_none() {
                self.push(name, CheckStatus::Skip, why);
            }
        }
    }

    /// True when no check failed and at least one ran.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.status != CheckStatus::Fail)
    }

    /// The result of the check named `name`.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail)
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            let status = match check.status {
                CheckStatus::Pass => "PASS",
                CheckStatus::Fail => "FAIL",
                CheckStatus::Skip => "SKIP",
            };
            writeln!(f, "{status} {}: {}", check.name, check.detail)?;
        }
        let failed = self.failures().count();
        if failed == 0 {
            write!(f, "RESULT PASS: {} ({} checks)", self.path.display(), self.checks.len())
        } else {
            write!(f, "RESULT FAIL: {} ({failed} of {} checks failed)", self.path.display(), self.checks.len())
        }
    }
}

const ALL_CHECKS: [&str; 10] = [
    "load",
    "api-version",
    "declares-kind",
    "imports",
    "info",
    "fuzz",
    "output-caps",
    "determinism",
    "safety-invariants",
    "latency",
];

/// Checks `path` with a runtime of its own (artifact cache in `cache_dir`).
pub fn check_file(path: &Path, cache_dir: &Path, options: &CheckOptions) -> ConformanceReport {
    match PluginRuntime::new(RuntimeConfig::new(cache_dir)) {
        Ok(runtime) => check_file_with(&runtime, path, options),
        Err(e) => {
            let mut report = ConformanceReport::new(path);
            report.push("load", CheckStatus::Fail, format!("cannot create the plugin runtime: {e}"));
            report.skip_rest(&ALL_CHECKS, "runtime unavailable");
            report
        }
    }
}

/// Checks `path` on an existing runtime. Never panics, whatever the file does.
pub fn check_file_with(runtime: &PluginRuntime, path: &Path, options: &CheckOptions) -> ConformanceReport {
    let mut report = ConformanceReport::new(path);
    let prepared = match runtime.prepare(path, &Pin::Unpinned) {
        Ok(prepared) => prepared,
        Err(error) => {
            let (name, detail) = match &error {
                PluginError::VersionMismatch { .. } => ("api-version", error.to_string()),
                PluginError::NotAPlugin { .. } => ("declares-kind", error.to_string()),
                _ => ("load", error.to_string()),
            };
            if name != "load" {
                report.push("load", CheckStatus::Pass, "compiles as a component");
            }
            report.push(name, CheckStatus::Fail, detail);
            report.skip_rest(&ALL_CHECKS, "plugin could not be loaded");
            return report;
        }
    };
    let kind = prepared.shape.kind;
    report.push("load", CheckStatus::Pass, format!("compiles as a component (sha256 {})", prepared.sha256));
    let version = prepared.shape.version;
    let served = if version == ApiVersion::CURRENT {
        "the current API".to_owned()
    } else {
        format!("served beside {}: checked against its own version's inputs", ApiVersion::CURRENT)
    };
    report.push("api-version", CheckStatus::Pass, format!("exports {} ({served})", interface_name(kind, version)));
    report.push("declares-kind", CheckStatus::Pass, format!("implements {kind} (world {})", kind.world()));
    check_imports(&mut report, &prepared.shape.imports, version);
    let spec = PluginSpec { limits: options.limits.clone(), ..PluginSpec::new(path, Pin::Unpinned) };
    let metered = Metered::new(runtime, path, options);
    let loaded = match kind {
        PluginKind::GatePolicy => GatePlugin::load(runtime, &spec).map(|p| {
            let twin = metered.load(GatePlugin::load);
            runs::gate(&p, twin.as_ref(), options, &mut report)
        }),
        PluginKind::AnnotationParser => AnnotationPlugin::load(runtime, &spec).map(|p| {
            let twin = metered.load(AnnotationPlugin::load);
            runs::annotation(&p, twin.as_ref(), options, &mut report)
        }),
        PluginKind::BlueprintPolicy => BlueprintPlugin::load(runtime, &spec).map(|p| {
            let twin = metered.load(BlueprintPlugin::load);
            runs::blueprint(&p, twin.as_ref(), options, &mut report)
        }),
    };
    match loaded {
        Ok(identity) => report.identity = Some(identity),
        Err(error) => {
            report.push("info", CheckStatus::Fail, error.to_string());
        }
    }
    report.skip_rest(&ALL_CHECKS, "an earlier check failed");
    report
}

/// Where the `latency` check's cost is measured: the same file loaded on a
/// second runtime that meters fuel (precompiled artifacts are keyed by
/// engine settings, so the two never share one), per-call isolation, with
/// a fuel ceiling well above the budget so an over-budget call still
/// finishes and its cost can be reported.
struct Metered {
    runtime: Option<Result<PluginRuntime, String>>,
    spec: PluginSpec,
}

impl Metered {
    fn new(runtime: &PluginRuntime, path: &Path, options: &CheckOptions) -> Self {
        let limits = PluginLimits {
            fuel: Some(options.fuel_budget_per_call.saturating_mul(FUEL_CEILING_FACTOR).max(MIN_FUEL_CEILING)),
            isolation: crate::limits::Isolation::PerCall,
            ..options.limits.clone()
        };
        let spec = PluginSpec { limits, ..PluginSpec::new(path, Pin::Unpinned) };
        // Only a full check measures cost; a smoke run builds no second engine.
        let runtime = (options.latency_samples > 0).then(|| {
            let config = RuntimeConfig { fuel_metering: true, ..runtime.inner.config.clone() };
            PluginRuntime::new(config).map_err(|e| e.to_string())
        });
        Metered { runtime, spec }
    }

    fn load<P>(&self, load: fn(&PluginRuntime, &PluginSpec) -> Result<P, PluginError>) -> Option<Result<P, String>> {
        let runtime = self.runtime.as_ref()?;
        Some(match runtime {
            Ok(runtime) => load(runtime, &self.spec).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        })
    }
}

/// The `imports` check: only `log`/`types` at our version and WASI plumbing.
pub(crate) fn check_imports(report: &mut ConformanceReport, imports: &[String], version: ApiVersion) {
    let refused: Vec<String> = imports.iter().filter_map(|name| refused_import(name, version)).collect();
    if refused.is_empty() {
        report.push("imports", CheckStatus::Pass, format!("{} imports: log and WASI std plumbing only", imports.len()));
    } else {
        report.push("imports", CheckStatus::Fail, refused.join("; "));
    }
}

/// What `kasmina plugin info` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSummary {
    /// Identity, declared info, imports and exports.
    pub identity: PluginIdentity,
}

impl fmt::Display for PluginSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.identity;
        writeln!(f, "file:        {}", id.path.display())?;
        writeln!(f, "sha256:      {}", id.sha256)?;
        writeln!(f, "name:        {}", id.info.name)?;
        writeln!(f, "version:     {}", id.info.version)?;
        if id.api == ApiVersion::CURRENT {
            writeln!(f, "api-version: {} (current)", id.api)?;
        } else {
            writeln!(
                f,
                "api-version: {} (served beside the current {}: its inputs are projected; see wit/README.md)",
                id.api,
                ApiVersion::CURRENT
            )?;
        }
        writeln!(f, "implements:  {} (world {})", id.info.kind, id.info.kind.world())?;
        writeln!(f, "exports:     {}", id.exports.join(", "))?;
        write!(f, "imports:     {}", id.imports.join(", "))
    }
}

/// Loads `path` (unpinned, default limits) and returns what it declares.
pub fn info_file(path: &Path, cache_dir: &Path) -> Result<PluginSummary, PluginError> {
    let runtime = PluginRuntime::new(RuntimeConfig::new(cache_dir))?;
    let kind = runtime.prepare(path, &Pin::Unpinned)?.shape.kind;
    let spec = PluginSpec::new(path, Pin::Unpinned);
    let identity = match kind {
        PluginKind::GatePolicy => GatePlugin::load(&runtime, &spec)?.identity().clone(),
        PluginKind::AnnotationParser => AnnotationPlugin::load(&runtime, &spec)?.identity().clone(),
        PluginKind::BlueprintPolicy => BlueprintPlugin::load(&runtime, &spec)?.identity().clone(),
    };
    Ok(PluginSummary { identity })
}
