//! Hot reload: a [`PluginSlot`] serves one plugin; a new file replaces it
//! only after passing the conformance smoke set (the canary). On any
//! failure the old plugin keeps serving and the refusal is returned with
//! the full report. [`PluginSlot::vet`] and [`PluginSlot::install`] split
//! the two halves, so a caller can vet several slots' plugins and install
//! all of them or none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::annotation::AnnotationPlugin;
use crate::blueprint::BlueprintPlugin;
use crate::conformance::{self, CheckOptions, ConformanceReport, runs};
use crate::error::PluginError;
use crate::gate::GatePlugin;
use crate::plugin::PluginIdentity;
use crate::runtime::{PluginRuntime, PluginSpec};

/// A plugin type a slot can hold.
pub trait Reloadable: Sized + Send + Sync + 'static {
    /// Loads the plugin.
    fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError>;
    /// Its identity.
    fn identity(&self) -> &PluginIdentity;
    /// Runs the kind's corpus checks into `report`.
    fn run_checks(&self, options: &CheckOptions, report: &mut ConformanceReport);
}

impl Reloadable for GatePlugin {
    fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        GatePlugin::load(runtime, spec)
    }
    fn identity(&self) -> &PluginIdentity {
        GatePlugin::identity(self)
    }
    fn run_checks(&self, options: &CheckOptions, report: &mut ConformanceReport) {
        runs::gate(self, None, options, report);
    }
}

impl Reloadable for AnnotationPlugin {
    fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        AnnotationPlugin::load(runtime, spec)
    }
    fn identity(&self) -> &PluginIdentity {
        AnnotationPlugin::identity(self)
    }
    fn run_checks(&self, options: &CheckOptions, report: &mut ConformanceReport) {
        runs::annotation(self, None, options, report);
    }
}

impl Reloadable for BlueprintPlugin {
    fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        BlueprintPlugin::load(runtime, spec)
    }
    fn identity(&self) -> &PluginIdentity {
        BlueprintPlugin::identity(self)
    }
    fn run_checks(&self, options: &CheckOptions, report: &mut ConformanceReport) {
        runs::blueprint(self, None, options, report);
    }
}

/// Why a reload did not happen (the old plugin still serves).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file could not be loaded (pin, version, kind, link...).
    #[error("reload refused: {0}")]
    Load(#[from] PluginError),
    /// The new plugin loaded but failed the canary.
    #[error("reload refused: canary failed\n{report}")]
    CanaryFailed {
        /// The smoke report.
        report: Box<ConformanceReport>,
    },
}

/// One hot-reloadable plugin.
pub struct PluginSlot<P: Reloadable> {
    runtime: PluginRuntime,
    canary: CheckOptions,
    current: RwLock<Arc<P>>,
    refused: AtomicU64,
}

impl<P: Reloadable> std::fmt::Debug for PluginSlot<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot").field("serving", self.current().identity()).finish_non_exhaustive()
    }
}

/// A plugin that loaded under its pin and passed a slot's canary, not yet
/// serving ([`PluginSlot::vet`]); dropping it installs nothing.
pub struct Vetted<P: Reloadable> {
    plugin: P,
    path: std::path::PathBuf,
}

impl<P: Reloadable> Vetted<P> {
    /// The vetted plugin's identity.
    pub fn identity(&self) -> &PluginIdentity {
        self.plugin.identity()
    }
}

impl<P: Reloadable> std::fmt::Debug for Vetted<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vetted").field("plugin", self.plugin.identity()).field("path", &self.path).finish()
    }
}

impl<P: Reloadable> PluginSlot<P> {
    /// Loads the first plugin; it must pass the canary too.
    pub fn new(runtime: &PluginRuntime, spec: &PluginSpec, canary: CheckOptions) -> Result<Self, ReloadError> {
        let plugin = Self::load_and_check(runtime, spec, &canary)?;
        Ok(PluginSlot {
            runtime: runtime.clone(),
            canary,
            current: RwLock::new(Arc::new(plugin)),
            refused: AtomicU64::new(0),
        })
    }

    fn load_and_check(runtime: &PluginRuntime, spec: &PluginSpec, canary: &CheckOptions) -> Result<P, ReloadError> {
        let plugin = P::load(runtime, spec)?;
        let mut report = ConformanceReport::new(&spec.path);
        conformance::check_imports(&mut report, &plugin.identity().imports, plugin.identity().api);
        let canary = CheckOptions { limits: spec.limits.clone(), ..canary.clone() };
        plugin.run_checks(&canary, &mut report);
        report.identity = Some(plugin.identity().clone());
        if report.passed() { Ok(plugin) } else { Err(ReloadError::CanaryFailed { report: Box::new(report) }) }
    }

    /// The plugin serving now.
    pub fn current(&self) -> Arc<P> {
        Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Replaces the plugin with `spec` if it passes the canary; otherwise
    /// keeps the old one and returns why.
    pub fn reload(&self, spec: &PluginSpec) -> Result<Arc<P>, ReloadError> {
        let vetted = self.vet(spec)?;
        Ok(self.install(vetted))
    }

    /// Loads `spec` and runs this slot's canary on it without installing
    /// it: the first half of [`reload`](Self::reload). A refusal is counted
    /// in [`refused_reloads`](Self::refused_reloads).
    pub fn vet(&self, spec: &PluginSpec) -> Result<Vetted<P>, ReloadError> {
        match Self::load_and_check(&self.runtime, spec, &self.canary) {
            Ok(plugin) => Ok(Vetted { plugin, path: spec.path.clone() }),
            Err(error) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %spec.path.display(), %error, "kasmina.plugin.reload_refused");
                Err(error)
            }
        }
    }

    /// Makes a vetted plugin the one serving: the second half of
    /// [`reload`](Self::reload). Calls already running finish on the old one.
    pub fn install(&self, vetted: Vetted<P>) -> Arc<P> {
        let plugin = Arc::new(vetted.plugin);
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::clone(&plugin);
        tracing::info!(path = %vetted.path.display(), sha256 = %plugin.identity().sha256, "kasmina.plugin.reloaded");
        plugin
    }

    /// Reloads refused so far.
    pub fn refused_reloads(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}
