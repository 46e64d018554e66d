//! One settings object for the whole host, read from TOML.
//!
//! Unknown keys are rejected (`deny_unknown_fields` on every section), every
//! default is a named constant in [`defaults`], and [`Settings::validate`]
//! refuses zero caps and out-of-range values with an error naming the key.
//! Sections are resolved once and passed down; only a hot plugin reload
//! re-reads the file, and it applies nothing but the `[plugins]` refs
//! (`host/plugin_reload.rs`).

mod daemon;
pub mod defaults;
mod derived;
mod plugins;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::daemon::DaemonSettings;
use self::defaults as d;
pub use self::plugins::{PluginRef, PluginSettings};

/// A settings error; always names the offending key or file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is larger than the cap.
    #[error("settings file {path} is {size} bytes; the cap is {cap}")]
    TooLarge {
        /// File that failed.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// TOML syntax, an unknown key or a wrongly typed value.
    #[error("invalid settings: {0}")]
    Parse(String),
    /// A value out of its allowed range.
    #[error("invalid setting `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `security.nonce_capacity`.
        key: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

/// The host's settings. Every section has documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Command envelope (HMAC, nonces, freshness).
    pub security: SecuritySettings,
    /// Stage progression and embargo.
    pub lifecycle: LifecycleSettings,
    /// Annotation caps.
    pub annotations: AnnotationSettings,
    /// Gate thresholds.
    pub gates: GateSettings,
    /// Gradient isolation monitor.
    pub isolation: IsolationSettings,
    /// Kernel cache and prefetch.
    pub kernels: KernelSettings,
    /// Plugin sandbox limits.
    pub plugins: PluginSettings,
    /// Circuit breakers.
    pub breaker: BreakerSettings,
    /// Telemetry queues.
    pub telemetry: TelemetrySettings,
    /// Rollback readiness SLA.
    pub rollback: RollbackSettings,
    /// Knowledge distillation.
    pub distillation: DistillationSettings,
    /// Connection timeouts of `kasmina serve` (the embedded host ignores them).
    pub daemon: DaemonSettings,
}

/// Command envelope settings (SPEC.md §3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// File holding the HMAC key (hex). Takes precedence over `key_env`.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the HMAC key (hex).
    pub key_env: String,
    /// Nonce TTL in seconds.
    pub nonce_ttl_s: u64,
    /// Nonce ledger capacity.
    pub nonce_capacity: usize,
    /// Timer purge interval of the ledger, seconds.
    pub nonce_purge_interval_s: u64,
    /// Freshness window in seconds (also adjustable at run time).
    pub freshness_window_s: u64,
    /// Allowed future skew in seconds.
    pub future_skew_s: u64,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            key_file: None,
            key_env: d::HMAC_KEY_ENV.to_owned(),
            nonce_ttl_s: d::NONCE_TTL_S,
            nonce_capacity: d::NONCE_CAPACITY,
            nonce_purge_interval_s: d::NONCE_PURGE_INTERVAL_S,
            freshness_window_s: d::FRESHNESS_WINDOW_S,
            future_skew_s: d::FUTURE_SKEW_S,
        }
    }
}

/// Stage progression (SPEC.md §2, §5).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// Embargo after a cull, seconds.
    pub embargo_s: u64,
    /// Steps a germinated seed waits for the trainer's attach confirmation
    /// before G1 is asked anyway.
    pub attach_timeout_steps: u64,
    /// Steps in TRAINING before G2.
    pub training_steps: u64,
    /// Steps of the α ramp in BLENDING before G3.
    pub blend_steps: u64,
    /// Temperature of the sigmoid α ramp (> 0).
    pub blend_temperature: f64,
    /// Steps in SHADOWING before G4.
    pub shadow_steps: u64,
    /// Steps in PROBATIONARY before FOSSILIZE is accepted.
    pub probation_steps: u64,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            embargo_s: d::EMBARGO_S,
            attach_timeout_steps: d::ATTACH_TIMEOUT_STEPS,
            training_steps: d::TRAINING_STEPS,
            blend_steps: d::BLEND_STEPS,
            blend_temperature: d::BLEND_TEMPERATURE,
            shadow_steps: d::SHADOW_STEPS,
            probation_steps: d::PROBATION_STEPS,
        }
    }
}

/// Annotation caps (SPEC.md §4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnotationSettings {
    /// Maximum α-vector length.
    pub alpha_vec_cap: u32,
    /// Maximum mesh layer count.
    pub mesh_layers_cap: u32,
    /// Maximum total annotation bytes.
    pub total_bytes_cap: u32,
}

impl Default for AnnotationSettings {
    fn default() -> Self {
        AnnotationSettings {
            alpha_vec_cap: d::ALPHA_VEC_CAP,
            mesh_layers_cap: d::MESH_LAYERS_CAP,
            total_bytes_cap: d::ANNOTATION_BYTES_CAP,
        }
    }
}

/// Gate thresholds (SPEC.md §2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateSettings {
    /// Kernel latency budget, µs (G2).
    pub latency_budget_us: u64,
    /// Loss variance threshold (G2).
    pub loss_variance_threshold: f64,
    /// Loss window length (G2).
    pub loss_window: usize,
    /// Global metric regression tolerance (G4).
    pub metric_tolerance: f64,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            latency_budget_us: d::KERNEL_LATENCY_BUDGET_US,
            loss_variance_threshold: d::LOSS_VARIANCE_THRESHOLD,
            loss_window: d::LOSS_WINDOW,
            metric_tolerance: d::METRIC_TOLERANCE,
        }
    }
}

/// Gradient isolation monitor (SPEC.md §6).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationSettings {
    /// Cosine similarity counted as a violation, in (0, 1].
    pub cosine_threshold: f64,
    /// Coordinates sampled per parameter.
    pub samples_per_param: usize,
    /// Violations within the window that trip the breaker.
    pub violations_to_trip: u32,
    /// Window length in steps.
    pub window_steps: u64,
    /// Cull the seed on the first violation.
    pub fail_fast: bool,
}

impl Default for IsolationSettings {
    fn default() -> Self {
        IsolationSettings {
            cosine_threshold: d::ISOLATION_COSINE_THRESHOLD,
            samples_per_param: d::ISOLATION_SAMPLES_PER_PARAM,
            violations_to_trip: d::ISOLATION_VIOLATIONS_TO_TRIP,
            window_steps: d::ISOLATION_WINDOW_STEPS,
            fail_fast: false,
        }
    }
}

/// Kernel supply (SPEC.md §7).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSettings {
    /// Urza library directory.
    pub urza_dir: Option<PathBuf>,
    /// Cache: maximum entries.
    pub cache_max_entries: u64,
    /// Cache: maximum bytes.
    pub cache_max_bytes: u64,
    /// Cache TTL, seconds.
    pub cache_ttl_s: u64,
    /// Prefetch staleness timeout, ms.
    pub prefetch_timeout_ms: u64,
    /// Bound on background shutdown, ms.
    pub shutdown_timeout_ms: u64,
    /// CPU memory one prewarm forward pass of a kernel's own code may ask
    /// for, bytes; a kernel that asks for more fails its load.
    pub prewarm_memory_bytes: u64,
}

impl Default for KernelSettings {
    fn default() -> Self {
        KernelSettings {
            urza_dir: None,
            cache_max_entries: d::CACHE_MAX_ENTRIES,
            cache_max_bytes: d::CACHE_MAX_BYTES,
            cache_ttl_s: d::CACHE_TTL_S,
            prefetch_timeout_ms: d::PREFETCH_TIMEOUT_MS,
            shutdown_timeout_ms: d::SHUTDOWN_TIMEOUT_MS,
            prewarm_memory_bytes: d::PREWARM_MEMORY_BYTES,
        }
    }
}

/// Circuit breakers (SPEC.md §8).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// Cooldown while open, ms.
    pub cooldown_ms: u64,
    /// Probe successes in HALF_OPEN that close it.
    pub half_open_successes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: d::BREAKER_FAILURE_THRESHOLD,
            cooldown_ms: d::BREAKER_COOLDOWN_MS,
            half_open_successes: d::BREAKER_HALF_OPEN_SUCCESSES,
        }
    }
}

/// Telemetry queues (SPEC.md §9).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Normal per-step queue capacity.
    pub queue_capacity: usize,
    /// CRITICAL priority channel capacity.
    pub critical_capacity: usize,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            queue_capacity: d::TELEMETRY_QUEUE_CAPACITY,
            critical_capacity: d::TELEMETRY_CRITICAL_CAPACITY,
        }
    }
}

/// Rollback readiness SLA (SPEC.md §8).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollbackSettings {
    /// Fast path budget, ms.
    pub fast_sla_ms: u64,
    /// Full path budget, ms.
    pub full_sla_ms: u64,
}

impl Default for RollbackSettings {
    fn default() -> Self {
        RollbackSettings { fast_sla_ms: d::ROLLBACK_FAST_SLA_MS, full_sla_ms: d::ROLLBACK_FULL_SLA_MS }
    }
}

/// Knowledge distillation (SPEC.md §8).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillationSettings {
    /// Weight of the KD loss, in [0, 1].
    pub weight: f64,
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// Teacher memory budget, bytes.
    pub teacher_memory_bytes: u64,
}

impl Default for DistillationSettings {
    fn default() -> Self {
        DistillationSettings {
            weight: d::KD_WEIGHT,
            temperature: d::KD_TEMPERATURE,
            teacher_memory_bytes: d::KD_TEACHER_MEMORY_BYTES,
        }
    }
}

impl Settings {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Settings, SettingsError> {
        let settings: Settings = toml::from_str(text).map_err(|e| SettingsError::Parse(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads, parses and validates a settings file (size-capped).
    pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        let io = |source| SettingsError::Io { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > d::SETTINGS_FILE_BYTES_CAP {
            return Err(SettingsError::TooLarge { path: path.to_path_buf(), size, cap: d::SETTINGS_FILE_BYTES_CAP });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Settings::from_toml(&text)
    }

    /// Checks every range the types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let s = &self.security;
        nonzero("security.nonce_ttl_s", s.nonce_ttl_s)?;
        nonzero("security.nonce_capacity", s.nonce_capacity as u64)?;
        nonzero("security.nonce_purge_interval_s", s.nonce_purge_interval_s)?;
        nonzero("security.freshness_window_s", s.freshness_window_s)?;
        if s.freshness_window_s.saturating_add(s.future_skew_s) >= s.nonce_ttl_s {
            // Otherwise a command still fresh when its nonce expires could be replayed.
            return invalid(
                "security.freshness_window_s",
                format!(
                    "freshness window {} s + future skew {} s must be below security.nonce_ttl_s {} s",
                    s.freshness_window_s, s.future_skew_s, s.nonce_ttl_s
                ),
            );
        }
        if s.key_env.is_empty() {
            return invalid("security.key_env", "must name an environment variable");
        }
        let l = &self.lifecycle;
        nonzero("lifecycle.attach_timeout_steps", l.attach_timeout_steps)?;
        nonzero("lifecycle.training_steps", l.training_steps)?;
        nonzero("lifecycle.blend_steps", l.blend_steps)?;
        positive("lifecycle.blend_temperature", l.blend_temperature)?;
        nonzero("lifecycle.shadow_steps", l.shadow_steps)?;
        nonzero("lifecycle.probation_steps", l.probation_steps)?;
        let a = &self.annotations;
        nonzero("annotations.alpha_vec_cap", u64::from(a.alpha_vec_cap))?;
        nonzero("annotations.mesh_layers_cap", u64::from(a.mesh_layers_cap))?;
        nonzero("annotations.total_bytes_cap", u64::from(a.total_bytes_cap))?;
        let g = &self.gates;
        nonzero("gates.latency_budget_us", g.latency_budget_us)?;
        positive("gates.loss_variance_threshold", g.loss_variance_threshold)?;
        nonzero("gates.loss_window", g.loss_window as u64)?;
        non_negative("gates.metric_tolerance", g.metric_tolerance)?;
        let i = &self.isolation;
        unit_interval_open_low("isolation.cosine_threshold", i.cosine_threshold)?;
        nonzero("isolation.samples_per_param", i.samples_per_param as u64)?;
        if i.samples_per_param > d::ISOLATION_SAMPLES_PER_PARAM_MAX {
            return invalid(
                "isolation.samples_per_param",
                format!("{} is over the maximum {}", i.samples_per_param, d::ISOLATION_SAMPLES_PER_PARAM_MAX),
            );
        }
        nonzero("isolation.violations_to_trip", u64::from(i.violations_to_trip))?;
        nonzero("isolation.window_steps", i.window_steps)?;
        let k = &self.kernels;
        nonzero("kernels.cache_max_entries", k.cache_max_entries)?;
        nonzero("kernels.cache_max_bytes", k.cache_max_bytes)?;
        nonzero("kernels.cache_ttl_s", k.cache_ttl_s)?;
        nonzero("kernels.prefetch_timeout_ms", k.prefetch_timeout_ms)?;
        nonzero("kernels.shutdown_timeout_ms", k.shutdown_timeout_ms)?;
        if k.prewarm_memory_bytes < kasmina_kernels::manager::MIN_PREWARM_MEMORY_BYTES {
            return invalid(
                "kernels.prewarm_memory_bytes",
                format!(
                    "{} is under the minimum {} (1 MiB)",
                    k.prewarm_memory_bytes,
                    kasmina_kernels::manager::MIN_PREWARM_MEMORY_BYTES
                ),
            );
        }
        let p = &self.plugins;
        nonzero("plugins.deadline_ms", p.deadline_ms)?;
        nonzero("plugins.shadow_deadline_ms", p.shadow_deadline_ms)?;
        nonzero("plugins.shadow_queue", p.shadow_queue as u64)?;
        nonzero("plugins.memory_bytes", p.memory_bytes)?;
        if !matches!(p.isolation.as_str(), "per-call" | "reuse") {
            return invalid("plugins.isolation", format!("{:?} is not `per-call` or `reuse`", p.isolation));
        }
        for (key, plugin) in [
            ("plugins.gates.sha256", &p.gates),
            ("plugins.annotations.sha256", &p.annotations),
            ("plugins.blueprint_policy.sha256", &p.blueprint_policy),
            ("plugins.shadow_gates.sha256", &p.shadow_gates),
        ] {
            if let Some(plugin) = plugin
                && (plugin.sha256.len() != 64 || !plugin.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return invalid(key, "must be 64 hex characters (the file's SHA-256)");
            }
        }
        let b = &self.breaker;
        nonzero("breaker.failure_threshold", u64::from(b.failure_threshold))?;
        nonzero("breaker.cooldown_ms", b.cooldown_ms)?;
        nonzero("breaker.half_open_successes", u64::from(b.half_open_successes))?;
        let t = &self.telemetry;
        nonzero("telemetry.queue_capacity", t.queue_capacity as u64)?;
        nonzero("telemetry.critical_capacity", t.critical_capacity as u64)?;
        let r = &self.rollback;
        nonzero("rollback.fast_sla_ms", r.fast_sla_ms)?;
        nonzero("rollback.full_sla_ms", r.full_sla_ms)?;
        if r.fast_sla_ms > r.full_sla_ms {
            return invalid(
                "rollback.fast_sla_ms",
                format!("{} exceeds rollback.full_sla_ms {}", r.fast_sla_ms, r.full_sla_ms),
            );
        }
        let k = &self.distillation;
        if !(k.weight.is_finite() && (0.0..=1.0).contains(&k.weight)) {
            return invalid("distillation.weight", format!("{} is outside [0, 1]", k.weight));
        }
        positive("distillation.temperature", k.temperature)?;
        nonzero("distillation.teacher_memory_bytes", k.teacher_memory_bytes)?;
        self.daemon.validate()
    }
}

fn invalid<T>(key: &'static str, problem: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError::Invalid { key, problem: problem.into() })
}

fn nonzero(key: &'static str, value: u64) -> Result<(), SettingsError> {
    if value == 0 { invalid(key, "must be greater than zero") } else { Ok(()) }
}

fn positive(key: &'static str, value: f64) -> Result<(), SettingsError> {
    if value.is_finite() && value > 0.0 { Ok(()) } else { invalid(key, format!("{value} must be a finite number > 0")) }
}

fn non_negative(key: &'static str, value: f64) -> Result<(), SettingsError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        invalid(key, format!("{value} must be a finite number >= 0"))
    }
}

fn unit_interval_open_low(key: &'static str, value: f64) -> Result<(), SettingsError> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        invalid(key, format!("{value} is outside (0, 1]"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_spec_defaults() {
        let s = Settings::from_toml("").expect("defaults are valid");
        assert_eq!(s.lifecycle.embargo_s, 30);
        assert_eq!(s.security.nonce_ttl_s, 300);
        assert_eq!(s.security.nonce_capacity, 10_000);
        assert_eq!(s.security.freshness_window_s, 60);
        assert_eq!(s.security.future_skew_s, 5);
        assert_eq!(s.annotations.alpha_vec_cap, 64);
        assert_eq!(s.annotations.mesh_layers_cap, 128);
        assert_eq!(s.rollback.fast_sla_ms, 500);
        assert_eq!(s.rollback.full_sla_ms, 12_000);
        assert_eq!(s.plugins.deadline_ms, 10);
        assert_eq!(s.plugins.memory_bytes, 16 << 20);
        assert!((s.distillation.weight - 0.3).abs() < f64::EPSILON);
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn overrides_are_read() {
        let s =
            Settings::from_toml("[security]\nfreshness_window_s = 90\n[lifecycle]\nembargo_s = 5\n").expect("valid");
        assert_eq!(s.security.freshness_window_s, 90);
        assert_eq!(s.lifecycle.embargo_s, 5);
        assert_eq!(s.security.nonce_ttl_s, 300);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Settings::from_toml("[security]\nfreshnes_window_s = 90\n").unwrap_err().to_string();
        assert!(err.contains("freshnes_window_s"), "{err}");
        let err = Settings::from_toml("[securty]\n").unwrap_err().to_string();
        assert!(err.contains("securty"), "{err}");
    }

    #[test]
    fn zero_caps_are_errors_naming_the_key() {
        for (toml, key) in [
            ("[annotations]\nalpha_vec_cap = 0", "annotations.alpha_vec_cap"),
            ("[security]\nnonce_capacity = 0", "security.nonce_capacity"),
            ("[kernels]\ncache_max_bytes = 0", "kernels.cache_max_bytes"),
            ("[kernels]\nprewarm_memory_bytes = 65536", "kernels.prewarm_memory_bytes"),
            ("[plugins]\ndeadline_ms = 0", "plugins.deadline_ms"),
            ("[distillation]\nweight = 1.5", "distillation.weight"),
            ("[isolation]\ncosine_threshold = -0.1", "isolation.cosine_threshold"),
            ("[rollback]\nfast_sla_ms = 20000", "rollback.fast_sla_ms"),
            ("[plugins]\nisolation = \"shared\"", "plugins.isolation"),
            ("[security]\nfreshness_window_s = 296", "security.freshness_window_s"),
        ] {
            let err = Settings::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn negative_windows_are_errors_naming_the_key() {
        let err = Settings::from_toml("[security]\nfreshness_window_s = -5").unwrap_err().to_string();
        assert!(err.contains("freshness_window_s"), "{err}");
    }

    #[test]
    fn plugin_pins_must_be_sha256() {
        let err = Settings::from_toml("[plugins.gates]\npath = \"g.wasm\"\nsha256 = \"abc\"").unwrap_err().to_string();
        assert!(err.contains("plugins.gates.sha256"), "{err}");
    }
}
