//! libFuzzer target `urza_catalog`: the check in
//! `tests/fuzz-checks/src/targets/urza_catalog.rs` (what it checks and how an
//! input is read are documented there; the ordinary test build replays the
//! same check on the checked-in inputs).
//!
//! Run: `scripts/fuzz.sh urza_catalog 60` (a host target: links wasmtime and libtorch).
#![no_main]

kasmina_fuzz_checks::capped_allocator!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| kasmina_fuzz_checks::targets::urza_catalog::check(data));
