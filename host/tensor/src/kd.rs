//! Knowledge distillation (SPEC.md §8): an optional TorchScript teacher and
//! the loss `T²·KL(softmax(teacher/T) ‖ softmax(student/T))`, mixed with the
//! task loss as `(1 − w)·task + w·kd`.
//!
//! The teacher runs under `no_grad` and its logits are detached, so no
//! gradient ever reaches it; its parameter memory is estimated when it is
//! installed and refused over the budget.

use std::path::Path;

use tch::{CModule, Device, Kind, Reduction, Tensor};

use crate::error::{Result, TensorError};
use crate::kernel::tensor_bytes;

/// Default KD weight (SPEC.md §8; same value as kasmina's `KD_WEIGHT`).
pub const DEFAULT_KD_WEIGHT: f64 = 0.3;
/// Default KD temperature (same value as kasmina's `KD_TEMPERATURE`).
pub const DEFAULT_KD_TEMPERATURE: f64 = 2.0;

/// `T²·KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over the batch.
/// Both logits `[N, classes]`; gradients flow to the student only.
pub fn kd_loss(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TensorError::InvalidParameter {
            name: "kd_temperature",
            value: temperature,
            rule: "must be finite and > 0",
        });
    }
    if student_logits.dim() != 2 {
        return Err(TensorError::WrongRank {
            what: "student logits",
            expected: "2 ([N, classes])",
            got: student_logits.dim(),
        });
    }
    if student_logits.size() != teacher_logits.size() {
        return Err(TensorError::ShapeMismatch {
            what: "teacher logits vs student logits",
            expected: student_logits.size(),
            got: teacher_logits.size(),
        });
    }
    let n = student_logits.size()[0];
    if n == 0 {
        return Err(TensorError::ShapeMismatch { what: "student logits batch", expected: vec![1], got: vec![0] });
    }
    let t = TensorError::torch;
    let log_p_student = student_logits
        .f_div_scalar(temperature)
        .and_then(|s| s.f_log_softmax(1, Kind::Float))
        .map_err(t("kd log_softmax"))?;
    let log_p_teacher = teacher_logits
        .detach()
        .f_div_scalar(temperature)
        .and_then(|s| s.f_log_softmax(1, Kind::Float))
        .map_err(t("kd log_softmax"))?;
    // kl_div(input = log q, target = log p, log_target) = Σ p·(log p − log q).
    let kl = log_p_student.f_kl_div(&log_p_teacher, Reduction::Sum, true).map_err(t("kd kl_div"))?;
    kl.f_mul_scalar(temperature * temperature / n as f64).map_err(t("kd scale"))
}

/// `(1 − weight)·task + weight·kd`; `weight` in [0, 1].
pub fn mix_losses(task_loss: &Tensor, kd: &Tensor, weight: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&weight) {
        return Err(TensorError::InvalidParameter { name: "kd_weight", value: weight, rule: "must be in [0, 1]" });
    }
    task_loss
        .f_mul_scalar(1.0 - weight)
        .and_then(|a| kd.f_mul_scalar(weight).and_then(|b| a.f_add(&b)))
        .map_err(TensorError::torch("kd mix"))
}

/// A frozen TorchScript teacher within its memory budget.
#[derive(Debug)]
pub struct Teacher {
    module: CModule,
    parameters: Vec<Tensor>,
    memory_bytes: u64,
}

impl Teacher {
    /// Installs `module` as teacher (eval mode) if its parameters fit `budget_bytes`.
    pub fn new(mut module: CModule, budget_bytes: u64) -> Result<Self> {
        let parameters: Vec<Tensor> = module
            .named_parameters()
            .map_err(TensorError::torch("teacher parameters"))?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let memory_bytes = match tensor_bytes(&parameters) {
            // A traced teacher keeps its weights as graph constants, which
            // libtorch does not list: measure what the module holds by its
            // serialized size instead of reporting 0 bytes.
            0 => serialized_bytes(&module)?,
            bytes => bytes,
        };
        if memory_bytes > budget_bytes {
            return Err(TensorError::TeacherOverBudget { needed: memory_bytes, budget: budget_bytes });
        }
        module.f_set_eval().map_err(TensorError::torch("teacher eval"))?;
        Ok(Teacher { module, parameters, memory_bytes })
    }

    /// Loads a teacher artifact (verified by the caller) onto `device`.
    pub fn load(path: &Path, device: Device, budget_bytes: u64) -> Result<Self> {
        let module = CModule::load_on_device(path, device).map_err(TensorError::torch("teacher load"))?;
        Self::new(module, budget_bytes)
    }

    /// Estimated parameter memory, bytes (reported as telemetry by the caller).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The teacher's parameters (for [`crate::ParameterRegistry::set_teacher`]).
    pub fn parameters(&self) -> &[Tensor] {
        &self.parameters
    }

    /// Teacher logits for `input`, under `no_grad`, detached.
    pub fn logits(&self, input: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.module.forward_ts(&[input]))
            .map(|t| t.detach())
            .map_err(|e| TensorError::Kernel(format!("teacher forward: {e}")))
    }
}

/// Size of `module` serialized (weights baked in as constants included).
fn serialized_bytes(module: &CModule) -> Result<u64> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("kasmina-teacher-size-{}-{n}.pt", std::process::id()));
    let saved = module.save(&path).map_err(TensorError::torch("teacher size"));
    let size = saved.and_then(|()| {
        std::fs::metadata(&path).map(|m| m.len()).map_err(|e| TensorError::Kernel(format!("teacher size: {e}")))
    });
    let _ = std::fs::remove_file(&path);
    size
}

/// KD settings plus an optional teacher.
#[derive(Debug)]
pub struct Distiller {
    teacher: Option<Teacher>,
    weight: f64,
    temperature: f64,
}

impl Distiller {
    /// A distiller without a teacher (loss = task loss) until one is set.
    pub fn new(weight: f64, temperature: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&weight) {
            return Err(TensorError::InvalidParameter { name: "kd_weight", value: weight, rule: "must be in [0, 1]" });
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(TensorError::InvalidParameter {
                name: "kd_temperature",
                value: temperature,
                rule: "must be finite and > 0",
            });
        }
        Ok(Distiller { teacher: None, weight, temperature })
    }

    /// Installs or replaces the teacher; returns the previous one.
    pub fn set_teacher(&mut self, teacher: Teacher) -> Option<Teacher> {
        self.teacher.replace(teacher)
    }

    /// Drops the teacher (emergency cleanup with `include_teacher`).
    pub fn drop_teacher(&mut self) -> Option<Teacher> {
        self.teacher.take()
    }

    /// The teacher, if any.
    pub fn teacher(&self) -> Option<&Teacher> {
        self.teacher.as_ref()
    }

    /// The training loss: the task loss alone without a teacher, else the
    /// mix with the KD loss of `student_logits` against the teacher on `input`.
    pub fn loss(&self, task_loss: &Tensor, student_logits: &Tensor, input: &Tensor) -> Result<Tensor> {
        Ok(self.loss_with_kd(task_loss, student_logits, input)?.0)
    }

    /// Like [`Distiller::loss`], and also the KD term itself (before
    /// weighting) when a teacher ran, so a trainer can report it.
    pub fn loss_with_kd(
        &self,
        task_loss: &Tensor,
        student_logits: &Tensor,
        input: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let Some(teacher) = &self.teacher else {
            return Ok((task_loss.shallow_clone(), None));
        };
        let teacher_logits = teacher.logits(input)?;
        let kd = kd_loss(student_logits, &teacher_logits, self.temperature)?;
        Ok((mix_losses(task_loss, &kd, self.weight)?, Some(kd)))
    }

    /// Weight of the KD term.
    pub fn weight(&self) -> f64 {
        self.weight
    }
}
