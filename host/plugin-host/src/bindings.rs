//! `wasmtime::component::bindgen!` output for the three plugin worlds, all
//! generated from the workspace's `wit/` folder (the single source).
//!
//! The gate world generates the shared `types` and `log` interfaces; the
//! other two worlds reuse them through `with`, so one Rust type exists per
//! WIT type and one `log` host implementation serves every plugin.
//!
//! To serve a second API version later, add `bindings::v0_2` beside this one
//! (Zed/Spin style) and dispatch on the version read in [`crate::inspect`].

#![allow(missing_docs, clippy::all)]

/// The `gate-plugin` world (and the shared `types` / `log` interfaces).
pub mod gate {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "gate-plugin",
    });
}

/// The `annotation-plugin` world.
pub mod annotation {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "annotation-plugin",
        with: {
            "esper:kasmina/types": crate::bindings::gate::esper::kasmina::types,
            "esper:kasmina/log": crate::bindings::gate::esper::kasmina::log,
        },
    });
}

/// The `blueprint-plugin` world.
pub mod blueprint {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "blueprint-plugin",
        with: {
            "esper:kasmina/types": crate::bindings::gate::esper::kasmina::types,
            "esper:kasmina/log": crate::bindings::gate::esper::kasmina::log,
        },
    });
}

pub use gate::esper::kasmina::log as wit_log;
pub use gate::esper::kasmina::types as wit_types;
