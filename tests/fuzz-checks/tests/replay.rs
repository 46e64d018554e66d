//! Every fuzz target's check on its checked-in inputs and a fixed set of
//! their mutants, in the ordinary test build (see `replay`'s module docs;
//! `scripts/fuzz.sh` runs the coverage-guided campaigns). The binary's
//! allocator is the fuzz targets' capped one, so "no allocation over the
//! caps" is checked here as well.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kasmina_fuzz_checks::replay::{self, SplitMix, Summary, Target};
use kasmina_fuzz_checks::targets;

kasmina_fuzz_checks::capped_allocator!();

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn replay(name: &str) -> Summary {
    let target = targets::by_name(name).expect("a target of this build");
    let summary = replay::run(&repo(), target).unwrap_or_else(|finding| panic!("{finding}"));
    // Not vacuous: the empty input plus at least one real seed ran.
    assert!(summary.inputs >= 2, "{name}: no checked-in seeds found (ran {summary:?})");
    assert_eq!(summary.mutants, target.mutants);
    eprintln!("{name}: {} checked-in inputs and {} mutants passed", summary.inputs, summary.mutants);
    summary
}

#[test]
fn frame_decoder() {
    replay("frame_decoder");
}

#[test]
fn client_frame() {
    replay("client_frame");
}

#[test]
fn annotations() {
    replay("annotations");
}

#[test]
fn journal() {
    replay("journal");
}

#[test]
fn settings() {
    replay("settings");
}

#[test]
fn urza_catalog() {
    replay("urza_catalog");
}

#[test]
fn torchscript_including_the_four_regression_inputs() {
    let inputs = replay::checked_in(&repo(), "torchscript").expect("inputs readable");
    let regressions = inputs.iter().filter(|(p, _)| p.to_string_lossy().contains("fuzz/regressions")).count();
    assert!(regressions >= 4, "the torchscript regression inputs are not replayed ({regressions} found)");
    replay("torchscript");
}

#[test]
fn annotations_wasm() {
    replay("annotations_wasm");
}

#[test]
fn every_target_of_fuzz_sh_is_replayed() {
    // fuzz.sh's LIGHT and HOST lists, read from the script itself.
    let script = std::fs::read_to_string(repo().join("scripts/fuzz.sh")).expect("scripts/fuzz.sh");
    let names: Vec<String> = script
        .lines()
        .filter_map(|l| l.strip_prefix("LIGHT=(").or_else(|| l.strip_prefix("HOST=(")))
        .flat_map(|l| l.trim_end_matches(')').split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(names.len(), 8, "fuzz.sh's target lists changed: {names:?}");
    for name in &names {
        assert!(targets::by_name(name).is_some(), "fuzz target {name} has no replay");
    }
    assert_eq!(targets::ALL.len(), names.len());
}

/// Negative control: a check that fails on some mutant is reported, naming
/// the input, with its bytes saved.
#[test]
fn a_failing_check_is_reported_with_its_input() {
    fn fails_on_a_cut_seed(data: &[u8]) {
        // The `client_frame` seeds all decode; a mutant that no longer does is a "finding".
        if let Some((&which, payload)) = data.split_first() {
            let ok = if which & 1 == 0 {
                kasmina_client::codec::decode_payload::<leyline::protocol::ClientFrame>(payload).is_ok()
            } else {
                kasmina_client::codec::decode_payload::<leyline::protocol::ServerFrame>(payload).is_ok()
            };
            assert!(ok, "the frame no longer decodes");
        }
    }
    let target = Target { name: "client_frame", check: fails_on_a_cut_seed, max_len: 4096, mutants: 1000 };
    let finding = replay::run(&repo(), target).expect_err("a mutant that fails to decode is found");
    assert!(finding.input.starts_with("mutant "), "the seeds themselves decode: {finding}");
    assert!(finding.message.contains("no longer decodes"), "{finding}");
    let saved = finding.saved.as_ref().expect("the input is saved");
    let bytes = std::fs::read(saved).expect("saved input readable");
    assert!(std::panic::catch_unwind(|| fails_on_a_cut_seed(&bytes)).is_err(), "the saved bytes reproduce it");
    let _ = std::fs::remove_file(saved);
}

/// The mutator changes its inputs and respects the length cap; the same
/// name gives the same mutants.
#[test]
fn mutants_differ_from_their_base_and_repeat_across_runs() {
    let base: Vec<u8> = (0..100u8).collect();
    let mutants = |seed: &str| {
        let mut rng = SplitMix::new(seed);
        (0..500).map(|_| replay::mutate(&mut rng, &base, b"other", 150)).collect::<Vec<_>>()
    };
    let a = mutants("t");
    assert_eq!(a, mutants("t"), "not deterministic");
    assert_ne!(a, mutants("u"), "the name does not seed the generator");
    assert!(a.iter().all(|m| m.len() <= 150), "a mutant over the cap");
    let changed = a.iter().filter(|m| m.as_slice() != base.as_slice()).count();
    assert!(changed > 450, "only {changed} of 500 mutants differ from their base");
}
