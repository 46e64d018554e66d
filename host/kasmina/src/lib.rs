//! Kasmina control plane.
//!
//! Module map (grows with the control-plane issues):
//! - [`settings`]: the one TOML-backed settings object, with every SPEC.md
//!   default as a named constant and validation that names the bad key.

pub mod settings;

pub use settings::Settings;
