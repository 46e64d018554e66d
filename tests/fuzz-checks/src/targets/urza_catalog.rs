//! The Urza blueprint catalog and its descriptors (`UrzaLibrary::open`,
//! `fetch`, `verify_all`) on a library directory in memory (/dev/shm).
//!
//! Input: a u16-length piece of `catalog.json`, then the bytes of one
//! artifact. In the catalog text `@SHA0@` and `@SIZE0@` are replaced by the
//! artifact's real SHA-256 and length (a fuzzer cannot find a digest), so
//! mutations reach the checks behind the digest. An opened library names
//! only artifacts inside its own directory; a fetch returns exactly the
//! bytes its entry pins, else a typed error; no allocation exceeds the
//! catalog cap.
//!
//! Run: `scripts/fuzz.sh urza_catalog 60` (a host target).

use std::fs;

use crate::{Input, scratch_dir, with_alloc_cap};
use kasmina_kernels::UrzaLibrary;
use kasmina_kernels::urza::MAX_CATALOG_BYTES;
use sha2::{Digest, Sha256};

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let catalog = String::from_utf8_lossy(input.piece()).into_owned();
    let artifact = input.rest();
    let sha = hex::encode(Sha256::digest(artifact));
    let catalog = catalog.replace("@SHA0@", &sha).replace("@SIZE0@", &artifact.len().to_string());

    let root = scratch_dir("urza");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("artifacts")).expect("scratch dir");
    fs::write(root.join("catalog.json"), catalog.as_bytes()).expect("catalog written");
    fs::write(root.join("artifacts").join(format!("{sha}.pt")), artifact).expect("artifact written");

    let cap = MAX_CATALOG_BYTES as usize;
    if let Ok(urza) = with_alloc_cap(cap, "opening the catalog", || UrzaLibrary::open(&root)) {
        for entry in urza.list() {
            let path = urza.artifact_path(&entry);
            assert!(path.starts_with(root.join("artifacts")), "an entry names a file outside the library: {path:?}");
            assert!(!entry.artifact_file.contains(".."), "an entry's file climbs out: {:?}", entry.artifact_file);
            if let Ok(verified) = urza.fetch(entry.id()) {
                assert_eq!(
                    hex::encode(Sha256::digest(&verified.bytes)),
                    entry.artifact_sha256,
                    "fetch returned other bytes"
                );
                assert_eq!(verified.bytes.len() as u64, entry.artifact_size);
            }
        }
        let _ = urza.verify_all();
    }
    let _ = fs::remove_dir_all(&root);
}
