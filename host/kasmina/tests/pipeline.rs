//! The command pipeline on the assembled host: every envelope rejection of
//! SPEC.md §3 leaves seeds and directives untouched; pipeline refusals name
//! what to fix.

// Tests: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{RUN, harness};
use kasmina_kernels::fixtures::MLP_ADAPTER_64;
use leyline::api::KasminaApi;
use leyline::command::{CommandPayload, StructuralPruningCommand};
use leyline::{ReasonCode, SeedOperation, SeedStage};

#[test]
fn envelope_rejections_change_no_state() {
    let mut h = harness();
    let before = h.host.seed_states().expect("states");
    let good = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);

    let mut unsigned = good.clone();
    unsigned.signature = None;
    let mut forged = good.clone();
    forged.target_seed_id = "seed-b".to_owned();
    let mut no_id = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    no_id.command_id.clear();
    kasmina::security::sign_in_place(&mut no_id, &h.key);
    let mut no_time = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    no_time.issued_at_ms = None;
    kasmina::security::sign_in_place(&mut no_time, &h.key);
    let mut stale = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    stale.issued_at_ms = Some(harness::T0 - 61_000);
    kasmina::security::sign_in_place(&mut stale, &h.key);
    let mut future = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    future.issued_at_ms = Some(harness::T0 + 6_000);
    kasmina::security::sign_in_place(&mut future, &h.key);

    for (cmd, reason) in [
        (unsigned, ReasonCode::MissingSignature),
        (forged, ReasonCode::InvalidSignature),
        (no_id, ReasonCode::MissingCommandId),
        (no_time, ReasonCode::MissingTimestamp),
        (stale, ReasonCode::StaleCommand),
        (future, ReasonCode::IssuedInFuture),
    ] {
        let outcome = h.submit(cmd);
        assert_eq!(outcome.reason, Some(reason), "{outcome:?}");
        assert_eq!(h.host.seed_states().expect("states"), before, "{reason} changed state");
    }
    assert!(h.step().is_empty(), "a rejected command queued directives");

    // The good command goes through once; its replay is refused.
    assert!(h.submit(good.clone()).accepted);
    assert_eq!(h.submit(good).reason, Some(ReasonCode::NonceReplayed));
    let status = h.host.status().expect("status");
    assert_eq!((status.commands_accepted, status.commands_rejected), (1, 7));
}

#[test]
fn pipeline_refusals_name_the_problem() {
    let mut h = harness();
    // Unknown seed id: lists the registered slots.
    let cmd = h.seed_op("seed-z", SeedOperation::Germinate, MLP_ADAPTER_64, &[]);
    let outcome = h.submit(cmd);
    assert_eq!(outcome.reason, Some(ReasonCode::InvalidField));
    assert!(outcome.attributes["detail"].contains("seed-a, seed-b"), "{outcome:?}");
    // Another training run.
    let cmd = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[("training_run_id", "other-run")]);
    let outcome = h.submit(cmd);
    assert!(outcome.attributes["detail"].contains(RUN), "{outcome:?}");
    // An unknown blend mode is an error, never CONVEX.
    let cmd = h.seed_op("seed-a", SeedOperation::Germinate, MLP_ADAPTER_64, &[("blend_mode", "AVERAGE")]);
    let outcome = h.submit(cmd);
    assert_eq!(outcome.reason, Some(ReasonCode::InvalidField), "{outcome:?}");
    assert_eq!(outcome.attributes.get("key").map(String::as_str), Some("blend_mode"));
    // Structural pruning is refused as unsupported.
    let cmd = h.signed(
        "seed-a",
        CommandPayload::StructuralPruning(StructuralPruningCommand {
            target_layers: vec!["hidden".to_owned()],
            ratio: 0.5,
        }),
        &[],
    );
    assert_eq!(h.submit(cmd).reason, Some(ReasonCode::UnsupportedCommand));
    assert_eq!(h.state("seed-a").stage, SeedStage::Dormant);
}

#[test]
fn replay_is_accepted_again_after_the_nonce_ttl() {
    let mut h = harness();
    let cmd = h.seed_op("seed-a", SeedOperation::Evaluate, MLP_ADAPTER_64, &[]);
    // EVALUATE of a dormant seed is a dry run of G0.
    let first = h.submit(cmd.clone());
    assert!(first.accepted, "{first:?}");
    assert_eq!(h.submit(cmd.clone()).reason, Some(ReasonCode::NonceReplayed));
    // After the TTL the nonce is gone — but the command is stale by then,
    // which is why the window must stay below the TTL.
    h.clock.advance_ms(300_001);
    assert_eq!(h.submit(cmd).reason, Some(ReasonCode::StaleCommand));
}
