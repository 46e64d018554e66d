//! Per-plugin limits, output caps and their documented defaults.
//!
//! The defaults equal the host settings' constants (`kasmina::settings`
//! `PLUGIN_DEADLINE_MS`, `PLUGIN_MEMORY_BYTES`); they are repeated here
//! because this crate sits below the control plane and cannot depend on it.

use std::time::Duration;

/// Default per-call deadline (SPEC: 10 ms).
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(10);
/// Default linear-memory cap per plugin instance (16 MiB).
pub const DEFAULT_MEMORY_BYTES: usize = 16 << 20;
/// Largest plugin file the host reads (a policy plugin is ~100 KB).
pub const MAX_PLUGIN_FILE_BYTES: u64 = 16 << 20;
/// Epoch tick: the resolution of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Log messages longer than this are truncated (and counted).
pub const MAX_LOG_MESSAGE_BYTES: usize = 512;
/// Log messages per call beyond this are dropped (and counted).
pub const MAX_LOG_MESSAGES_PER_CALL: u32 = 16;

/// How plugin instances are used across calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// A fresh store and instance per evaluation: no state carries between
    /// decisions. The default.
    #[default]
    PerCall,
    /// Instances reused across calls (one per concurrent caller, a few kept
    /// idle) and replaced after any failure (a trap poisons a store). Only
    /// for plugins that pass the determinism check.
    Reuse,
}

impl Isolation {
    /// Stable name (`per-call` / `reuse`), as in host config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::PerCall => "per-call",
            Isolation::Reuse => "reuse",
        }
    }
}

/// Resource limits for one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock deadline per call (epoch interruption; rounded up to ticks).
    pub deadline: Duration,
    /// Linear-memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Fuel per call, when the runtime was built with fuel metering.
    pub fuel: Option<u64>,
    /// Instance reuse policy.
    pub isolation: Isolation,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            fuel: None,
            isolation: Isolation::PerCall,
        }
    }
}

/// Caps on what a plugin may return; checked after every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCaps {
    /// Longest verdict reason, in bytes.
    pub reason_bytes: usize,
    /// Most attributes on one verdict.
    pub attributes: usize,
    /// Longest attribute key, in bytes.
    pub attribute_key_bytes: usize,
    /// Longest attribute value, in bytes.
    pub attribute_value_bytes: usize,
    /// Longest identifier or name (run id, layer name, plugin name), in bytes.
    pub name_bytes: usize,
    /// Longest free-text detail (parse error detail), in bytes.
    pub detail_bytes: usize,
}

impl Default for OutputCaps {
    fn default() -> Self {
        OutputCaps {
            reason_bytes: 64,
            attributes: 32,
            attribute_key_bytes: 64,
            attribute_value_bytes: 256,
            name_bytes: 256,
            detail_bytes: 256,
        }
    }
}
