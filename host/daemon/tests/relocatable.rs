//! The `kasmina` binary is self-contained (SPEC.md §12): copied away from
//! the build tree it serves with its default plugins, which it carries as
//! bytes pinned by SHA-256 — nothing is read from the build directory.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::os::unix::fs::PermissionsExt;

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::api::KasminaApi;
use leyline::protocol::Role;
use leyline::{SeedOperation, SeedStage};
use support::daemon_process::{Daemon, DaemonFiles};
use support::{command, registration, stage_of};

#[test]
fn a_copied_binary_serves_with_its_embedded_default_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    // The binary, moved out of the cargo output folders that hold the plugin
    // builds. A hard link when the file system allows (a debug `kasmina` is
    // hundreds of MB: a CI run once failed copying it onto a nearly full
    // disk); the binary cannot tell a link from a copy, it sees only its path.
    let bin_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = bin_dir.path().join("bin").join("kasmina");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    if std::fs::hard_link(env!("CARGO_BIN_EXE_kasmina"), &copy).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_kasmina"), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let daemon = Daemon::start_binary(&copy, &files, &[]);
    for (slot, name, digest) in [
        ("gates", "kasmina-gates-plugin", kasmina_plugin_artifacts::GATES_SHA256),
        ("annotations", "kasmina-annotations-plugin", kasmina_plugin_artifacts::ANNOTATIONS_SHA256),
        ("blueprint-policy", "kasmina-blueprint-policy-plugin", kasmina_plugin_artifacts::BLUEPRINT_POLICY_SHA256),
    ] {
        let line = format!("{slot} <embedded {name}> sha256:{}", &digest[..12]);
        assert!(daemon.start_report.contains(&line), "{line:?} not in the start report:\n{}", daemon.start_report);
    }
    // Negative control: no plugin path from the build tree appears.
    assert!(!daemon.start_report.contains("kasmina-plugins"), "{}", daemon.start_report);
    // The plugins really serve: a GERMINATE is parsed, admitted and gated.
    let connect =
        |role| DaemonClient::connect_unix(&files.socket, role, "relocatable", ClientSettings::default()).unwrap();
    connect(Role::Trainer).register_host(registration()).unwrap();
    let outcome = connect(Role::Controller).submit_command(command("r-g0", "hidden-0", SeedOperation::Germinate, true));
    assert!(outcome.unwrap().accepted);
    assert_eq!(stage_of(&connect(Role::Observer), "hidden-0"), SeedStage::Germinated);
    assert!(daemon.terminate().success());
}
