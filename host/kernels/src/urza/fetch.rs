//! Strict fetch: every read of artifact bytes is verified against the catalog.
//!
//! The file is read once, in chunks, into a buffer sized from the catalog,
//! and each chunk is hashed as it arrives (no second read, no window between
//! "verify" and "use"). A short or long file, or a digest that differs, is an
//! error; there is nothing to fall back to.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{CatalogEntry, IO_CHUNK, MAX_ARTIFACT_BYTES, UrzaLibrary};

/// Artifact bytes that hashed to the catalog digest, with the entry naming them.
#[derive(Debug, Clone)]
pub struct VerifiedArtifact {
    /// The catalog entry the bytes were verified against.
    pub entry: CatalogEntry,
    /// The artifact's bytes (length = `entry.artifact_size`).
    pub bytes: Vec<u8>,
}

/// Why a fetch failed. Each variant is something a caller or operator acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The catalog has no such blueprint.
    #[error("unknown blueprint {blueprint_id:?}")]
    UnknownBlueprint {
        /// The id asked for.
        blueprint_id: String,
    },
    /// The artifact file is not where the catalog says.
    #[error("artifact for {blueprint_id} missing at {path}")]
    ArtifactMissing {
        /// The blueprint.
        blueprint_id: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// The artifact was quarantined after failing verification; republish it.
    #[error("artifact for {blueprint_id} (sha256 {sha256}) is quarantined")]
    ArtifactQuarantined {
        /// The blueprint.
        blueprint_id: String,
        /// Digest of the quarantined artifact.
        sha256: String,
    },
    /// The file is shorter (truncated) or longer than the catalog size.
    #[error("artifact for {blueprint_id} has {actual} bytes, catalog says {expected}{}", if actual < expected { " (truncated)" } else { "" })]
    SizeMismatch {
        /// The blueprint.
        blueprint_id: String,
        /// Size recorded in the catalog.
        expected: u64,
        /// Bytes found: the file length, or the bytes read (reading stops one
        /// byte past `expected`).
        actual: u64,
    },
    /// The bytes do not hash to the catalog digest.
    #[error("artifact for {blueprint_id}: sha256 {actual} does not match catalog {expected}")]
    DigestMismatch {
        /// The blueprint.
        blueprint_id: String,
        /// Digest recorded in the catalog.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },
    /// Reading the artifact failed for another reason (permissions, I/O).
    #[error("reading artifact for {blueprint_id} at {path}: {source}")]
    Io {
        /// The blueprint.
        blueprint_id: String,
        /// The file.
        path: PathBuf,
        /// The underlying error (shared, so the error can be cloned to every
        /// caller waiting on the same load).
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl FetchError {
    /// Whether the artifact on disk is corrupt and must be quarantined.
    pub fn is_corrupt_artifact(&self) -> bool {
        matches!(self, FetchError::SizeMismatch { .. } | FetchError::DigestMismatch { .. })
    }

    /// Machine-readable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::UnknownBlueprint { .. } => "unknown_blueprint",
            FetchError::ArtifactMissing { .. } => "artifact_missing",
            FetchError::ArtifactQuarantined { .. } => "artifact_quarantined",
            FetchError::SizeMismatch { .. } => "size_mismatch",
            FetchError::DigestMismatch { .. } => "digest_mismatch",
            FetchError::Io { .. } => "artifact_io",
        }
    }
}

impl UrzaLibrary {
    /// Reads the artifact for `blueprint_id` once, hashing as it reads, and
    /// returns the bytes only if length and SHA-256 match the catalog.
    pub fn fetch(&self, blueprint_id: &str) -> Result<VerifiedArtifact, FetchError> {
        let entry = self
            .entry(blueprint_id)
            .ok_or_else(|| FetchError::UnknownBlueprint { blueprint_id: blueprint_id.to_owned() })?;
        let bytes = self.read_verified(&entry)?;
        Ok(VerifiedArtifact { entry, bytes })
    }

    /// Strict read of the artifact a specific entry names (the entry the
    /// caller resolved, even if the catalog was reloaded since).
    pub fn fetch_entry(&self, entry: &CatalogEntry) -> Result<VerifiedArtifact, FetchError> {
        let bytes = self.read_verified(entry)?;
        Ok(VerifiedArtifact { entry: entry.clone(), bytes })
    }

    /// The strict read for one entry (also used by `verify_all`).
    pub(crate) fn read_verified(&self, entry: &CatalogEntry) -> Result<Vec<u8>, FetchError> {
        let id = entry.id().to_owned();
        let path = self.artifact_path(entry);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.quarantine_path(&entry.artifact_sha256).exists() {
                    return Err(FetchError::ArtifactQuarantined {
                        blueprint_id: id,
                        sha256: entry.artifact_sha256.clone(),
                    });
                }
                return Err(FetchError::ArtifactMissing { blueprint_id: id, path });
            }
            Err(source) => return Err(FetchError::Io { blueprint_id: id, path, source: Arc::new(source) }),
        };
        // A regular file whose length already differs fails before any read
        // (the streaming checks below still run: the file may change under us).
        if let Ok(meta) = file.metadata()
            && meta.is_file()
            && meta.len() != entry.artifact_size
        {
            return Err(FetchError::SizeMismatch {
                blueprint_id: id,
                expected: entry.artifact_size,
                actual: meta.len(),
            });
        }
        // The catalog size was validated against the cap when the catalog was read;
        // min() keeps the allocation bounded even so.
        let expected = entry.artifact_size.min(MAX_ARTIFACT_BYTES);
        let len = usize::try_from(expected).unwrap_or(usize::MAX);
        // Read chunk by chunk into the final buffer's spare capacity (no
        // zero-fill pass) and hash each chunk while it is still in cache: one
        // pass over the file, one copy into memory. The limit is one byte
        // past the expected size, which tells a longer file apart without
        // reading the rest of it.
        let mut bytes = Vec::with_capacity(len.saturating_add(1));
        let mut hasher = Sha256::new();
        let mut reader = file.take(expected.saturating_add(1));
        loop {
            let before = bytes.len();
            // read_to_end retries EINTR and stops at the chunk limit or EOF.
            let n = match (&mut reader).take(IO_CHUNK as u64).read_to_end(&mut bytes) {
                Ok(n) => n,
                Err(source) => return Err(FetchError::Io { blueprint_id: id, path, source: Arc::new(source) }),
            };
            if n == 0 {
                break;
            }
            // A byte past `expected` is never hashed: the size check below fails first.
            hasher.update(&bytes[before..(before + n).min(len)]);
        }
        let actual = bytes.len() as u64;
        if actual != entry.artifact_size {
            return Err(FetchError::SizeMismatch { blueprint_id: id, expected: entry.artifact_size, actual });
        }
        let digest = hex::encode(hasher.finalize());
        if digest != entry.artifact_sha256 {
            return Err(FetchError::DigestMismatch {
                blueprint_id: id,
                expected: entry.artifact_sha256.clone(),
                actual: digest,
            });
        }
        Ok(bytes)
    }
}
