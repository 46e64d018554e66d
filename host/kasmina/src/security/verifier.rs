//! The command verifier: the security envelope every command passes before
//! anything else looks at it (SPEC.md §3).
//!
//! Check order, each with its reason code: signature present → HMAC valid →
//! command id present → nonce not replayed → timestamp present → not stale →
//! not in the future. The replay check, the timestamp checks and the insert
//! of the nonce run under one hold of the ledger's lock, the nonce recorded
//! last, so a rejected command changes no state (a stale command does not
//! burn its nonce).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kasmina_core::{Clock, TelemetrySink};
use leyline::command::canonical_bytes;
use leyline::{AdaptationCommand, Metric, Outcome, ReasonCode, TelemetryEvent, TelemetryLevel};

use super::key::HmacKey;
use super::ledger::{InsertReport, LedgerStats, MAX_NONCE_BYTES, NonceError, NonceLedger, Refused};
use crate::settings::SecuritySettings;
use crate::telemetry::clip;
use crate::telemetry::counters::{IntervalCounter, ReasonCounters};

/// Longest untrusted string copied into a telemetry attribute.
const ATTR_CAP: usize = 128;

/// Run-time timing of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Commands issued longer ago than this are stale, ms.
    pub freshness_window_ms: u64,
    /// Commands issued further ahead than this are refused, ms.
    pub future_skew_ms: u64,
}

impl VerifierConfig {
    /// The timing the settings give.
    pub fn from_settings(security: &SecuritySettings) -> Self {
        VerifierConfig {
            freshness_window_ms: security.freshness_window_s.saturating_mul(1_000),
            future_skew_ms: security.future_skew_s.saturating_mul(1_000),
        }
    }
}

/// A configuration the verifier refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    /// A zero freshness window would refuse every command.
    #[error("freshness window must be greater than zero")]
    ZeroFreshnessWindow,
    /// A window longer than the nonce TTL would let a command be replayed
    /// after its nonce expired but while it is still fresh.
    #[error(
        "freshness window {window_ms} ms + future skew {skew_ms} ms is not below the nonce TTL {ttl_ms} ms: replays would be accepted"
    )]
    WindowExceedsNonceTtl {
        /// Requested window.
        window_ms: u64,
        /// Future skew.
        skew_ms: u64,
        /// The ledger's TTL.
        ttl_ms: u64,
    },
}

/// A command that passed the envelope. Only the verifier makes these, so a
/// function taking one cannot be handed an unverified command.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCommand {
    command: AdaptationCommand,
    verified_at_ms: u64,
}

impl VerifiedCommand {
    /// The command.
    pub fn command(&self) -> &AdaptationCommand {
        &self.command
    }

    /// When it was verified (ms since the Unix epoch, verifier's clock).
    pub fn verified_at_ms(&self) -> u64 {
        self.verified_at_ms
    }

    /// Takes the command out.
    pub fn into_command(self) -> AdaptationCommand {
        self.command
    }
}

/// Counters of the verifier at one instant (cumulative or one interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierStats {
    /// Commands accepted.
    pub accepted: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<ReasonCode, u64>,
    /// Freshness window in force, ms.
    pub freshness_window_ms: u64,
    /// Future skew, ms.
    pub future_skew_ms: u64,
    /// The nonce ledger (always cumulative).
    pub ledger: LedgerStats,
}

impl VerifierStats {
    /// The stats as telemetry metrics (`kasmina.security.*`).
    pub fn to_metrics(&self) -> Vec<Metric> {
        let metric = |name: &str, value: u64, unit: &str, labels: BTreeMap<String, String>| Metric {
            name: name.to_owned(),
            value: value as f64,
            unit: unit.to_owned(),
            labels,
        };
        let mut out = vec![
            metric("kasmina.security.accepted", self.accepted, "count", BTreeMap::new()),
            metric("kasmina.security.freshness_window", self.freshness_window_ms, "ms", BTreeMap::new()),
            metric("kasmina.security.nonce_ledger_len", self.ledger.len as u64, "count", BTreeMap::new()),
            metric("kasmina.security.nonce_truncations", self.ledger.truncations, "count", BTreeMap::new()),
        ];
        for (reason, count) in &self.rejected {
            let labels = BTreeMap::from([("reason".to_owned(), reason.as_str().to_owned())]);
            out.push(metric("kasmina.security.rejected", *count, "count", labels));
        }
        out
    }
}

/// Verifies signed commands. Thread-safe; share it in an `Arc`.
pub struct CommandVerifier {
    key: HmacKey,
    ledger: Arc<NonceLedger>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TelemetrySink>,
    freshness_window_ms: AtomicU64,
    future_skew_ms: u64,
    accepted: IntervalCounter,
    rejected: ReasonCounters,
}

impl std::fmt::Debug for CommandVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandVerifier")
            .field("key", &self.key)
            .field("freshness_window_ms", &self.freshness_window_ms.load(Ordering::Relaxed))
            .field("future_skew_ms", &self.future_skew_ms)
            .field("ledger", &self.ledger.stats())
            .finish()
    }
}

impl CommandVerifier {
    /// A verifier over an existing ledger (shared with its purger).
    pub fn new(
        key: HmacKey,
        ledger: Arc<NonceLedger>,
        config: VerifierConfig,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn TelemetrySink>,
    ) -> Result<CommandVerifier, VerifierError> {
        check_window(config.freshness_window_ms, config.future_skew_ms, ledger.ttl_ms())?;
        Ok(CommandVerifier {
            key,
            ledger,
            clock,
            sink,
            freshness_window_ms: AtomicU64::new(config.freshness_window_ms),
            future_skew_ms: config.future_skew_ms,
            accepted: IntervalCounter::new(),
            rejected: ReasonCounters::new(),
        })
    }

    /// A verifier with a new ledger sized and timed by the settings.
    pub fn from_settings(
        security: &SecuritySettings,
        key: HmacKey,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn TelemetrySink>,
    ) -> Result<CommandVerifier, VerifierError> {
        let ledger = Arc::new(NonceLedger::new(security.nonce_ttl_s.saturating_mul(1_000), security.nonce_capacity));
        Self::new(key, ledger, VerifierConfig::from_settings(security), clock, sink)
    }

    /// The nonce ledger (to hand to a [`super::purger::NoncePurger`]).
    pub fn ledger(&self) -> &Arc<NonceLedger> {
        &self.ledger
    }

    /// The freshness window in force.
    pub fn freshness_window(&self) -> Duration {
        Duration::from_millis(self.freshness_window_ms.load(Ordering::Relaxed))
    }

    /// Changes the freshness window at run time; emits an event naming the
    /// old and new window. Refuses zero and windows the nonce TTL cannot cover.
    pub fn set_freshness_window(&self, window: Duration) -> Result<(), VerifierError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        check_window(window_ms, self.future_skew_ms, self.ledger.ttl_ms())?;
        let old = self.freshness_window_ms.swap(window_ms, Ordering::Relaxed);
        self.sink.emit(
            TelemetryEvent::new(
                "kasmina.security.freshness_window_changed",
                TelemetryLevel::Warning,
                format!("freshness window changed from {old} ms to {window_ms} ms"),
                self.clock.now_ms(),
            )
            .attr("old_ms", old)
            .attr("new_ms", window_ms),
        );
        Ok(())
    }

    /// Verifies `command`; on success it is wrapped so later stages know.
    pub fn verify(&self, command: AdaptationCommand) -> Result<VerifiedCommand, Outcome> {
        let verified_at_ms = self.run(&command)?;
        Ok(VerifiedCommand { command, verified_at_ms })
    }

    /// Verifies `command` and returns the structured outcome.
    pub fn check(&self, command: &AdaptationCommand) -> Outcome {
        match self.run(command) {
            Ok(_) => Outcome::accepted().with("command_id", clip(&command.command_id, ATTR_CAP)),
            Err(outcome) => outcome,
        }
    }

    fn run(&self, command: &AdaptationCommand) -> Result<u64, Outcome> {
        let _span = tracing::debug_span!("kasmina.security.verify", command_id = %clip(&command.command_id, ATTR_CAP))
            .entered();
        let now = self.clock.now_ms();
        let window = self.freshness_window_ms.load(Ordering::Relaxed);
        if let Err((reason, detail)) = self.envelope_checks(command) {
            return Err(self.reject(command, reason, detail, now, window));
        }
        // Replay, then the timestamps, then the insert: one ledger lock.
        let checked =
            self.ledger.check_and_insert_if(&command.command_id, now, || self.timestamp_checks(command, now, window));
        match checked {
            Ok(report) => {
                self.report_eviction(report, now, window);
                self.accepted.incr();
                Ok(now)
            }
            Err(Refused::Check((reason, detail))) => Err(self.reject(command, reason, detail, now, window)),
            Err(Refused::Nonce(NonceError::Replayed { expires_in_ms })) => Err(self.reject(
                command,
                ReasonCode::NonceReplayed,
                format!("command id seen within the nonce TTL; expires in {expires_in_ms} ms"),
                now,
                window,
            )),
            Err(Refused::Nonce(err @ NonceError::BadLength { .. })) => {
                Err(self.reject(command, ReasonCode::InvalidField, err.to_string(), now, window))
            }
        }
    }

    /// The signature and the command id; changes nothing.
    fn envelope_checks(&self, command: &AdaptationCommand) -> Result<(), (ReasonCode, String)> {
        let Some(signature) = command.signature.as_deref().filter(|s| !s.is_empty()) else {
            return Err((ReasonCode::MissingSignature, "command carries no signature".to_owned()));
        };
        if !self.key.verify(&canonical_bytes(command), signature) {
            return Err((
                ReasonCode::InvalidSignature,
                "HMAC-SHA256 over the canonical bytes does not match".to_owned(),
            ));
        }
        if command.command_id.is_empty() {
            return Err((ReasonCode::MissingCommandId, "command_id (the nonce) is empty".to_owned()));
        }
        if command.command_id.len() > MAX_NONCE_BYTES {
            return Err((
                ReasonCode::InvalidField,
                format!("command_id is {} bytes; the cap is {MAX_NONCE_BYTES}", command.command_id.len()),
            ));
        }
        Ok(())
    }

    /// The timestamp: present, fresh, not ahead of the clock; changes nothing.
    fn timestamp_checks(&self, command: &AdaptationCommand, now: u64, window: u64) -> Result<(), (ReasonCode, String)> {
        let Some(issued_at) = command.issued_at_ms else {
            return Err((ReasonCode::MissingTimestamp, "issued_at is missing".to_owned()));
        };
        let age = now.saturating_sub(issued_at);
        if age > window {
            return Err((
                ReasonCode::StaleCommand,
                format!("issued {age} ms ago; the freshness window is {window} ms"),
            ));
        }
        let ahead = issued_at.saturating_sub(now);
        if ahead > self.future_skew_ms {
            return Err((
                ReasonCode::IssuedInFuture,
                format!("issued {ahead} ms in the future; the allowed skew is {} ms", self.future_skew_ms),
            ));
        }
        Ok(())
    }

    fn reject(
        &self,
        command: &AdaptationCommand,
        reason: ReasonCode,
        detail: String,
        now: u64,
        window: u64,
    ) -> Outcome {
        self.rejected.incr(reason);
        let level = if reason.is_security_critical() { TelemetryLevel::Critical } else { TelemetryLevel::Warning };
        // The command is untrusted: its strings are clipped, and its seed id
        // goes in an attribute rather than `seed_id`, so a flood of forged
        // commands cannot create per-seed state downstream.
        let mut event =
            TelemetryEvent::new("kasmina.security.command_rejected", level, format!("command rejected: {detail}"), now)
                .attr("reason", reason.as_str())
                .attr("command_id", clip(&command.command_id, ATTR_CAP))
                .attr("claimed_seed_id", clip(&command.target_seed_id, ATTR_CAP))
                .attr("command_type", command.command_type().as_str())
                .attr("freshness_window_ms", window)
                .attr("future_skew_ms", self.future_skew_ms);
        if let Some(issued_at) = command.issued_at_ms {
            event = event.attr("issued_at_ms", issued_at);
        }
        self.sink.emit(event);
        Outcome::rejected(reason, detail)
            .with("command_id", clip(&command.command_id, ATTR_CAP))
            .with("freshness_window_ms", window.to_string())
    }

    fn report_eviction(&self, report: InsertReport, now: u64, window: u64) {
        let Some(inserted_at) = report.evicted_inserted_at_ms else { return };
        // An evicted id whose command may still be fresh could be replayed.
        let exposed = now.saturating_sub(inserted_at) <= window.saturating_add(self.future_skew_ms);
        let level = if exposed { TelemetryLevel::Error } else { TelemetryLevel::Warning };
        self.sink.emit(
            TelemetryEvent::new(
                "kasmina.security.nonce_evicted",
                level,
                "nonce ledger full: earliest expiry evicted",
                now,
            )
            .attr("evicted_age_ms", now.saturating_sub(inserted_at))
            .attr("replay_window_exposed", exposed)
            .attr("truncations", self.ledger.truncations()),
        );
    }

    /// Cumulative counters.
    pub fn stats(&self) -> VerifierStats {
        VerifierStats {
            accepted: self.accepted.total(),
            rejected: self.rejected.totals(),
            freshness_window_ms: self.freshness_window_ms.load(Ordering::Relaxed),
            future_skew_ms: self.future_skew_ms,
            ledger: self.ledger.stats(),
        }
    }

    /// Counters since the last call (snapshot-and-reset of the interval part).
    pub fn take_interval_stats(&self) -> VerifierStats {
        VerifierStats {
            accepted: self.accepted.take_interval(),
            rejected: self.rejected.take_interval(),
            freshness_window_ms: self.freshness_window_ms.load(Ordering::Relaxed),
            future_skew_ms: self.future_skew_ms,
            ledger: self.ledger.stats(),
        }
    }

    /// Rejections so far for one reason.
    pub fn rejections(&self, reason: ReasonCode) -> u64 {
        self.rejected.total(reason)
    }
}

fn check_window(window_ms: u64, skew_ms: u64, ttl_ms: u64) -> Result<(), VerifierError> {
    if window_ms == 0 {
        return Err(VerifierError::ZeroFreshnessWindow);
    }
    // At exactly window + skew == TTL a command issued at the skew limit is
    // still fresh the instant its nonce expires, so the bound is strict.
    if window_ms.saturating_add(skew_ms) >= ttl_ms {
        return Err(VerifierError::WindowExceedsNonceTtl { window_ms, skew_ms, ttl_ms });
    }
    Ok(())
}
