//! Precompiled-artifact cache: a component is compiled once per content
//! digest and engine configuration, then loaded from disk (~100 µs) instead
//! of recompiled (~100 ms).
//!
//! Layout: `<dir>/<content sha256>-<engine hash>.cwasm` plus a `.sha256`
//! sidecar holding the artifact's own digest. Deserialising a precompiled
//! artifact runs native code, so the artifact is verified against its sidecar
//! before wasmtime sees it; a mismatch (torn write, tampering) is reported
//! and the artifact is recompiled from the pinned source. The cache directory
//! must be writable only by the operator.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::PluginError;

/// How many compiled components stay in memory. Each is a few MB of
/// executable mappings; a host serves three plugins plus the odd reload
/// candidate, so 32 leaves ample headroom while bounding a reload loop.
const MEMORY_ENTRIES: usize = 32;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Already compiled in this process.
    Memory,
    /// Loaded from a precompiled artifact on disk.
    Disk,
    /// Compiled now (and written to disk).
    Compiled,
    /// A disk artifact failed verification and was recompiled.
    Rejected,
}

/// Cumulative cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// In-process hits.
    pub memory_hits: u64,
    /// Artifacts loaded from disk.
    pub disk_hits: u64,
    /// Components compiled.
    pub compiles: u64,
    /// Disk artifacts that failed verification.
    pub rejected: u64,
}

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
    memory: Mutex<BTreeMap<String, Component>>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiles: AtomicU64,
    rejected: AtomicU64,
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn cache_io(path: &Path) -> impl FnOnce(std::io::Error) -> PluginError + '_ {
    move |source| PluginError::Cache { path: path.to_owned(), source }
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, dir: PathBuf) -> Result<Self, PluginError> {
        std::fs::create_dir_all(&dir).map_err(cache_io(&dir))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
            memory: Mutex::new(BTreeMap::new()),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// The component for `bytes` (whose digest is `sha`), from memory, disk or the compiler.
    pub(crate) fn get(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha: &str,
        source: &Path,
    ) -> Result<(Component, CacheOutcome), PluginError> {
        if let Some(component) = self.memory.lock().ok().and_then(|m| m.get(sha).cloned()) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((component, CacheOutcome::Memory));
        }
        let (component, outcome) = self.get_from_disk(engine, bytes, sha, source)?;
        if let Ok(mut memory) = self.memory.lock() {
            if memory.len() >= MEMORY_ENTRIES {
                memory.pop_first();
            }
            memory.insert(sha.to_owned(), component.clone());
        }
        Ok((component, outcome))
    }

    /// Disk cache only (no in-memory layer): what a fresh process sees.
    pub(crate) fn get_from_disk(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha: &str,
        source: &Path,
    ) -> Result<(Component, CacheOutcome), PluginError> {
        let artifact = self.dir.join(format!("{sha}-{}.cwasm", self.engine_hash));
        let sidecar = artifact.with_extension("cwasm.sha256");
        let mut outcome = CacheOutcome::Compiled;
        if artifact.is_file() {
            match self.load_verified(engine, &artifact, &sidecar) {
                Ok(component) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, CacheOutcome::Disk));
                }
                Err(reason) => {
                    tracing::warn!(artifact = %artifact.display(), %reason, "kasmina.plugin.cache_rejected");
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    outcome = CacheOutcome::Rejected;
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| PluginError::NotAComponent { path: source.to_owned(), detail: e.to_string() })?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        // Sidecar first: a reader that sees the artifact always finds its
        // digest (the other order made concurrent loaders reject and recompile).
        write_atomically(&sidecar, sha256_hex(&compiled).as_bytes())?;
        write_atomically(&artifact, &compiled)?;
        let component = deserialize(engine, &compiled)
            .map_err(|e| PluginError::NotAComponent { path: source.to_owned(), detail: e.to_string() })?;
        Ok((component, outcome))
    }

    fn load_verified(&self, engine: &Engine, artifact: &Path, sidecar: &Path) -> Result<Component, String> {
        let bytes = std::fs::read(artifact).map_err(|e| format!("read failed: {e}"))?;
        let expected = std::fs::read_to_string(sidecar).map_err(|e| format!("sidecar unreadable: {e}"))?;
        if expected.trim() != sha256_hex(&bytes) {
            return Err("artifact digest does not match its sidecar".to_owned());
        }
        deserialize(engine, &bytes).map_err(|e| format!("deserialize failed: {e}"))
    }
}

/// Deserialises a precompiled artifact that this process either produced
/// itself or verified against its recorded SHA-256.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires the bytes to come from `precompile_component`
    // of a compatible engine. They were produced by this engine moments ago,
    // or read from the operator-owned cache and verified against the digest
    // written with them; wasmtime additionally checks the header and the
    // engine compatibility before using them.
    unsafe { Component::deserialize(engine, bytes) }
}

/// Writes via a temporary file and a rename. The temporary name is unique
/// per write, not just per process: threads of one process (parallel tests,
/// two runtimes sharing a cache) compiling the same plugin at once used to
/// share it, and the second rename failed with "No such file or directory".
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{unique}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(cache_io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(cache_io(path))
}
