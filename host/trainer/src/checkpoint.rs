//! Rollback checkpoints on the trainer's side (SPEC.md §8): the weights
//! half of a rollback point, captured and restored on the control plane's
//! directives.
//!
//! A checkpoint holds copies of the host parameters the trainer watches
//! ([`Trainer::watch_host_parameters`], in that order) and of every grafted
//! seed's kernel parameters, with each slot's state (stage, α, paused,
//! blueprint, kernel digest, blend). In memory for the fast path (the
//! newest [`MEMORY_CHECKPOINTS_KEPT`]); on disk for the full path, in the
//! directory given to [`TrainerConfig::checkpoint_dir`] (the newest
//! [`DISK_CHECKPOINTS_KEPT`] files, written atomically with a SHA-256, see
//! `disk`). Evictions are reported, so the control plane never offers a
//! point that cannot be restored.
//!
//! A restore is all or nothing: the checkpoint is loaded and verified, the
//! host parameters' count, shapes and dtypes checked, and every seed that is
//! not grafted as it was rebuilt from its verified kernel (digest checked)
//! before anything changes; then the values are copied back and the slots
//! returned to their recorded stage, α and pause. Seed optimizer moments
//! are not part of a checkpoint: a restored seed's optimizer starts fresh.
//!
//! Each capture and restore is timed around the real work and reported in
//! the next step report ([`CheckpointEvent`]), which is how the control
//! plane measures readiness against its SLA.
//!
//! [`TrainerConfig::checkpoint_dir`]: crate::TrainerConfig::checkpoint_dir

pub(crate) mod disk;

use std::collections::VecDeque;
use std::time::Instant;

use leyline::SeedStage;
use leyline::api::{BlendSpec, CheckpointAction, CheckpointEvent, HeldSeed, KasminaApi};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::directives::TrainerEvent;
use crate::seed::SeedRuntime;
use crate::trainer::Trainer;

/// In-memory checkpoints kept; older ones are evicted (and reported).
pub const MEMORY_CHECKPOINTS_KEPT: usize = 4;
/// Checkpoint files kept in the checkpoint directory.
pub const DISK_CHECKPOINTS_KEPT: usize = 4;

/// The running stages in the order a slot walks them.
const PATH: [SeedStage; 5] =
    [SeedStage::Training, SeedStage::Blending, SeedStage::Shadowing, SeedStage::Probationary, SeedStage::Fossilized];

/// One grafted seed's slot as captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SlotRecord {
    pub(crate) seed_id: String,
    pub(crate) site: String,
    pub(crate) blueprint_id: String,
    pub(crate) sha256: String,
    pub(crate) stage: SeedStage,
    pub(crate) alpha: f64,
    pub(crate) paused: bool,
    pub(crate) blend: BlendSpec,
    pub(crate) tensors: usize,
}

/// The weights half of a rollback point.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub(crate) point_id: String,
    pub(crate) host: Vec<Tensor>,
    pub(crate) seeds: Vec<(SlotRecord, Vec<Tensor>)>,
}

/// Checkpoints held, and what the next step report says about them.
#[derive(Debug, Default)]
pub(crate) struct CheckpointStore {
    memory: VecDeque<Checkpoint>,
    disk: VecDeque<String>,
    pub(crate) events: Vec<CheckpointEvent>,
}

impl CheckpointStore {
    /// A store that already knows the checkpoint files in `dir`.
    pub(crate) fn open(dir: Option<&std::path::Path>) -> crate::Result<Self> {
        let mut store = CheckpointStore::default();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::TrainerError::Config(format!("checkpoint directory {}: {e}", dir.display())))?;
            store.disk = disk::list(dir).map_err(crate::TrainerError::Config)?.into();
        }
        Ok(store)
    }

    /// Every checkpoint id held (memory and disk).
    pub(crate) fn ids(&self) -> Vec<String> {
        self.memory.iter().map(|c| c.point_id.clone()).chain(self.disk.iter().cloned()).collect()
    }
}

impl<A: KasminaApi> Trainer<A> {
    /// Applies a Checkpoint directive: captures, times and reports.
    pub(crate) fn capture_checkpoint(&mut self, point_id: &str, durable: bool) -> TrainerEvent {
        let started = Instant::now();
        let result = self.snapshot(point_id).and_then(|checkpoint| self.keep(checkpoint, durable));
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        match result {
            Ok(bytes) => {
                self.checkpoints.events.push(CheckpointEvent::Captured {
                    point_id: point_id.to_owned(),
                    durable,
                    elapsed_us,
                    bytes,
                });
                TrainerEvent::CheckpointCaptured { point_id: point_id.to_owned(), durable, bytes }
            }
            Err(reason) => self.checkpoint_failed(point_id, CheckpointAction::Capture, reason),
        }
    }

    /// Applies a RestoreCheckpoint directive: all or nothing, timed and reported.
    pub(crate) fn restore_checkpoint(&mut self, point_id: &str) -> TrainerEvent {
        let started = Instant::now();
        match self.restore(point_id) {
            Ok(()) => {
                let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                self.checkpoints.events.push(CheckpointEvent::Restored { point_id: point_id.to_owned(), elapsed_us });
                TrainerEvent::CheckpointRestored { point_id: point_id.to_owned() }
            }
            Err(reason) => self.checkpoint_failed(point_id, CheckpointAction::Restore, reason),
        }
    }

    /// The seeds this trainer runs, as a re-registration declares them.
    pub(crate) fn held_seeds(&self) -> Vec<HeldSeed> {
        self.seeds
            .iter()
            .map(|(id, s)| HeldSeed {
                seed_id: id.clone(),
                blueprint_id: s.blueprint_id.clone(),
                kernel_sha256: s.sha256.clone(),
                stage: s.slot.stage(),
                alpha: s.slot.alpha(),
                paused: s.slot.is_paused(),
            })
            .collect()
    }

    fn checkpoint_failed(&mut self, point_id: &str, action: CheckpointAction, reason: String) -> TrainerEvent {
        tracing::warn!(point_id, action = action.as_str(), %reason, "kasmina.trainer.checkpoint_failed");
        self.checkpoints.events.push(CheckpointEvent::Failed {
            point_id: point_id.to_owned(),
            action,
            reason: reason.clone(),
        });
        TrainerEvent::CheckpointFailed { point_id: point_id.to_owned(), action, reason }
    }

    /// Copies of everything a restore needs.
    fn snapshot(&self, point_id: &str) -> Result<Checkpoint, String> {
        let copy = |t: &Tensor| -> Result<Tensor, String> {
            tch::no_grad(|| {
                let mut out = t.f_zeros_like()?;
                out.f_copy_(t)?;
                Ok::<_, tch::TchError>(out)
            })
            .map_err(|e| format!("copying a tensor: {e}"))
        };
        let host = self.host_params.iter().map(copy).collect::<Result<Vec<_>, _>>()?;
        let mut seeds = Vec::new();
        for (id, s) in &self.seeds {
            let Some(kernel) = s.slot.kernel() else { continue };
            let tensors = kernel.parameters().iter().map(copy).collect::<Result<Vec<_>, _>>()?;
            let record = SlotRecord {
                seed_id: id.clone(),
                site: s.slot.site().to_owned(),
                blueprint_id: s.blueprint_id.clone(),
                sha256: s.sha256.clone(),
                stage: s.slot.stage(),
                alpha: s.slot.alpha(),
                paused: s.slot.is_paused(),
                blend: s.blend.clone(),
                tensors: tensors.len(),
            };
            seeds.push((record, tensors));
        }
        Ok(Checkpoint { point_id: point_id.to_owned(), host, seeds })
    }

    /// Keeps a captured checkpoint, evicting the oldest beyond the bound;
    /// returns the bytes it holds.
    fn keep(&mut self, checkpoint: Checkpoint, durable: bool) -> Result<u64, String> {
        if !durable {
            let bytes = tensor_bytes(&checkpoint);
            self.checkpoints.memory.push_back(checkpoint);
            while self.checkpoints.memory.len() > MEMORY_CHECKPOINTS_KEPT {
                if let Some(old) = self.checkpoints.memory.pop_front() {
                    self.checkpoints.events.push(CheckpointEvent::Evicted {
                        point_id: old.point_id,
                        reason: format!("only the newest {MEMORY_CHECKPOINTS_KEPT} in-memory checkpoints are kept"),
                    });
                }
            }
            return Ok(bytes);
        }
        let dir = self.config.checkpoint_dir.clone().ok_or_else(|| {
            "no checkpoint directory: durable checkpoints need TrainerConfig::checkpoint_dir".to_owned()
        })?;
        let bytes = disk::write(&dir, &checkpoint)?;
        self.checkpoints.disk.retain(|id| *id != checkpoint.point_id);
        self.checkpoints.disk.push_back(checkpoint.point_id);
        while self.checkpoints.disk.len() > DISK_CHECKPOINTS_KEPT {
            let Some(old) = self.checkpoints.disk.pop_front() else { break };
            let reason = match disk::remove(&dir, &old) {
                Ok(()) => format!("only the newest {DISK_CHECKPOINTS_KEPT} checkpoint files are kept"),
                Err(e) => format!("evicted, but its file could not be removed: {e}"),
            };
            self.checkpoints.events.push(CheckpointEvent::Evicted { point_id: old, reason });
        }
        Ok(bytes)
    }

    /// Everything is checked and built before the first change.
    fn restore(&mut self, point_id: &str) -> Result<(), String> {
        let checkpoint = match self.checkpoints.memory.iter().position(|c| c.point_id == point_id) {
            Some(i) => self.snapshot_of_memory(i),
            None if self.checkpoints.disk.contains(&point_id.to_owned()) => {
                let dir = self.config.checkpoint_dir.clone().ok_or("no checkpoint directory configured")?;
                disk::read(&dir, point_id, self.config.device)?
            }
            None => return Err(format!("this trainer holds no checkpoint {point_id}")),
        };
        check_shapes("host parameter", &self.host_params, &checkpoint.host)?;
        // Seeds grafted exactly as recorded keep their slot; the rest are rebuilt.
        let mut rebuilt = Vec::new();
        for (record, tensors) in &checkpoint.seeds {
            let keep = self
                .seeds
                .get(&record.seed_id)
                .is_some_and(|s| s.sha256 == record.sha256 && s.slot.stage() == record.stage);
            let params = if keep {
                self.seeds[&record.seed_id].slot.kernel().map(|k| k.parameters()).unwrap_or_default()
            } else {
                let (slot, params) = self
                    .build_slot(&record.seed_id, &record.site, &record.blueprint_id, &record.sha256, &record.blend)
                    .map_err(|e| format!("seed {}: {e}", record.seed_id))?;
                let shared: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
                rebuilt.push((record.clone(), slot, params));
                shared
            };
            check_shapes(&format!("seed {} parameter", record.seed_id), &params, tensors)?;
        }
        // Apply.
        let recorded: Vec<&str> = checkpoint.seeds.iter().map(|(r, _)| r.seed_id.as_str()).collect();
        let stale: Vec<String> = self
            .seeds
            .keys()
            .filter(|id| !recorded.contains(&id.as_str()) || rebuilt.iter().any(|(r, _, _)| r.seed_id == **id))
            .cloned()
            .collect();
        for id in stale {
            self.ungraft(&id);
        }
        for (record, slot, params) in rebuilt {
            self.registry.register_seed(&record.seed_id, &params).map_err(|e| e.to_string())?;
            let runtime = SeedRuntime::new(slot, record.blueprint_id.clone(), record.sha256.clone(), record.blend);
            self.seeds.insert(record.seed_id.clone(), runtime);
            for stage in PATH.iter().take_while(|s| position(**s) <= position(record.stage)) {
                self.stage(&record.seed_id, *stage, record.alpha)?;
            }
        }
        copy_into(&self.host_params, &checkpoint.host)?;
        for (record, tensors) in &checkpoint.seeds {
            let seed = self.seeds.get_mut(&record.seed_id).ok_or("a restored seed vanished")?;
            let params = seed.slot.kernel().map(|k| k.parameters()).unwrap_or_default();
            copy_into(&params, tensors)?;
            if record.stage == SeedStage::Blending {
                seed.slot.set_alpha(record.alpha).map_err(|e| e.to_string())?;
            }
            seed.slot.set_paused(record.paused);
        }
        Ok(())
    }

    /// An in-memory checkpoint, shared (tensors are only read).
    fn snapshot_of_memory(&self, index: usize) -> Checkpoint {
        let c = &self.checkpoints.memory[index];
        Checkpoint {
            point_id: c.point_id.clone(),
            host: c.host.iter().map(Tensor::shallow_clone).collect(),
            seeds: c.seeds.iter().map(|(r, t)| (r.clone(), t.iter().map(Tensor::shallow_clone).collect())).collect(),
        }
    }
}

fn position(stage: SeedStage) -> Option<usize> {
    PATH.iter().position(|s| *s == stage)
}

fn tensor_bytes(c: &Checkpoint) -> u64 {
    let all: Vec<Tensor> =
        c.host.iter().chain(c.seeds.iter().flat_map(|(_, t)| t)).map(Tensor::shallow_clone).collect();
    kasmina_tensor::kernel::tensor_bytes(&all)
}

/// Same count, shapes and dtypes, or why not.
fn check_shapes(what: &str, live: &[Tensor], saved: &[Tensor]) -> Result<(), String> {
    if live.len() != saved.len() {
        return Err(format!("{} {what}s now, {} in the checkpoint", live.len(), saved.len()));
    }
    for (i, (l, s)) in live.iter().zip(saved).enumerate() {
        if l.size() != s.size() || l.kind() != s.kind() {
            return Err(format!(
                "{what} {i} is {:?} {:?} now, {:?} {:?} in the checkpoint",
                l.size(),
                l.kind(),
                s.size(),
                s.kind()
            ));
        }
    }
    Ok(())
}

/// Copies saved values into the live tensors (no autograd).
fn copy_into(live: &[Tensor], saved: &[Tensor]) -> Result<(), String> {
    tch::no_grad(|| {
        for (l, s) in live.iter().zip(saved) {
            let mut target = l.shallow_clone();
            target.f_copy_(s)?;
        }
        Ok::<_, tch::TchError>(())
    })
    .map_err(|e| format!("copying weights back: {e}"))
}
