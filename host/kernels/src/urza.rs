//! Urza, the blueprint library on disk (SPEC.md §7).
//!
//! Layout of a library directory:
//! ```text
//! <dir>/catalog.json              entries: descriptor + sha256 + size + file (atomic writes)
//! <dir>/artifacts/<sha256>.pt     TorchScript artifacts, content-addressed
//! <dir>/quarantine/<sha256>.pt    artifacts that failed verification, kept for forensics
//! <dir>/quarantine/<sha256>.reason.json   why and when
//! ```
//! Submodules: [`catalog`] (file format, validation, atomic write),
//! [`fetch`] (strict, verified reads), [`verify`] (re-hash everything).
//!
//! One process is expected to publish at a time (publishes within a process
//! are serialised); a reader in another process sees either the old or the
//! new catalog and picks up changes with [`UrzaLibrary::reload`].

pub mod catalog;
pub mod fetch;
pub mod verify;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use kasmina_core::{Clock, SystemClock};
use leyline::BlueprintDescriptor;
use sha2::{Digest, Sha256};

pub use catalog::{CatalogEntry, MAX_ARTIFACT_BYTES, MAX_CATALOG_BYTES, MAX_CATALOG_ENTRIES};
pub use fetch::{FetchError, VerifiedArtifact};
pub use verify::{VerifyOutcome, VerifyReport};

/// Chunk size for streaming artifacts through SHA-256: large enough to
/// amortise syscalls, small enough to stay in L2 while it is hashed.
pub(crate) const IO_CHUNK: usize = 256 << 10;

/// What can go wrong managing the library (publish, list, verify, open).
/// Fetch failures have their own type, [`FetchError`].
#[derive(Debug, thiserror::Error)]
pub enum UrzaError {
    /// A filesystem operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog file is larger than [`MAX_CATALOG_BYTES`].
    #[error("catalog file exceeds {cap} bytes")]
    CatalogTooLarge {
        /// The cap.
        cap: u64,
    },
    /// The catalog file cannot be parsed or holds an invalid entry.
    #[error("catalog is corrupt: {detail}")]
    CatalogCorrupt {
        /// What is wrong.
        detail: String,
    },
    /// The catalog already holds [`MAX_CATALOG_ENTRIES`] entries.
    #[error("catalog is full ({cap} entries)")]
    CatalogFull {
        /// The cap.
        cap: usize,
    },
    /// A descriptor fails validation.
    #[error("invalid descriptor for {blueprint_id:?}: {detail}")]
    InvalidDescriptor {
        /// The id as given.
        blueprint_id: String,
        /// What is wrong.
        detail: String,
    },
    /// The artifact to publish is larger than [`MAX_ARTIFACT_BYTES`].
    #[error("artifact {path} exceeds {cap} bytes")]
    ArtifactTooLarge {
        /// The source file.
        path: PathBuf,
        /// The cap.
        cap: u64,
    },
    /// The artifact to publish is empty.
    #[error("artifact {path} is empty")]
    ArtifactEmpty {
        /// The source file.
        path: PathBuf,
    },
    /// The id is already published with a different artifact or descriptor;
    /// publish under a new id (catalog entries are immutable).
    #[error("blueprint {blueprint_id} is already published (sha256 {existing_sha256}) with different content")]
    BlueprintExists {
        /// The id.
        blueprint_id: String,
        /// Digest of the published artifact.
        existing_sha256: String,
    },
    /// No entry has this id.
    #[error("unknown blueprint {blueprint_id:?}")]
    UnknownBlueprint {
        /// The id asked for.
        blueprint_id: String,
    },
}

/// An Urza library rooted at one directory.
pub struct UrzaLibrary {
    root: PathBuf,
    clock: Arc<dyn Clock>,
    entries: RwLock<BTreeMap<String, Arc<CatalogEntry>>>,
    // Serialises read-modify-write of catalog.json within this process.
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for UrzaLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrzaLibrary").field("root", &self.root).field("entries", &self.read().len()).finish()
    }
}

impl UrzaLibrary {
    /// Opens (creating the directories if needed) the library at `dir`,
    /// with the system clock for publish and quarantine timestamps.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, UrzaError> {
        Self::open_with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens the library at `dir` with an injected clock.
    pub fn open_with_clock(dir: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self, UrzaError> {
        let root = dir.as_ref().to_owned();
        for d in [root.clone(), root.join("artifacts"), root.join("quarantine")] {
            fs::create_dir_all(&d).map_err(|source| UrzaError::Io { path: d.clone(), source })?;
        }
        let lib = UrzaLibrary { root, clock, entries: RwLock::new(BTreeMap::new()), write_lock: Mutex::new(()) };
        lib.reload()?;
        Ok(lib)
    }

    /// Re-reads `catalog.json` (e.g. after another process published).
    pub fn reload(&self) -> Result<(), UrzaError> {
        let file = catalog::read_catalog(&self.catalog_path())?;
        let map = file.entries.into_iter().map(|e| (e.id().to_owned(), Arc::new(e))).collect();
        *self.write() = map;
        Ok(())
    }

    /// The library directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of `catalog.json`.
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("catalog.json")
    }

    /// Absolute path of an entry's artifact.
    pub fn artifact_path(&self, entry: &CatalogEntry) -> PathBuf {
        self.root.join(&entry.artifact_file)
    }

    /// Where a quarantined artifact with this digest is kept.
    pub fn quarantine_path(&self, sha256_hex: &str) -> PathBuf {
        self.root.join("quarantine").join(format!("{sha256_hex}.pt"))
    }

    /// Every entry, sorted by blueprint id.
    pub fn list(&self) -> Vec<CatalogEntry> {
        self.read().values().map(|e| CatalogEntry::clone(e)).collect()
    }

    /// The entry for `blueprint_id`.
    pub fn show(&self, blueprint_id: &str) -> Result<CatalogEntry, UrzaError> {
        self.entry(blueprint_id).ok_or_else(|| UrzaError::UnknownBlueprint { blueprint_id: blueprint_id.to_owned() })
    }

    /// The entry for `blueprint_id`, if published.
    pub fn entry(&self, blueprint_id: &str) -> Option<CatalogEntry> {
        self.read().get(blueprint_id).map(|e| CatalogEntry::clone(e))
    }

    /// The shared entry for `blueprint_id` (no deep copy).
    pub fn entry_arc(&self, blueprint_id: &str) -> Option<Arc<CatalogEntry>> {
        self.read().get(blueprint_id).cloned()
    }

    /// Whether the catalog lists `blueprint_id` (no copy at all).
    pub fn contains(&self, blueprint_id: &str) -> bool {
        self.read().contains_key(blueprint_id)
    }

    /// Runs `f` on the entry under the catalog read lock: the allocation-free
    /// lookup the kernel cache's hit path uses.
    pub(crate) fn with_entry<R>(&self, blueprint_id: &str, f: impl FnOnce(Option<&Arc<CatalogEntry>>) -> R) -> R {
        f(self.read().get(blueprint_id))
    }

    /// Publishes `descriptor` with the TorchScript file at `artifact`: copies
    /// it into `artifacts/<sha256>.pt` (hashing while copying, size-capped),
    /// then records the entry with an atomic catalog write.
    ///
    /// Publishing the same id with the same descriptor and bytes again is a
    /// no-op that also restores the artifact file if it had gone missing or
    /// been quarantined; the same id with anything different is
    /// [`UrzaError::BlueprintExists`].
    pub fn publish(
        &self,
        descriptor: BlueprintDescriptor,
        artifact: impl AsRef<Path>,
    ) -> Result<CatalogEntry, UrzaError> {
        catalog::validate_descriptor(&descriptor)?;
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tmp, sha, size) = self.copy_hashed(artifact.as_ref())?;
        let result = self.record(descriptor, &tmp, sha, size);
        if tmp.exists() {
            // The copy was not renamed into place (error or duplicate); it is garbage.
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn record(
        &self,
        descriptor: BlueprintDescriptor,
        tmp: &Path,
        sha: String,
        size: u64,
    ) -> Result<CatalogEntry, UrzaError> {
        let id = descriptor.blueprint_id.clone();
        let existing = self.entry(&id);
        if let Some(e) = &existing
            && (e.artifact_sha256 != sha || e.descriptor != descriptor)
        {
            return Err(UrzaError::BlueprintExists { blueprint_id: id, existing_sha256: e.artifact_sha256.clone() });
        }
        let artifacts = self.root.join("artifacts");
        let dest = self.root.join(CatalogEntry::artifact_file_for(&sha));
        // Content-addressed: the freshly hashed copy is correct by construction,
        // so it replaces whatever is at `dest` (possibly a corrupted copy).
        fs::rename(tmp, &dest).map_err(|source| UrzaError::Io { path: dest.clone(), source })?;
        catalog::sync_dir(&artifacts)?;
        if let Some(e) = existing {
            return Ok(e);
        }
        let entry = CatalogEntry {
            descriptor,
            artifact_file: CatalogEntry::artifact_file_for(&sha),
            artifact_sha256: sha,
            artifact_size: size,
            published_at_ms: self.clock.now_ms(),
        };
        let mut next = self.read().clone();
        if next.len() >= MAX_CATALOG_ENTRIES {
            return Err(UrzaError::CatalogFull { cap: MAX_CATALOG_ENTRIES });
        }
        next.insert(id, Arc::new(entry.clone()));
        let file = catalog::CatalogFile {
            format_version: catalog::CATALOG_FORMAT_VERSION,
            entries: next.values().map(|e| CatalogEntry::clone(e)).collect(),
        };
        catalog::write_catalog(&self.catalog_path(), &file)?;
        *self.write() = next;
        Ok(entry)
    }

    /// Copies `src` into a temp file under `artifacts/`, hashing as it goes.
    fn copy_hashed(&self, src: &Path) -> Result<(PathBuf, String, u64), UrzaError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| UrzaError::Io { path, source }
        };
        let file = File::open(src).map_err(io(src))?;
        let tmp =
            self.root.join("artifacts").join(format!(".publish-{}-{}.tmp", std::process::id(), self.clock.now_ms()));
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io(&tmp))?;
        let mut reader = file.take(MAX_ARTIFACT_BYTES + 1);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; IO_CHUNK];
        let mut size: u64 = 0;
        let copied = (|| {
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io(src)(e)),
                };
                size += n as u64;
                if size > MAX_ARTIFACT_BYTES {
                    return Err(UrzaError::ArtifactTooLarge { path: src.to_owned(), cap: MAX_ARTIFACT_BYTES });
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io(&tmp))?;
            }
            if size == 0 {
                return Err(UrzaError::ArtifactEmpty { path: src.to_owned() });
            }
            out.sync_all().map_err(io(&tmp))
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok((tmp, hex::encode(hasher.finalize()), size))
    }

    /// Moves `artifacts/<sha256>.pt` to `quarantine/` with a reason file.
    /// Returns the quarantine path.
    pub fn quarantine(&self, sha256_hex: &str, reason: &str) -> Result<PathBuf, UrzaError> {
        if !catalog::is_sha256_hex(sha256_hex) {
            return Err(UrzaError::CatalogCorrupt { detail: format!("{sha256_hex:?} is not a sha256 digest") });
        }
        let src = self.root.join(CatalogEntry::artifact_file_for(sha256_hex));
        let dest = self.quarantine_path(sha256_hex);
        fs::rename(&src, &dest).map_err(|source| UrzaError::Io { path: src.clone(), source })?;
        let note =
            serde_json::json!({ "sha256": sha256_hex, "reason": reason, "quarantined_at_ms": self.clock.now_ms() });
        let note_path = self.root.join("quarantine").join(format!("{sha256_hex}.reason.json"));
        catalog::write_atomically(&note_path, note.to_string().as_bytes())?;
        catalog::sync_dir(&self.root.join("artifacts"))?;
        Ok(dest)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<CatalogEntry>>> {
        // The map is replaced whole under the write lock; a panic elsewhere cannot tear it.
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<CatalogEntry>>> {
        self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
