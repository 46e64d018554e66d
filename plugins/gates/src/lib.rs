//! Kasmina's default lifecycle gate plugin (SPEC.md §2).
//!
//! - [`policy`]: the gate rules G0–G5 as plain Rust over the SDK's types, so
//!   they are unit-tested natively (`cargo test -p kasmina-gates-plugin`);
//! - this file: the plugin's self-description and the component export.
//!
//! Every gate first checks stage order (`stage_mismatch`), then its own
//! rules in a fixed order; the first failing rule decides the verdict.

pub mod policy;

use kasmina_plugin_sdk::gate::GateInputs;
use kasmina_plugin_sdk::types::{Gate, PluginInfo, PluginKind, Verdict};
use kasmina_plugin_sdk::{GatePolicy, plugin_info};

/// The default gate policy.
pub struct DefaultGates;

impl GatePolicy for DefaultGates {
    fn info() -> PluginInfo {
        plugin_info("kasmina-default-gates", env!("CARGO_PKG_VERSION"), PluginKind::GatePolicy)
    }

    fn evaluate(gate: Gate, inputs: GateInputs) -> Verdict {
        policy::evaluate(gate, &inputs)
    }
}

kasmina_plugin_sdk::export_gate_policy!(DefaultGates);
