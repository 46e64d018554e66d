//! Errors. [`PluginError`]: a plugin could not be loaded (one variant per
//! thing an operator can fix). [`PluginFailure`]: a loaded plugin failed a
//! call; it always becomes a failing verdict (fail closed).

use std::path::PathBuf;

use crate::kind::PluginKind;

/// How a plugin call failed; each maps to a verdict reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Deadline (epoch) or fuel exhausted.
    Timeout,
    /// Memory cap refused a growth.
    Oom,
    /// Panic, stack overflow, forbidden import or any other trap.
    Trap,
    /// Returned a value outside the output caps or ranges.
    BadOutput,
    /// Built against an API version this host does not serve.
    VersionMismatch,
}

impl FailureKind {
    /// The verdict reason (`plugin_timeout`, ...).
    pub const fn as_reason(self) -> &'static str {
        match self {
            FailureKind::Timeout => "plugin_timeout",
            FailureKind::Oom => "plugin_oom",
            FailureKind::Trap => "plugin_trap",
            FailureKind::BadOutput => "plugin_bad_output",
            FailureKind::VersionMismatch => "plugin_version_mismatch",
        }
    }
}

/// A failed plugin call: kind plus a short detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", kind.as_reason())]
pub struct PluginFailure {
    /// What went wrong.
    pub kind: FailureKind,
    /// Detail for logs and verdict attributes.
    pub detail: String,
}

impl PluginFailure {
    pub(crate) fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        PluginFailure { kind, detail: detail.into() }
    }

    pub(crate) fn bad_output(detail: impl Into<String>) -> Self {
        PluginFailure::new(FailureKind::BadOutput, detail)
    }
}

/// A plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Io {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exceeds the size cap.
    #[error("plugin {path} is {size} bytes, above the {cap}-byte cap")]
    TooLarge {
        /// The plugin file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The pinned SHA-256 does not match the file.
    #[error("plugin {path} has SHA-256 {actual}, but the host config pins {expected}: refusing a changed file")]
    PinMismatch {
        /// The plugin file.
        path: PathBuf,
        /// Pinned digest (hex).
        expected: String,
        /// Actual digest (hex).
        actual: String,
    },
    /// The pin in the config is not a 64-digit hex SHA-256.
    #[error("invalid SHA-256 pin {0:?}: expected 64 hex digits")]
    InvalidPin(String),
    /// Not a valid WebAssembly component for this engine.
    #[error("plugin {path} is not a loadable component: {detail}")]
    NotAComponent {
        /// The plugin file.
        path: PathBuf,
        /// Compiler message.
        detail: String,
    },
    /// The component exports none of the plugin interfaces.
    #[error("plugin {path} exports no esper:kasmina plugin interface (exports: {exports})")]
    NotAPlugin {
        /// The plugin file.
        path: PathBuf,
        /// What it does export.
        exports: String,
    },
    /// Built against another API version (refused before instantiation).
    #[error(
        "plugin_version_mismatch: plugin {path} exports {interface}@{plugin_version}; this host serves API versions {host_version}: rebuild it against one of them (the SDK targets the newest)"
    )]
    VersionMismatch {
        /// The plugin file.
        path: PathBuf,
        /// The interface it exports.
        interface: String,
        /// The version it was built against.
        plugin_version: String,
        /// The versions this host serves (`0.1.0, 0.2.0`).
        host_version: String,
    },
    /// Implements another kind than the slot it is loaded into.
    #[error("plugin {path} implements {found}, but was loaded as {expected}")]
    KindMismatch {
        /// The plugin file.
        path: PathBuf,
        /// The kind the caller asked for.
        expected: PluginKind,
        /// The kind it implements.
        found: PluginKind,
    },
    /// Its exports do not match the WIT signatures, or linking failed.
    #[error("plugin {path} does not match the {kind} world: {detail}")]
    Link {
        /// The plugin file.
        path: PathBuf,
        /// The world it claims.
        kind: PluginKind,
        /// Linker message.
        detail: String,
    },
    /// `info` failed or returned something inconsistent.
    #[error("plugin {path}: info failed: {failure}")]
    Info {
        /// The plugin file.
        path: PathBuf,
        /// What went wrong.
        failure: PluginFailure,
    },
    /// The artifact cache directory could not be used.
    #[error("artifact cache {path}: {source}")]
    Cache {
        /// The cache path at fault.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The wasmtime engine could not be configured.
    #[error("cannot create the plugin engine: {0}")]
    Engine(String),
}

impl PluginError {
    /// Whether this refusal is an API version mismatch (`plugin_version_mismatch`).
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self, PluginError::VersionMismatch { .. })
            || matches!(self, PluginError::Info { failure, .. } if failure.kind == FailureKind::VersionMismatch)
    }
}
