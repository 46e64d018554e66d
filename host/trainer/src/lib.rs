//! kasmina-trainer: the trainer side of Kasmina on tch, so a training loop
//! never re-implements blending, isolation or the directive protocol.
//!
//! A user hands [`Trainer::register`] a [`leyline::api::KasminaApi`] — the
//! embedded host or a `kasmina-client` connection to `kasmina serve` — and a
//! [`TrainerConfig`] (run id, device, sites with their shapes, seed slots,
//! seed optimizer), then calls it at three points of an ordinary loop.
//!
//! Module map, in the order a step meets them:
//! - [`config`]: [`TrainerConfig`], the declaration sent at registration;
//! - [`trainer`]: [`Trainer`] — `site` in forward, `distill` for the loss,
//!   `after_backward` (isolation), `optimizer_step`, and `end_step`, which
//!   sends the [`leyline::api::StepReport`] and applies what comes back;
//! - `seed`: one grafted seed — its slot, kernel digest and this step's
//!   measurements (latency, failure, isolation, blend statistics);
//! - [`directives`]: applying each [`leyline::api::GraftDirective`]; kernels
//!   are grafted only after their SHA-256 matches, and every refusal is a
//!   [`TrainerEvent`], never an aborted run;
//! - [`checkpoint`]: rollback checkpoints of the weights and seed slots,
//!   captured and restored on directive — in memory, or on disk in
//!   [`TrainerConfig::checkpoint_dir`] — timed and reported in the next
//!   step report; [`Trainer::reconnect`] declares what the trainer holds so
//!   a restarted daemon adopts it;
//! - [`error`]: [`TrainerError`] for the caller's own mistakes.
//!
//! The isolation and distillation settings come from the host's answer to
//! registration, so one settings file rules both sides.

pub mod checkpoint;
pub mod config;
pub mod directives;
pub mod error;
mod seed;
pub mod trainer;

pub use checkpoint::{DISK_CHECKPOINTS_KEPT, MEMORY_CHECKPOINTS_KEPT};
pub use config::{DEFAULT_SEED_OPTIMIZER, TrainerConfig};
pub use directives::TrainerEvent;
pub use error::{Result, TrainerError};
pub use kasmina_tensor::{ForwardCtx, ForwardMode, SeedOptimizerConfig};
pub use seed::SeedFailure;
pub use trainer::{SeedView, StepResult, Trainer};
