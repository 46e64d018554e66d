//! `[plugins]`: sandbox limits, the pinned policy plugins, and the shadow
//! candidate with its own budget.

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults as d;

/// Plugin sandbox limits (ARCHITECTURE.md, plugin runtime rules).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    /// Per-call deadline, ms.
    pub deadline_ms: u64,
    /// Linear memory cap, bytes.
    pub memory_bytes: u64,
    /// Fuel per call; 0 disables fuel metering.
    pub fuel: u64,
    /// Instance isolation: `per-call` (fresh store per evaluation) or
    /// `reuse` (one instance, replaced after any failure).
    pub isolation: String,
    /// Directory of precompiled plugin artifacts; default
    /// `$KASMINA_CACHE/plugin-cache` (`~/.cache/kasmina/plugin-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Gate plugin, pinned.
    pub gates: Option<PluginRef>,
    /// Annotation parser plugin, pinned.
    pub annotations: Option<PluginRef>,
    /// Blueprint policy plugin, pinned.
    pub blueprint_policy: Option<PluginRef>,
    /// Candidate gate plugin, pinned, evaluated beside the active one on
    /// every gate ("shadow"): disagreements are reported as telemetry and
    /// never affect a decision. Off when unset.
    pub shadow_gates: Option<PluginRef>,
    /// The shadow candidate's own per-call deadline, ms. It runs off the
    /// step path, so a slow or looping candidate never delays a step.
    pub shadow_deadline_ms: u64,
    /// Shadow evaluations that may wait for the candidate; beyond this they
    /// are dropped (counted), never queued without bound.
    pub shadow_queue: usize,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            deadline_ms: d::PLUGIN_DEADLINE_MS,
            memory_bytes: d::PLUGIN_MEMORY_BYTES,
            fuel: d::PLUGIN_FUEL,
            isolation: d::PLUGIN_ISOLATION.to_owned(),
            cache_dir: None,
            gates: None,
            annotations: None,
            blueprint_policy: None,
            shadow_gates: None,
            shadow_deadline_ms: d::SHADOW_DEADLINE_MS,
            shadow_queue: d::SHADOW_QUEUE,
        }
    }
}

/// A plugin file pinned by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// Path of the `.wasm` component.
    pub path: PathBuf,
    /// Expected SHA-256 (hex) of the file; a changed file is refused.
    pub sha256: String,
}
