//! Hot reload of the policy plugins from a re-read settings file.
//!
//! [`PluginReloader::reload`] reads the settings file as it is now. A file
//! that does not read, parse or validate is refused as a whole and nothing
//! changes. Otherwise each of the three policy slots whose pinned ref
//! (`[plugins.gates]`, `[plugins.annotations]`, `[plugins.blueprint_policy]`:
//! path and sha256; a removed section means the embedded default) differs
//! from the one serving is vetted by its [`PluginSlot`]: the new plugin
//! must load under its pin and pass the conformance canary. A reload is all
//! or nothing: only when every changed slot's plugin passes are they all
//! installed; if one is refused, none is, and every changed slot keeps its
//! previous plugin (plugins changed together, such as a parser and the
//! gates that read its keys, never serve half-swapped). Nothing else of the
//! file is applied; every other
//! key that differs from what the host runs with is named in a
//! `kasmina.plugin.reload_restart_required` event.
//!
//! One reload at a time: the settings in force are held under a lock for
//! the whole reload, so a second trigger waits and then re-reads the file.
//!
//! Every outcome is telemetry (`kasmina.plugin.*`): `reload_started`, then
//! per changed slot `reloaded` (INFO) or `reload_refused` (ERROR, with the
//! canary's reason, or naming the slot whose refusal kept a vetted plugin
//! out), then `reload_finished`; a refused file is
//! `reload_settings_refused` (ERROR).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use kasmina_core::{Clock, TelemetrySink};
use kasmina_plugin_host::PluginLimits;
use kasmina_plugin_host::annotation::AnnotationPlugin;
use kasmina_plugin_host::blueprint::BlueprintPlugin;
use kasmina_plugin_host::gate::GatePlugin;
use kasmina_plugin_host::reload::{PluginSlot, ReloadError, Reloadable, Vetted};
use leyline::{TelemetryEvent, TelemetryLevel};

use super::plugin_load::{PluginSource, default_plugin, plugin_spec};
use crate::settings::{PluginRef, PluginSettings, Settings};

/// The three hot-reloadable policy slots of a host.
pub(crate) struct PolicySlots {
    pub gates: Arc<PluginSlot<GatePlugin>>,
    pub annotations: Arc<PluginSlot<AnnotationPlugin>>,
    pub blueprints: Arc<PluginSlot<BlueprintPlugin>>,
}

/// Which policy slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySlot {
    /// `[plugins.gates]`.
    Gates,
    /// `[plugins.annotations]`.
    Annotations,
    /// `[plugins.blueprint_policy]`.
    BlueprintPolicy,
}

impl PolicySlot {
    /// Every slot, in the order they are reloaded.
    pub const ALL: [PolicySlot; 3] = [PolicySlot::Gates, PolicySlot::Annotations, PolicySlot::BlueprintPolicy];

    /// The slot's name in start reports and events.
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicySlot::Gates => "gates",
            PolicySlot::Annotations => "annotations",
            PolicySlot::BlueprintPolicy => "blueprint-policy",
        }
    }

    /// Its section in the settings file.
    pub const fn key(self) -> &'static str {
        match self {
            PolicySlot::Gates => "plugins.gates",
            PolicySlot::Annotations => "plugins.annotations",
            PolicySlot::BlueprintPolicy => "plugins.blueprint_policy",
        }
    }

    fn configured(self, p: &PluginSettings) -> &Option<PluginRef> {
        match self {
            PolicySlot::Gates => &p.gates,
            PolicySlot::Annotations => &p.annotations,
            PolicySlot::BlueprintPolicy => &p.blueprint_policy,
        }
    }

    fn configured_mut(self, p: &mut PluginSettings) -> &mut Option<PluginRef> {
        match self {
            PolicySlot::Gates => &mut p.gates,
            PolicySlot::Annotations => &mut p.annotations,
            PolicySlot::BlueprintPolicy => &mut p.blueprint_policy,
        }
    }
}

/// What a reload did to one slot whose ref changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReload {
    /// Which slot.
    pub slot: PolicySlot,
    /// The new plugin's file, or `<embedded NAME>` for the default.
    pub source: PathBuf,
    /// SHA-256 of the plugin serving before (and still serving if refused).
    pub old_sha256: String,
    /// SHA-256 the settings pin for the new plugin.
    pub new_sha256: String,
    /// `None`: swapped in; otherwise why it was refused.
    pub refused: Option<String>,
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginReloadReport {
    /// One entry per slot whose ref changed (none: nothing to reload).
    pub slots: Vec<SlotReload>,
    /// Keys that differ from what the host runs with but are not reloaded:
    /// they take effect only after a restart.
    pub restart_required: Vec<String>,
}

/// Why a reload did nothing at all.
#[derive(Debug, thiserror::Error)]
#[error("plugin reload refused, nothing changed: {0}")]
pub struct PluginReloadRefused(pub String);

/// Re-reads the settings and reloads the changed policy slots.
pub(crate) struct PluginReloader {
    slots: PolicySlots,
    limits: PluginLimits,
    /// The settings the host runs with (plugin refs as last applied); its
    /// lock makes reloads run one at a time.
    in_force: Mutex<Settings>,
    sink: Arc<dyn TelemetrySink>,
    clock: Arc<dyn Clock>,
}

impl PluginReloader {
    pub(crate) fn new(
        slots: PolicySlots,
        limits: PluginLimits,
        in_force: Settings,
        sink: Arc<dyn TelemetrySink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        PluginReloader { slots, limits, in_force: Mutex::new(in_force), sink, clock }
    }

    /// Re-reads `settings_file` (triggered by `origin`, e.g. `SIGHUP`) and
    /// reloads every policy slot whose ref changed.
    pub(crate) fn reload(
        &self,
        settings_file: Option<&Path>,
        origin: &str,
    ) -> Result<PluginReloadReport, PluginReloadRefused> {
        let mut in_force = self.in_force.lock().unwrap_or_else(PoisonError::into_inner);
        let read = match settings_file {
            None => Err("no settings file: the host was started without one (kasmina serve: without --settings), \
                 so there is nothing to re-read; restart it with --settings FILE"
                .to_owned()),
            Some(path) => Settings::from_file(path).map_err(|e| {
                format!("settings {} refused: {e}; fix it (`kasmina settings check FILE` names every bad key) and trigger the reload again", path.display())
            }),
        };
        let settings = match read {
            Ok(settings) => settings,
            Err(why) => {
                self.emit(TelemetryLevel::Error, "kasmina.plugin.reload_settings_refused", why.clone(), |e| {
                    e.attr("origin", origin).attr("reason", why.as_str())
                });
                return Err(PluginReloadRefused(why));
            }
        };
        let changed: Vec<PolicySlot> = PolicySlot::ALL
            .into_iter()
            .filter(|s| s.configured(&in_force.plugins) != s.configured(&settings.plugins))
            .collect();
        let names: Vec<&str> = changed.iter().map(|s| s.as_str()).collect();
        let names = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        self.emit(
            TelemetryLevel::Info,
            "kasmina.plugin.reload_started",
            format!("plugin reload ({origin}): slots changed: {names}"),
            |e| e.attr("origin", origin).attr("slots", names.as_str()),
        );
        let restart_required = restart_required(&in_force, &settings);
        if !restart_required.is_empty() {
            let keys = restart_required.join(", ");
            self.emit(
                TelemetryLevel::Warning,
                "kasmina.plugin.reload_restart_required",
                format!(
                    "changed but not applied: {keys}; a reload applies only the plugins.gates, \
                     plugins.annotations and plugins.blueprint_policy refs: restart kasmina serve to apply the rest"
                ),
                |e| e.attr("origin", origin).attr("keys", keys.as_str()),
            );
        }
        // Every changed slot is vetted first; installed only if all passed.
        let vetted: Vec<(SlotReload, Option<Candidate>)> =
            changed.iter().map(|&slot| self.vet_slot(slot, slot.configured(&settings.plugins))).collect();
        let refused_slots: Vec<&str> =
            vetted.iter().filter(|(s, _)| s.refused.is_some()).map(|(s, _)| s.slot.as_str()).collect();
        let kept_out = (!refused_slots.is_empty()).then(|| {
            format!(
                "vetted but not installed: a reload is all or nothing and the {} plugin of this reload was refused; \
                 fix that one and trigger the reload again",
                refused_slots.join(" and ")
            )
        });
        let mut report = PluginReloadReport { slots: Vec::new(), restart_required };
        for (mut outcome, candidate) in vetted {
            match (&kept_out, candidate) {
                (None, Some(candidate)) => {
                    self.install(candidate);
                    let slot = outcome.slot;
                    *slot.configured_mut(&mut in_force.plugins) = slot.configured(&settings.plugins).clone();
                }
                (Some(why), Some(_dropped)) => outcome.refused = Some(why.clone()),
                (_, None) => {}
            }
            self.emit_slot(&outcome, origin);
            report.slots.push(outcome);
        }
        let refused = report.slots.iter().filter(|s| s.refused.is_some()).count();
        let reloaded = report.slots.len() - refused;
        self.emit(
            if refused > 0 { TelemetryLevel::Error } else { TelemetryLevel::Info },
            "kasmina.plugin.reload_finished",
            format!("plugin reload ({origin}) finished: {reloaded} reloaded, {refused} refused"),
            |e| e.attr("origin", origin).attr("reloaded", reloaded as u64).attr("refused", refused as u64),
        );
        Ok(report)
    }

    /// Loads and canaries `slot`'s configured plugin without installing it:
    /// the outcome so far and, when it passed, the plugin to install.
    fn vet_slot(&self, slot: PolicySlot, configured: &Option<PluginRef>) -> (SlotReload, Option<Candidate>) {
        let source = match configured {
            Some(r) => PluginSource::File(r.path.clone(), r.sha256.as_str()),
            None => default_plugin(slot),
        };
        let (path, new_sha256) = match &source {
            PluginSource::File(path, sha256) => (path.clone(), (*sha256).to_owned()),
            PluginSource::Embedded(name, _, sha256) => {
                (PathBuf::from(format!("<embedded {name}>")), (*sha256).to_owned())
            }
        };
        let old_sha256 = self.serving(slot);
        let result = match plugin_spec(source, &self.limits) {
            Err(e) => Err(format!("cannot load {}: {e}", path.display())),
            Ok(spec) => match slot {
                PolicySlot::Gates => vet(&self.slots.gates, &spec).map(Candidate::Gates),
                PolicySlot::Annotations => vet(&self.slots.annotations, &spec).map(Candidate::Annotations),
                PolicySlot::BlueprintPolicy => vet(&self.slots.blueprints, &spec).map(Candidate::Blueprints),
            },
        };
        let (refused, candidate) = match result {
            Ok(candidate) => (None, Some(candidate)),
            Err(why) => (Some(why), None),
        };
        (SlotReload { slot, source: path, old_sha256, new_sha256, refused }, candidate)
    }

    fn install(&self, candidate: Candidate) {
        match candidate {
            Candidate::Gates(p) => drop(self.slots.gates.install(p)),
            Candidate::Annotations(p) => drop(self.slots.annotations.install(p)),
            Candidate::Blueprints(p) => drop(self.slots.blueprints.install(p)),
        }
    }

    fn serving(&self, slot: PolicySlot) -> String {
        match slot {
            PolicySlot::Gates => self.slots.gates.current().identity().sha256.clone(),
            PolicySlot::Annotations => self.slots.annotations.current().identity().sha256.clone(),
            PolicySlot::BlueprintPolicy => self.slots.blueprints.current().identity().sha256.clone(),
        }
    }

    fn emit_slot(&self, s: &SlotReload, origin: &str) {
        let (level, name, message) = match &s.refused {
            None => (
                TelemetryLevel::Info,
                "kasmina.plugin.reloaded",
                format!(
                    "{} plugin reloaded: sha256 {} -> {} ({})",
                    s.slot.as_str(),
                    short(&s.old_sha256),
                    short(&s.new_sha256),
                    s.source.display()
                ),
            ),
            Some(reason) => (
                TelemetryLevel::Error,
                "kasmina.plugin.reload_refused",
                format!(
                    "{} plugin reload refused, the previous plugin (sha256 {}) keeps serving: {reason}",
                    s.slot.as_str(),
                    short(&s.old_sha256)
                ),
            ),
        };
        self.emit(level, name, message, |e| {
            let e = e
                .attr("origin", origin)
                .attr("slot", s.slot.as_str())
                .attr("path", s.source.display().to_string())
                .attr("old_sha256", s.old_sha256.as_str())
                .attr("new_sha256", s.new_sha256.as_str());
            match &s.refused {
                Some(reason) => e.attr("reason", reason.as_str()),
                None => e,
            }
        });
    }

    fn emit(
        &self,
        level: TelemetryLevel,
        name: &str,
        message: String,
        attrs: impl FnOnce(TelemetryEvent) -> TelemetryEvent,
    ) {
        self.sink.emit(attrs(TelemetryEvent::new(name, level, message, self.clock.now_ms())));
    }
}

/// A plugin that passed its slot's canary, waiting for the others.
enum Candidate {
    Gates(Vetted<GatePlugin>),
    Annotations(Vetted<AnnotationPlugin>),
    Blueprints(Vetted<BlueprintPlugin>),
}

/// Vets `spec` for `slot`: the plugin, or why it was refused.
fn vet<P: Reloadable>(slot: &PluginSlot<P>, spec: &kasmina_plugin_host::PluginSpec) -> Result<Vetted<P>, String> {
    slot.vet(spec).map_err(|e| match e {
        ReloadError::Load(load) => format!("cannot load: {load}"),
        ReloadError::CanaryFailed { report } => {
            let failed: Vec<String> = report.failures().map(|c| format!("{}: {}", c.name, c.detail)).collect();
            format!("canary failed: {}", failed.join("; "))
        }
    })
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Every key of `new` that differs from `now` and a reload does not apply.
fn restart_required(now: &Settings, new: &Settings) -> Vec<String> {
    let (a, b) = (&now.plugins, &new.plugins);
    let sections = [
        ("security", now.security != new.security),
        ("lifecycle", now.lifecycle != new.lifecycle),
        ("annotations", now.annotations != new.annotations),
        ("gates", now.gates != new.gates),
        ("isolation", now.isolation != new.isolation),
        ("kernels", now.kernels != new.kernels),
        ("plugins.deadline_ms", a.deadline_ms != b.deadline_ms),
        ("plugins.memory_bytes", a.memory_bytes != b.memory_bytes),
        ("plugins.fuel", a.fuel != b.fuel),
        ("plugins.isolation", a.isolation != b.isolation),
        ("plugins.cache_dir", a.cache_dir != b.cache_dir),
        ("plugins.shadow_gates", a.shadow_gates != b.shadow_gates),
        ("plugins.shadow_deadline_ms", a.shadow_deadline_ms != b.shadow_deadline_ms),
        ("plugins.shadow_queue", a.shadow_queue != b.shadow_queue),
        ("breaker", now.breaker != new.breaker),
        ("telemetry", now.telemetry != new.telemetry),
        ("rollback", now.rollback != new.rollback),
        ("distillation", now.distillation != new.distillation),
        ("daemon", now.daemon != new.daemon),
    ];
    let mut keys: Vec<String> =
        sections.into_iter().filter(|(_, differs)| *differs).map(|(key, _)| key.to_owned()).collect();
    // A section added to `Settings` but not to the list above still counts.
    let mut reloaded_only = now.clone();
    for slot in PolicySlot::ALL {
        *slot.configured_mut(&mut reloaded_only.plugins) = slot.configured(b).clone();
    }
    if keys.is_empty() && reloaded_only != *new {
        keys.push("(a key outside [plugins] refs)".to_owned());
    }
    keys
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::from_toml(text).unwrap()
    }

    #[test]
    fn only_keys_a_reload_does_not_apply_need_a_restart() {
        let now = settings("[plugins]\ndeadline_ms = 250\n");
        let gates = format!("[plugins.gates]\npath = \"g.wasm\"\nsha256 = \"{}\"\n", "a".repeat(64));
        assert!(restart_required(&now, &settings(&format!("[plugins]\ndeadline_ms = 250\n{gates}"))).is_empty());
        let new = settings(&format!("[plugins]\ndeadline_ms = 500\n{gates}[daemon]\nidle_timeout_s = 5\n"));
        assert_eq!(restart_required(&now, &new), ["plugins.deadline_ms", "daemon"]);
        let new = settings("[plugins]\ndeadline_ms = 250\n[lifecycle]\nembargo_s = 1\n[security]\nnonce_ttl_s = 600\n");
        assert_eq!(restart_required(&now, &new), ["security", "lifecycle"]);
    }
}
