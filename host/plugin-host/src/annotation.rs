//! Annotation plugins: host-side parse types, the byte cap checked before
//! the call, and re-validation of the plugin's result after it (caps,
//! ranges, and provenance: a parsed id or mode must come from the input —
//! a plugin cannot invent one).

use std::collections::{BTreeMap, BTreeSet};

use leyline::BlendMode;
use leyline::annotations as keys;
use wasmtime::Store;
use wasmtime::component::{ComponentType, Instance, InstancePre, Lower, TypedFunc};

use crate::bindings::v0_2::annotation::exports::esper::kasmina::annotation_parser as wit;
use crate::error::{PluginError, PluginFailure};
use crate::kind::PluginKind;
use crate::limits::{OutputCaps, PluginLimits};
use crate::plugin::{Core, ExportPre, PluginIdentity, World};
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::store::StoreState;
use crate::version::ApiVersion;

pub use wit::ParseErrorCode;

/// The annotation keys SPEC.md §4 defines (the contract's one list).
pub use leyline::annotations::SPEC_KEYS;

/// Caps the parser enforces (SPEC.md §4 defaults: 64, 128, 16 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationLimits {
    /// Largest `alpha_vec`.
    pub alpha_vec_cap: u32,
    /// Most distinct mesh layers.
    pub mesh_layers_cap: u32,
    /// Largest total of key + value bytes.
    pub annotation_bytes_cap: u32,
}

impl Default for AnnotationLimits {
    fn default() -> Self {
        AnnotationLimits { alpha_vec_cap: 64, mesh_layers_cap: 128, annotation_bytes_cap: 16 * 1024 }
    }
}

/// Parsed blend configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BlendSpec {
    /// Blend mode.
    pub mode: BlendMode,
    /// Who chose the mode.
    pub mode_source: Option<String>,
    /// Per-channel α, each in [0, 1].
    pub alpha_vec: Option<Vec<f32>>,
    /// Confidence gate slope.
    pub gate_k: Option<f64>,
    /// Confidence gate threshold.
    pub gate_tau: Option<f64>,
    /// Lower α clamp.
    pub alpha_lo: Option<f64>,
    /// Upper α clamp.
    pub alpha_hi: Option<f64>,
    /// Logits required with every batch.
    pub confidence_logits_required: bool,
}

/// What the parser extracted, re-validated by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedAnnotations {
    /// `training_run_id`, if present.
    pub training_run_id: Option<String>,
    /// Distinct mesh layers, first-seen order.
    pub mesh_layers: Vec<String>,
    /// Blend configuration, if `blend_mode` was given.
    pub blend: Option<BlendSpec>,
    /// α values clamped into [0, 1].
    pub alpha_clamped: u32,
    /// Duplicate mesh layers dropped.
    pub mesh_duplicates: u32,
    /// Keys not recognised.
    pub unknown_keys: u32,
}

/// A parse refusal: code, key, detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key:?} rejected ({code:?}): {detail}")]
pub struct ParseError {
    /// Machine-readable code.
    pub code: ParseErrorCode,
    /// Key at fault (empty for whole-input errors).
    pub key: String,
    /// Short detail.
    pub detail: String,
}

/// Why `parse` did not return annotations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The annotations are invalid (a normal, reportable refusal).
    #[error(transparent)]
    Rejected(ParseError),
    /// The plugin failed (fail closed).
    #[error("annotation plugin failed: {0}")]
    Plugin(PluginFailure),
}

fn mode_from_wit(mode: wit::BlendMode) -> BlendMode {
    match mode {
        wit::BlendMode::Convex => BlendMode::Convex,
        wit::BlendMode::Residual => BlendMode::Residual,
        wit::BlendMode::Channel => BlendMode::Channel,
        wit::BlendMode::Confidence => BlendMode::Confidence,
    }
}

fn check(ok: bool, detail: impl FnOnce() -> String) -> Result<(), PluginFailure> {
    if ok { Ok(()) } else { Err(PluginFailure::bad_output(detail())) }
}

fn check_name(what: &str, value: &str, caps: &OutputCaps) -> Result<(), PluginFailure> {
    check(!value.is_empty() && value.len() <= caps.name_bytes, || {
        format!("{what} is {} bytes (1..={} allowed)", value.len(), caps.name_bytes)
    })
}

/// Re-validates a plugin's parse result against the input and the caps.
pub(crate) fn validate(
    raw: Result<wit::ParsedAnnotations, wit::ParseError>,
    input: &BTreeMap<String, String>,
    limits: &AnnotationLimits,
    caps: &OutputCaps,
) -> Result<Result<ParsedAnnotations, ParseError>, PluginFailure> {
    let parsed = match raw {
        Err(e) => {
            // A missing-key error may name a SPEC key absent from the input.
            let known = e.key.is_empty() || input.contains_key(&e.key) || SPEC_KEYS.contains(&e.key.as_str());
            check(known, || "error names a key that is neither in the input nor a SPEC key".into())?;
            check(e.key.len() <= caps.name_bytes && e.detail.len() <= caps.detail_bytes, || {
                format!("error key {} / detail {} bytes over cap", e.key.len(), e.detail.len())
            })?;
            return Ok(Err(ParseError { code: e.code, key: e.key, detail: e.detail }));
        }
        Ok(parsed) => parsed,
    };
    if let Some(id) = &parsed.training_run_id {
        check_name(keys::TRAINING_RUN_ID, id, caps)?;
        check(input.get(keys::TRAINING_RUN_ID).is_some_and(|raw| raw.trim() == id), || {
            "training_run_id does not come from the input".into()
        })?;
    }
    check(parsed.mesh_layers.len() <= limits.mesh_layers_cap as usize, || {
        format!("{} mesh layers > cap {}", parsed.mesh_layers.len(), limits.mesh_layers_cap)
    })?;
    check(parsed.mesh_layers.is_empty() || input.contains_key(keys::MESH_LAYERS), || {
        "mesh layers without input".into()
    })?;
    let mut seen = BTreeSet::new();
    for layer in &parsed.mesh_layers {
        check_name("mesh layer", layer, caps)?;
        check(seen.insert(layer.as_str()), || format!("duplicate mesh layer {layer}"))?;
    }
    let blend = match parsed.blend {
        None => None,
        Some(spec) => {
            let mode = mode_from_wit(spec.mode);
            check(input.get(keys::BLEND_MODE).is_some_and(|raw| raw == mode.as_str()), || {
                format!("blend mode {} does not match the input", mode.as_str())
            })?;
            if let Some(source) = &spec.mode_source {
                check_name(keys::BLEND_MODE_SOURCE, source, caps)?;
            }
            if let Some(alpha) = &spec.alpha_vec {
                check(alpha.len() <= limits.alpha_vec_cap as usize, || {
                    format!("alpha_vec of {} > cap {}", alpha.len(), limits.alpha_vec_cap)
                })?;
                check(alpha.iter().all(|a| (0.0..=1.0).contains(a)), || "alpha_vec value outside [0, 1]".into())?;
            }
            check(mode != BlendMode::Channel || spec.alpha_vec.is_some(), || "CHANNEL without alpha_vec".into())?;
            check(spec.gate_k.is_none_or(f64::is_finite) && spec.gate_tau.is_none_or(f64::is_finite), || {
                "non-finite gate_k / gate_tau".into()
            })?;
            let unit = |v: Option<f64>| v.is_none_or(|v| (0.0..=1.0).contains(&v));
            check(unit(spec.alpha_lo) && unit(spec.alpha_hi), || "alpha_lo / alpha_hi outside [0, 1]".into())?;
            if let (Some(lo), Some(hi)) = (spec.alpha_lo, spec.alpha_hi) {
                check(lo <= hi, || "alpha_lo > alpha_hi".into())?;
            }
            Some(BlendSpec {
                mode,
                mode_source: spec.mode_source,
                alpha_vec: spec.alpha_vec,
                gate_k: spec.gate_k,
                gate_tau: spec.gate_tau,
                alpha_lo: spec.alpha_lo,
                alpha_hi: spec.alpha_hi,
                confidence_logits_required: spec.confidence_logits_required,
            })
        }
    };
    Ok(Ok(ParsedAnnotations {
        training_run_id: parsed.training_run_id,
        mesh_layers: parsed.mesh_layers,
        blend,
        alpha_clamped: parsed.alpha_clamped,
        mesh_duplicates: parsed.mesh_duplicates,
        unknown_keys: parsed.unknown_keys,
    }))
}

pub(crate) struct AnnotationWorld;

/// WIT `annotation`, borrowed from the command's map: the only copy of
/// its strings is the one into guest memory (the same component type as
/// the `bindgen!` record, checked by structure when `parse` is looked up).
#[derive(ComponentType, Lower)]
#[component(record)]
struct AnnotationArg<'a> {
    key: &'a str,
    value: &'a str,
}

/// `parse` is the same function in API 0.1.0 and 0.2.0, so one typed
/// signature (checked structurally per instance) serves both. `TypedFunc`
/// is covariant in its parameters, so the `'static` handle accepts
/// annotations borrowed for any shorter lifetime.
type ParseFunc =
    TypedFunc<(Vec<AnnotationArg<'static>>, wit::ParseLimits), (Result<wit::ParsedAnnotations, wit::ParseError>,)>;

pub(crate) struct AnnotationInstance {
    instance: Instance,
    parse: ParseFunc,
}

impl World for AnnotationWorld {
    const KIND: PluginKind = PluginKind::AnnotationParser;
    type Pre = ExportPre;
    type Instance = AnnotationInstance;

    fn pre(instance_pre: InstancePre<StoreState>, version: ApiVersion) -> wasmtime::Result<Self::Pre> {
        ExportPre::new(instance_pre, Self::KIND, version, "parse")
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self::Instance> {
        let (instance, index, _) = pre.instantiate(store)?;
        let parse = instance.get_typed_func(store, index)?;
        Ok(AnnotationInstance { instance, parse })
    }
    fn component_instance(instance: &Self::Instance) -> &Instance {
        &instance.instance
    }
}

/// A loaded annotation parser plugin.
pub struct AnnotationPlugin {
    core: Core<AnnotationWorld>,
}

impl std::fmt::Debug for AnnotationPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnotationPlugin").field("identity", self.identity()).finish()
    }
}

impl AnnotationPlugin {
    /// Loads, pins, checks and pre-instantiates an annotation plugin.
    pub fn load(runtime: &PluginRuntime, spec: &PluginSpec) -> Result<Self, PluginError> {
        Ok(AnnotationPlugin { core: Core::load(runtime, spec)? })
    }

    /// Parses `annotations`. Oversized input is refused here, before the
    /// plugin sees it; the plugin's answer is re-validated.
    pub fn parse(
        &self,
        annotations: &BTreeMap<String, String>,
        limits: &AnnotationLimits,
    ) -> Result<ParsedAnnotations, AnnotationError> {
        let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > limits.annotation_bytes_cap as usize {
            return Err(AnnotationError::Rejected(ParseError {
                code: ParseErrorCode::OverByteCap,
                key: String::new(),
                detail: format!("{total} bytes > cap {}", limits.annotation_bytes_cap),
            }));
        }
        let list: Vec<AnnotationArg<'_>> =
            annotations.iter().map(|(key, value)| AnnotationArg { key, value }).collect();
        let wit_limits = wit::ParseLimits {
            alpha_vec_cap: limits.alpha_vec_cap,
            mesh_layers_cap: limits.mesh_layers_cap,
            annotation_bytes_cap: limits.annotation_bytes_cap,
        };
        let caps = self.core.output_caps();
        let outcome = self.core.call_validated(
            |instance, store| instance.parse.call(store, (list, wit_limits)).map(|(outcome,)| outcome),
            |raw| validate(raw, annotations, limits, caps),
        );
        match outcome {
            Ok(Ok(parsed)) => Ok(parsed),
            Ok(Err(rejected)) => Err(AnnotationError::Rejected(rejected)),
            Err(failure) => {
                tracing::warn!(%failure, plugin = %self.identity().info.name, "kasmina.plugin.failure");
                Err(AnnotationError::Plugin(failure))
            }
        }
    }

    /// The same compiled plugin with other limits.
    pub fn with_limits(&self, limits: PluginLimits) -> Result<Self, PluginError> {
        Ok(AnnotationPlugin { core: self.core.with_limits(limits)? })
    }

    /// File, digest and declared info.
    pub fn identity(&self) -> &PluginIdentity {
        self.core.identity()
    }

    /// Limits in force.
    pub fn limits(&self) -> &PluginLimits {
        self.core.limits()
    }

    /// Fuel (wasm instructions, roughly) the last successful call consumed;
    /// `None` unless the runtime meters fuel (`RuntimeConfig::fuel_metering`).
    pub fn last_call_fuel(&self) -> Option<u64> {
        self.core.last_call_fuel()
    }
}
