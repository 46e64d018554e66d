//! Blend admission on the assembled host (SPEC.md §4, §11): every blend
//! parameter the tensor plane would refuse is refused at GERMINATE, with the
//! key named and the seed left DORMANT; nothing about a CONFIDENCE gate is
//! defaulted; no `blend_mode` at all is CONVEX from `default`; the α clamp
//! count reaches the outcome and its telemetry.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;

use harness::{Harness, RUN, SITE, harness};
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::annotations::{
    ALPHA_HI, ALPHA_LO, ALPHA_VEC, BLEND_MODE, BLEND_MODE_SOURCE, CONFIDENCE_LOGITS_REQUIRED, GATE_K, GATE_TAU,
    MESH_LAYERS, TRAINING_RUN_ID,
};
use leyline::api::{BlendSpec, GraftDirective, KasminaApi};
use leyline::command::{CommandPayload, SeedCommand};
use leyline::{BlendMode, Outcome, ReasonCode, SeedOperation, SeedStage};

/// A signed GERMINATE of `seed-a` with exactly these annotations besides
/// the run id and the mesh (no blend_mode unless given).
fn germinate(h: &mut Harness, blend: &[(&str, &str)]) -> Outcome {
    let mut annotations = vec![(TRAINING_RUN_ID, RUN), (MESH_LAYERS, SITE)];
    annotations.extend_from_slice(blend);
    let cmd = h.signed(
        "seed-a",
        CommandPayload::Seed(SeedCommand {
            operation: SeedOperation::Germinate,
            blueprint_id: MLP_ADAPTER_64.to_owned(),
            parameters: BTreeMap::new(),
        }),
        &annotations,
    );
    h.submit(cmd)
}

/// A complete, valid CONFIDENCE spec with `key` replaced (or dropped when
/// `value` is `None`).
fn confidence_with(key: &'static str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut a =
        vec![(BLEND_MODE, "CONFIDENCE"), (GATE_K, "4"), (GATE_TAU, "0.1"), (ALPHA_LO, "0.1"), (ALPHA_HI, "0.9")];
    a.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        a.push((key, v));
    }
    a
}

/// The Attach directive's blend spec for `seed-a`, after one step.
fn attached_blend(h: &mut Harness) -> BlendSpec {
    h.step()
        .into_iter()
        .find_map(|d| match d {
            GraftDirective::Attach { seed_id, blend, .. } if seed_id == "seed-a" => Some(blend),
            _ => None,
        })
        .expect("attach directive for seed-a")
}

#[test]
fn every_blend_the_trainer_would_refuse_is_refused_at_admission_naming_the_key() {
    let mut h = harness();
    // (what, annotations, expected reason, keys the refusal may name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, ReasonCode, &'a [&'a str]);
    let cases: Vec<Case<'_>> = vec![
        ("gate_k = 0", confidence_with(GATE_K, Some("0")), ReasonCode::InvalidField, &[GATE_K]),
        ("gate_k = -1", confidence_with(GATE_K, Some("-1")), ReasonCode::InvalidField, &[GATE_K]),
        (
            "alpha_lo 0.8 > alpha_hi 0.2",
            vec![(BLEND_MODE, "CONFIDENCE"), (GATE_K, "4"), (GATE_TAU, "0.1"), (ALPHA_LO, "0.8"), (ALPHA_HI, "0.2")],
            ReasonCode::InvalidField,
            // The parser sees the pair first and names alpha_lo; the host's
            // own rule would name alpha_hi. Either names the pair at fault.
            &[ALPHA_LO, ALPHA_HI],
        ),
        ("CONFIDENCE without alpha_lo", confidence_with(ALPHA_LO, None), ReasonCode::MissingField, &[ALPHA_LO]),
        ("CONFIDENCE without alpha_hi", confidence_with(ALPHA_HI, None), ReasonCode::MissingField, &[ALPHA_HI]),
        ("CONFIDENCE without gate_tau", confidence_with(GATE_TAU, None), ReasonCode::MissingField, &[GATE_TAU]),
        ("CHANNEL without alpha_vec", vec![(BLEND_MODE, "CHANNEL")], ReasonCode::InvalidField, &[ALPHA_VEC]),
    ];
    let before = h.host.seed_states().expect("states");
    let mut refused = Vec::new();
    for (what, annotations, reason, keys) in cases {
        let outcome = germinate(&mut h, &annotations);
        assert!(!outcome.accepted, "{what}: accepted {outcome:?}");
        assert_eq!(outcome.reason, Some(reason), "{what}: {outcome:?}");
        let key = outcome.attributes.get("key").cloned().unwrap_or_default();
        assert!(keys.contains(&key.as_str()), "{what}: key {key:?} not one of {keys:?}: {outcome:?}");
        assert!(outcome.attributes["detail"].contains(&key), "{what}: detail does not name {key}: {outcome:?}");
        assert_eq!(h.state("seed-a").stage, SeedStage::Dormant, "{what}");
        assert_eq!(h.host.seed_states().expect("states"), before, "{what} changed state");
        refused.push((what, reason, key));
    }
    assert!(h.step().is_empty(), "a refused GERMINATE queued directives");
    assert_eq!(h.host.status().expect("status").commands_accepted, 0);
    // Each refusal was reported, with its reason and key (events leave the
    // embedded host at the step boundary).
    let events = h.events();
    for (what, reason, key) in refused {
        let attr = |e: &leyline::TelemetryEvent, name: &str| e.attributes.get(name).map(ToString::to_string);
        assert!(
            events.iter().any(|e| e.name == "kasmina.command.rejected"
                && attr(e, "reason").as_deref() == Some(reason.as_str())
                && attr(e, "key").as_deref() == Some(key.as_str())),
            "{what}: no rejection event naming {key} in {events:?}"
        );
    }
}

#[test]
fn the_same_confidence_command_with_valid_values_is_accepted_and_carried_whole() {
    let mut h = harness();
    let mut annotations = confidence_with(GATE_K, Some("4"));
    annotations.push((CONFIDENCE_LOGITS_REQUIRED, "true"));
    let outcome = germinate(&mut h, &annotations);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(outcome.attributes.get(BLEND_MODE).map(String::as_str), Some("CONFIDENCE"));
    assert_eq!(outcome.attributes.get("alpha_clamped").map(String::as_str), Some("0"));
    assert_eq!(h.state("seed-a").stage, SeedStage::Germinated);
    let blend = attached_blend(&mut h);
    let mut expected = BlendSpec::confidence(4.0, 0.1, 0.1, 0.9);
    expected.confidence_logits_required = true;
    assert_eq!(blend, expected);
}

#[test]
fn no_blend_mode_is_accepted_as_convex_from_default() {
    let mut h = harness();
    let outcome = germinate(&mut h, &[]);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(outcome.attributes.get(BLEND_MODE).map(String::as_str), Some("CONVEX"));
    assert_eq!(outcome.attributes.get(BLEND_MODE_SOURCE).map(String::as_str), Some("default"));
    assert_eq!(h.state("seed-a").blend_mode, Some(BlendMode::Convex));
    assert_eq!(attached_blend(&mut h), BlendSpec::convex());

    // A mode that is present but unknown is still an error, never CONVEX.
    let outcome = germinate(&mut h, &[(BLEND_MODE, "convex")]);
    assert_eq!(outcome.reason, Some(ReasonCode::InvalidField), "{outcome:?}");
    assert_eq!(outcome.attributes.get("key").map(String::as_str), Some(BLEND_MODE));
}

#[test]
fn clamped_alpha_values_are_counted_in_the_outcome_and_its_event() {
    let mut h = harness();
    let outcome = germinate(&mut h, &[(BLEND_MODE, "CHANNEL"), (ALPHA_VEC, "[1.5, 0.5]")]);
    assert!(outcome.accepted, "{outcome:?}");
    assert_eq!(outcome.attributes.get("alpha_clamped").map(String::as_str), Some("1"), "{outcome:?}");
    assert_eq!(outcome.attributes.get(BLEND_MODE).map(String::as_str), Some("CHANNEL"));
    assert_eq!(attached_blend(&mut h).alpha_vec, vec![1.0, 0.5]);
    // The step delivered the command's event too.
    let events = h.events();
    let executed = events
        .iter()
        .find(|e| e.name == "kasmina.command.executed" && e.seed_id.as_deref() == Some("seed-a"))
        .expect("executed event");
    assert_eq!(executed.attributes.get("alpha_clamped").map(ToString::to_string).as_deref(), Some("1"));
}

/// SPEC §4: a `mesh_layers` value that is JSON but not a list of strings is
/// refused `invalid_mesh` naming the key — never read as a one-name comma
/// list; another annotation's malformed value stays `invalid_field`.
#[test]
fn mesh_layers_that_are_json_but_not_a_list_of_strings_are_refused() {
    let mut h = harness();
    // A layer name over 256 bytes, too (found by fuzzing: the parser returned
    // it and the host's output check then refused the command as a plugin
    // failure, blaming the plugin for the controller's input).
    let long = format!("hidden,{}", "é".repeat(130));
    for value in [r#"{"hidden": 1}"#, r#""hidden""#, "{}", long.as_str()] {
        let outcome = germinate(&mut h, &[(MESH_LAYERS, value)]);
        assert!(!outcome.accepted, "{value}: accepted {outcome:?}");
        assert_eq!(outcome.reason, Some(ReasonCode::InvalidMesh), "{value}: {outcome:?}");
        assert_eq!(outcome.attributes.get("key").map(String::as_str), Some(MESH_LAYERS), "{value}: {outcome:?}");
        assert_eq!(h.state("seed-a").stage, SeedStage::Dormant, "{value}");
    }
    // An over-long mode source is the command's bad input (an id over 256
    // bytes), refused before the parser: not a plugin failure.
    let source = "s".repeat(300);
    let outcome = germinate(&mut h, &[(BLEND_MODE, "CONVEX"), (BLEND_MODE_SOURCE, source.as_str())]);
    assert_eq!(outcome.reason, Some(ReasonCode::InvalidField), "{outcome:?}");
    assert_eq!(outcome.attributes.get("field").map(String::as_str), Some(BLEND_MODE_SOURCE), "{outcome:?}");
    // Negative control: a malformed blend annotation is not a mesh error.
    let outcome = germinate(&mut h, &[(BLEND_MODE, "AVERAGE")]);
    assert_eq!(outcome.reason, Some(ReasonCode::InvalidField), "{outcome:?}");
    // The same site as a JSON list or a comma list is accepted.
    assert!(germinate(&mut h, &[(MESH_LAYERS, r#"["hidden"]"#)]).accepted);
}
