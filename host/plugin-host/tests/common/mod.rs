//! Shared helpers for the plugin-host integration tests.

#![allow(dead_code)]

use std::path::Path;

use kasmina_plugin_host::{Pin, PluginRuntime, PluginSpec, RuntimeConfig, sha256_hex};

/// A runtime with its artifact cache in a fresh temporary directory.
pub fn runtime() -> anyhow::Result<(PluginRuntime, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let runtime = PluginRuntime::new(RuntimeConfig::new(dir.path()))?;
    Ok((runtime, dir))
}

/// A spec pinned to the file's current SHA-256, default limits.
pub fn pinned(path: &str) -> anyhow::Result<PluginSpec> {
    let digest = sha256_hex(&std::fs::read(Path::new(path))?);
    Ok(PluginSpec::new(path, Pin::sha256(&digest)?))
}
