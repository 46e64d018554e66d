//! The digits scenario in both modes (issue 8): embedded, and through a real
//! daemon on a Unix socket. The good seed must fossilize, the bad one must be
//! culled by G2 for non-finite outputs, seeds must not cost accuracy, and
//! both modes must make exactly the same decisions at the same steps.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Daemon, SEED, data, outcome_decisions as decisions, settings};
use kasmina_examples::demo::{self, Apis, Controller, Outcome, Plan, TrainConfig, setup};
use leyline::SeedStage;
use leyline::api::KasminaApi;
use leyline::protocol::Role;

const STEPS: u64 = 300;

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
    let daemon = Daemon::start(host, dir.path());
    let trainer = daemon.connect(Role::Trainer, "test-trainer");
    let controller_conn = daemon.connect(Role::Controller, "test-controller");
    let mut controller = Controller::demo(key, p);
    let apis = Apis { trainer: &trainer, controller: &controller_conn };
    let remote = demo::run(&config, &data, apis, &mut controller, false).expect("daemon run");
    check_outcome(&remote);
    drop(trainer);
    drop(controller_conn);
    drop(daemon);

    assert_eq!(decisions(&embedded), decisions(&remote), "embedded and daemon timelines differ");
    assert_eq!(embedded.seeded.test_accuracy, remote.seeded.test_accuracy);
}
