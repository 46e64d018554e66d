//! Reading what a compiled component declares — before any instantiation.
//!
//! Why export names: a component built from our WIT exports its interface
//! as `esper:kasmina/<interface>@<version>`. That name is part of the
//! component's type, written by the toolchain from the WIT package the plugin
//! was built against, so it cannot drift from what the code implements (a
//! custom section could). Reading it needs only the compiled type, so a
//! mismatched plugin is refused with both versions named and none of its
//! code ever runs. The version read here picks the bindings the plugin's
//! calls go through ([`crate::version`]); `info()` is called afterwards and
//! must agree.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::PluginError;
use crate::kind::{ALL_KINDS, PluginKind};
use crate::version::ApiVersion;

/// The WIT package this host serves.
pub const API_PACKAGE: &str = "esper:kasmina";
/// The WIT package version new plugins should target (the newest served;
/// [`crate::version::SERVED_VERSIONS`] lists them all).
pub const API_VERSION: &str = ApiVersion::CURRENT.as_str();

/// Import name prefixes a std-built Rust plugin carries as plumbing (panic
/// output, process exit, args/env at start-up). They are defined as traps:
/// a plugin that actually calls one fails with `plugin_trap`.
const WASI_PLUMBING: &[&str] = &["wasi:io/", "wasi:cli/"];

/// A component's declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentShape {
    /// The kind, from its exported interface.
    pub kind: PluginKind,
    /// The API version, from the same export name.
    pub version: ApiVersion,
    /// Every import name.
    pub imports: Vec<String>,
    /// Every export name.
    pub exports: Vec<String>,
}

/// Splits `esper:kasmina/gate-policy@0.1.0` into (`gate-policy`, `0.1.0`).
fn our_interface(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(API_PACKAGE)?.strip_prefix('/')?;
    let (interface, version) = rest.split_once('@')?;
    Some((interface, version))
}

/// The versioned name of `kind`'s interface: `esper:kasmina/gate-policy@0.2.0`.
pub fn interface_name(kind: PluginKind, version: ApiVersion) -> String {
    format!("{API_PACKAGE}/{}@{version}", kind.interface())
}

/// Reads and checks the component's plugin interface: exactly one of ours,
/// at a served version.
pub fn shape(engine: &Engine, component: &Component, path: &Path) -> Result<ComponentShape, PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_owned()).collect();
    let declared: Vec<(PluginKind, &str, &str)> = exports
        .iter()
        .filter_map(|name| our_interface(name))
        .filter_map(|(interface, version)| PluginKind::from_interface(interface).map(|k| (k, interface, version)))
        .collect();
    let [(kind, interface, version)] = declared.as_slice() else {
        return Err(PluginError::NotAPlugin { path: path.to_owned(), exports: exports.join(", ") });
    };
    let Some(version) = ApiVersion::parse(version) else {
        return Err(PluginError::VersionMismatch {
            path: path.to_owned(),
            interface: format!("{API_PACKAGE}/{interface}"),
            plugin_version: (*version).to_owned(),
            host_version: ApiVersion::served_list(),
        });
    };
    let kind = *kind;
    debug_assert!(ALL_KINDS.contains(&kind));
    Ok(ComponentShape { kind, version, imports, exports })
}

/// Why an import is refused, or `None` if it is allowed: our own `log` and
/// `types` at the plugin's own API version, and WASI std plumbing.
pub fn refused_import(name: &str, plugin_version: ApiVersion) -> Option<String> {
    if let Some((interface, version)) = our_interface(name) {
        return match (interface, version == plugin_version.as_str()) {
            ("log" | "types", true) => None,
            (_, false) => Some(format!("{name}: another API version than the plugin's own @{plugin_version}")),
            _ => Some(format!("{name}: not a host function plugins may import")),
        };
    }
    if WASI_PLUMBING.iter().any(|prefix| name.starts_with(prefix)) {
        return None;
    }
    let what = if name.starts_with("wasi:filesystem") {
        "plugins get no filesystem"
    } else if name.starts_with("wasi:sockets") || name.starts_with("wasi:http") {
        "plugins get no network"
    } else if name.starts_with("wasi:clocks") {
        "plugins get no clock"
    } else if name.starts_with("wasi:random") {
        "plugins get no randomness (use BTreeMap, not HashMap)"
    } else {
        "unknown import"
    };
    Some(format!("{name}: {what}"))
}
