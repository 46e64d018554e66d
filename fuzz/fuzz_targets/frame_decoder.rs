//! libFuzzer target `frame_decoder`: the check in
//! `tests/fuzz-checks/src/targets/frame_decoder.rs` (what it checks and how an
//! input is read are documented there; the ordinary test build replays the
//! same check on the checked-in inputs).
//!
//! Run: `scripts/fuzz.sh frame_decoder 60`.
#![no_main]

kasmina_fuzz_checks::capped_allocator!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| kasmina_fuzz_checks::targets::frame_decoder::check(data));
