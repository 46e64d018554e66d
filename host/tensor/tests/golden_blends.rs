//! The committed golden blend vectors (the Python grafter's parity fixture,
//! `bindings/python/tests/fixtures/golden_blends.json`) still match what
//! these kernels compute: a kernel change without regenerating the fixture
//! fails here, and a Python-side drift fails the Python parity test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/golden.rs"]
mod golden;

use std::path::Path;

#[test]
fn committed_fixture_matches_the_rust_kernels() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(golden::FIXTURE);
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; generate it with `cargo run -p kasmina-tensor --example golden_blends`", path.display())
    });
    if let Err(diff) = golden::compare(&committed, &golden::generate(), 1e-6) {
        panic!(
            "{} no longer matches the blend kernels ({diff}); if the change is intended, regenerate it with \
             `cargo run -p kasmina-tensor --example golden_blends` and re-run the Python parity test",
            path.display()
        );
    }
}

#[test]
fn the_comparison_catches_a_changed_number() {
    let text = golden::generate();
    let changed = text.replacen("\"alpha\": 0.3", "\"alpha\": 0.30001", 1);
    assert_ne!(text, changed, "the fixture has the convex case");
    assert!(golden::compare(&text, &changed, 1e-6).is_err());
    assert!(golden::compare(&text, &text, 0.0).is_ok());
}
