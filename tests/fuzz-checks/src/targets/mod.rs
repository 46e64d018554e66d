//! One module per fuzz target, each with `check(data)`: the fuzz target in
//! `fuzz/fuzz_targets/` is that call under libFuzzer, and [`ALL`] lists the
//! same checks for the replay in the ordinary test build
//! (`cargo test -p kasmina-fuzz-checks`).

pub mod annotations;
#[cfg(feature = "host")]
pub mod annotations_wasm;
pub mod client_frame;
pub mod frame_decoder;
pub mod journal;
#[cfg(feature = "host")]
pub mod settings;
#[cfg(feature = "host")]
pub mod torchscript;
#[cfg(feature = "host")]
pub mod urza_catalog;

use crate::replay::Target;

/// Every target with its replay budget. `max_len` is `scripts/fuzz.sh`'s
/// `limits_of`; the mutant counts keep the whole replay to a few seconds
/// in the test profile (most TorchScript mutants fail the archive check's
/// checksums; a journal recovery costs tens of microseconds on /dev/shm).
pub const ALL: &[Target] = &[
    Target { name: "frame_decoder", check: frame_decoder::check, max_len: 4096, mutants: 20000 },
    Target { name: "client_frame", check: client_frame::check, max_len: 4096, mutants: 20000 },
    Target { name: "annotations", check: annotations::check, max_len: 4096, mutants: 20000 },
    Target { name: "journal", check: journal::check, max_len: 20480, mutants: 3000 },
    #[cfg(feature = "host")]
    Target { name: "settings", check: settings::check, max_len: 16384, mutants: 10000 },
    #[cfg(feature = "host")]
    Target { name: "urza_catalog", check: urza_catalog::check, max_len: 16384, mutants: 3000 },
    #[cfg(feature = "host")]
    Target { name: "torchscript", check: torchscript::check, max_len: 65536, mutants: 3000 },
    #[cfg(feature = "host")]
    Target { name: "annotations_wasm", check: annotations_wasm::check, max_len: 4096, mutants: 10000 },
];

/// The target called `name`, if this build has it.
pub fn by_name(name: &str) -> Option<Target> {
    ALL.iter().copied().find(|t| t.name == name)
}
