//! Kasmina's data plane on tch (libtorch): where a seed actually touches the
//! model (SPEC.md §5, §6, §8).
//!
//! Module map, in the order a training step meets them:
//! - [`model`]: [`SeededModel`], the host's named sites in forward order; the
//!   trainer hands each site's output to [`SeededModel::apply`];
//! - [`slot`]: [`SeedSlot`], one seed at one site: kernel, blend spec, the
//!   directed α, stage and pause flag → the output for that stage (α is
//!   decided by the control plane's one ramp, never locally);
//! - [`kernel`]: the [`SeedKernel`] trait and its TorchScript
//!   ([`ScriptedKernel`]) and native ([`NativeKernel`]) implementations;
//! - [`blend`]: validated [`BlendSpec`]s, the fused kernels
//!   ([`blend::kernels`]: autograd path and reused-buffer no-grad path) and
//!   per-step [`BlendStats`];
//! - after backward, [`isolation`]: the sampled-cosine gradient isolation
//!   monitor (plus an input-leak probe for gates) with its per-seed breaker;
//! - [`registry`]: which parameters belong to which seed, teacher immutable;
//!   [`optim`]: per-seed optimizers joined/left with the lifecycle;
//! - [`kd`]: the optional teacher and the distillation loss;
//! - [`error`]: [`TensorError`], one variant per thing a caller can act on.
//!
//! Everything shaped by outside input uses tch's fallible `f_*` calls; no
//! function here writes to a tensor its caller passed in.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod blend;
pub mod error;
pub mod isolation;
pub mod kd;
pub mod kernel;
pub mod model;
pub mod optim;
pub mod registry;
pub mod slot;

pub use blend::stats::BlendStats;
pub use blend::{BlendParams, BlendSpec, ConfidenceGate};
pub use error::{Result, TensorError};
pub use isolation::{IsolationConfig, IsolationMonitor, IsolationReport};
pub use kd::{DEFAULT_KD_TEMPERATURE, DEFAULT_KD_WEIGHT, Distiller, Teacher, kd_loss, mix_losses};
pub use kernel::{NativeKernel, ScriptedKernel, SeedKernel};
pub use model::SeededModel;
pub use optim::{JoinError, SeedOptimizerConfig, SeedOptimizers};
pub use registry::{ParamId, ParameterRegistry, RegistryError, UpdateRefusal};
pub use slot::{ForwardCtx, ForwardMode, SeedSlot, SlotOutput};
