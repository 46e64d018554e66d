//! The seed lifecycle end to end on real plugins, real Urza files and real
//! libtorch kernel loads (issue 6 "done when").

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Harness, SETTINGS, SITE, harness, harness_with, harness_with_library};
use kasmina_kernels::fixtures::{MEMORY_HOG, MLP_ADAPTER_64, WRONG_IFACE_64};
use leyline::api::{GraftDirective, KasminaApi};
use leyline::command::{CommandPayload, EmergencyCommand, PauseCommand};
use leyline::{ReasonCode, SeedOperation, SeedStage, TelemetryLevel};

fn gate_failure(h: &Harness, events: &[leyline::TelemetryEvent], seed: &str) -> Option<(String, String)> {
    let _ = h;
    events
        .iter()
        .filter(|e| e.name == "kasmina.gate.verdict" && e.seed_id.as_deref() == Some(seed))
        .find(|e| e.attributes.get("passed").map(ToString::to_string).as_deref() == Some("false"))
        .map(|e| {
            (
                e.attributes.get("gate").map(ToString::to_string).unwrap_or_default(),
                e.attributes.get("reason").map(ToString::to_string).unwrap_or_default(),
            )
        })
}

#[test]
fn happy_path_dormant_to_fossilized_is_driven_by_step_reports() {
    let mut h = harness();
    assert_eq!(h.state("seed-a").stage, SeedStage::Dormant);
    let outcome = h.germinate("seed-a", MLP_ADAPTER_64);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(h.state("seed-a").stage, SeedStage::Germinated);

    // First step: the prefetched, verified kernel is handed to the trainer.
    let directives = h.step();
    let attach = directives.iter().find_map(|d| match d {
        GraftDirective::Attach { seed_id, site, artifact_sha256, .. } if seed_id == "seed-a" => {
            Some((site.clone(), artifact_sha256.clone()))
        }
        _ => None,
    });
    let (site, sha) = attach.expect("attach directive");
    assert_eq!(site, SITE);
    let artifact = h.host.fetch_kernel(MLP_ADAPTER_64).expect("verified artifact");
    assert_eq!(artifact.sha256, sha);

    assert!(h.run_until("seed-a", SeedStage::Probationary, 40), "stuck in {:?}", h.state("seed-a").stage);
    // α ramped during BLENDING and is 1 from SHADOWING on.
    assert_eq!(h.state("seed-a").alpha, 1.0);
    // FOSSILIZE only after the probation window.
    let early = h.seed_op("seed-a", SeedOperation::Fossilize, MLP_ADAPTER_64, &[]);
    let early = h.submit(early);
    assert_eq!(early.reason, Some(ReasonCode::InvalidStage), "{early:?}");
    h.step();
    h.step();
    let fossilize = h.seed_op("seed-a", SeedOperation::Fossilize, MLP_ADAPTER_64, &[]);
    let outcome = h.submit(fossilize);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(h.state("seed-a").stage, SeedStage::Fossilized);

    // Events raised between steps travel in the next step's packets.
    h.step();
    let events = h.events();
    assert_eq!(
        Harness::stages_of(&events, "seed-a"),
        ["DORMANT", "GERMINATED", "TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY", "FOSSILIZED"]
    );
    let gates: Vec<String> = events
        .iter()
        .filter(|e| e.name == "kasmina.gate.verdict" && e.seed_id.as_deref() == Some("seed-a"))
        .map(|e| e.attributes.get("gate").map(ToString::to_string).unwrap_or_default())
        .collect();
    assert_eq!(gates, ["G0", "G1", "G2", "G3", "G4"]);
    let fossilized = &h.trainer.seeds["seed-a"];
    assert_eq!((fossilized.stage, fossilized.alpha), (SeedStage::Fossilized, 1.0));
}

#[test]
fn unknown_blueprint_fails_g0_and_leaves_the_slot_dormant() {
    let mut h = harness();
    let outcome = h.germinate("seed-a", "no_such_blueprint");
    assert_eq!(outcome.reason, Some(ReasonCode::GateFailed), "{outcome:?}");
    assert_eq!(outcome.attributes.get("gate").map(String::as_str), Some("G0"));
    assert_eq!(h.state("seed-a").stage, SeedStage::Dormant);
}

#[test]
fn trainer_that_never_attaches_fails_g1_and_is_culled_with_a_rollback_point() {
    let mut h = harness();
    h.trainer.m.refuse_attach = true;
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    let events = h.events();
    assert_eq!(gate_failure(&h, &events, "seed-a"), Some(("G1".to_owned(), "kernel_not_attached".to_owned())));
    assert_eq!(Harness::stages_of(&events, "seed-a")[2..], ["CULLED", "EMBARGOED"]);
    let point = h.host.manager().rollback().latest_for_seed("seed-a").expect("rollback point");
    assert_eq!(point.stage, SeedStage::Germinated);
}

#[test]
fn running_another_kernel_is_a_fallback_and_fails_g1() {
    let mut h = harness();
    h.trainer.m.report_sha = Some("0".repeat(64));
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    let (gate, reason) = gate_failure(&h, &h.events(), "seed-a").expect("a gate failed");
    assert_eq!(gate, "G1");
    assert_eq!(reason, "kernel_not_verified");
}

#[test]
fn unstable_loss_fails_g2() {
    let mut h = harness();
    h.trainer.m.loss_jitter = 10.0;
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 20));
    assert_eq!(gate_failure(&h, &h.events(), "seed-a"), Some(("G2".to_owned(), "loss_variance_exceeded".to_owned())));
}

#[test]
fn kernel_interface_not_matching_the_site_fails_g3() {
    let mut h = harness();
    assert!(h.germinate("seed-b", WRONG_IFACE_64).accepted);
    assert!(h.run_until("seed-b", SeedStage::Embargoed, 30));
    assert_eq!(gate_failure(&h, &h.events(), "seed-b"), Some(("G3".to_owned(), "interface_mismatch".to_owned())));
}

#[test]
fn mesh_not_covering_the_seeds_site_fails_g3() {
    let mut h = harness();
    let cmd = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[("mesh_layers", "block1,block2")]);
    assert!(h.submit(cmd).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 30));
    assert_eq!(gate_failure(&h, &h.events(), "seed-a"), Some(("G3".to_owned(), "mesh_not_covering".to_owned())));
}

#[test]
fn metric_regression_fails_g4() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Shadowing, 30));
    h.trainer.m.metric = Some(0.5);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    assert_eq!(gate_failure(&h, &h.events(), "seed-a"), Some(("G4".to_owned(), "metric_regressed".to_owned())));
}

#[test]
fn embargo_then_reset_returns_the_slot_to_dormant_through_g5() {
    let mut h = harness();
    h.trainer.m.refuse_attach = true;
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    // Still embargoed before the period ends: a new GERMINATE is refused.
    h.step();
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    let refused = h.germinate("seed-a", MLP_ADAPTER_64);
    assert_eq!(refused.reason, Some(ReasonCode::InvalidStage));
    h.clock.advance_ms(2_000);
    h.step();
    assert_eq!(h.state("seed-a").stage, SeedStage::Resetting);
    h.step();
    assert_eq!(h.state("seed-a").stage, SeedStage::Dormant);
    let events = h.events();
    let stages = Harness::stages_of(&events, "seed-a");
    assert_eq!(stages[stages.len() - 2..], ["RESETTING", "DORMANT"]);
    // And the slot can grow again.
    h.trainer.m.refuse_attach = false;
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
}

#[test]
fn pause_swaps_the_seed_out_and_resume_rechecks_gates() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Training, 10));
    let pause = h.signed("seed-a", CommandPayload::Pause(PauseCommand { resume: false }), &[]);
    assert!(h.submit(pause).accepted);
    let directives = h.step();
    assert!(directives.contains(&GraftDirective::Pause { seed_id: "seed-a".to_owned(), paused: true }));
    assert!(h.trainer.seeds["seed-a"].paused);
    // Paused seeds do not advance however long training runs.
    for _ in 0..10 {
        h.step();
    }
    assert_eq!(h.state("seed-a").stage, SeedStage::Training);
    assert!(h.state("seed-a").paused);

    let resume = h.signed("seed-a", CommandPayload::Pause(PauseCommand { resume: true }), &[]);
    assert!(h.submit(resume).accepted);
    assert!(!h.state("seed-a").paused);
    assert!(h.run_until("seed-a", SeedStage::Blending, 10));

    // Resume when the entry gate no longer holds: culled.
    let pause = h.signed("seed-a", CommandPayload::Pause(PauseCommand { resume: false }), &[]);
    assert!(h.submit(pause).accepted);
    h.trainer.m.fallback_used = true;
    h.step();
    let resume = h.signed("seed-a", CommandPayload::Pause(PauseCommand { resume: true }), &[]);
    let outcome = h.submit(resume);
    assert_eq!(outcome.reason, Some(ReasonCode::GateFailed), "{outcome:?}");
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
}

#[test]
fn emergency_culls_active_seeds_clears_the_cache_and_is_critical() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Training, 10));
    assert!(
        h.host.manager().kernels().cache_entries() > 0 || {
            h.host.manager().kernels().run_pending_tasks();
            h.host.manager().kernels().cache_entries() > 0
        }
    );
    let _ = h.events();
    let cmd =
        h.signed("seed-a", CommandPayload::Emergency(EmergencyCommand { cleanup: true, include_teacher: true }), &[]);
    assert!(h.submit(cmd).accepted);
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    h.host.manager().kernels().run_pending_tasks();
    assert_eq!(h.host.manager().kernels().cache_entries(), 0);
    h.step();
    assert!(h.trainer.teacher_dropped);
    assert!(!h.trainer.seeds.contains_key("seed-a"));
    let events = h.events();
    assert_eq!(
        events.first().map(|e| (e.name.as_str(), e.level)),
        Some(("kasmina.emergency", TelemetryLevel::Critical))
    );
}

#[test]
fn cull_command_retires_an_active_seed() {
    let mut h = harness();
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Training, 10));
    let cmd = h.signed(
        "seed-a",
        CommandPayload::Seed(leyline::SeedCommand {
            operation: SeedOperation::Cull,
            blueprint_id: MLP_ADAPTER_64.to_owned(),
            parameters: Default::default(),
        }),
        &[("training_run_id", harness::RUN)],
    );
    let outcome = h.submit(cmd);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    assert!(h.host.manager().rollback().latest_for_seed("seed-a").is_ok());
}

#[test]
fn isolation_violations_fail_g1() {
    let mut h = harness_with(harness::SETTINGS);
    h.trainer.m.violations = 1;
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    assert_eq!(gate_failure(&h, &h.events(), "seed-a").map(|g| g.0), Some("G1".to_owned()));
}

#[test]
fn a_slot_culled_for_isolation_violations_is_reset_to_dormant_after_its_embargo() {
    // Found by reading: the culled seed's violations stayed on the slot, so
    // G5 failed `violations_outstanding` forever and the slot never came back.
    let mut h = harness_with(harness::SETTINGS);
    h.trainer.m.violations = 1;
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    assert!(h.run_until("seed-a", SeedStage::Embargoed, 10));
    h.trainer.m.violations = 0;
    h.clock.advance_ms(2_000);
    assert!(h.run_until("seed-a", SeedStage::Dormant, 10), "{:?}", h.state("seed-a"));
    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted, "the reset slot takes a new seed");
}

#[test]
fn a_corrupted_artifact_never_reaches_the_trainer_and_the_seed_is_culled() {
    let mut h = harness();
    // Corrupt the published artifact after the catalog recorded its digest.
    let urza = kasmina_kernels::UrzaLibrary::open(h.dir.path().join("urza")).expect("urza");
    let entry = urza.entry(MLP_ADAPTER_64).expect("published");
    let path = urza.artifact_path(&entry);
    let mut bytes = std::fs::read(&path).expect("artifact");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).expect("corrupt");

    assert!(h.germinate("seed-a", MLP_ADAPTER_64).accepted);
    let attached = h.any_attach_in(5);
    assert!(!attached, "a corrupted kernel was handed to the trainer");
    assert!(h.trainer.seeds.is_empty(), "the trainer holds a kernel");
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    let events = h.events();
    assert!(events.iter().any(|e| e.name == "kasmina.kernel.unavailable"), "no kernel-unavailable event");
    assert_eq!(gate_failure(&h, &events, "seed-a").map(|g| g.0), Some("G1".to_owned()));
    // The corrupt file was quarantined, and no kernel is served for it.
    assert!(!path.exists(), "corrupt artifact still in place");
    assert!(h.host.fetch_kernel(MLP_ADAPTER_64).is_err());
}

/// A kernel whose code asks for 256 MiB in each forward pass
/// (`fixtures/hostile/memory_hog.pt`, published under the 64-wide
/// adapter's interface, which it honours): with `kernels.prewarm_memory_bytes`
/// at 64 MiB its load fails before the memory is taken and G1 culls the
/// seed, saying why; with the default cap (1 GiB) the same kernel attaches
/// (the control: it is the setting that refused it).
#[test]
fn a_kernel_over_the_prewarm_memory_cap_fails_g1_and_never_reaches_the_trainer() {
    let publish_hog = |urza: &kasmina_kernels::UrzaLibrary| {
        kasmina_kernels::fixtures::publish_hostile(urza, MEMORY_HOG, MLP_ADAPTER_64).expect("publish memory_hog");
    };
    let capped = format!("{SETTINGS}\n[kernels]\nprewarm_memory_bytes = {}\n", 64 << 20);
    let mut h = harness_with_library(&capped, publish_hog);
    assert!(h.germinate("seed-a", MEMORY_HOG).accepted);
    let attached = h.any_attach_in(5);
    assert!(!attached, "a kernel over the cap was handed to the trainer");
    assert_eq!(h.state("seed-a").stage, SeedStage::Embargoed);
    let events = h.events();
    assert_eq!(gate_failure(&h, &events, "seed-a").map(|g| g.0), Some("G1".to_owned()));
    let named = events.iter().any(|e| {
        e.name == "kasmina.kernel.unavailable"
            && format!("{} {:?}", e.message, e.attributes).contains("kernels.prewarm_memory_bytes")
    });
    assert!(named, "no event names the cap: {events:?}");

    let mut h = harness_with_library(SETTINGS, publish_hog);
    assert!(h.germinate("seed-a", MEMORY_HOG).accepted);
    let attached = h.any_attach_in(5);
    assert!(attached, "under the default cap the same kernel attaches");
}
