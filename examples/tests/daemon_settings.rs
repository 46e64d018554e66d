//! `examples/digits/daemon.toml` (for `kasmina serve` beside the demo) must
//! describe the same host as the embedded demo, or the two modes would take
//! different decisions.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn daemon_settings_file_matches_the_embedded_demo() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("digits/daemon.toml");
    let file = kasmina::Settings::from_file(&path).expect("daemon.toml is valid");
    let embedded = kasmina_examples::demo::setup::settings().expect("demo settings");
    assert_eq!(file, embedded);
}
