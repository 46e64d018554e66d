//! Shared pieces of the runnable examples.
//!
//! - [`digits`]: the scikit-learn digits data set (read from the set-up
//!   cache), a fixed train/test split, and the small host network the demo
//!   trains.

pub mod digits;
