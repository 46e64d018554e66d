//! `wasmtime::component::bindgen!` output, one module per served API
//! version, each generated from its own frozen folder under `wit/`.
//!
//! How two versions share one host: wasmtime type-checks a typed function
//! *structurally* (record field names and types, enum and variant cases),
//! not by the package a type was declared in. So wherever 0.1.0 and 0.2.0
//! agree (stages, gates, parameters, annotations, plugin info) the 0.2.0
//! Rust types call a plugin of either version; only where they differ (the
//! verdict's attributes, the gate inputs) does `v0_1` supply its own type.
//! Exports are looked up by their versioned names (see `crate::version`),
//! so the generated per-world `...Pre` helpers are not used.

#![allow(missing_docs, clippy::all)]

/// API 0.1.0 (`wit/since_v0.1.0/`): the `log` import plugins of that
/// version link against, and the 0.1.0 verdict.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/since_v0.1.0",
        world: "gate-plugin",
    });
}

/// API 0.2.0 (`wit/since_v0.2.0/`): the current types, the `log` import,
/// and the annotation and blueprint interfaces.
pub mod v0_2 {
    /// The `gate-plugin` world (and the shared `types` / `log` interfaces).
    pub mod gate {
        wasmtime::component::bindgen!({
            path: "../../wit/since_v0.2.0",
            world: "gate-plugin",
        });
    }

    /// The `annotation-plugin` world.
    pub mod annotation {
        wasmtime::component::bindgen!({
            path: "../../wit/since_v0.2.0",
            world: "annotation-plugin",
            with: {
                "esper:kasmina/types": crate::bindings::v0_2::gate::esper::kasmina::types,
                "esper:kasmina/log": crate::bindings::v0_2::gate::esper::kasmina::log,
            },
        });
    }

    /// The `blueprint-plugin` world.
    pub mod blueprint {
        wasmtime::component::bindgen!({
            path: "../../wit/since_v0.2.0",
            world: "blueprint-plugin",
            with: {
                "esper:kasmina/types": crate::bindings::v0_2::gate::esper::kasmina::types,
                "esper:kasmina/log": crate::bindings::v0_2::gate::esper::kasmina::log,
            },
        });
    }
}

/// The 0.1.0 shared types (its verdict has text-only attributes).
pub use v0_1::esper::kasmina::types as wit_types_v0_1;
pub use v0_2::gate::esper::kasmina::log as wit_log;
pub use v0_2::gate::esper::kasmina::types as wit_types;
