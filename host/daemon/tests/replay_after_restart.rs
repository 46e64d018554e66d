//! Replay protection survives a restart of the real `kasmina serve` binary
//! (SPEC.md §3): a signed command acknowledged before a graceful restart or
//! a SIGKILL, re-sent byte for byte afterwards inside the nonce TTL, is
//! refused `nonce_replayed` — also when the journal wrote a snapshot after
//! the command, so the command record is no longer what recovery replays.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::api::KasminaApi;
use leyline::protocol::Role;
use leyline::{ReasonCode, SeedOperation, SeedStage};
use support::daemon_process::{Daemon, DaemonFiles};
use support::{SimTrainer, command, registration, stage_of};

fn connect(files: &DaemonFiles, role: Role) -> DaemonClient {
    DaemonClient::connect_unix(&files.socket, role, "replay-test", ClientSettings::default()).unwrap()
}

/// Germinates `hidden-0`, then reports steps until the seed has moved past
/// GERMINATED (transitions after the command make the journal snapshot).
/// Returns the acknowledged command.
fn accept_then_snapshot(files: &DaemonFiles) -> leyline::AdaptationCommand {
    let trainer = connect(files, Role::Trainer);
    trainer.register_host(registration()).unwrap();
    let germinate = command("replayed-g0", "hidden-0", SeedOperation::Germinate, true);
    assert!(connect(files, Role::Controller).submit_command(germinate.clone()).unwrap().accepted);
    let mut sim = SimTrainer::new(100);
    for _ in 0..4 {
        sim.step(&trainer);
    }
    assert_eq!(stage_of(&trainer, "hidden-0"), SeedStage::Training, "the seed moved after the command");
    germinate
}

fn assert_replay_refused(files: &DaemonFiles, daemon: &Daemon, germinate: leyline::AdaptationCommand) {
    assert!(
        daemon.start_report.contains("after a snapshot"),
        "recovery started from a snapshot: {}",
        daemon.start_report
    );
    let outcome = connect(files, Role::Controller).submit_command(germinate).unwrap();
    assert_eq!(outcome.reason, Some(ReasonCode::NonceReplayed), "{outcome:?}");
    // Negative control: a fresh command id for the same operation is not a replay.
    let fresh = command("fresh-g1", "hidden-1", SeedOperation::Germinate, true);
    let trainer = connect(files, Role::Trainer);
    trainer.register_host(registration()).unwrap();
    assert!(connect(files, Role::Controller).submit_command(fresh).unwrap().accepted);
}

#[test]
fn replay_is_refused_after_a_graceful_restart_that_followed_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    let germinate = accept_then_snapshot(&files);
    assert!(daemon.terminate().success());
    let daemon = Daemon::start(&files, &[]);
    assert_replay_refused(&files, &daemon, germinate);
    assert!(daemon.terminate().success());
}

#[test]
fn replay_is_refused_after_a_sigkill_that_followed_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    let germinate = accept_then_snapshot(&files);
    daemon.kill();
    let daemon = Daemon::start(&files, &[]);
    assert_replay_refused(&files, &daemon, germinate);
    daemon.kill();
}
