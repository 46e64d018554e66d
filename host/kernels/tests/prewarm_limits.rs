//! What a kernel's own code may do while it is prewarmed: ask for at most
//! `prewarm_memory_bytes` of CPU memory per probe forward pass (the load
//! fails before the memory is taken), and not fork work onto another
//! thread (refused by the archive check). The hostile kernels are real
//! TorchScript from `fixtures/hostile/make_hostile.py`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use kasmina_kernels::{KernelError, KernelManagerConfig, fixtures};

const MIB: u64 = 1 << 20;
/// What `memory_hog.pt` allocates in each forward pass.
const HOG_BYTES: u64 = 256 * MIB;

fn config(prewarm_memory_bytes: u64) -> KernelManagerConfig {
    KernelManagerConfig { prewarm_runs: 2, prewarm_memory_bytes, ..common::config() }
}

/// Peak resident memory of this process so far (VmHWM), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// One test, in this order, so the peak-memory figures are this load's:
/// the capped load runs first, the uncapped control after it.
#[test]
fn a_kernel_asking_for_more_than_the_cap_fails_its_load_before_taking_the_memory() {
    let env = common::Env::new(100);
    fixtures::publish_hostile(&env.urza, fixtures::MEMORY_HOG, fixtures::MLP_ADAPTER).unwrap();

    let (capped, _events) = env.manager(config(64 * MIB));
    let before = peak_rss();
    let err = capped.get(fixtures::MEMORY_HOG, None).unwrap_err();
    let grew = peak_rss().saturating_sub(before);
    eprintln!("capped at 64 MiB: peak RSS +{} KiB; {err}", grew / 1024);
    let KernelError::LoadFailed { blueprint_id, detail } = &err else { panic!("{err:?}") };
    assert_eq!(blueprint_id, "memory_hog");
    assert!(detail.contains("prewarm refused"), "{detail}");
    assert!(detail.contains(&HOG_BYTES.to_string()), "names the request: {detail}");
    assert!(detail.contains(&(64 * MIB).to_string()) && detail.contains("kernels.prewarm_memory_bytes"), "{detail}");
    assert!(grew < HOG_BYTES / 2, "the refused 256 MiB were never taken: peak RSS grew {grew} bytes");
    assert_eq!(capped.stats().cumulative.loads, 0);

    // The thread is not left capped: the same manager, on the same thread,
    // loads an ordinary kernel; and an ordinary kernel prewarms within 1 MiB.
    capped.get(fixtures::MLP_ADAPTER, None).unwrap();
    let (small, _events) = env.manager(config(MIB));
    small.get(fixtures::BOTTLENECK, None).unwrap();

    // Control: with a cap above what it asks for, the same kernel loads —
    // it was the cap that refused it — and the peak memory shows the
    // allocation the cap prevented above.
    let (generous, _events) = env.manager(config(1024 * MIB));
    let before = peak_rss();
    let kernel = generous.get(fixtures::MEMORY_HOG, None).unwrap();
    assert_eq!(kernel.prewarm().output_shapes, vec![vec![2, 32]]);
    let grew = peak_rss().saturating_sub(before);
    eprintln!("capped at 1 GiB: loaded, peak RSS +{} KiB", grew / 1024);
    assert!(grew >= HOG_BYTES / 2, "the uncapped load took the memory: peak RSS grew only {grew} bytes");
}

#[test]
fn a_kernel_whose_code_forks_is_refused_before_it_runs() {
    let env = common::Env::new(100);
    fixtures::publish_hostile(&env.urza, fixtures::FORKS, fixtures::MLP_ADAPTER).unwrap();
    let (manager, _events) = env.manager(config(1024 * MIB));
    let err = manager.get(fixtures::FORKS, None).unwrap_err();
    let KernelError::LoadFailed { detail, .. } = &err else { panic!("{err:?}") };
    assert!(detail.contains("calls `fork(`") && detail.contains("forks/code/__torch__.py"), "{detail}");
    assert_eq!(manager.stats().cumulative.loads, 0);
}
