//! libFuzzer target `annotations_wasm`: the check in
//! `tests/fuzz-checks/src/targets/annotations_wasm.rs` (what it checks and how an
//! input is read are documented there; the ordinary test build replays the
//! same check on the checked-in inputs).
//!
//! Run: `scripts/fuzz.sh annotations_wasm 60` (a host target: links wasmtime and libtorch).
#![no_main]

kasmina_fuzz_checks::capped_allocator!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| kasmina_fuzz_checks::targets::annotations_wasm::check(data));
