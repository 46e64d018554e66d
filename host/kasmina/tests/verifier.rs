//! The command envelope end to end: every SPEC.md §3 rejection reason with
//! its counter, telemetry level and no state change; replay within and after
//! the TTL on an injected clock; run-time freshness window; key loading.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{KEY_HEX, T0, germinate, key, rig, signed};
use kasmina::security::{
    CommandVerifier, HmacKey, KeyError, KeyFromSettings, NoncePurger, VerifierConfig, VerifierError, sign,
    sign_in_place,
};
use kasmina::settings::Settings;
use leyline::{ReasonCode, TelemetryLevel};

fn attr(event: &leyline::TelemetryEvent, key: &str) -> Option<String> {
    event.attributes.get(key).map(ToString::to_string)
}

#[test]
fn a_signed_fresh_command_is_accepted_once() {
    let r = rig(100);
    let verified = r.verifier.verify(signed(germinate("c1", T0))).expect("accepted");
    assert_eq!(verified.command().command_id, "c1");
    assert_eq!(verified.verified_at_ms(), T0);
    assert_eq!(r.ledger.len(), 1);
    assert_eq!(r.verifier.stats().accepted, 1);
    assert!(r.sink.events().is_empty(), "acceptance is counted, not reported per command");
}

/// Each case: a command that fails exactly one check, and the reason.
fn rejection_cases() -> Vec<(ReasonCode, leyline::AdaptationCommand)> {
    let mut unsigned = germinate("c-unsigned", T0);
    unsigned.signature = None;
    let mut empty_sig = germinate("c-empty-sig", T0);
    empty_sig.signature = Some(Vec::new());
    let mut tampered = signed(germinate("c-tampered", T0));
    tampered.target_seed_id = "seed-b".to_owned();
    let mut wrong_key = germinate("c-wrong-key", T0);
    wrong_key.signature = Some(sign(&wrong_key, &HmacKey::from_bytes(&[9; 32]).expect("key")));
    let no_id = signed(germinate("", T0));
    let mut no_ts = germinate("c-no-ts", T0);
    no_ts.issued_at_ms = None;
    let stale = signed(germinate("c-stale", T0 - 60_001));
    let future = signed(germinate("c-future", T0 + 5_001));
    vec![
        (ReasonCode::MissingSignature, unsigned),
        (ReasonCode::MissingSignature, empty_sig),
        (ReasonCode::InvalidSignature, tampered),
        (ReasonCode::InvalidSignature, wrong_key),
        (ReasonCode::MissingCommandId, no_id),
        (ReasonCode::MissingTimestamp, signed(no_ts)),
        (ReasonCode::StaleCommand, stale),
        (ReasonCode::IssuedInFuture, future),
    ]
}

#[test]
fn every_rejection_has_its_reason_counter_event_and_no_state_change() {
    let r = rig(100);
    r.verifier.verify(signed(germinate("already-seen", T0))).expect("accepted");
    let mut cases = rejection_cases();
    cases.push((ReasonCode::NonceReplayed, signed(germinate("already-seen", T0))));
    for (expected, command) in cases {
        let before = r.verifier.stats();
        let events_before = r.sink.events().len();
        let outcome = r.verifier.check(&command);
        assert!(!outcome.accepted, "{expected}: accepted");
        assert_eq!(outcome.reason, Some(expected));
        assert!(outcome.attributes.contains_key("detail"));
        let after = r.verifier.stats();
        assert_eq!(after.ledger, before.ledger, "{expected}: ledger changed");
        assert_eq!(after.accepted, before.accepted);
        assert_eq!(
            after.rejected.get(&expected).copied().unwrap_or(0),
            before.rejected.get(&expected).copied().unwrap_or(0) + 1,
            "{expected}: counter"
        );
        let events = r.sink.events();
        assert_eq!(events.len(), events_before + 1, "{expected}: one event");
        let event = &events[events.len() - 1];
        assert_eq!(event.name, "kasmina.security.command_rejected");
        assert_eq!(attr(event, "reason").as_deref(), Some(expected.as_str()));
        assert_eq!(attr(event, "freshness_window_ms").as_deref(), Some("60000"));
        assert_eq!(event.seed_id, None, "unverified seed ids must not key per-seed state");
        let critical =
            matches!(expected, ReasonCode::MissingSignature | ReasonCode::InvalidSignature | ReasonCode::NonceReplayed);
        let want = if critical { TelemetryLevel::Critical } else { TelemetryLevel::Warning };
        assert_eq!(event.level, want, "{expected}: level");
    }
    let stats = r.verifier.stats();
    for reason in [
        ReasonCode::MissingSignature,
        ReasonCode::InvalidSignature,
        ReasonCode::MissingCommandId,
        ReasonCode::NonceReplayed,
        ReasonCode::MissingTimestamp,
        ReasonCode::StaleCommand,
        ReasonCode::IssuedInFuture,
    ] {
        assert!(stats.rejected.get(&reason).copied().unwrap_or(0) > 0, "{reason} never counted");
    }
}

#[test]
fn a_stale_command_does_not_burn_its_nonce() {
    let r = rig(100);
    let stale = signed(germinate("c-retry", T0 - 120_000));
    assert_eq!(r.verifier.check(&stale).reason, Some(ReasonCode::StaleCommand));
    let early = signed(germinate("c-retry", T0 + 10_000));
    assert_eq!(r.verifier.check(&early).reason, Some(ReasonCode::IssuedInFuture));
    // The controller re-issues the same id with a fresh timestamp: accepted.
    assert!(r.verifier.check(&signed(germinate("c-retry", T0))).accepted);
}

#[test]
fn boundaries_are_inclusive() {
    let r = rig(100);
    assert!(r.verifier.check(&signed(germinate("edge-old", T0 - 60_000))).accepted);
    assert!(r.verifier.check(&signed(germinate("edge-new", T0 + 5_000))).accepted);
}

#[test]
fn replay_is_rejected_within_the_ttl_and_accepted_after_it() {
    let r = rig(100);
    assert!(r.verifier.check(&signed(germinate("c1", T0))).accepted);
    r.clock.advance_ms(299_999);
    // Same id, re-signed with a fresh timestamp: still a replay.
    let again = signed(germinate("c1", T0 + 299_999));
    assert_eq!(r.verifier.check(&again).reason, Some(ReasonCode::NonceReplayed));
    r.clock.advance_ms(1);
    let after_ttl = signed(germinate("c1", T0 + 300_000));
    assert!(r.verifier.check(&after_ttl).accepted);
    assert_eq!(r.verifier.rejections(ReasonCode::NonceReplayed), 1);
}

#[test]
fn concurrent_identical_commands_accept_exactly_one() {
    let r = Arc::new(rig(10_000));
    let command = signed(germinate("race", T0));
    let accepted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = Arc::clone(&r);
                let command = command.clone();
                scope.spawn(move || usize::from(r.verifier.check(&command).accepted))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).sum()
    });
    assert_eq!(accepted, 1);
    assert_eq!(r.verifier.rejections(ReasonCode::NonceReplayed), 7);
}

#[test]
fn freshness_window_changes_at_run_time_and_is_reported() {
    let r = rig(100);
    let cmd = signed(germinate("c-90s", T0 - 90_000));
    assert_eq!(r.verifier.check(&cmd).reason, Some(ReasonCode::StaleCommand));
    r.verifier.set_freshness_window(Duration::from_secs(120)).expect("allowed");
    assert_eq!(r.verifier.freshness_window(), Duration::from_secs(120));
    assert!(r.verifier.check(&cmd).accepted, "same command, wider window");
    let changed = r.sink.named("kasmina.security.freshness_window_changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(attr(&changed[0], "old_ms").as_deref(), Some("60000"));
    assert_eq!(attr(&changed[0], "new_ms").as_deref(), Some("120000"));
    assert_eq!(r.verifier.stats().freshness_window_ms, 120_000);
    let metrics = r.verifier.stats().to_metrics();
    assert!(metrics.iter().any(|m| m.name == "kasmina.security.freshness_window" && m.value == 120_000.0));

    assert_eq!(r.verifier.set_freshness_window(Duration::ZERO), Err(VerifierError::ZeroFreshnessWindow));
    // window + skew must stay below the 300 s TTL, or a replay could be fresh
    // again the moment its nonce expires.
    assert!(matches!(
        r.verifier.set_freshness_window(Duration::from_secs(295)),
        Err(VerifierError::WindowExceedsNonceTtl { .. })
    ));
    assert_eq!(r.verifier.freshness_window(), Duration::from_secs(120), "refused change changes nothing");
}

#[test]
fn a_full_ledger_evicts_and_reports_replay_exposure() {
    let r = rig(2);
    for id in ["a", "b", "c"] {
        assert!(r.verifier.check(&signed(germinate(id, T0))).accepted);
    }
    assert_eq!(r.ledger.stats().truncations, 1);
    let evicted = r.sink.named("kasmina.security.nonce_evicted");
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].level, TelemetryLevel::Error, "evicted nonce was still fresh");
    assert_eq!(attr(&evicted[0], "replay_window_exposed").as_deref(), Some("true"));
}

#[test]
fn timer_purge_empties_the_verifiers_ledger_without_new_commands() {
    let r = rig(100);
    for i in 0..10 {
        assert!(r.verifier.check(&signed(germinate(&format!("p{i}"), T0))).accepted);
    }
    let purger = NoncePurger::spawn(r.ledger.clone(), r.clock.clone(), r.sink.clone(), Duration::from_secs(3_600))
        .expect("spawn");
    assert_eq!(purger.tick().expect("running"), 0);
    r.clock.advance_ms(300_000);
    assert_eq!(purger.tick().expect("running"), 10);
    assert_eq!(r.verifier.stats().ledger.len, 0);
    assert_eq!(r.verifier.stats().ledger.purged, 10);
    purger.stop(Duration::from_secs(2)).expect("bounded stop");
}

#[test]
fn interval_stats_reset_while_totals_accumulate() {
    let r = rig(100);
    assert!(r.verifier.check(&signed(germinate("i1", T0))).accepted);
    let _ = r.verifier.check(&germinate("i2", T0));
    let first = r.verifier.take_interval_stats();
    assert_eq!((first.accepted, first.rejected.get(&ReasonCode::MissingSignature).copied()), (1, Some(1)));
    let second = r.verifier.take_interval_stats();
    assert_eq!(second.accepted, 0);
    assert!(second.rejected.is_empty());
    assert_eq!(r.verifier.stats().accepted, 1);
}

#[test]
fn settings_build_a_verifier_and_refuse_an_unsafe_window() {
    let settings = Settings::from_toml("[security]\nfreshness_window_s = 30\nnonce_ttl_s = 100\n").expect("valid");
    let clock = Arc::new(kasmina_core::ManualClock::new(T0));
    let sink = Arc::new(kasmina_core::MemorySink::new(10));
    let verifier = CommandVerifier::from_settings(&settings.security, key(), clock.clone(), sink.clone()).expect("ok");
    assert_eq!(verifier.freshness_window(), Duration::from_secs(30));
    assert_eq!(verifier.ledger().ttl_ms(), 100_000);

    // Settings validation refuses the unsafe window with the key named ...
    let refused = Settings::from_toml("[security]\nfreshness_window_s = 120\nnonce_ttl_s = 100\n").unwrap_err();
    assert!(refused.to_string().contains("security.freshness_window_s"), "{refused}");
    // ... and the verifier refuses it too when handed unvalidated values.
    let mut unsafe_security = settings.security.clone();
    unsafe_security.freshness_window_s = 120;
    let err = CommandVerifier::from_settings(&unsafe_security, key(), clock, sink).unwrap_err();
    assert!(matches!(err, VerifierError::WindowExceedsNonceTtl { window_ms: 120_000, ttl_ms: 100_000, .. }));
    let cfg = VerifierConfig::from_settings(&Settings::default().security);
    assert_eq!((cfg.freshness_window_ms, cfg.future_skew_ms), (60_000, 5_000));
}

#[test]
fn key_file_is_read_trimmed_and_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hmac.key");
    std::fs::write(&path, format!("  {KEY_HEX}\n")).expect("write");
    let from_file = HmacKey::from_file(&path).expect("valid file");
    let mut a = germinate("k1", T0);
    let mut b = a.clone();
    sign_in_place(&mut a, &from_file);
    sign_in_place(&mut b, &key());
    assert_eq!(a.signature, b.signature, "file key equals the hex key");

    let big = dir.path().join("big.key");
    std::fs::write(&big, "a".repeat(10_000)).expect("write");
    assert!(matches!(HmacKey::from_file(&big), Err(KeyError::FileTooLarge { .. })));
    assert!(matches!(HmacKey::from_file(&dir.path().join("missing")), Err(KeyError::Io { .. })));

    // A configured key file that is missing is an error, never a fall-through to the env var.
    let settings = Settings::from_toml(&format!(
        "[security]\nkey_file = {:?}\nkey_env = \"CARGO_PKG_NAME\"\n",
        dir.path().join("missing")
    ))
    .expect("valid");
    assert!(matches!(HmacKey::from_settings(&settings.security), Err(KeyError::Io { .. })));
}

#[test]
fn a_missing_key_variable_is_named() {
    assert!(matches!(
        HmacKey::from_env("KASMINA_TEST_SURELY_UNSET_VARIABLE"),
        Err(KeyError::EnvMissing { var }) if var == "KASMINA_TEST_SURELY_UNSET_VARIABLE"
    ));
}

/// Setting a variable in-process needs `unsafe` in edition 2024, so the
/// env paths run in this test binary again, started with the variables set.
#[test]
fn key_from_env_round_trips_and_bad_values_are_not_echoed() {
    const VAR: &str = "KASMINA_TEST_HMAC_KEY";
    const BAD_VAR: &str = "KASMINA_TEST_BAD_KEY";
    const BAD_VALUE: &str = "not-hex-secretvalue";
    if std::env::var_os("KASMINA_TEST_CHILD").is_some() {
        let settings = Settings::from_toml(&format!("[security]\nkey_env = \"{VAR}\"\n")).expect("valid");
        let from_env = HmacKey::from_settings(&settings.security).expect("env key");
        let cmd = germinate("env", T0);
        assert_eq!(sign(&cmd, &from_env), sign(&cmd, &key()));
        assert_eq!(format!("{from_env:?}"), "HmacKey(<redacted>)");
        let err = HmacKey::from_env(BAD_VAR).unwrap_err().to_string();
        assert!(err.contains("env:KASMINA_TEST_BAD_KEY") && err.contains("not valid hex"), "{err}");
        assert!(!err.contains("secret"), "error must not echo the value: {err}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new(exe)
        .args(["key_from_env_round_trips_and_bad_values_are_not_echoed", "--exact", "--test-threads=1"])
        .env("KASMINA_TEST_CHILD", "1")
        .env(VAR, KEY_HEX)
        .env(BAD_VAR, BAD_VALUE)
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 passed"), "child did not run the test: {stdout}");
    assert!(!stdout.contains(KEY_HEX), "key printed");
}
