//! Where each policy plugin comes from (a pinned file or the default
//! compiled into the binary) and how a slot is first loaded; shared by the
//! host builder and the hot reload.

use std::path::PathBuf;

use kasmina_default_plugins as defaults;
use kasmina_plugin_host::PluginLimits;
use kasmina_plugin_host::conformance::CheckOptions;
use kasmina_plugin_host::reload::{PluginSlot, ReloadError, Reloadable};
use kasmina_plugin_host::runtime::{Pin, PluginRuntime, PluginSpec};

use super::{HostError, PolicySlot};
use crate::settings::PluginRef;

/// Where a plugin comes from: the file the settings pin, or else the
/// default compiled into the binary (pinned by its build-time SHA-256).
pub(super) enum PluginSource<'a> {
    File(PathBuf, &'a str),
    Embedded(&'static str, &'static [u8], &'static str),
}

/// The configured plugin file and its pin, or the default compiled into the
/// binary, pinned to the digest recorded at build time.
pub(super) fn pinned(configured: &Option<PluginRef>, slot: PolicySlot) -> PluginSource<'_> {
    match configured {
        Some(r) => PluginSource::File(r.path.clone(), r.sha256.as_str()),
        None => default_plugin(slot),
    }
}

/// The default plugin of `slot`, compiled into the binary.
pub(super) fn default_plugin(slot: PolicySlot) -> PluginSource<'static> {
    match slot {
        PolicySlot::Gates => PluginSource::Embedded("kasmina-gates-plugin", defaults::GATES, defaults::GATES_SHA256),
        PolicySlot::Annotations => {
            PluginSource::Embedded("kasmina-annotations-plugin", defaults::ANNOTATIONS, defaults::ANNOTATIONS_SHA256)
        }
        PolicySlot::BlueprintPolicy => PluginSource::Embedded(
            "kasmina-blueprint-policy-plugin",
            defaults::BLUEPRINT_POLICY,
            defaults::BLUEPRINT_POLICY_SHA256,
        ),
    }
}

/// The spec of a pinned plugin under `limits`.
pub(super) fn plugin_spec(source: PluginSource<'_>, limits: &PluginLimits) -> Result<PluginSpec, String> {
    let spec = match source {
        PluginSource::File(path, sha256) => PluginSpec::new(path, Pin::sha256(sha256).map_err(|e| e.to_string())?),
        PluginSource::Embedded(name, bytes, sha256) => {
            PluginSpec::embedded(name, bytes, Pin::sha256(sha256).map_err(|e| e.to_string())?)
        }
    };
    Ok(PluginSpec { limits: limits.clone(), ..spec })
}

/// Loads one pinned plugin; it must pass the conformance smoke canary.
pub(super) fn load_slot<P: Reloadable>(
    runtime: &PluginRuntime,
    which: &'static str,
    source: PluginSource<'_>,
    limits: &PluginLimits,
) -> Result<PluginSlot<P>, HostError> {
    let err = |detail: String| HostError::Plugin { which, detail };
    let spec = plugin_spec(source, limits).map_err(err)?;
    // First load, not a reload: say what failed without "reload refused".
    PluginSlot::new(runtime, &spec, CheckOptions::smoke()).map_err(|e| match e {
        ReloadError::Load(load) => err(format!("cannot load {}: {load}", spec.path.display())),
        ReloadError::CanaryFailed { report } => {
            err(format!("{} failed its conformance smoke check\n{report}", spec.path.display()))
        }
    })
}
