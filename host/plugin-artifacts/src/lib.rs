//! Paths of the policy plugin components built from this workspace.
//!
//! `build.rs` compiles every plugin crate to a `wasm32-wasip2` component with
//! a nested cargo and records where each `.wasm` landed. Tests, examples and
//! the CLI's defaults use these constants; operators configuring a daemon
//! point at files (pinned by SHA-256) instead.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
