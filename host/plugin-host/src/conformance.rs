//! The conformance kit: proves a plugin file is safe and correct before an
//! operator loads it. `kasmina plugin check <file>` prints
//! [`ConformanceReport`] (one `PASS|FAIL|SKIP name: detail` line per check)
//! and exits non-zero unless [`ConformanceReport::passed`];
//! `kasmina plugin info <file>` prints [`info_file`]'s [`PluginSummary`].
//!
//! Checks, in order: `load`, `api-version`, `declares-kind`, `imports`,
//! `info`, then on a generated corpus `fuzz` (no trap, timeout or OOM),
//! `output-caps`, `determinism` (per-call vs reused instance, twice each),
//! `safety-invariants` (per kind) and `latency` (p50/p99 vs a budget).

pub mod corpus;
pub(crate) mod runs;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::annotation::{AnnotationLimits, AnnotationPlugin};
use crate::blueprint::BlueprintPlugin;
use crate::error::PluginError;
use crate::gate::GatePlugin;
use crate::inspect::{API_PACKAGE, API_VERSION, refused_import};
use crate::kind::PluginKind;
use crate::limits::PluginLimits;
use crate::plugin::PluginIdentity;
use crate::runtime::{Pin, PluginRuntime, PluginSpec, RuntimeConfig};

/// Default latency budget: p99 per call.
pub const DEFAULT_LATENCY_BUDGET_P99: Duration = Duration::from_micros(100);

/// How thorough a check is.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Generated inputs for the fuzz / output-caps checks.
    pub fuzz_cases: usize,
    /// Inputs replayed by the determinism check.
    pub determinism_cases: usize,
    /// Timed calls for the latency check.
    pub latency_samples: usize,
    /// p99 budget per call.
    pub latency_budget_p99: Duration,
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
            latency_budget_p99: DEFAULT_LATENCY_BUDGET_P99,
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

/// Per-call latency measured by the `latency` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Calls timed.
    pub samples: usize,
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
    report.push("api-version", CheckStatus::Pass, format!("exports {API_PACKAGE}/{kind}@{API_VERSION}"));
    report.push("declares-kind", CheckStatus::Pass, format!("implements {kind} (world {})", kind.world()));
    check_imports(&mut report, &prepared.shape.imports);
    let spec = PluginSpec { limits: options.limits.clone(), ..PluginSpec::new(path, Pin::Unpinned) };
    let loaded = match kind {
        PluginKind::GatePolicy => GatePlugin::load(runtime, &spec).map(|p| runs::gate(&p, options, &mut report)),
        PluginKind::AnnotationParser => {
            AnnotationPlugin::load(runtime, &spec).map(|p| runs::annotation(&p, options, &mut report))
        }
        PluginKind::BlueprintPolicy => {
            BlueprintPlugin::load(runtime, &spec).map(|p| runs::blueprint(&p, options, &mut report))
        }
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

/// The `imports` check: only `log`/`types` at our version and WASI plumbing.
pub(crate) fn check_imports(report: &mut ConformanceReport, imports: &[String]) {
    let refused: Vec<String> = imports.iter().filter_map(|name| refused_import(name)).collect();
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
        writeln!(f, "api-version: {}", id.info.api_version)?;
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
