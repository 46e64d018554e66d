//! Shared pieces of the example tests: the digits data, settings with
//! headroom for parallel debug builds, and a real daemon on a Unix socket.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kasmina_examples::demo::{Outcome, TimelineEntry, setup};
use kasmina_examples::digits;
use leyline::api::KasminaApi;
use leyline::protocol::Role;

pub const SEED: u64 = 7;

pub fn data() -> digits::Split {
    let path = digits::default_path().expect("data path");
    digits::load(&path, SEED, tch::Device::Cpu).expect("digits data (run scripts/setup.sh)")
}

pub fn settings() -> kasmina::Settings {
    let mut s = setup::settings().expect("demo settings");
    s.plugins.cache_dir = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"));
    // Parallel debug-build tests on 2 cores: give plugins headroom.
    s.plugins.deadline_ms = 250;
    s
}

/// The decisions of a timeline, without wall-clock-dependent detail.
pub fn decisions(timeline: &[TimelineEntry]) -> Vec<(u64, String, String, String, Option<bool>, String)> {
    timeline
        .iter()
        .filter(|t| t.kind != "command")
        .map(|t| (t.step, t.seed_id.clone(), t.kind.clone(), t.what.clone(), t.passed, t.reason.clone()))
        .collect()
}

/// Decisions of a whole scenario outcome.
pub fn outcome_decisions(o: &Outcome) -> Vec<(u64, String, String, String, Option<bool>, String)> {
    decisions(&o.timeline)
}

/// A real daemon serving `host` on a Unix socket in `dir`, until dropped.
pub struct Daemon {
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<Result<kasmina_daemon::ShutdownReport, kasmina_daemon::ServeError>>>,
}

impl Daemon {
    pub fn start(host: Arc<dyn KasminaApi>, dir: &Path) -> Daemon {
        let socket = dir.join("kasmina.sock");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server_socket = socket.clone();
        let server = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            runtime.block_on(kasmina_daemon::serve_unix(
                &server_socket,
                host,
                kasmina_daemon::ServerSettings::default(),
                async {
                    let _ = stop_rx.await;
                },
            ))
        });
        Daemon { socket, stop: Some(stop_tx), server: Some(server) }
    }

    pub fn connect(&self, role: Role, name: &str) -> kasmina_client::DaemonClient {
        for _ in 0..200 {
            if let Ok(c) = kasmina_client::DaemonClient::connect_unix(&self.socket, role, name, Default::default()) {
                return c;
            }
            // The server thread is still binding; this polls for the socket,
            // it does not wait for an outcome.
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("daemon did not come up at {}", self.socket.display());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let report = server.join().expect("server thread");
            if !std::thread::panicking() {
                report.expect("server shut down cleanly");
            }
        }
    }
}
