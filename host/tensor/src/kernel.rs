//! Seed kernels: the trainable module a slot runs at its site.
//!
//! Production kernels are TorchScript modules the kernel load manager fetched
//! from Urza, verified and loaded with [`tch::TrainableCModule::load`] into a
//! [`nn::VarStore`]: [`ScriptedKernel`] takes both. Tests and native Rust
//! blueprints use [`NativeKernel`], which wraps any `tch::nn::Module` built on
//! its own `VarStore`.
//!
//! Every kernel owns its `VarStore`, so its parameters are exactly that
//! store's trainable variables: that is what the parameter registry records
//! and what the seed's optimizer trains.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use tch::{Device, Tensor, TrainableCModule, nn};

use crate::error::{Result, TensorError};

/// A trainable seed module: fallible forward plus access to its parameters.
pub trait SeedKernel: Send {
    /// Runs the kernel on `input` (the detached host features at the site).
    fn forward(&self, input: &Tensor) -> Result<Tensor>;
    /// The kernel's trainable parameters (shallow handles sharing storage).
    fn parameters(&self) -> Vec<Tensor>;
    /// Switches train/eval behaviour (dropout, batch norm).
    fn set_train(&mut self, train: bool) -> Result<()>;
    /// The store the parameters live in (optimizers are built over it).
    fn var_store(&self) -> &nn::VarStore;
}

/// A TorchScript kernel loaded trainable into its own `VarStore`.
pub struct ScriptedKernel {
    vs: nn::VarStore,
    module: TrainableCModule,
}

impl std::fmt::Debug for ScriptedKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedKernel").field("parameters", &self.vs.len()).finish()
    }
}

impl ScriptedKernel {
    /// Wraps a module the kernel load manager loaded into `vs`
    /// (`TrainableCModule::load(path, vs.root())`). Refuses a module with no
    /// trainable parameters: a seed that cannot learn is a placeholder.
    pub fn new(vs: nn::VarStore, module: TrainableCModule) -> Result<Self> {
        if vs.trainable_variables().is_empty() {
            return Err(TensorError::Kernel("TorchScript module has no trainable parameters".into()));
        }
        Ok(ScriptedKernel { vs, module })
    }

    /// Loads a verified artifact from `path` onto `device`. The caller (the
    /// kernel load manager) is responsible for checksum verification.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let module = TrainableCModule::load(path, vs.root()).map_err(TensorError::torch("TrainableCModule::load"))?;
        Self::new(vs, module)
    }
}

impl ScriptedKernel {
    /// Loads verified TorchScript bytes (a daemon's artifact) onto `device`.
    /// The caller checks the digest first: these bytes are what gets run.
    pub fn from_bytes(bytes: &[u8], device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let module = TrainableCModule::load_data(&mut std::io::Cursor::new(bytes), vs.root())
            .map_err(TensorError::torch("TrainableCModule::load_data"))?;
        Self::new(vs, module)
    }
}

impl SeedKernel for ScriptedKernel {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.module.forward_ts(&[input]).map_err(|e| TensorError::Kernel(e.to_string()))
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.vs.trainable_variables()
    }

    fn set_train(&mut self, train: bool) -> Result<()> {
        let r = if train { self.module.f_set_train() } else { self.module.f_set_eval() };
        r.map_err(TensorError::torch("TrainableCModule::set_train"))
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}

/// A native `tch::nn` module on its own `VarStore`.
///
/// `nn::Module::forward` is infallible in tch (it unwraps libtorch errors),
/// so a foreign input shape would panic inside it. The panic is caught at
/// this boundary and returned as [`TensorError::Kernel`]: a bad shape from
/// outside must never take the trainer down.
pub struct NativeKernel<M> {
    vs: nn::VarStore,
    module: M,
}

impl<M> std::fmt::Debug for NativeKernel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeKernel").field("parameters", &self.vs.len()).finish()
    }
}

impl<M: nn::Module + Send> NativeKernel<M> {
    /// Wraps `module`, whose variables were created under `vs.root()`.
    pub fn new(vs: nn::VarStore, module: M) -> Result<Self> {
        if vs.trainable_variables().is_empty() {
            return Err(TensorError::Kernel("native module has no trainable parameters".into()));
        }
        Ok(NativeKernel { vs, module })
    }
}

impl<M: nn::Module + Send> SeedKernel for NativeKernel<M> {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.module.forward(input))).map_err(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "native kernel panicked".to_owned());
            // libtorch messages carry a C++ backtrace; the first line is the cause.
            TensorError::Kernel(msg.lines().next().unwrap_or_default().to_owned())
        })
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.vs.trainable_variables()
    }

    fn set_train(&mut self, _train: bool) -> Result<()> {
        // `nn::Module` has no train/eval switch; modules needing one implement
        // `SeedKernel` themselves.
        Ok(())
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}

/// Bytes held by `tensors` (numel × element size), for memory budgets.
pub fn tensor_bytes(tensors: &[Tensor]) -> u64 {
    tensors
        .iter()
        .map(|t| {
            let elem = t.kind().elt_size_in_bytes() as u64;
            (t.numel() as u64).saturating_mul(elem)
        })
        .fold(0u64, u64::saturating_add)
}
