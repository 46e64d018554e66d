//! The default annotation parser through its wasm component, as the host
//! calls it (`AnnotationPlugin::parse`: byte cap, WIT call under wasmtime's
//! limits, re-validation of the answer), checked against the same parser
//! compiled natively: both must accept with the same result or refuse with
//! the same code and key. A plugin failure (trap, deadline, bad output) on
//! any input is a finding.
//!
//! Input: as `annotations` (5 bytes of caps, then `key=value` lines); keys
//! are de-duplicated as the host's map does (last wins).
//!
//! Run: `scripts/fuzz.sh annotations_wasm 60` (a host target).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{Input, annotation_pairs};
use kasmina::validator::{ID_ANNOTATIONS, MAX_ID_BYTES};
use kasmina_annotations_plugin::parser;
use kasmina_plugin_host::annotation::{AnnotationError, AnnotationLimits, AnnotationPlugin};
use kasmina_plugin_host::{Pin, PluginLimits, PluginRuntime, PluginSpec, RuntimeConfig};
use kasmina_plugin_sdk::annotation::Annotation;

fn plugin() -> &'static AnnotationPlugin {
    static PLUGIN: OnceLock<AnnotationPlugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let cache = crate::scratch_dir("plugin-cache");
        let runtime = PluginRuntime::new(RuntimeConfig::new(cache)).expect("plugin runtime");
        let pin = Pin::sha256(kasmina_default_plugins::ANNOTATIONS_SHA256).expect("pin");
        let spec = PluginSpec::embedded("annotations", kasmina_default_plugins::ANNOTATIONS, pin);
        let plugin = AnnotationPlugin::load(&runtime, &spec).expect("the default annotation plugin loads");
        // Two shared cores: a generous deadline, so only a real hang is a finding.
        plugin
            .with_limits(PluginLimits { deadline: Duration::from_secs(2), ..PluginLimits::default() })
            .expect("limits")
    })
}

/// An enum value's variant, lower-cased: the host's and the guest SDK's
/// `BlendMode` are different types, and the bindings' `Debug` prints
/// `BlendMode::Channel` where the SDK's prints `Channel` (the replay found
/// this false mismatch; the campaigns had not reached a blend, since they
/// started from no seeds).
fn variant_name(value: &impl std::fmt::Debug) -> String {
    let debug = format!("{value:?}");
    debug.rsplit("::").next().unwrap_or_default().to_lowercase()
}

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let native_limits = super::annotations::limits(&mut input);
    let limits = AnnotationLimits {
        alpha_vec_cap: native_limits.alpha_vec_cap,
        mesh_layers_cap: native_limits.mesh_layers_cap,
        annotation_bytes_cap: native_limits.annotation_bytes_cap,
    };
    let map: BTreeMap<String, String> = annotation_pairs(input.rest()).into_iter().collect();
    // The host's command validator refuses an over-long id annotation (run
    // id, mode source) before any parser runs, so the plugin never sees one.
    if ID_ANNOTATIONS.iter().any(|key| map.get(*key).is_some_and(|v| v.trim().len() > MAX_ID_BYTES)) {
        return;
    }
    let wasm = plugin().parse(&map, &limits);

    let list: Vec<Annotation> = map.iter().map(|(k, v)| Annotation { key: k.clone(), value: v.clone() }).collect();
    let native = parser::parse(&list, &native_limits);
    match (&wasm, &native) {
        (Ok(w), Ok(n)) => {
            assert_eq!(w.training_run_id, n.training_run_id);
            assert_eq!(w.mesh_layers, n.mesh_layers);
            assert_eq!(
                (w.alpha_clamped, w.mesh_duplicates, w.unknown_keys),
                (n.alpha_clamped, n.mesh_duplicates, n.unknown_keys)
            );
            assert_eq!(w.blend.is_some(), n.blend.is_some(), "blend presence differs");
            if let (Some(wb), Some(nb)) = (&w.blend, &n.blend) {
                assert_eq!(variant_name(&wb.mode), variant_name(&nb.mode), "blend modes differ");
                assert_eq!(wb.alpha_vec, nb.alpha_vec);
                assert_eq!(
                    (wb.gate_k, wb.gate_tau, wb.alpha_lo, wb.alpha_hi),
                    (nb.gate_k, nb.gate_tau, nb.alpha_lo, nb.alpha_hi)
                );
            }
        }
        (Err(AnnotationError::Rejected(w)), Err(n)) => {
            let code = |c: String| c.to_lowercase().replace(['_', '-'], "");
            assert_eq!(code(format!("{:?}", w.code)), code(format!("{:?}", n.code)), "refusal codes differ");
            assert_eq!(w.key, n.key, "refusals name different keys");
        }
        _ => panic!("wasm and native parsers disagree: wasm {wasm:?}, native {native:?}"),
    }
}
