//! The Urza catalog file: entries, validation, bounded read and atomic write.
//!
//! `catalog.json` is external input (an operator or another process may have
//! written it), so reading it is size-capped and every entry is validated;
//! writing it goes through a temp file in the same directory, `fsync`, rename
//! and a directory `fsync`, so a crash mid-publish leaves either the old or
//! the new catalog, never a torn one.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use leyline::{BlueprintDescriptor, Dim};
use serde::{Deserialize, Serialize};

use super::UrzaError;

/// Largest catalog file accepted (bytes). A descriptor is well under 4 KiB,
/// so 16 MiB holds the entry cap with room and bounds a hostile file.
pub const MAX_CATALOG_BYTES: u64 = 16 << 20;
/// Most entries a catalog may hold.
pub const MAX_CATALOG_ENTRIES: usize = 4_096;
/// Largest artifact accepted at publish and at fetch (bytes). Blueprints are
/// small modules; 512 MiB leaves room for large kernels and bounds memory,
/// since a fetch holds the whole verified artifact in memory.
pub const MAX_ARTIFACT_BYTES: u64 = 512 << 20;
/// Longest blueprint id.
pub const MAX_BLUEPRINT_ID_LEN: usize = 128;
/// Highest tensor rank a kernel interface may declare.
pub const MAX_RANK: usize = 8;
/// Most inputs or outputs a kernel interface may declare.
pub const MAX_TENSORS: usize = 8;
/// Most elements one probe tensor may have per batch row (prewarm allocates
/// `batch × this`), so a descriptor cannot make prewarm allocate without bound.
pub const MAX_ELEMENTS_PER_ROW: u64 = 1 << 22;
/// Version of the catalog file format written by this crate.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

/// One published blueprint: its descriptor and the artifact it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// What the blueprint declares (id, tier, bounds, interface …).
    pub descriptor: BlueprintDescriptor,
    /// SHA-256 of the artifact, lower-case hex (64 characters).
    pub artifact_sha256: String,
    /// Artifact length in bytes.
    pub artifact_size: u64,
    /// Artifact path relative to the library root: always
    /// `artifacts/<artifact_sha256>.pt` (anything else is refused on read).
    pub artifact_file: String,
    /// When it was published (ms since the Unix epoch).
    pub published_at_ms: u64,
}

impl CatalogEntry {
    /// The canonical relative artifact path for a digest.
    pub fn artifact_file_for(sha256_hex: &str) -> String {
        format!("artifacts/{sha256_hex}.pt")
    }

    /// The blueprint id.
    pub fn id(&self) -> &str {
        &self.descriptor.blueprint_id
    }

    /// One line for listings: id, tier, size, short digest, name.
    pub fn summary_line(&self) -> String {
        format!(
            "{:<24} {:<13} {:>10} B  sha256:{}  {}",
            self.descriptor.blueprint_id,
            self.descriptor.tier.as_str(),
            self.artifact_size,
            self.artifact_sha256.get(..12).unwrap_or(&self.artifact_sha256),
            self.descriptor.name
        )
    }
}

impl fmt::Display for CatalogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.descriptor;
        writeln!(f, "blueprint:        {}", d.blueprint_id)?;
        writeln!(f, "name:             {}", d.name)?;
        writeln!(f, "tier:             {}", d.tier.as_str())?;
        writeln!(f, "risk:             {}", d.risk)?;
        writeln!(f, "quarantine_only:  {}", d.quarantine_only)?;
        writeln!(f, "approval_required:{}", if d.approval_required { " true" } else { " false" })?;
        for (name, b) in &d.parameter_bounds {
            writeln!(f, "param {name}: [{}, {}]", b.min, b.max)?;
        }
        for (i, s) in d.interface.inputs.iter().enumerate() {
            writeln!(f, "input {i}:          {} {:?}", shape_text(&s.shape), s.dtype)?;
        }
        for (i, s) in d.interface.outputs.iter().enumerate() {
            writeln!(f, "output {i}:         {} {:?}", shape_text(&s.shape), s.dtype)?;
        }
        writeln!(f, "artifact:         {} ({} bytes)", self.artifact_file, self.artifact_size)?;
        write!(f, "sha256:           {}", self.artifact_sha256)
    }
}

/// `[B, 32]`-style text for a declared shape.
pub fn shape_text(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Batch => "B".to_owned(),
            Dim::Fixed(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The whole catalog file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// File format version; only [`CATALOG_FORMAT_VERSION`] is accepted.
    pub format_version: u32,
    /// Entries, sorted by blueprint id when written.
    pub entries: Vec<CatalogEntry>,
}

/// Checks a descriptor before it is published or after it is read from disk.
pub fn validate_descriptor(d: &BlueprintDescriptor) -> Result<(), UrzaError> {
    let bad = |detail: String| UrzaError::InvalidDescriptor { blueprint_id: d.blueprint_id.clone(), detail };
    let id = &d.blueprint_id;
    if id.is_empty() || id.len() > MAX_BLUEPRINT_ID_LEN {
        return Err(bad(format!("blueprint id must be 1..={MAX_BLUEPRINT_ID_LEN} bytes")));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(bad("blueprint id may only contain ASCII letters, digits, '_', '-', '.'".to_owned()));
    }
    if d.name.len() > 256 {
        return Err(bad("name longer than 256 bytes".to_owned()));
    }
    if !(d.risk.is_finite() && (0.0..=1.0).contains(&d.risk)) {
        return Err(bad(format!("risk {} is not in [0, 1]", d.risk)));
    }
    if d.parameter_bounds.len() > 64 {
        return Err(bad("more than 64 parameter bounds".to_owned()));
    }
    for (name, b) in &d.parameter_bounds {
        if !(b.min.is_finite() && b.max.is_finite() && b.min <= b.max) {
            return Err(bad(format!("parameter {name}: bounds [{}, {}] are not finite with min <= max", b.min, b.max)));
        }
    }
    let iface = &d.interface;
    for (what, specs) in [("inputs", &iface.inputs), ("outputs", &iface.outputs)] {
        if specs.is_empty() || specs.len() > MAX_TENSORS {
            return Err(bad(format!("interface must declare 1..={MAX_TENSORS} {what}")));
        }
        for spec in specs {
            if spec.shape.is_empty() || spec.shape.len() > MAX_RANK {
                return Err(bad(format!("{what}: rank must be 1..={MAX_RANK}")));
            }
            let mut per_row: u64 = 1;
            for dim in &spec.shape {
                if let Dim::Fixed(n) = dim {
                    if *n == 0 {
                        return Err(bad(format!("{what}: fixed dimension 0")));
                    }
                    per_row = per_row.saturating_mul(*n);
                }
            }
            if per_row > MAX_ELEMENTS_PER_ROW {
                return Err(bad(format!("{what}: {per_row} elements per batch row exceeds {MAX_ELEMENTS_PER_ROW}")));
            }
        }
    }
    Ok(())
}

/// Whether `s` is a lower-case hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_entry(e: &CatalogEntry) -> Result<(), UrzaError> {
    validate_descriptor(&e.descriptor)?;
    let corrupt = |detail: String| UrzaError::CatalogCorrupt { detail: format!("entry {}: {detail}", e.id()) };
    if !is_sha256_hex(&e.artifact_sha256) {
        return Err(corrupt("artifact_sha256 is not 64 lower-case hex digits".to_owned()));
    }
    // The file name is derived from the digest; accepting any other path would
    // let a catalog point fetches outside the library.
    if e.artifact_file != CatalogEntry::artifact_file_for(&e.artifact_sha256) {
        return Err(corrupt(format!("artifact_file {:?} is not artifacts/<sha256>.pt", e.artifact_file)));
    }
    if e.artifact_size == 0 || e.artifact_size > MAX_ARTIFACT_BYTES {
        return Err(corrupt(format!("artifact_size {} is not in 1..={MAX_ARTIFACT_BYTES}", e.artifact_size)));
    }
    Ok(())
}

/// Reads and validates `path`; a missing file is an empty catalog (a new library).
pub fn read_catalog(path: &Path) -> Result<CatalogFile, UrzaError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CatalogFile { format_version: CATALOG_FORMAT_VERSION, entries: Vec::new() });
        }
        Err(source) => return Err(UrzaError::Io { path: path.to_owned(), source }),
    };
    let mut text = Vec::new();
    // take(cap + 1): a file that grew past the cap is detected without reading all of it.
    file.take(MAX_CATALOG_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|source| UrzaError::Io { path: path.to_owned(), source })?;
    if text.len() as u64 > MAX_CATALOG_BYTES {
        return Err(UrzaError::CatalogTooLarge { cap: MAX_CATALOG_BYTES });
    }
    let catalog: CatalogFile =
        serde_json::from_slice(&text).map_err(|e| UrzaError::CatalogCorrupt { detail: e.to_string() })?;
    if catalog.format_version != CATALOG_FORMAT_VERSION {
        return Err(UrzaError::CatalogCorrupt {
            detail: format!("format_version {} (this build reads {CATALOG_FORMAT_VERSION})", catalog.format_version),
        });
    }
    if catalog.entries.len() > MAX_CATALOG_ENTRIES {
        return Err(UrzaError::CatalogFull { cap: MAX_CATALOG_ENTRIES });
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &catalog.entries {
        validate_entry(e)?;
        if !seen.insert(e.id()) {
            return Err(UrzaError::CatalogCorrupt { detail: format!("blueprint id {} appears twice", e.id()) });
        }
    }
    Ok(catalog)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `dest` atomically: temp file in the same directory,
/// `fsync`, rename over `dest`, `fsync` of the directory (so the rename itself
/// survives a crash).
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> Result<(), UrzaError> {
    let dir = dest.parent().ok_or_else(|| UrzaError::Io {
        path: dest.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "destination has no parent directory"),
    })?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| UrzaError::Io { path, source }
    };
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, dest).map_err(io(&dest.to_owned()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: the temp file is garbage either way; the error that matters is returned.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `fsync` a directory so renames into it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), UrzaError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| UrzaError::Io { path: dir.to_owned(), source })
}

/// Serialises and atomically writes the catalog.
pub fn write_catalog(path: &Path, catalog: &CatalogFile) -> Result<(), UrzaError> {
    let mut bytes =
        serde_json::to_vec_pretty(catalog).map_err(|e| UrzaError::CatalogCorrupt { detail: e.to_string() })?;
    bytes.push(b'\n');
    if bytes.len() as u64 > MAX_CATALOG_BYTES {
        return Err(UrzaError::CatalogTooLarge { cap: MAX_CATALOG_BYTES });
    }
    write_atomically(path, &bytes)
}
