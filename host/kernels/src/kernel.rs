//! A loaded kernel: verified bytes → `tch::CModule`, prewarmed against its
//! declared interface.
//!
//! Sharing: `CModule` is `Send + Sync` in tch 0.24, and TorchScript's
//! `forward` is safe to call from several threads at once, so one inference
//! module is shared as `Arc<LoadedKernel>` (it is put in eval mode before it
//! is shared and never mutated afterwards). A *trainable* module cannot be
//! shared — each seed trains its own parameters — so the kernel keeps its
//! verified bytes and [`LoadedKernel::instantiate_trainable`] loads a fresh
//! `TrainableCModule` from them per seed, without touching the disk again.

use std::time::Instant;

use leyline::{BlueprintDescriptor, DType, Dim, TensorSpec};
use tch::jit::{CModule, IValue, TrainableCModule};
use tch::{Device, Kind, Tensor};

use crate::KernelError;
use crate::urza::VerifiedArtifact;

/// Batch size of the probe input built from the declared interface. Two, not
/// one, so a kernel that silently squeezes the batch dimension is caught.
pub const PROBE_BATCH: i64 = 2;

/// How a load prewarms: timed runs, and the CPU memory each probe forward
/// pass of the kernel's code may ask for (see [`crate::alloc_cap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrewarmLimits {
    /// Timed runs after the untimed first one.
    pub runs: u32,
    /// Bytes of CPU tensor memory one forward pass may request in all.
    pub memory_bytes: u64,
}

/// What prewarm measured (feeds gates G2 latency and G3 interface).
#[derive(Debug, Clone, PartialEq)]
pub struct PrewarmReport {
    /// Batch size of the probe input.
    pub probe_batch: i64,
    /// Timed runs (after one untimed warm-up run).
    pub runs: u32,
    /// Median forward latency, µs.
    pub p50_us: u64,
    /// 95th-percentile forward latency, µs.
    pub p95_us: u64,
    /// Concrete output shapes of the probe run.
    pub output_shapes: Vec<Vec<i64>>,
    /// Whether every output matched its declared shape and dtype. Always
    /// true in a report attached to a loaded kernel: a mismatch fails the
    /// load with [`KernelError::InterfaceMismatch`].
    pub outputs_match: bool,
}

/// A verified, loaded, prewarmed kernel. Shared via `Arc`; immutable.
pub struct LoadedKernel {
    descriptor: BlueprintDescriptor,
    sha256: String,
    // Kept as the Vec the fetch filled: converting to Arc<[u8]> would copy it.
    bytes: Vec<u8>,
    module: CModule,
    device: Device,
    prewarm: PrewarmReport,
    loaded_at_ms: u64,
    load_us: u64,
}

impl std::fmt::Debug for LoadedKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKernel")
            .field("blueprint_id", &self.descriptor.blueprint_id)
            .field("sha256", &self.sha256)
            .field("bytes", &self.bytes.len())
            .field("prewarm", &self.prewarm)
            .finish()
    }
}

impl LoadedKernel {
    /// Loads verified bytes with libtorch, switches to eval mode and prewarms
    /// with `limits.runs` timed runs on a probe input, each forward pass
    /// under the memory cap.
    pub fn load(
        artifact: VerifiedArtifact,
        device: Device,
        limits: PrewarmLimits,
        now_ms: u64,
    ) -> Result<Self, KernelError> {
        let started = Instant::now();
        let VerifiedArtifact { entry, bytes } = artifact;
        let id = entry.descriptor.blueprint_id.clone();
        // libtorch reserves what the archive's pickles declare before
        // reading it: refuse declarations the archive cannot hold.
        crate::archive_check::check_archive(&bytes)
            .map_err(|detail| KernelError::LoadFailed { blueprint_id: id.clone(), detail })?;
        let mut module = CModule::load_data_on_device(&mut bytes.as_slice(), device)
            .map_err(|e| KernelError::LoadFailed { blueprint_id: id.clone(), detail: e.to_string() })?;
        module.f_set_eval().map_err(|e| KernelError::LoadFailed { blueprint_id: id.clone(), detail: e.to_string() })?;
        let prewarm = prewarm(&module, &entry.descriptor, device, limits)?;
        let load_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(LoadedKernel {
            descriptor: entry.descriptor,
            sha256: entry.artifact_sha256,
            bytes,
            module,
            device,
            prewarm,
            loaded_at_ms: now_ms,
            load_us,
        })
    }

    /// The descriptor this kernel was verified and prewarmed against.
    pub fn descriptor(&self) -> &BlueprintDescriptor {
        &self.descriptor
    }

    /// The blueprint id.
    pub fn blueprint_id(&self) -> &str {
        &self.descriptor.blueprint_id
    }

    /// SHA-256 (hex) of the verified artifact.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The shared inference module (eval mode). Do not switch its mode: it is
    /// shared by every user of this kernel.
    pub fn module(&self) -> &CModule {
        &self.module
    }

    /// Runs the inference module on `inputs`.
    pub fn forward(&self, inputs: &[Tensor]) -> Result<Tensor, tch::TchError> {
        self.module.forward_ts(inputs)
    }

    /// A new trainable module whose parameters are registered under `path`
    /// (so an optimizer over that `VarStore` trains this seed's copy only),
    /// loaded from the verified bytes held in memory.
    pub fn instantiate_trainable(&self, path: tch::nn::Path<'_>) -> Result<TrainableCModule, KernelError> {
        let mut reader: &[u8] = &self.bytes;
        let mut module = TrainableCModule::load_data(&mut reader, path).map_err(|e| KernelError::LoadFailed {
            blueprint_id: self.descriptor.blueprint_id.clone(),
            detail: e.to_string(),
        })?;
        module.f_set_train().map_err(|e| KernelError::LoadFailed {
            blueprint_id: self.descriptor.blueprint_id.clone(),
            detail: e.to_string(),
        })?;
        Ok(module)
    }

    /// The verified artifact bytes (e.g. to ship to a trainer process).
    pub fn artifact_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Device the module lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// What prewarm measured.
    pub fn prewarm(&self) -> &PrewarmReport {
        &self.prewarm
    }

    /// When it was loaded (injected clock, ms since the Unix epoch).
    pub fn loaded_at_ms(&self) -> u64 {
        self.loaded_at_ms
    }

    /// Load + prewarm time, µs.
    pub fn load_us(&self) -> u64 {
        self.load_us
    }

    /// Memory the cache charges for this kernel: the verified bytes plus the
    /// loaded module, estimated as the artifact size again (TorchScript
    /// archives are dominated by parameter data).
    pub fn weight_bytes(&self) -> u64 {
        (self.bytes.len() as u64).saturating_mul(2)
    }
}

fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::F64 => Kind::Double,
    }
}

fn concrete_shape(spec: &TensorSpec) -> Vec<i64> {
    spec.shape
        .iter()
        .map(|d| match d {
            Dim::Batch => PROBE_BATCH,
            // Descriptors are validated (per-row element cap), so this fits.
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        })
        .collect()
}

/// A deterministic, non-constant probe (0, 1/n, 2/n, …): varied enough to
/// exercise the kernel, reproducible without touching the global RNG.
fn probe_input(spec: &TensorSpec, device: Device) -> Result<Tensor, tch::TchError> {
    let shape = concrete_shape(spec);
    let n: i64 = shape.iter().product();
    Tensor::f_arange(n, (Kind::Float, device))?
        .f_div_scalar(n.max(1))?
        .f_reshape(&shape)?
        .f_to_kind(kind_of(spec.dtype))
}

fn outputs_of(value: IValue) -> Result<Vec<Tensor>, String> {
    match value {
        IValue::Tensor(t) => Ok(vec![t]),
        IValue::TensorList(ts) => Ok(ts),
        IValue::Tuple(items) | IValue::GenericList(items) => items
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                other => Err(format!("output element is not a tensor: {other:?}")),
            })
            .collect(),
        other => Err(format!("output is not a tensor or tuple of tensors: {other:?}")),
    }
}

/// Runs the kernel on a probe built from its declared inputs and checks the
/// outputs against its declared outputs; times `limits.runs` forward
/// passes. Every pass runs under the memory cap: a refused allocation fails
/// the load (`LoadFailed`), whatever else the pass would have shown.
fn prewarm(
    module: &CModule,
    d: &BlueprintDescriptor,
    device: Device,
    limits: PrewarmLimits,
) -> Result<PrewarmReport, KernelError> {
    let mismatch = |detail: String| KernelError::InterfaceMismatch { blueprint_id: d.blueprint_id.clone(), detail };
    let load_failed = |detail: String| KernelError::LoadFailed { blueprint_id: d.blueprint_id.clone(), detail };
    crate::alloc_cap::install().map_err(load_failed)?;
    let capped_forward = |inputs: &[IValue]| {
        crate::alloc_cap::capped(limits.memory_bytes, || module.forward_is(inputs))
            .map_err(|over| load_failed(format!("prewarm refused: {over}")))
    };
    let _no_grad = tch::no_grad_guard();
    let inputs: Vec<IValue> = d
        .interface
        .inputs
        .iter()
        .map(|s| probe_input(s, device).map(IValue::Tensor))
        .collect::<Result<_, _>>()
        .map_err(|e| load_failed(format!("probe input: {e}")))?;
    // The first call runs TorchScript's profiling pass; it is the warm-up, untimed.
    let first = capped_forward(&inputs)?.map_err(|e| mismatch(format!("declared inputs rejected: {e}")))?;
    let outputs = outputs_of(first).map_err(mismatch)?;
    if outputs.len() != d.interface.outputs.len() {
        return Err(mismatch(format!("{} outputs, {} declared", outputs.len(), d.interface.outputs.len())));
    }
    let mut output_shapes = Vec::with_capacity(outputs.len());
    for (i, (t, spec)) in outputs.iter().zip(&d.interface.outputs).enumerate() {
        let shape = t.size();
        let batch_ok = spec.shape.iter().zip(&shape).all(|(dim, &c)| *dim != Dim::Batch || c == PROBE_BATCH);
        if !spec.matches(&shape) || !batch_ok {
            return Err(mismatch(format!(
                "output {i} has shape {shape:?}, declared {} (probe batch {PROBE_BATCH})",
                crate::urza::catalog::shape_text(&spec.shape)
            )));
        }
        let kind = t.f_kind().map_err(|e| mismatch(format!("output {i}: {e}")))?;
        if kind != kind_of(spec.dtype) {
            return Err(mismatch(format!("output {i} has dtype {kind:?}, declared {:?}", spec.dtype)));
        }
        output_shapes.push(shape);
    }
    let mut samples = Vec::with_capacity(limits.runs as usize);
    for _ in 0..limits.runs {
        let t0 = Instant::now();
        capped_forward(&inputs)?.map_err(|e| mismatch(format!("probe run failed: {e}")))?;
        samples.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    samples.sort_unstable();
    Ok(PrewarmReport {
        probe_batch: PROBE_BATCH,
        runs: limits.runs,
        p50_us: percentile(&samples, 50),
        p95_us: percentile(&samples, 95),
        output_shapes,
        outputs_match: true,
    })
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
pub(crate) fn percentile(sorted: &[u64], pct: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (pct as usize * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&s, 50), 10);
        assert_eq!(percentile(&s, 95), 19);
        assert_eq!(percentile(&s, 100), 20);
        assert_eq!(percentile(&[7], 95), 7);
        assert_eq!(percentile(&[], 50), 0);
    }
}
