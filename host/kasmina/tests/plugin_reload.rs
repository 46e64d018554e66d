//! Hot reload of several policy slots at once is all or nothing (issue 19):
//! when one changed slot's plugin is refused, the others that passed their
//! canary are not installed either, and the settings in force stay as they
//! were, so the next reload sees the same slots as changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use kasmina::host::PolicySlot;
use kasmina_plugin_artifacts as artifacts;
use leyline::TelemetryEvent;

fn refs(slots: &[(&str, &str, &str)]) -> String {
    slots
        .iter()
        .map(|(section, path, sha)| format!("\n[plugins.{section}]\npath = {path:?}\nsha256 = {sha:?}\n"))
        .collect()
}

fn attr(e: &TelemetryEvent, key: &str) -> String {
    e.attributes.get(key).map(ToString::to_string).unwrap_or_default()
}

#[test]
fn a_reload_installs_every_changed_plugin_or_none() {
    let h = harness::harness();
    let file = h.dir.path().join("kasmina.toml");
    let annotations = ("annotations", artifacts::ANNOTATIONS, artifacts::ANNOTATIONS_SHA256);
    let blueprints = ("blueprint_policy", artifacts::BLUEPRINT_POLICY, artifacts::BLUEPRINT_POLICY_SHA256);
    let _ = h.events();

    // Two good plugins and one the canary refuses (a guest that never
    // returns): nothing is installed.
    let looping = ("gates", artifacts::FIXTURE_LOOP, artifacts::FIXTURE_LOOP_SHA256);
    std::fs::write(&file, format!("{}{}", harness::SETTINGS, refs(&[looping, annotations, blueprints]))).unwrap();
    let report = h.host.reload_plugins(Some(&file), "test").unwrap();
    let by_slot = |slot: PolicySlot| report.slots.iter().find(|s| s.slot == slot).expect("slot reported");
    assert_eq!(report.slots.len(), 3, "{report:?}");
    let gates = by_slot(PolicySlot::Gates).refused.clone().expect("the looping gate is refused");
    assert!(gates.contains("canary failed"), "{gates}");
    for slot in [PolicySlot::Annotations, PolicySlot::BlueprintPolicy] {
        let why = by_slot(slot).refused.clone().expect("kept out with the refused gate");
        assert!(why.contains("all or nothing") && why.contains("gates plugin"), "{slot:?}: {why}");
    }
    let events = h.events();
    let refused: Vec<String> =
        events.iter().filter(|e| e.name == "kasmina.plugin.reload_refused").map(|e| attr(e, "slot")).collect();
    assert_eq!(refused, ["gates", "annotations", "blueprint-policy"], "{events:?}");
    assert!(!events.iter().any(|e| e.name == "kasmina.plugin.reloaded"), "{events:?}");

    // The same two good refs alone: still changed (the settings in force did
    // not take them), and now installed.
    std::fs::write(&file, format!("{}{}", harness::SETTINGS, refs(&[annotations, blueprints]))).unwrap();
    let report = h.host.reload_plugins(Some(&file), "test").unwrap();
    let slots: Vec<PolicySlot> = report.slots.iter().map(|s| s.slot).collect();
    assert_eq!(slots, [PolicySlot::Annotations, PolicySlot::BlueprintPolicy], "{report:?}");
    assert!(report.slots.iter().all(|s| s.refused.is_none()), "{report:?}");

    // A good gate next: the only change, replacing the embedded default (the
    // looping fixture never served).
    let example = ("gates", artifacts::EXAMPLE_CUSTOM_GATE, artifacts::EXAMPLE_CUSTOM_GATE_SHA256);
    std::fs::write(&file, format!("{}{}", harness::SETTINGS, refs(&[annotations, blueprints, example]))).unwrap();
    let report = h.host.reload_plugins(Some(&file), "test").unwrap();
    assert_eq!(report.slots.len(), 1, "{report:?}");
    let gate = &report.slots[0];
    assert_eq!((gate.slot, gate.refused.as_deref()), (PolicySlot::Gates, None), "{report:?}");
    assert_eq!(gate.old_sha256, kasmina_default_plugins::GATES_SHA256);
    assert_eq!(gate.new_sha256, artifacts::EXAMPLE_CUSTOM_GATE_SHA256);
}
