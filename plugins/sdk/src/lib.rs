//! Guest-side SDK for Kasmina policy plugins.
//!
//! A plugin is a `wasm32-wasip2` component built from one small crate that
//! depends on this SDK only. Module map:
//! - [`gate`], [`annotation`], [`blueprint`]: the `wit-bindgen` bindings of the
//!   three plugin worlds (`gate-plugin`, `annotation-plugin`,
//!   `blueprint-plugin`) generated from the workspace's `wit/since_v0.2.0/` folder (API
//!   0.2.0, the version new plugins target; see `wit/README.md`);
//! - [`types`]: the shared WIT types (stages, gates, verdicts, plugin info),
//!   plus [`Verdict`] helpers;
//! - the traits [`GatePolicy`], [`AnnotationParser`], [`BlueprintPolicy`] and
//!   the macros [`export_gate_policy!`], [`export_annotation_parser!`],
//!   [`export_blueprint_policy!`] that turn one implementation into a
//!   component's exports;
//! - [`log`]: the one host function.
//!
//! Writing a gate plugin:
//! ```ignore
//! use kasmina_plugin_sdk::{gate::*, types::*, GatePolicy};
//! struct MyGates;
//! impl GatePolicy for MyGates {
//!     fn info() -> PluginInfo { kasmina_plugin_sdk::plugin_info("my-gates", "0.1.0", PluginKind::GatePolicy) }
//!     fn evaluate(gate: Gate, inputs: GateInputs) -> Verdict { Verdict::pass() }
//! }
//! kasmina_plugin_sdk::export_gate_policy!(MyGates);
//! ```
//! Policy code compiles natively too, so it can be unit-tested with plain
//! `cargo test`; the export glue is only emitted for `wasm32`.

// The generated bindings contain the canonical-ABI glue, which is unsafe code
// by nature; it is confined to these generated modules.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    pub mod gate {
        wit_bindgen::generate!({
            path: "../../wit/since_v0.2.0",
            world: "gate-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_gate_plugin",
            default_bindings_module: "kasmina_plugin_sdk::gate",
        });
    }
    pub mod annotation {
        wit_bindgen::generate!({
            path: "../../wit/since_v0.2.0",
            world: "annotation-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_annotation_plugin",
            default_bindings_module: "kasmina_plugin_sdk::annotation",
            with: {
                "esper:kasmina/types@0.2.0": crate::bindings::gate::esper::kasmina::types,
                "esper:kasmina/log@0.2.0": crate::bindings::gate::esper::kasmina::log,
            },
        });
    }
    pub mod blueprint {
        wit_bindgen::generate!({
            path: "../../wit/since_v0.2.0",
            world: "blueprint-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_blueprint_plugin",
            default_bindings_module: "kasmina_plugin_sdk::blueprint",
            with: {
                "esper:kasmina/types@0.2.0": crate::bindings::gate::esper::kasmina::types,
                "esper:kasmina/log@0.2.0": crate::bindings::gate::esper::kasmina::log,
            },
        });
    }
}

mod helpers;

pub use helpers::{API_VERSION, AttrValue, check_parameters, log, plugin_info};

/// Shared WIT types: stages, gates, parameters, verdicts, plugin info.
pub mod types {
    pub use crate::bindings::gate::esper::kasmina::log::Level;
    pub use crate::bindings::gate::esper::kasmina::types::*;
}

/// The `gate-plugin` world: gate inputs and the generated export glue.
pub mod gate {
    pub use crate::bindings::gate::exports::esper::kasmina::gate_policy::{
        BlendStats, GateInputs, Guest as GatePolicyGuest, PerformanceStatus, RankAgreement,
    };
    #[doc(hidden)]
    pub use crate::bindings::gate::*;
    pub use crate::bindings::gate::{__export_gate_plugin as export_world, Guest as WorldGuest};
}

/// The `annotation-plugin` world: annotation types and the export glue.
pub mod annotation {
    pub use crate::bindings::annotation::exports::esper::kasmina::annotation_parser::{
        Annotation, BlendMode, BlendSpec, Guest as AnnotationParserGuest, ParseError, ParseErrorCode, ParseLimits,
        ParsedAnnotations,
    };
    #[doc(hidden)]
    pub use crate::bindings::annotation::*;
    pub use crate::bindings::annotation::{__export_annotation_plugin as export_world, Guest as WorldGuest};
}

/// The `blueprint-plugin` world: descriptor/context types and the export glue.
pub mod blueprint {
    pub use crate::bindings::blueprint::exports::esper::kasmina::blueprint_policy::{
        AdmissionContext, BlueprintDescriptor, BlueprintTier, Guest as BlueprintPolicyGuest,
    };
    #[doc(hidden)]
    pub use crate::bindings::blueprint::*;
    pub use crate::bindings::blueprint::{__export_blueprint_plugin as export_world, Guest as WorldGuest};
}

/// A lifecycle gate policy (world `gate-plugin`).
pub trait GatePolicy {
    /// Self-description; build it with [`plugin_info`].
    fn info() -> types::PluginInfo;
    /// Decides one gate. Must be deterministic and side-effect free.
    fn evaluate(gate: types::Gate, inputs: gate::GateInputs) -> types::Verdict;
}

/// An annotation parser (world `annotation-plugin`).
pub trait AnnotationParser {
    /// Self-description; build it with [`plugin_info`].
    fn info() -> types::PluginInfo;
    /// Parses annotations within `limits`.
    fn parse(
        annotations: Vec<annotation::Annotation>,
        limits: annotation::ParseLimits,
    ) -> Result<annotation::ParsedAnnotations, annotation::ParseError>;
}

/// A blueprint admission policy (world `blueprint-plugin`).
pub trait BlueprintPolicy {
    /// Self-description; build it with [`plugin_info`].
    fn info() -> types::PluginInfo;
    /// Decides admission of one blueprint with the requested parameters.
    fn admit(
        descriptor: blueprint::BlueprintDescriptor,
        requested: Vec<types::Parameter>,
        context: blueprint::AdmissionContext,
    ) -> types::Verdict;
}

/// Exports a [`GatePolicy`] implementation as the component's `gate-plugin` world.
#[macro_export]
macro_rules! export_gate_policy {
    ($ty:ident) => {
        impl $crate::gate::WorldGuest for $ty {
            fn info() -> $crate::types::PluginInfo {
                <$ty as $crate::GatePolicy>::info()
            }
        }
        impl $crate::gate::GatePolicyGuest for $ty {
            fn evaluate(gate: $crate::types::Gate, inputs: $crate::gate::GateInputs) -> $crate::types::Verdict {
                <$ty as $crate::GatePolicy>::evaluate(gate, inputs)
            }
        }
        // The canonical-ABI exports only make sense in the component; natively
        // the policy is an ordinary Rust type that tests call directly.
        #[cfg(target_arch = "wasm32")]
        $crate::gate::export_world!($ty with_types_in $crate::gate);
    };
}

/// Exports an [`AnnotationParser`] implementation as the component's `annotation-plugin` world.
#[macro_export]
macro_rules! export_annotation_parser {
    ($ty:ident) => {
        impl $crate::annotation::WorldGuest for $ty {
            fn info() -> $crate::types::PluginInfo {
                <$ty as $crate::AnnotationParser>::info()
            }
        }
        impl $crate::annotation::AnnotationParserGuest for $ty {
            fn parse(
                annotations: ::std::vec::Vec<$crate::annotation::Annotation>,
                limits: $crate::annotation::ParseLimits,
            ) -> ::std::result::Result<$crate::annotation::ParsedAnnotations, $crate::annotation::ParseError> {
                <$ty as $crate::AnnotationParser>::parse(annotations, limits)
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::annotation::export_world!($ty with_types_in $crate::annotation);
    };
}

/// Exports a [`BlueprintPolicy`] implementation as the component's `blueprint-plugin` world.
#[macro_export]
macro_rules! export_blueprint_policy {
    ($ty:ident) => {
        impl $crate::blueprint::WorldGuest for $ty {
            fn info() -> $crate::types::PluginInfo {
                <$ty as $crate::BlueprintPolicy>::info()
            }
        }
        impl $crate::blueprint::BlueprintPolicyGuest for $ty {
            fn admit(
                descriptor: $crate::blueprint::BlueprintDescriptor,
                requested: ::std::vec::Vec<$crate::types::Parameter>,
                context: $crate::blueprint::AdmissionContext,
            ) -> $crate::types::Verdict {
                <$ty as $crate::BlueprintPolicy>::admit(descriptor, requested, context)
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::blueprint::export_world!($ty with_types_in $crate::blueprint);
    };
}
