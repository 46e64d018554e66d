//! The digits data set (the demo's host networks are in `demo::hosts`).
//!
//! `scripts/setup.sh` extracts `digits.csv` (1 797 rows of 64 pixel values in
//! 0..=16 followed by the label) from the scikit-learn wheel into the cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

/// Rows in the data set.
pub const ROWS: usize = 1_797;
/// Pixels per image (8×8).
pub const FEATURES: usize = 64;
/// Digit classes.
pub const CLASSES: i64 = 10;
/// Fraction of rows held out for testing.
pub const TEST_FRACTION: f64 = 0.2;
/// Fraction of rows held out for validation (the global metric gate G4
/// watches; the test split is never shown to the control plane).
pub const VAL_FRACTION: f64 = 0.15;
/// Largest data file accepted (the real one is ~270 KB).
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Where set-up puts the data: `$KASMINA_CACHE/data/digits.csv`, default
/// `~/.cache/kasmina/data/digits.csv`.
pub fn default_path() -> Result<PathBuf> {
    let cache = match std::env::var_os("KASMINA_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --data")?).join(".cache/kasmina"),
    };
    Ok(cache.join("data/digits.csv"))
}

/// Train and test tensors on one device.
#[derive(Debug)]
pub struct Split {
    /// Training images, [N, 64], scaled to [0, 1].
    pub train_x: Tensor,
    /// Training labels, [N].
    pub train_y: Tensor,
    /// Validation images.
    pub val_x: Tensor,
    /// Validation labels.
    pub val_y: Tensor,
    /// Test images, [M, 64].
    pub test_x: Tensor,
    /// Test labels, [M].
    pub test_y: Tensor,
}

/// Reads the CSV and makes the fixed split for `seed`.
pub fn load(path: &Path, seed: u64, device: Device) -> Result<Split> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("digits data not found at {}; run scripts/setup.sh", path.display()))?
        .len();
    ensure!(size <= MAX_FILE_BYTES, "{} is {size} bytes, more than the {MAX_FILE_BYTES} cap", path.display());
    let text = std::fs::read_to_string(path)?;
    let mut pixels = Vec::with_capacity(ROWS * FEATURES);
    let mut labels = Vec::with_capacity(ROWS);
    for (i, line) in text.lines().enumerate() {
        let values: Vec<&str> = line.split(',').collect();
        ensure!(values.len() == FEATURES + 1, "line {}: {} columns, expected {}", i + 1, values.len(), FEATURES + 1);
        for v in &values[..FEATURES] {
            let p: f32 = v.trim().parse().with_context(|| format!("line {}: bad pixel {v:?}", i + 1))?;
            ensure!((0.0..=16.0).contains(&p), "line {}: pixel {p} outside 0..=16", i + 1);
            pixels.push(p / 16.0);
        }
        let label: f32 = values[FEATURES].trim().parse().with_context(|| format!("line {}: bad label", i + 1))?;
        ensure!(label.fract() == 0.0 && (0.0..10.0).contains(&label), "line {}: label {label} not a digit", i + 1);
        labels.push(label as i64);
    }
    if labels.len() != ROWS {
        bail!("{} has {} rows, expected {ROWS}", path.display(), labels.len());
    }
    let mut order: Vec<usize> = (0..ROWS).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let n_test = (ROWS as f64 * TEST_FRACTION).round() as usize;
    let n_val = (ROWS as f64 * VAL_FRACTION).round() as usize;
    let (test_idx, rest) = order.split_at(n_test);
    let (val_idx, train_idx) = rest.split_at(n_val);
    let take = |idx: &[usize]| -> (Tensor, Tensor) {
        let mut xs = Vec::with_capacity(idx.len() * FEATURES);
        let mut ys = Vec::with_capacity(idx.len());
        for &r in idx {
            xs.extend_from_slice(&pixels[r * FEATURES..(r + 1) * FEATURES]);
            ys.push(labels[r]);
        }
        let n = idx.len() as i64;
        (Tensor::from_slice(&xs).reshape([n, FEATURES as i64]).to(device), Tensor::from_slice(&ys).to(device))
    };
    let (train_x, train_y) = take(train_idx);
    let (val_x, val_y) = take(val_idx);
    let (test_x, test_y) = take(test_idx);
    Ok(Split { train_x, train_y, val_x, val_y, test_x, test_y })
}

/// Fraction of correct predictions.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    logits.argmax(-1, false).eq_tensor(labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}
