//! The default policy plugins, embedded in the binary.
//!
//! `build.rs` compiles the gate, annotation and blueprint-policy plugin
//! crates to `wasm32-wasip2` components and embeds their bytes with their
//! build-time SHA-256, so `kasmina` copied or installed anywhere still loads
//! its defaults — verified against the pin like any plugin file. An operator
//! who configures a plugin path in the settings replaces the default.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
