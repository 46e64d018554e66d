//! kasmina-client: everything a process needs to talk to a running Kasmina
//! daemon, and nothing more — it depends on `leyline` and small crates only
//! (no tokio, tch or wasmtime; `scripts/test.sh` checks), so controllers,
//! trainers and tools link it cheaply.
//!
//! Module map, in the order a controller uses them:
//! - [`key`]: [`HmacKey`], the HMAC-SHA256 key loaded from a file, an
//!   environment variable or hex (length-checked, never printed), with
//!   [`sign`]/[`sign_in_place`] over `leyline`'s canonical command bytes;
//! - [`command`]: [`CommandBuilder`], one constructor per command type,
//!   filling a fresh random `command_id`, `issued_at_ms` = now and the
//!   contract version, then signing;
//! - [`client`]: [`DaemonClient`], a blocking client implementing
//!   [`leyline::api::KasminaApi`] over a Unix or loopback TCP socket (a
//!   trainer swaps embedded ↔ daemon by swapping its `Arc<dyn KasminaApi>`),
//!   and [`TelemetryStream`] for observers. It polls briefly
//!   ([`ClientSettings::spin_wait`], 200 µs) for an answer before sleeping:
//!   waking a blocked thread costs ~35 µs on the 2-core VM, more than the
//!   whole round trip;
//! - [`codec`]: length-delimited postcard frames with size caps and typed
//!   errors (oversized, truncated, garbage, EOF): [`codec::encode_frame`]
//!   and the sans-IO [`FrameDecoder`], the one decoder behind both the
//!   blocking readers here and the daemon's async reader.

pub mod client;
pub mod codec;
pub mod command;
pub mod key;

pub use client::{ClientError, ClientSettings, DaemonClient, TelemetryStream};
pub use codec::{FrameDecoder, FrameError};
pub use command::CommandBuilder;
pub use key::{HmacKey, KeyError, sign, sign_in_place};
