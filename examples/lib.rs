//! Shared pieces of the runnable examples.
//!
//! - [`digits`]: the scikit-learn digits data set (read from the set-up
//!   cache), a fixed train/validation/test split, and the small host network;
//! - [`demo`]: the digits scenario the README's first command runs — a
//!   trainer with seed slots, a scripted controller sending signed commands,
//!   and the report (timeline, accuracy table, JSON summary). It runs against
//!   any [`leyline::api::KasminaApi`]: the embedded host or a daemon.

pub mod demo;
pub mod digits;
