//! kill -9 of the real `kasmina serve` at random points of a signed command
//! stream, 50 times: after every restart the seed states equal the state
//! after the last acknowledged command (or after the one in flight, if it
//! became durable before the kill) — nothing acknowledged is ever lost.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec};
use leyline::protocol::Role;
use leyline::{BlendMode, Dim, HealthStatus, SeedOperation, SeedStage, SeedState};
use rand::{Rng, SeedableRng};
use support::daemon_process::{Daemon, DaemonFiles};
use support::{BLUEPRINT, RUN, command, pause};

const RUNS: usize = 50;
const SLOTS: usize = 200;

/// What each seed goes through: GERMINATE, PAUSE, RESUME, CULL.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Dormant,
    Germinated,
    Paused,
    Resumed,
    Embargoed,
}

fn seed_id(i: usize) -> String {
    format!("s-{i:03}")
}

fn registration() -> HostRegistration {
    HostRegistration::new(
        RUN,
        vec![SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..SLOTS).map(|i| SlotSpec { seed_id: seed_id(i), site: "hidden".to_owned() }).collect(),
    )
}

/// The full exported state the model predicts.
fn expected(phases: &[Phase]) -> Vec<SeedState> {
    phases
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let (stage, paused, health) = match phase {
                Phase::Dormant => (SeedStage::Dormant, false, HealthStatus::Healthy),
                Phase::Germinated | Phase::Resumed => (SeedStage::Germinated, false, HealthStatus::Healthy),
                Phase::Paused => (SeedStage::Germinated, true, HealthStatus::Degraded),
                Phase::Embargoed => (SeedStage::Embargoed, false, HealthStatus::Unhealthy),
            };
            let germinated = *phase != Phase::Dormant;
            SeedState {
                seed_id: seed_id(i),
                site: "hidden".to_owned(),
                stage,
                blueprint_id: germinated.then(|| BLUEPRINT.to_owned()),
                alpha: 0.0,
                epoch: 0,
                blend_mode: germinated.then_some(BlendMode::Residual),
                health,
                paused,
                blend: None,
            }
        })
        .collect()
}

/// The next command of the plan and the phase it leads to.
fn next_step(phases: &[Phase], n: usize) -> Option<(usize, leyline::AdaptationCommand, Phase)> {
    let (i, phase) = phases.iter().enumerate().find(|(_, p)| **p != Phase::Embargoed)?;
    let id = format!("k{n}");
    let seed = seed_id(i);
    Some(match phase {
        Phase::Dormant => (i, command(&id, &seed, SeedOperation::Germinate, true), Phase::Germinated),
        Phase::Germinated => (i, pause(&id, &seed, false), Phase::Paused),
        Phase::Paused => (i, pause(&id, &seed, true), Phase::Resumed),
        Phase::Resumed => (i, command(&id, &seed, SeedOperation::Cull, true), Phase::Embargoed),
        Phase::Embargoed => unreachable!(),
    })
}

fn connect(files: &DaemonFiles, role: Role) -> DaemonClient {
    DaemonClient::connect_unix(&files.socket, role, "crash-test", ClientSettings::default()).unwrap()
}

#[test]
fn kill_9_at_random_points_loses_no_acknowledged_command() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x6b61_736d);
    let mut phases = vec![Phase::Dormant; SLOTS];
    let mut sent = 0usize;
    let (mut acked_total, mut inflight_durable) = (0usize, 0usize);
    let started = Instant::now();
    for run in 0..=RUNS {
        let daemon = Daemon::start(&files, &[]);
        let restored = connect(&files, Role::Observer).seed_states().unwrap();
        if run > 0 {
            assert!(daemon.start_report.contains("kasmina: journal:"), "{}", daemon.start_report);
        }
        if run == 0 {
            assert!(restored.is_empty());
        } else if restored != expected(&phases) {
            // The command in flight at the kill may or may not have become
            // durable; it is the only one allowed to differ.
            let (i, _, next) = next_step(&phases, 0).expect("a command was in flight");
            let mut with_inflight = phases.clone();
            with_inflight[i] = next;
            assert_eq!(
                restored,
                expected(&with_inflight),
                "run {run}: state is neither the last acknowledged one nor that plus the in-flight command"
            );
            phases = with_inflight;
            inflight_durable += 1;
        }
        connect(&files, Role::Trainer).register_host(registration()).unwrap();
        assert_eq!(connect(&files, Role::Observer).seed_states().unwrap(), expected(&phases));
        if run == RUNS {
            let status = daemon.terminate();
            assert!(status.success(), "graceful shutdown exits 0: {status:?}");
            break;
        }

        // Stream commands from a thread; kill the daemon at a random moment.
        let (tx, rx) = mpsc::channel::<(usize, Phase)>();
        let plan_phases = phases.clone();
        let controller = connect(&files, Role::Controller);
        let first = sent;
        let sender = std::thread::spawn(move || {
            let mut local = plan_phases;
            let mut n = first;
            while let Some((i, cmd, next)) = next_step(&local, n) {
                n += 1;
                match controller.submit_command(cmd) {
                    Ok(outcome) => {
                        assert!(outcome.accepted, "command {n} on seed {i}: {outcome:?}");
                        local[i] = next;
                        if tx.send((i, next)).is_err() {
                            return n;
                        }
                    }
                    Err(_) => return n, // the daemon died with this command in flight
                }
            }
            n
        });
        // A random point of the stream (a sleep as the kill point, not as synchronisation).
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..40_000)));
        daemon.kill();
        sent = sender.join().unwrap();
        let acked: Vec<(usize, Phase)> = rx.try_iter().collect();
        acked_total += acked.len();
        for (i, next) in acked {
            phases[i] = next;
        }
    }
    let left = phases.iter().filter(|p| **p != Phase::Embargoed).count();
    println!(
        "{RUNS} kills, {acked_total} acknowledged commands, {inflight_durable} in-flight commands durable, {left} seeds not yet culled, {:?}",
        started.elapsed()
    );
    assert!(acked_total >= RUNS, "the kills landed inside the command stream");
}
