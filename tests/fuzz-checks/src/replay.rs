//! Replays a fuzz target in the ordinary test build: its checked-in inputs
//! (seed corpus, regression inputs, the project fixtures `scripts/fuzz.sh`
//! also seeds it with), then a fixed number of mutants of them, each through
//! the target's `check`.
//!
//! The mutants come from a generator seeded by the target's name, so every
//! run tries the same inputs: a finding reproduces, and a green run means
//! the same thing each time. This is not coverage-guided (no
//! instrumentation); the libFuzzer campaigns (`scripts/fuzz.sh`) are what
//! explores. What it adds is that every target, including those linking
//! wasmtime and libtorch, runs its check on every suite run.

use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// One target as the replay runs it.
#[derive(Clone, Copy)]
pub struct Target {
    /// The fuzz target's name (`scripts/fuzz.sh list`).
    pub name: &'static str,
    /// Its check (panics on a finding).
    pub check: fn(&[u8]),
    /// Largest input, as `scripts/fuzz.sh` passes to libFuzzer (`-max_len`);
    /// mutants are cut to it (checked-in inputs are run whole).
    pub max_len: usize,
    /// How many mutants to run after the checked-in inputs.
    pub mutants: usize,
}

/// What one replay ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Checked-in inputs run.
    pub inputs: usize,
    /// Mutants run.
    pub mutants: usize,
}

/// An input whose check panicked.
#[derive(Debug)]
pub struct Finding {
    /// Which input: a checked-in file's path, or `mutant N of <file>`.
    pub input: String,
    /// Where its bytes were written, to hand to the fuzz target binary.
    pub saved: Option<PathBuf>,
    /// The panic message.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed the check: {}", self.input, self.message)?;
        match &self.saved {
            Some(path) => write!(
                f,
                " (bytes saved to {}; reproduce with the libFuzzer target: scripts/fuzz.sh build host, then run \
                 the target binary on that file)",
                path.display()
            ),
            None => write!(f, " (its bytes could not be saved)"),
        }
    }
}

/// The checked-in inputs of `target`, sorted by path: `fuzz/corpus/<target>`,
/// `fuzz/regressions/<target>` and the fixtures `scripts/fuzz.sh` seeds host
/// targets with (`host_seeds` there; keep the two lists alike).
pub fn checked_in(repo: &Path, target: &str) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut dirs = vec![repo.join("fuzz/corpus").join(target), repo.join("fuzz/regressions").join(target)];
    let mut files = Vec::new();
    match target {
        "settings" => files.push(repo.join("examples/digits/daemon.toml")),
        // The blueprints, and the hostile kernels the prewarm limits refuse.
        "torchscript" => {
            dirs.push(repo.join("host/kernels/fixtures"));
            dirs.push(repo.join("host/kernels/fixtures/hostile"));
        }
        // Same input format as the native parser's target.
        "annotations_wasm" => dirs.push(repo.join("fuzz/corpus/annotations")),
        _ => {}
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let wanted = target != "torchscript"
                || dir.starts_with(repo.join("fuzz"))
                || path.extension() == Some("pt".as_ref());
            if path.is_file() && wanted {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut inputs = files.into_iter().map(|p| fs::read(&p).map(|b| (p, b))).collect::<io::Result<Vec<_>>>()?;
    // The empty input, which libFuzzer always tries first.
    inputs.insert(0, (PathBuf::from("(empty input)"), Vec::new()));
    Ok(inputs)
}

/// Runs `target.check` on every checked-in input, then on `target.mutants`
/// mutants of them; stops at the first panic and returns it as a [`Finding`]
/// (its bytes written under the system's temporary directory).
pub fn run(repo: &Path, target: Target) -> Result<Summary, Finding> {
    let inputs = checked_in(repo, target.name).map_err(|e| Finding {
        input: format!("the checked-in inputs of {}", target.name),
        saved: None,
        message: format!("could not be read: {e}"),
    })?;
    for (path, bytes) in &inputs {
        attempt(target, &path.display().to_string(), bytes)?;
    }
    let mut rng = SplitMix::new(target.name);
    for n in 0..target.mutants {
        let (path, base) = &inputs[rng.below(inputs.len())];
        let other = &inputs[rng.below(inputs.len())].1;
        let mutant = mutate(&mut rng, base, other, target.max_len);
        attempt(target, &format!("mutant {n} of {}", path.display()), &mutant)?;
    }
    Ok(Summary { inputs: inputs.len(), mutants: target.mutants })
}

fn attempt(target: Target, name: &str, bytes: &[u8]) -> Result<(), Finding> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.check)(bytes)));
    let Err(payload) = outcome else { return Ok(()) };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let path = std::env::temp_dir().join(format!("kasmina-replay-{}-{}", target.name, std::process::id()));
    let saved = fs::write(&path, bytes).ok().map(|()| path);
    Err(Finding { input: name.to_owned(), saved, message })
}

/// One to four stacked edits of the kinds libFuzzer's mutator makes: bit
/// flips, interesting bytes, erased, duplicated and inserted runs, a cut,
/// a splice with another input. The result is at most `max_len` bytes.
pub fn mutate(rng: &mut SplitMix, base: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b'=', b'"'];
    let mut out = base.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                out.drain(at..at + n);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let run: Vec<u8> = out[at..at + n].to_vec();
                out.splice(at..at, run);
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 if !other.is_empty() => {
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    out.truncate(max_len);
    out
}

/// A small deterministic generator (SplitMix64), seeded from a name.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded by FNV-1a of `name`.
    pub fn new(name: &str) -> Self {
        SplitMix(name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
