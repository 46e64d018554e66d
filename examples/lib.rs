//! Shared pieces of the runnable examples.
//!
//! - [`digits`]: the scikit-learn digits data set (read from the set-up
//!   cache) and a fixed train/validation/test split;
//! - [`demo`]: the digits scenario the README's first command runs — the
//!   host networks (conv and linear), a trainer with seed slots, a scripted
//!   controller sending signed commands, the three-run comparison (baseline,
//!   seeded, static) and the report (timeline, table, verdict, JSON summary,
//!   SVG figure). It runs against any [`leyline::api::KasminaApi`]: the
//!   embedded host or a daemon.

pub mod demo;
pub mod digits;
