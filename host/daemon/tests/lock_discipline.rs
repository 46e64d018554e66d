//! No lock is held across a kernel wait (issue: control-plane core). The
//! artifact of the blueprint a seed germinates with is replaced by a FIFO,
//! so its kernel load blocks in `open()` until the test writes the bytes:
//! the trainer's step report waits for that kernel. Meanwhile, against the
//! real `kasmina serve` binary, `status`, `seed_states` and a command for
//! another seed each answer within 50 ms. Then the bytes are written and the
//! waiting step attaches the verified kernel.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::SeedOperation;
use leyline::api::{GraftDirective, KasminaApi};
use leyline::protocol::Role;
use support::daemon_process::{Daemon, DaemonFiles};
use support::{BLUEPRINT, command, registration, step};

const BOUND: Duration = Duration::from_millis(50);

fn connect(files: &DaemonFiles, role: Role) -> DaemonClient {
    DaemonClient::connect_unix(&files.socket, role, "lock-test", ClientSettings::default()).unwrap()
}

/// Times `call`, the best of three tries (a descheduled test thread on a
/// shared 2-core machine is not the daemon holding a lock).
fn best_of_three<T>(mut call: impl FnMut() -> T) -> (T, Duration) {
    let mut best = None;
    for _ in 0..3 {
        let started = Instant::now();
        let value = call();
        let took = started.elapsed();
        if best.as_ref().is_none_or(|(_, b)| took < *b) {
            best = Some((value, took));
        }
    }
    best.unwrap()
}

#[test]
fn a_kernel_load_in_flight_holds_up_no_other_call() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let urza = kasmina_kernels::UrzaLibrary::open(&files.urza).unwrap();
    let entry = urza.entry(BLUEPRINT).unwrap();
    let artifact = urza.artifact_path(&entry);
    let bytes = std::fs::read(&artifact).unwrap();
    std::fs::remove_file(&artifact).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&artifact).status().unwrap().success(), "mkfifo");

    let daemon = Daemon::start(&files, &[]);
    let controller = connect(&files, Role::Controller);
    let trainer = connect(&files, Role::Trainer);
    trainer.register_host(registration()).unwrap();
    let germinate = command("held-g0", "hidden-0", SeedOperation::Germinate, true);
    assert!(controller.submit_command(germinate).unwrap().accepted);

    // The step waits for hidden-0's kernel, which waits for the FIFO.
    let waiting = std::thread::spawn(move || trainer.step_report(step(1)));
    std::thread::sleep(Duration::from_millis(300));

    let (status, status_took) = best_of_three(|| controller.status().unwrap());
    let (states, states_took) = best_of_three(|| controller.seed_states().unwrap());
    let mut n = 0;
    let (outcome, command_took) = best_of_three(|| {
        n += 1;
        // Each try is a fresh command (a repeated id is a replay); PAUSE
        // on a dormant seed is refused, which is an answer like any other.
        let pause = support::pause(&format!("other-seed-{n}"), "hidden-1", false);
        controller.submit_command(pause).unwrap()
    });
    assert!(
        !waiting.is_finished(),
        "the step report was not waiting for the kernel load: the timings above prove nothing"
    );
    assert_eq!(status.last_step, None, "the waiting step was applied already: {status:?}");
    assert_eq!(states.len(), 4);
    assert!(outcome.reason.is_some(), "a dormant seed cannot be paused: {outcome:?}");
    assert!(status_took < BOUND, "status took {status_took:?} while a kernel load was in flight");
    assert!(states_took < BOUND, "seed_states took {states_took:?} while a kernel load was in flight");
    assert!(command_took < BOUND, "another seed's command took {command_took:?} while a kernel load was in flight");

    // Release the load: the waiting step attaches the verified kernel.
    std::fs::OpenOptions::new().write(true).open(&artifact).unwrap().write_all(&bytes).unwrap();
    let directives = waiting.join().unwrap().unwrap();
    assert!(
        directives.iter().any(|d| matches!(d, GraftDirective::Attach { seed_id, .. } if seed_id == "hidden-0")),
        "{directives:?}"
    );
    daemon.kill();
}
