//! Builds every policy plugin in the workspace — defaults, the example and
//! the fault fixtures — to `wasm32-wasip2` components and hands their paths
//! to tests and tools as constants (see `src/lib.rs`). Production code takes
//! the defaults from `kasmina-default-plugins` instead (embedded bytes).

include!("../build-support/wasm_plugins.rs");

/// (cargo package, constant name) of every plugin component the host builds.
/// Add a line here when adding a plugin crate to the workspace.
const PLUGINS: &[(&str, &str)] = &[
    ("kasmina-gates-plugin", "GATES"),
    ("kasmina-annotations-plugin", "ANNOTATIONS"),
    ("kasmina-blueprint-policy-plugin", "BLUEPRINT_POLICY"),
    ("kasmina-example-custom-gate", "EXAMPLE_CUSTOM_GATE"),
    ("kasmina-fixture-loop", "FIXTURE_LOOP"),
    ("kasmina-fixture-alloc", "FIXTURE_ALLOC"),
    ("kasmina-fixture-panic", "FIXTURE_PANIC"),
    ("kasmina-fixture-stack", "FIXTURE_STACK"),
    ("kasmina-fixture-huge-reason", "FIXTURE_HUGE_REASON"),
    ("kasmina-fixture-many-attributes", "FIXTURE_MANY_ATTRIBUTES"),
    ("kasmina-fixture-wrong-version", "FIXTURE_WRONG_VERSION"),
    ("kasmina-fixture-lying-gate", "FIXTURE_LYING_GATE"),
    ("kasmina-fixture-clock", "FIXTURE_CLOCK"),
    ("kasmina-fixture-gates-v0-1", "FIXTURE_GATES_V0_1"),
];

fn main() {
    build_plugins(PLUGINS, Output::Paths, "host/plugin-artifacts/build.rs");
}
