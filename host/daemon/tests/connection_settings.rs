//! The connection timeouts come from the settings file (`[daemon]`
//! `frame_timeout_ms`, `idle_timeout_s`): a value outside its range is
//! refused naming the key and the range, by `kasmina settings check` and by
//! `kasmina serve` (which then does not start); values in range take
//! effect — a silent client is reaped after a one-second idle timeout, a
//! stalled frame after 300 ms (the defaults are 30 min and 10 s).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use leyline::protocol::{Role, ServerFrame};
use support::RawConn;
use support::daemon_process::{Daemon, DaemonFiles, cli};

fn with_daemon_section(files: &DaemonFiles, section: &str) {
    let text = std::fs::read_to_string(&files.settings).unwrap();
    std::fs::write(&files.settings, format!("{text}\n[daemon]\n{section}\n")).unwrap();
}

#[test]
fn timeouts_out_of_range_are_refused_naming_the_key_and_the_range() {
    for (section, refusal) in [
        ("frame_timeout_ms = 50", "`daemon.frame_timeout_ms`: 50 ms is outside the allowed range 100..=300000 ms"),
        ("idle_timeout_s = 0", "`daemon.idle_timeout_s`: 0 s is outside the allowed range 1..=86400 s"),
        ("idle_timeout_s = 90000", "`daemon.idle_timeout_s`: 90000 s is outside the allowed range 1..=86400 s"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let files = DaemonFiles::create(dir.path());
        with_daemon_section(&files, section);
        let settings = files.settings.to_str().unwrap();
        let (code, _, err) = cli(&["settings", "check", settings]);
        assert_ne!(code, 0, "{section}: settings check must fail");
        assert!(err.contains(refusal), "{section}: {err}");
        let out = Command::new(env!("CARGO_BIN_EXE_kasmina"))
            .args(["serve", "--settings", settings, "--socket"])
            .arg(&files.socket)
            .arg("--urza")
            .arg(&files.urza)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section}: serve must refuse to start");
        assert!(err.contains(refusal) && err.contains("kasmina settings check"), "{section}: {err}");
        assert!(!files.socket.exists(), "{section}: nothing was served");
    }
}

#[test]
fn timeouts_in_range_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    with_daemon_section(&files, "frame_timeout_ms = 300\nidle_timeout_s = 1");
    let (code, _, err) = cli(&["settings", "check", files.settings.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let daemon = Daemon::start(&files, &[]);

    // A controller that says nothing after Hello: reaped after 1 s.
    let t0 = Instant::now();
    let mut idle = RawConn::hello(&files.socket, Role::Controller);
    match idle.recv() {
        Ok(ServerFrame::Closing(err)) => assert!(err.message.contains("no frame for 1000 ms"), "{err:?}"),
        other => panic!("expected the idle connection closed, got {other:?}"),
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(10), "reaped after {waited:?}");

    // Half a length prefix, then nothing: cut after 300 ms.
    let mut stalled = RawConn::hello(&files.socket, Role::Controller);
    stalled.send_bytes(&[0, 0]);
    match stalled.recv() {
        Ok(ServerFrame::Closing(err)) => {
            assert!(err.message.contains("frame not completed within 300 ms"), "{err:?}");
        }
        other => panic!("expected the stalled frame cut, got {other:?}"),
    }
    assert!(daemon.terminate().success());
}
