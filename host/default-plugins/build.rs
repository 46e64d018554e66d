//! Builds the three default policy plugins to `wasm32-wasip2` components and
//! embeds their bytes (see `src/lib.rs`). Fault fixtures and examples are
//! built by `kasmina-plugin-artifacts`, which production code never links.

include!("../build-support/wasm_plugins.rs");

/// (cargo package, constant name) of each default plugin.
const PLUGINS: &[(&str, &str)] = &[
    ("kasmina-gates-plugin", "GATES"),
    ("kasmina-annotations-plugin", "ANNOTATIONS"),
    ("kasmina-blueprint-policy-plugin", "BLUEPRINT_POLICY"),
];

fn main() {
    build_plugins(PLUGINS, Output::Bytes, "host/default-plugins/build.rs");
}
