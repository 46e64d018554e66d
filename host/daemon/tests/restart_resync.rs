//! A restart of the real `kasmina serve` binary forgets nothing that
//! matters and culls no healthy seed for the restart itself:
//!
//! - α and the epoch of a BLENDING seed survive a SIGKILL (they were saved
//!   only at stage changes);
//! - PAUSE and RESUME right after a restart, before the trainer's first
//!   step report, keep a healthy BLENDING seed (RESUME used to cull it with
//!   `G2 kernel_not_attached`): the gate re-check waits for the trainer;
//! - a re-registering trainer keeps the seeds it still holds and receives a
//!   fresh Attach for the ones it lost (they used to be culled, with no
//!   Attach ever sent);
//! - a forced breaker state survives a SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use kasmina_client::{ClientSettings, CommandBuilder, DaemonClient};
use leyline::api::{GraftDirective, KasminaApi};
use leyline::protocol::Role;
use leyline::{BreakerState, HealthStatus, SeedOperation, SeedStage, SeedState};
use support::daemon_process::{Daemon, DaemonFiles};
use support::{SimTrainer, command, key, pause};

fn connect(files: &DaemonFiles, role: Role) -> DaemonClient {
    DaemonClient::connect_unix(&files.socket, role, "restart-test", ClientSettings::default()).unwrap()
}

fn state(files: &DaemonFiles, seed: &str) -> SeedState {
    connect(files, Role::Observer).seed_states().unwrap().into_iter().find(|s| s.seed_id == seed).unwrap()
}

/// Registers, germinates `seeds` and trains until they are two steps into
/// BLENDING. Returns the trainer (it keeps what it grafted).
fn blending(files: &DaemonFiles, seeds: &[&str]) -> SimTrainer {
    let trainer = connect(files, Role::Trainer);
    let mut sim = SimTrainer::new(100);
    trainer.register_host(sim.registration()).unwrap();
    let controller = connect(files, Role::Controller);
    for seed in seeds {
        let germinate = command(&format!("g-{seed}"), seed, SeedOperation::Germinate, true);
        assert!(controller.submit_command(germinate).unwrap().accepted);
    }
    while state(files, seeds[0]).stage != SeedStage::Blending {
        assert!(sim.step < 10, "never reached BLENDING: {:?}", state(files, seeds[0]));
        sim.step(&trainer);
    }
    sim.step(&trainer);
    sim.step(&trainer);
    for seed in seeds {
        let s = state(files, seed);
        assert!(s.stage == SeedStage::Blending && s.alpha > 0.0 && s.epoch == 2, "{s:?}");
    }
    sim
}

#[test]
fn alpha_and_epoch_survive_a_sigkill_during_blending() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    blending(&files, &["hidden-0"]);
    let before = state(&files, "hidden-0");
    daemon.kill();
    let daemon = Daemon::start(&files, &[]);
    assert!(daemon.start_report.contains("1 with in-stage progress"), "{}", daemon.start_report);
    let after = state(&files, "hidden-0");
    assert_eq!((after.stage, after.alpha, after.epoch), (before.stage, before.alpha, before.epoch), "{after:?}");
    daemon.kill();
}

#[test]
fn pause_and_resume_right_after_a_restart_keep_a_healthy_blending_seed() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    let mut sim = blending(&files, &["hidden-0"]);
    daemon.kill();
    let daemon = Daemon::start(&files, &[]);

    // Before the trainer has re-registered or reported anything.
    let controller = connect(&files, Role::Controller);
    assert!(controller.submit_command(pause("p-after-restart", "hidden-0", false)).unwrap().accepted);
    let resume = controller.submit_command(pause("r-after-restart", "hidden-0", true)).unwrap();
    assert!(resume.accepted, "{resume:?}");
    assert_eq!(resume.attributes.get("resume").map(String::as_str), Some("deferred"), "{resume:?}");
    let s = state(&files, "hidden-0");
    assert_eq!((s.stage, s.paused), (SeedStage::Blending, true), "kept, still paused: {s:?}");

    // The trainer comes back holding the seed: it is adopted, the deferred
    // re-check passes, and the seed resumes and carries on.
    let trainer = connect(&files, Role::Trainer);
    trainer.register_host(sim.registration()).unwrap();
    sim.step(&trainer);
    sim.step(&trainer);
    let s = state(&files, "hidden-0");
    assert_eq!((s.stage, s.paused), (SeedStage::Blending, false), "{s:?}");
    assert!(!sim.attached["hidden-0"].paused, "the trainer was told to resume");
    while state(&files, "hidden-0").stage == SeedStage::Blending {
        assert!(sim.step < 20, "stuck: {:?}", state(&files, "hidden-0"));
        sim.step(&trainer);
    }
    assert_eq!(state(&files, "hidden-0").stage, SeedStage::Shadowing);
    daemon.kill();
}

#[test]
fn a_reregistering_trainer_keeps_the_seeds_it_holds_and_re_receives_the_ones_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    let mut sim = blending(&files, &["hidden-0", "hidden-1"]);
    let alpha = state(&files, "hidden-1").alpha;
    daemon.kill();
    let daemon = Daemon::start(&files, &[]);
    assert!(daemon.start_report.contains("2 awaiting trainer resync"), "{}", daemon.start_report);

    // The trainer still runs hidden-0 but lost hidden-1.
    sim.attached.remove("hidden-1");
    let trainer = connect(&files, Role::Trainer);
    trainer.register_host(sim.registration()).unwrap();
    let directives = sim.step(&trainer);
    let attached: Vec<&str> = directives
        .iter()
        .filter_map(|d| match d {
            GraftDirective::Attach { seed_id, .. } => Some(seed_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(attached, ["hidden-1"], "only the lost seed is re-attached: {directives:?}");
    let resent = &sim.attached["hidden-1"];
    assert_eq!((resent.stage, resent.alpha), (SeedStage::Blending, alpha), "back in its stage with its α");
    while state(&files, "hidden-0").stage == SeedStage::Blending
        || state(&files, "hidden-1").stage == SeedStage::Blending
    {
        assert!(sim.step < 20, "stuck");
        sim.step(&trainer);
    }
    for seed in ["hidden-0", "hidden-1"] {
        let stage = state(&files, seed).stage;
        assert!(
            matches!(stage, SeedStage::Shadowing | SeedStage::Probationary),
            "{seed} carried on, not culled: {stage}"
        );
    }
    daemon.kill();
}

#[test]
fn a_forced_breaker_state_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    let trainer = connect(&files, Role::Trainer);
    trainer.register_host(support::registration()).unwrap();
    let controller = connect(&files, Role::Controller);
    assert!(controller.submit_command(command("g-b", "hidden-0", SeedOperation::Germinate, true)).unwrap().accepted);
    let force = CommandBuilder::circuit_breaker("hidden-0", "isolation", BreakerState::Open, "drill")
        .command_id("force-open")
        .issued_by("test-controller")
        .sign(&key());
    assert!(controller.submit_command(force).unwrap().accepted);
    // An open isolation breaker makes every active seed CRITICAL.
    assert_eq!(state(&files, "hidden-0").health, HealthStatus::Critical);
    daemon.kill();
    let daemon = Daemon::start(&files, &[]);
    assert_eq!(state(&files, "hidden-0").health, HealthStatus::Critical, "the breaker is still open");
    assert!(daemon.start_report.contains("2 breakers"), "{}", daemon.start_report);
    daemon.kill();
}
