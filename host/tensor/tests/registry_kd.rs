//! Parameter registry reasons, per-seed optimizers, and knowledge
//! distillation against a hand-computed case with a real TorchScript teacher.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use anyhow::Result;
use kasmina_tensor::{
    DEFAULT_KD_WEIGHT, Distiller, JoinError, ParameterRegistry, RegistryError, SeedOptimizerConfig, SeedOptimizers,
    Teacher, TensorError, UpdateRefusal, kd_loss, mix_losses,
};
use tch::{Device, Kind, Tensor};

fn param(n: i64) -> Tensor {
    Tensor::randn([n], (Kind::Float, Device::Cpu)).set_requires_grad(true)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

#[test]
fn validate_update_names_the_reason() -> Result<()> {
    let (a, b, t, stray) = (param(3), param(3), param(3), param(3));
    let mut reg = ParameterRegistry::new();
    assert_eq!(
        reg.register_seed("seed-a", &[a.shallow_clone(), a.shallow_clone()])?,
        1,
        "same storage is one parameter"
    );
    reg.register_seed("seed-b", std::slice::from_ref(&b))?;
    reg.set_teacher(std::slice::from_ref(&t))?;
    assert_eq!(reg.validate_update("seed-a", &a), Ok(()));
    assert_eq!(reg.validate_update("seed-a", &t), Err(UpdateRefusal::TeacherParameter));
    assert_eq!(reg.validate_update("seed-a", &stray), Err(UpdateRefusal::Unregistered));
    let other = reg.validate_update("seed-a", &b).unwrap_err();
    assert_eq!(other, UpdateRefusal::OwnedByOtherSeed { owner: "seed-b".into() });
    assert_eq!(other.reason(), "owned_by_other_seed");
    assert_eq!(UpdateRefusal::TeacherParameter.reason(), "teacher_parameter");
    assert_eq!(UpdateRefusal::Unregistered.reason(), "unregistered");
    // A shallow clone is the same parameter.
    assert_eq!(reg.owner_of(&a.shallow_clone()), Some("seed-a"));
    Ok(())
}

#[test]
fn registration_is_all_or_nothing_and_teacher_is_immutable() -> Result<()> {
    let (a, b, t) = (param(2), param(2), param(2));
    let mut reg = ParameterRegistry::new();
    reg.register_seed("seed-a", std::slice::from_ref(&a))?;
    reg.set_teacher(std::slice::from_ref(&t))?;
    assert_eq!(
        reg.register_seed("seed-b", &[b.shallow_clone(), t.shallow_clone()]),
        Err(RegistryError::Refused(UpdateRefusal::TeacherParameter))
    );
    assert_eq!(reg.owner_of(&b), None, "nothing of the refused registration stayed");
    assert!(matches!(
        reg.register_seed("seed-b", &[b.shallow_clone(), a.shallow_clone()]),
        Err(RegistryError::Refused(UpdateRefusal::OwnedByOtherSeed { .. }))
    ));
    assert_eq!(
        reg.register_seed("seed-a", std::slice::from_ref(&b)),
        Err(RegistryError::DuplicateSeed("seed-a".into()))
    );
    assert_eq!(reg.register_seed("", std::slice::from_ref(&b)), Err(RegistryError::EmptySeedId));
    assert_eq!(reg.register_seed("seed-c", &[Tensor::new()]), Err(RegistryError::UndefinedTensor));
    assert!(matches!(reg.set_teacher(std::slice::from_ref(&a)), Err(RegistryError::Refused(_))));
    // Replace, drop, deregister, reset.
    assert_eq!(reg.set_teacher(&[b.shallow_clone()])?, 1);
    assert_eq!(reg.validate_update("seed-a", &t), Err(UpdateRefusal::Unregistered), "old teacher released");
    assert_eq!(reg.drop_teacher(), 1);
    assert_eq!(reg.deregister_seed("seed-a")?, 1);
    assert_eq!(reg.deregister_seed("seed-a"), Err(RegistryError::UnknownSeed("seed-a".into())));
    reg.register_seed("seed-z", std::slice::from_ref(&a))?;
    reg.reset();
    assert!(reg.is_empty());
    Ok(())
}

#[test]
fn seed_parameters_join_and_leave_their_optimizer() -> Result<()> {
    let (a, foreign) = (param(4), param(4));
    let mut reg = ParameterRegistry::new();
    reg.register_seed("seed-a", std::slice::from_ref(&a))?;
    let mut opts = SeedOptimizers::new();
    let cfg = SeedOptimizerConfig::Sgd { lr: 0.5, momentum: 0.0, weight_decay: 0.0 };
    let err = opts.join("seed-a", &[a.shallow_clone(), foreign.shallow_clone()], &reg, cfg).unwrap_err();
    assert!(matches!(err, JoinError::Refused { index: 1, refusal: UpdateRefusal::Unregistered, .. }), "{err}");
    assert!(!opts.contains("seed-a"));
    opts.join("seed-a", std::slice::from_ref(&a), &reg, cfg)?;
    assert!(matches!(opts.join("seed-a", std::slice::from_ref(&a), &reg, cfg), Err(JoinError::AlreadyJoined(_))));
    let before = a.detach().copy();
    opts.zero_grad()?;
    a.sum(Kind::Float).backward();
    opts.step()?;
    // SGD with lr 0.5 on d(sum)/da = 1 moves every entry by −0.5.
    assert!(((&before - &a.detach()) - 0.5).abs().max().double_value(&[]) < 1e-6);
    assert!(opts.leave("seed-a"));
    assert!(!opts.leave("seed-a"));
    assert_eq!(opts.seeds().count(), 0);
    Ok(())
}

#[test]
fn kd_loss_matches_the_hand_computed_case() -> Result<()> {
    // Student [1, 2, 3] and teacher [3, 2, 1] at T = 2: scaled logits differ by
    // 0.5 per class, so p_t = softmax([1.5, 1, 0.5]) = (0.506480, 0.307196, 0.186324)
    // and p_s is its reverse. KL(p_t‖p_s) = Σ p_t·(log p_t − log p_s)
    // = 0.506480·1 + 0 + 0.186324·(−1) = 0.320157; × T² = 1.280627.
    let student = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]).set_requires_grad(true);
    let teacher = Tensor::from_slice(&[3.0f32, 2.0, 1.0]).view([1, 3]).set_requires_grad(true);
    let loss = kd_loss(&student, &teacher, 2.0)?;
    assert!((loss.double_value(&[]) - 1.280_627).abs() < 1e-5, "{}", loss.double_value(&[]));
    // Batch mean: the same row twice gives the same loss.
    let two = kd_loss(&Tensor::cat(&[&student, &student], 0), &Tensor::cat(&[&teacher, &teacher], 0), 2.0)?;
    assert!((two.double_value(&[]) - 1.280_627).abs() < 1e-5);
    loss.backward();
    assert!(student.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(!teacher.grad().defined(), "teacher is detached");
    // Identical logits: zero loss.
    assert!(kd_loss(&student, &student.detach(), 3.0)?.double_value(&[]).abs() < 1e-7);
    // Mixing with the default weight.
    let task = Tensor::from(2.0f32);
    let mixed = mix_losses(&task, &Tensor::from(1.0f32), DEFAULT_KD_WEIGHT)?;
    assert!((mixed.double_value(&[]) - (0.7 * 2.0 + 0.3 * 1.0)).abs() < 1e-6);
    Ok(())
}

#[test]
fn kd_refuses_bad_inputs() {
    let s = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        kd_loss(&s, &Tensor::randn([2, 4], (Kind::Float, Device::Cpu)), 2.0),
        Err(TensorError::ShapeMismatch { .. })
    ));
    assert!(matches!(kd_loss(&s.view([6]), &s.view([6]), 2.0), Err(TensorError::WrongRank { .. })));
    assert!(matches!(kd_loss(&s, &s, 0.0), Err(TensorError::InvalidParameter { .. })));
    assert!(mix_losses(&s, &s, 1.5).is_err());
    assert!(Distiller::new(0.3, -1.0).is_err());
}

#[test]
fn torchscript_teacher_is_budgeted_frozen_and_mixed_in() -> Result<()> {
    // Linear(8, 4): 32 + 4 floats = 144 bytes.
    let over = Teacher::load(&fixture("teacher.pt"), Device::Cpu, 100).unwrap_err();
    assert!(matches!(over, TensorError::TeacherOverBudget { needed: 144, budget: 100 }), "{over}");
    let teacher = Teacher::load(&fixture("teacher.pt"), Device::Cpu, 1 << 20)?;
    assert_eq!(teacher.memory_bytes(), 144);
    let mut reg = ParameterRegistry::new();
    reg.set_teacher(teacher.parameters())?;
    assert_eq!(reg.validate_update("seed-a", &teacher.parameters()[0]), Err(UpdateRefusal::TeacherParameter));

    let x = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
    let mut kd = Distiller::new(DEFAULT_KD_WEIGHT, 2.0)?;
    let student = Tensor::randn([5, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let task = student.pow_tensor_scalar(2).mean(Kind::Float);
    // Without a teacher the loss is the task loss.
    assert!(kd.loss(&task, &student, &x)?.equal(&task));
    kd.set_teacher(teacher);
    let t_logits = kd.teacher().unwrap().logits(&x)?;
    assert!(!t_logits.requires_grad());
    let expected = mix_losses(&task, &kd_loss(&student, &t_logits, 2.0)?, 0.3)?;
    let total = kd.loss(&task, &student, &x)?;
    assert!((total.double_value(&[]) - expected.double_value(&[])).abs() < 1e-6);
    total.backward();
    for p in kd.teacher().unwrap().parameters() {
        assert!(!p.grad().defined() || p.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
    }
    assert!(kd.drop_teacher().is_some());
    Ok(())
}
