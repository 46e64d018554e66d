//! The security envelope of every command (SPEC.md §3).
//!
//! - [`key`]: the HMAC-SHA256 key (file or environment, hex, never printed)
//!   and [`sign`] for controllers, tests and the CLI — re-exported from
//!   `kasmina-client` — plus [`KeyFromSettings`], the key the settings name;
//! - [`ledger`]: the bounded, TTL'd nonce ledger with O(log n) operations;
//! - [`purger`]: the background thread that purges the ledger on a timer;
//! - [`verifier`]: the checks in SPEC order, per-reason counters, telemetry
//!   on every rejection, and no state change when a command is refused.

pub mod key;
pub mod ledger;
pub mod purger;
pub mod verifier;

pub use key::{HmacKey, KeyError, KeyFromSettings, sign, sign_in_place};
pub use ledger::{LedgerStats, NonceError, NonceLedger, Refused};
pub use purger::{NoncePurger, PurgerError};
pub use verifier::{CommandVerifier, VerifiedCommand, VerifierConfig, VerifierError, VerifierStats};
