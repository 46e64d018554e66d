//! Kernel artifacts handed to the TorchScript loader (`LoadedKernel::load`:
//! libtorch's `torch::jit::load` from bytes, eval mode, prewarm on a probe
//! input checked against the descriptor's interface).
//!
//! Input: the artifact's bytes; the descriptor is the `mlp_adapter`
//! fixture's. In production only bytes whose SHA-256 matches the catalog
//! reach this loader; the target asks what happens if a publisher's bytes
//! are hostile anyway: a typed error, never a crash of the host.
//! libtorch is not instrumented, so coverage counts the Rust side only.
//!
//! Run: `scripts/fuzz.sh torchscript 60` (a host target).

use std::sync::OnceLock;

use kasmina_kernels::{CatalogEntry, LoadedKernel, PrewarmLimits, VerifiedArtifact, fixtures};
use tch::Device;

/// The prewarm memory cap the loads run under: far above what the
/// `mlp_adapter` probe needs, far below what would hurt the fuzzer.
const PREWARM_MEMORY_BYTES: u64 = 64 << 20;

fn entry() -> &'static CatalogEntry {
    static ENTRY: OnceLock<CatalogEntry> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let fixture = fixtures::get("mlp_adapter").expect("the mlp_adapter fixture");
        CatalogEntry {
            descriptor: fixture.descriptor,
            artifact_sha256: "0".repeat(64),
            artifact_size: 1,
            artifact_file: CatalogEntry::artifact_file_for(&"0".repeat(64)),
            published_at_ms: 0,
        }
    })
}

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    tch::set_num_threads(1);
    let artifact = VerifiedArtifact { entry: entry().clone(), bytes: data.to_vec() };
    let _ = LoadedKernel::load(artifact, Device::Cpu, PrewarmLimits { runs: 1, memory_bytes: PREWARM_MEMORY_BYTES }, 0);
}
