//! The plugin runtime: one wasmtime engine (epoch interruption on, optional
//! fuel), its epoch ticker, the shared linker and the artifact cache.
//! Loading a plugin goes: read (size cap) → SHA-256 pin → cache/compile →
//! declared kind and API version (before instantiation) → link with every
//! unknown import defined as a trap → pre-instantiate → `info()` check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::cache::{ArtifactCache, CacheOutcome, CacheStats, sha256_hex};
use crate::error::PluginError;
use crate::inspect::{self, ComponentShape};
use crate::limits::{EPOCH_TICK, MAX_PLUGIN_FILE_BYTES, OutputCaps, PluginLimits};
use crate::pool::{self, InstanceAllocation};
use crate::store::StoreState;

/// How a plugin file is pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// The file must have exactly this SHA-256 (lower-case hex).
    Sha256(String),
    /// No pin: only for tools that inspect arbitrary files (`plugin check`).
    Unpinned,
}

impl Pin {
    /// A pin from 64 hex digits.
    pub fn sha256(hex_digest: &str) -> Result<Pin, PluginError> {
        let digest = hex_digest.trim().to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PluginError::InvalidPin(hex_digest.to_owned()));
        }
        Ok(Pin::Sha256(digest))
    }
}

/// Component bytes compiled into the binary (the default plugins), so an
/// installed or copied `kasmina` needs no plugin files.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedComponent(pub &'static [u8]);

impl std::fmt::Debug for EmbeddedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddedComponent({} bytes)", self.0.len())
    }
}

/// What to load: a file (or embedded bytes), its pin and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// The component file; for an embedded component, a label naming it
    /// (`<embedded NAME>`), used in reports and errors.
    pub path: PathBuf,
    /// Bytes compiled into the binary, read instead of `path` when present.
    pub embedded: Option<EmbeddedComponent>,
    /// Its SHA-256 pin.
    pub pin: Pin,
    /// Its limits and isolation mode.
    pub limits: PluginLimits,
}

impl PluginSpec {
    /// A spec for a component file, with default limits.
    pub fn new(path: impl Into<PathBuf>, pin: Pin) -> Self {
        PluginSpec { path: path.into(), embedded: None, pin, limits: PluginLimits::default() }
    }

    /// A spec for a component compiled into the binary, with default
    /// limits; pinned like a file (the bytes are hashed and checked).
    pub fn embedded(name: &str, bytes: &'static [u8], pin: Pin) -> Self {
        PluginSpec {
            path: PathBuf::from(format!("<embedded {name}>")),
            embedded: Some(EmbeddedComponent(bytes)),
            pin,
            limits: PluginLimits::default(),
        }
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Directory of precompiled artifacts (created if missing).
    pub cache_dir: PathBuf,
    /// Enables fuel metering (then every plugin needs `limits.fuel`).
    /// Precompiled artifacts depend on this setting; the cache key includes it.
    pub fuel_metering: bool,
    /// Epoch tick (deadline resolution).
    pub epoch_tick: Duration,
    /// Caps on plugin outputs.
    pub output_caps: OutputCaps,
    /// How plugin instances are allocated (default: a pool of
    /// [`crate::DEFAULT_POOLED_INSTANCES`] recycled slots).
    pub instance_allocation: InstanceAllocation,
}

impl RuntimeConfig {
    /// Defaults with the given cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            cache_dir: cache_dir.into(),
            fuel_metering: false,
            epoch_tick: EPOCH_TICK,
            output_caps: OutputCaps::default(),
            instance_allocation: InstanceAllocation::default(),
        }
    }
}

/// A compiled, checked component ready to be pre-instantiated for its world.
pub(crate) struct Prepared {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) component: Component,
    pub(crate) shape: ComponentShape,
    pub(crate) linker: Linker<StoreState>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    linker: Linker<StoreState>,
    cache: ArtifactCache,
    pub(crate) config: RuntimeConfig,
}

/// The shared plugin runtime; cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Creates the engine, starts its epoch ticker and opens the cache.
    pub fn new(config: RuntimeConfig) -> Result<Self, PluginError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.consume_fuel(config.fuel_metering);
        // A policy needs little stack; a small one makes runaway recursion
        // trap quickly and keeps a stack overflow cheap.
        wasm.max_wasm_stack(256 << 10);
        pool::configure(&mut wasm, config.instance_allocation)?;
        let engine = Engine::new(&wasm).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        // `log` (and `types`) of every served API version: a plugin links
        // against its own version's names (checked by `inspect`).
        crate::bindings::v0_2::gate::GatePlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        crate::bindings::v0_1::GatePlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        let cache = ArtifactCache::new(&engine, config.cache_dir.clone())?;
        spawn_epoch_ticker(&engine, config.epoch_tick)?;
        Ok(PluginRuntime { inner: Arc::new(RuntimeInner { engine, linker, cache, config }) })
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// The output caps every plugin is held to.
    pub fn output_caps(&self) -> &OutputCaps {
        &self.inner.config.output_caps
    }

    /// Compiles `bytes` without any cache (benchmarks: the cold path).
    pub fn compile_uncached(&self, bytes: &[u8]) -> Result<(), PluginError> {
        Component::new(&self.inner.engine, bytes)
            .map(drop)
            .map_err(|e| PluginError::NotAComponent { path: PathBuf::from("<bytes>"), detail: e.to_string() })
    }

    /// Loads `bytes` through the disk cache only, as a fresh process would
    /// (benchmarks: the warm path). Returns where the component came from.
    pub fn load_through_disk_cache(&self, bytes: &[u8]) -> Result<CacheOutcome, PluginError> {
        let sha = sha256_hex(bytes);
        self.inner.cache.get_from_disk(&self.inner.engine, bytes, &sha, Path::new("<bytes>")).map(|(_, o)| o)
    }

    /// Reads, verifies, compiles (or loads) and inspects a plugin file.
    pub(crate) fn prepare(&self, path: &Path, pin: &Pin) -> Result<Prepared, PluginError> {
        self.prepare_source(path, None, pin)
    }

    /// Like [`PluginRuntime::prepare`], from embedded bytes when given
    /// (`path` is then only the label).
    pub(crate) fn prepare_source(
        &self,
        path: &Path,
        embedded: Option<EmbeddedComponent>,
        pin: &Pin,
    ) -> Result<Prepared, PluginError> {
        let bytes = match embedded {
            Some(EmbeddedComponent(bytes)) if bytes.len() as u64 > MAX_PLUGIN_FILE_BYTES => {
                return Err(PluginError::TooLarge {
                    path: path.to_owned(),
                    size: bytes.len() as u64,
                    cap: MAX_PLUGIN_FILE_BYTES,
                });
            }
            Some(EmbeddedComponent(bytes)) => bytes.to_vec(),
            None => read_capped(path)?,
        };
        let sha256 = sha256_hex(&bytes);
        if let Pin::Sha256(expected) = pin
            && *expected != sha256
        {
            return Err(PluginError::PinMismatch { path: path.to_owned(), expected: expected.clone(), actual: sha256 });
        }
        let (component, outcome) = self.inner.cache.get(&self.inner.engine, &bytes, &sha256, path)?;
        tracing::debug!(path = %path.display(), sha256, ?outcome, "kasmina.plugin.compiled");
        let shape = inspect::shape(&self.inner.engine, &component, path)?;
        let mut linker = self.inner.linker.clone();
        linker.define_unknown_imports_as_traps(&component).map_err(|e| PluginError::Link {
            path: path.to_owned(),
            kind: shape.kind,
            detail: e.to_string(),
        })?;
        Ok(Prepared { path: path.to_owned(), sha256, component, shape, linker })
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, PluginError> {
    let io = |source| PluginError::Io { path: path.to_owned(), source };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_PLUGIN_FILE_BYTES {
        return Err(PluginError::TooLarge { path: path.to_owned(), size, cap: MAX_PLUGIN_FILE_BYTES });
    }
    std::fs::read(path).map_err(io)
}

/// Advances the engine's epoch every `tick`. The thread holds only a weak
/// reference, so it ends once the engine (and every component using it) is dropped.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> Result<(), PluginError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("kasmina-plugin-epoch".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))
}
