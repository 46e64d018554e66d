//! The Rust client's step-report round trip against a running daemon, for
//! comparison with the Python client on the same daemon and report
//! (`benches/bench_roundtrip.py` runs both, interleaved):
//!
//!     rust-roundtrip SOCKET RUN_ID FIRST_STEP COUNT
//!
//! Sends `COUNT` step reports (steps `FIRST_STEP..`) for run `RUN_ID` over
//! one trainer connection, each timed alone, and prints one JSON line:
//! `{"count": …, "p10_us": …, "p50_us": …, "p90_us": …, "mean_us": …}`.
//! The report is the one the Python bench sends: task loss, no metric, no
//! seeds. The run must already be registered.

use std::process::ExitCode;
use std::time::Instant;

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::api::{KasminaApi, StepReport};
use leyline::protocol::Role;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, run_id, first, count] = args.as_slice() else {
        eprintln!("usage: rust-roundtrip SOCKET RUN_ID FIRST_STEP COUNT");
        return ExitCode::from(2);
    };
    let (Ok(first), Ok(count)) = (first.parse::<u64>(), count.parse::<usize>()) else {
        eprintln!("FIRST_STEP and COUNT must be integers");
        return ExitCode::from(2);
    };
    let client = match DaemonClient::connect_unix(socket, Role::Trainer, "rust-roundtrip", ClientSettings::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect to {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut times = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let report = StepReport {
            step: first + i,
            training_run_id: run_id.clone(),
            task_loss: 0.5,
            global_metric: None,
            seeds: Vec::new(),
            distillation: None,
            checkpoints: Vec::new(),
            ranks: None,
        };
        let started = Instant::now();
        if let Err(e) = client.step_report(report) {
            eprintln!("step report {} failed: {e}", first + i);
            return ExitCode::FAILURE;
        }
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    println!(
        "{{\"count\": {}, \"p10_us\": {:.2}, \"p50_us\": {:.2}, \"p90_us\": {:.2}, \"mean_us\": {:.2}}}",
        times.len(),
        at(0.1),
        at(0.5),
        at(0.9),
        mean
    );
    ExitCode::SUCCESS
}
