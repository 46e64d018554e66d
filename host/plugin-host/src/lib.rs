//! Sandboxed wasmtime runtime for Kasmina's policy plugins.
//!
//! Module map, in the order a plugin meets them:
//! - [`runtime`]: [`PluginRuntime`] — one engine (epoch interruption, weak
//!   ticker thread), the linker whose only real import is `log` (every other
//!   import is a trap), SHA-256 pinning and loading;
//! - `pool`: instance allocation ([`InstanceAllocation`]) — wasmtime's
//!   pooling allocator, so a fresh store per call recycles a reset slot
//!   instead of mapping new memory;
//! - `cache`: precompiled artifacts keyed by content digest and engine
//!   configuration ([`CacheOutcome`], [`CacheStats`]);
//! - [`inspect`]: the declared kind and API version, read from the
//!   component's export names **before** instantiation;
//! - [`version`]: the API versions served side by side ([`ApiVersion`]:
//!   0.1.0 frozen, 0.2.0 current) and how a 0.1.0 plugin is called;
//! - `plugin`: the world-independent core — pre-instantiation, the `info()`
//!   check, isolation modes (`per-call`, `reuse`), deadline, memory cap,
//!   fuel and the mapping of every failure to a `plugin_*` reason;
//! - [`gate`], [`annotation`], [`blueprint`]: the typed plugins with
//!   host-native inputs/outputs ([`GateInputs`], [`Verdict`],
//!   [`ParsedAnnotations`], [`AdmissionContext`]) and re-validation of every
//!   result;
//! - [`reload`]: [`PluginSlot`] — hot reload behind a conformance canary;
//! - [`conformance`]: the conformance kit behind `kasmina plugin check|info`.
//!
//! The control plane never touches wasmtime types: everything it needs is
//! re-exported here.

mod bindings;
mod cache;
mod error;
mod kind;
mod limits;
mod plugin;
mod pool;
mod store;
mod verdict;
pub mod version;

pub mod annotation;
pub mod blueprint;
pub mod conformance;
pub mod gate;
pub mod inspect;
pub mod reload;
pub mod runtime;

pub use annotation::{
    AnnotationError, AnnotationLimits, AnnotationPlugin, BlendSpec, ParseError, ParseErrorCode, ParsedAnnotations,
};
pub use blueprint::{AdmissionContext, BlueprintPlugin};
pub use cache::{CacheOutcome, CacheStats, sha256_hex};
pub use error::{FailureKind, PluginError, PluginFailure};
pub use gate::{GateInputs, GatePlugin, PerformanceStatus};
pub use inspect::{API_PACKAGE, API_VERSION};
pub use kind::PluginKind;
pub use limits::{
    DEFAULT_DEADLINE, DEFAULT_MEMORY_BYTES, EPOCH_TICK, Isolation, MAX_PLUGIN_FILE_BYTES, OutputCaps, PluginLimits,
};
pub use plugin::{PluginIdentity, PluginInfo};
pub use pool::{DEFAULT_POOLED_INSTANCES, InstanceAllocation};
pub use reload::{PluginSlot, ReloadError, Vetted};
pub use runtime::{EmbeddedComponent, Pin, PluginRuntime, PluginSpec, RuntimeConfig};
pub use verdict::{AttrValue, Verdict};
pub use version::{ApiVersion, SERVED_VERSIONS};
