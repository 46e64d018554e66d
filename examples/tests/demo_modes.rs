//! The digits scenario in both modes (issue 8): embedded, and through a real
//! daemon on a Unix socket. The good seed must fossilize, the bad one must be
//! culled by G2 for non-finite outputs, seeds must not cost accuracy, and
//! both modes must make exactly the same decisions at the same steps.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kasmina_examples::demo::{self, Apis, Controller, Outcome, Plan, TrainConfig, setup};
use kasmina_examples::digits;
use leyline::SeedStage;
use leyline::api::KasminaApi;
use leyline::protocol::Role;

const STEPS: u64 = 300;
const SEED: u64 = 7;

fn data() -> digits::Split {
    let path = digits::default_path().expect("data path");
    digits::load(&path, SEED, tch::Device::Cpu).expect("digits data (run scripts/setup.sh)")
}

fn settings() -> kasmina::Settings {
    let mut s = setup::settings().expect("demo settings");
    s.plugins.cache_dir = Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"));
    // Parallel debug-build tests on 2 cores: give plugins headroom.
    s.plugins.deadline_ms = 250;
    s
}

fn plan(s: &kasmina::Settings) -> Plan {
    Plan::for_steps(STEPS, s.lifecycle.probation_steps)
}

fn check_outcome(o: &Outcome) {
    let stage = |id: &str| o.seeds.iter().find(|s| s.seed_id == id).map(|s| s.stage);
    assert_eq!(stage("seed-a"), Some(SeedStage::Fossilized), "good seed: {:#?}", o.timeline);
    assert!(
        matches!(stage("seed-b"), Some(SeedStage::Embargoed | SeedStage::Culled)),
        "bad seed: {:?}",
        stage("seed-b")
    );
    let failed_gate = o
        .timeline
        .iter()
        .find(|t| t.seed_id == "seed-b" && t.kind == "gate" && t.passed == Some(false))
        .expect("a gate failed for seed-b");
    assert_eq!((failed_gate.what.as_str(), failed_gate.reason.as_str()), ("G2", "non_finite_outputs"));
    assert!(o.timeline.iter().any(|t| t.seed_id == "seed-b" && t.kind == "transition" && t.what == "CULLED"));
    assert!(
        o.seeded.test_accuracy >= o.baseline.test_accuracy,
        "with seeds {} < baseline {}",
        o.seeded.test_accuracy,
        o.baseline.test_accuracy
    );
    assert!(o.seeded.parameters_added > 0);
}

/// The decisions, without wall-clock-dependent detail.
fn decisions(o: &Outcome) -> Vec<(u64, String, String, String, Option<bool>, String)> {
    o.timeline
        .iter()
        .filter(|t| t.kind != "command")
        .map(|t| (t.step, t.seed_id.clone(), t.kind.clone(), t.what.clone(), t.passed, t.reason.clone()))
        .collect()
}

#[test]
fn embedded_and_daemon_runs_make_the_same_decisions() {
    let data = data();
    let config = TrainConfig::demo(STEPS, SEED, tch::Device::Cpu);

    // Embedded.
    let key = setup::fresh_key().expect("key");
    let urza = tempfile::tempdir().expect("tempdir");
    let s = settings();
    let p = plan(&s);
    let host = setup::embedded_host(s, key.clone(), urza.path()).expect("embedded host");
    let mut controller = Controller::demo(key, p);
    let embedded = demo::run(&config, &data, Apis { trainer: &host, controller: &host }, &mut controller, false)
        .expect("embedded run");
    check_outcome(&embedded);
    drop(host);

    // Daemon: the same host, served over a real Unix socket.
    let key = setup::fresh_key().expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings();
    let p = plan(&s);
    let host: Arc<dyn KasminaApi> =
        Arc::new(setup::embedded_host(s, key.clone(), &dir.path().join("urza")).expect("host"));
    let socket = dir.path().join("kasmina.sock");
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
    let connect = |role, name| {
        for _ in 0..200 {
            if let Ok(c) = kasmina_client::DaemonClient::connect_unix(&socket, role, name, Default::default()) {
                return c;
            }
            // The server thread is still binding; this polls for the socket,
            // it does not wait for an outcome.
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("daemon did not come up at {}", socket.display());
    };
    let trainer = connect(Role::Trainer, "test-trainer");
    let controller_conn = connect(Role::Controller, "test-controller");
    let mut controller = Controller::demo(key, p);
    let apis = Apis { trainer: &trainer, controller: &controller_conn };
    let daemon = demo::run(&config, &data, apis, &mut controller, false).expect("daemon run");
    check_outcome(&daemon);
    drop(trainer);
    drop(controller_conn);
    let _ = stop_tx.send(());
    server.join().expect("server thread").expect("server shut down cleanly");

    assert_eq!(decisions(&embedded), decisions(&daemon), "embedded and daemon timelines differ");
    assert_eq!(embedded.seeded.test_accuracy, daemon.seeded.test_accuracy);
}
