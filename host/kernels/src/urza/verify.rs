//! `urza verify`: re-hash every artifact, report, quarantine the corrupt ones.

use std::fmt;
use std::path::PathBuf;

use super::{FetchError, UrzaLibrary};

/// What verification found for one catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Size and digest match.
    Ok,
    /// The artifact file is missing.
    Missing,
    /// The artifact was already in quarantine.
    AlreadyQuarantined,
    /// Size or digest differed; the file was moved to quarantine.
    Quarantined {
        /// Why (the fetch error's text).
        reason: String,
        /// Where the file now is.
        path: PathBuf,
    },
    /// Size or digest differed but moving the file failed; it is still in place.
    QuarantineFailed {
        /// Why it was to be quarantined, and why that failed.
        reason: String,
    },
    /// The file could not be read.
    Unreadable {
        /// The I/O error.
        reason: String,
    },
}

impl VerifyOutcome {
    /// Whether this entry is healthy.
    pub fn is_ok(&self) -> bool {
        matches!(self, VerifyOutcome::Ok)
    }
}

/// The result of [`UrzaLibrary::verify_all`]: one line per catalog entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// `(blueprint id, outcome)`, sorted by id.
    pub results: Vec<(String, VerifyOutcome)>,
}

impl VerifyReport {
    /// Number of healthy entries.
    pub fn ok_count(&self) -> usize {
        self.results.iter().filter(|(_, o)| o.is_ok()).count()
    }

    /// Whether every entry is healthy (the CLI exits non-zero otherwise).
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(|(_, o)| o.is_ok())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, outcome) in &self.results {
            match outcome {
                VerifyOutcome::Ok => writeln!(f, "ok           {id}")?,
                VerifyOutcome::Missing => writeln!(f, "MISSING      {id}")?,
                VerifyOutcome::AlreadyQuarantined => writeln!(f, "QUARANTINED  {id} (earlier)")?,
                VerifyOutcome::Quarantined { reason, path } => {
                    writeln!(f, "QUARANTINED  {id}: {reason} -> {}", path.display())?
                }
                VerifyOutcome::QuarantineFailed { reason } => writeln!(f, "CORRUPT      {id}: {reason}")?,
                VerifyOutcome::Unreadable { reason } => writeln!(f, "UNREADABLE   {id}: {reason}")?,
            }
        }
        write!(f, "{} of {} artifacts verified", self.ok_count(), self.results.len())
    }
}

impl UrzaLibrary {
    /// Re-hashes every artifact in the catalog. Corrupt ones (size or digest
    /// mismatch) are moved to `quarantine/`; nothing is repaired or replaced.
    pub fn verify_all(&self) -> VerifyReport {
        let mut results = Vec::new();
        for entry in self.list() {
            let outcome = match self.read_verified(&entry) {
                Ok(_) => VerifyOutcome::Ok,
                Err(FetchError::ArtifactMissing { .. }) => VerifyOutcome::Missing,
                Err(FetchError::ArtifactQuarantined { .. }) => VerifyOutcome::AlreadyQuarantined,
                Err(e) if e.is_corrupt_artifact() => match self.quarantine(&entry.artifact_sha256, &e.to_string()) {
                    Ok(path) => VerifyOutcome::Quarantined { reason: e.to_string(), path },
                    Err(q) => VerifyOutcome::QuarantineFailed { reason: format!("{e}; quarantine failed: {q}") },
                },
                Err(e) => VerifyOutcome::Unreadable { reason: e.to_string() },
            };
            results.push((entry.id().to_owned(), outcome));
        }
        VerifyReport { results }
    }
}
