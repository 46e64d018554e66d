//! Kasmina's default blueprint admission plugin.
//!
//! - [`policy`]: the admission rules as plain Rust (unit-tested natively);
//! - this file: self-description and the component export.

pub mod policy;

use kasmina_plugin_sdk::blueprint::{AdmissionContext, BlueprintDescriptor};
use kasmina_plugin_sdk::types::{Parameter, PluginInfo, PluginKind, Verdict};
use kasmina_plugin_sdk::{BlueprintPolicy, plugin_info};

/// The default blueprint admission policy.
pub struct DefaultBlueprintPolicy;

impl BlueprintPolicy for DefaultBlueprintPolicy {
    fn info() -> PluginInfo {
        plugin_info("kasmina-default-blueprint-policy", env!("CARGO_PKG_VERSION"), PluginKind::BlueprintPolicy)
    }

    fn admit(descriptor: BlueprintDescriptor, requested: Vec<Parameter>, context: AdmissionContext) -> Verdict {
        policy::admit(&descriptor, &requested, &context)
    }
}

kasmina_plugin_sdk::export_blueprint_policy!(DefaultBlueprintPolicy);
