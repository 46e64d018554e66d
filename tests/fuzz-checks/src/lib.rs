//! What each fuzz target checks, in one place for two runners:
//!
//! - the libFuzzer targets in `fuzz/` (coverage-guided, built with
//!   sanitizer-coverage by `scripts/fuzz.sh`): each is `check(data)` of one
//!   module in [`targets`];
//! - the ordinary test build (`tests/replay.rs`): every target's checked-in
//!   seeds and regression inputs, then a fixed set of mutants of them
//!   ([`replay`]), through the same `check`. It is not coverage-guided; it
//!   is how the host targets (wasmtime, libtorch), whose instrumented build
//!   does not fit the suite's time budget, still run in `scripts/test.sh`.
//!
//! A check states its finding by panicking (or, for an allocation over a
//! cap, by aborting: see [`CappedAlloc`]); tests/README.md, "Fuzzing", lists
//! what each target checks.
// A check's assertions are its findings: panicking on them is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod replay;
mod support;
pub mod targets;

pub use support::*;
