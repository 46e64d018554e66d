//! Durable checkpoints: one self-verifying file per rollback point in the
//! trainer's checkpoint directory, `<point_id>.kckpt`:
//!
//! ```text
//! KASMINA-CHECKPOINT 1\n
//! {"point_id": …, "payload_sha256": …, "payload_bytes": …, "host_tensors": …, "seeds": [slot records]}\n
//! <payload: libtorch's multi-tensor format, tensors named host.<i> and seed.<k>.<j>>
//! ```
//!
//! Written atomically: a hidden temporary file is written and fsynced,
//! renamed over the final name, and the directory fsynced, so a crash
//! leaves the old file or the new one, never half of one. Read strictly:
//! the magic, the header, the payload's length and its SHA-256 must all
//! match before a single tensor is loaded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use super::{Checkpoint, SlotRecord};

const MAGIC: &[u8] = b"KASMINA-CHECKPOINT 1\n";
/// Longest header accepted (a header lists slot records, not tensors).
const MAX_HEADER_BYTES: usize = 1 << 20;
/// File name suffix.
pub(crate) const SUFFIX: &str = ".kckpt";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    point_id: String,
    payload_sha256: String,
    payload_bytes: u64,
    host_tensors: usize,
    seeds: Vec<SlotRecord>,
}

/// The file of `point_id` in `dir`; ids are restricted to a safe alphabet so
/// a directive can never name a path outside the directory.
pub(crate) fn path_of(dir: &Path, point_id: &str) -> Result<PathBuf, String> {
    let safe = !point_id.is_empty()
        && point_id.len() <= 128
        && !point_id.starts_with('.')
        && point_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !safe {
        return Err(format!("checkpoint id {point_id:?} is not a safe file name"));
    }
    Ok(dir.join(format!("{point_id}{SUFFIX}")))
}

/// Writes `checkpoint` atomically; returns the file's size in bytes.
pub(crate) fn write(dir: &Path, checkpoint: &Checkpoint) -> Result<u64, String> {
    let path = path_of(dir, &checkpoint.point_id)?;
    let mut named: Vec<(String, &Tensor)> = Vec::new();
    for (i, t) in checkpoint.host.iter().enumerate() {
        named.push((format!("host.{i}"), t));
    }
    for (k, (_, tensors)) in checkpoint.seeds.iter().enumerate() {
        for (j, t) in tensors.iter().enumerate() {
            named.push((format!("seed.{k}.{j}"), t));
        }
    }
    let mut payload = Vec::new();
    Tensor::save_multi_to_stream(&named, &mut payload).map_err(|e| format!("serialising tensors: {e}"))?;
    let header = Header {
        point_id: checkpoint.point_id.clone(),
        payload_sha256: hex::encode(Sha256::digest(&payload)),
        payload_bytes: payload.len() as u64,
        host_tensors: checkpoint.host.len(),
        seeds: checkpoint.seeds.iter().map(|(record, _)| record.clone()).collect(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| format!("encoding the header: {e}"))?;
    let tmp = dir.join(format!(".{}{SUFFIX}.tmp", checkpoint.point_id));
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    for part in [MAGIC, &header, b"\n", &payload] {
        file.write_all(part).map_err(|e| io("writing", e))?;
    }
    file.sync_all().map_err(|e| io("fsyncing", e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsyncing directory {}: {e}", dir.display()))?;
    Ok((MAGIC.len() + header.len() + 1 + payload.len()) as u64)
}

/// Reads and verifies the checkpoint of `point_id`, tensors on `device`.
pub(crate) fn read(dir: &Path, point_id: &str, device: Device) -> Result<Checkpoint, String> {
    let path = path_of(dir, point_id)?;
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let bad = |what: String| format!("{} is not a valid checkpoint: {what}", path.display());
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("wrong magic".to_owned()))?;
    let end = rest.iter().take(MAX_HEADER_BYTES).position(|b| *b == b'\n');
    let end = end.ok_or_else(|| bad("no header line".to_owned()))?;
    let header: Header = serde_json::from_slice(&rest[..end]).map_err(|e| bad(format!("header: {e}")))?;
    let payload = &rest[end + 1..];
    if header.point_id != point_id {
        return Err(bad(format!("it holds point {}", header.point_id)));
    }
    if payload.len() as u64 != header.payload_bytes {
        return Err(bad(format!("payload is {} bytes, header says {}", payload.len(), header.payload_bytes)));
    }
    let digest = hex::encode(Sha256::digest(payload));
    if digest != header.payload_sha256 {
        return Err(bad(format!("payload SHA-256 {digest} does not match {}", header.payload_sha256)));
    }
    let named = Tensor::load_multi_from_stream_with_device(std::io::Cursor::new(payload), device)
        .map_err(|e| bad(format!("tensors: {e}")))?;
    let mut host: Vec<Option<Tensor>> = (0..header.host_tensors).map(|_| None).collect();
    let mut seeds: Vec<(SlotRecord, Vec<Option<Tensor>>)> =
        header.seeds.into_iter().map(|r| (r.clone(), (0..r.tensors).map(|_| None).collect())).collect();
    for (name, tensor) in named {
        let parts: Vec<&str> = name.split('.').collect();
        let slot = match parts.as_slice() {
            ["host", i] => i.parse::<usize>().ok().and_then(|i| host.get_mut(i)),
            ["seed", k, j] => match (k.parse::<usize>(), j.parse::<usize>()) {
                (Ok(k), Ok(j)) => seeds.get_mut(k).and_then(|(_, t)| t.get_mut(j)),
                _ => None,
            },
            _ => None,
        };
        match slot {
            Some(slot @ None) => *slot = Some(tensor),
            _ => return Err(bad(format!("unexpected or repeated tensor {name:?}"))),
        }
    }
    let complete = |v: Vec<Option<Tensor>>, what: &str| -> Result<Vec<Tensor>, String> {
        v.into_iter().collect::<Option<Vec<Tensor>>>().ok_or_else(|| bad(format!("{what} tensors are missing")))
    };
    let host = complete(host, "host")?;
    let seeds = seeds
        .into_iter()
        .map(|(record, tensors)| {
            let what = format!("seed {}", record.seed_id);
            complete(tensors, &what).map(|t| (record, t))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Checkpoint { point_id: point_id.to_owned(), host, seeds })
}

/// Checkpoint ids present in `dir`, oldest first (by modification time).
pub(crate) fn list(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(SUFFIX).filter(|id| !id.starts_with('.')) {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            found.push((modified, id.to_owned()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

/// Removes the file of `point_id` (evicted).
pub(crate) fn remove(dir: &Path, point_id: &str) -> Result<(), String> {
    let path = path_of(dir, point_id)?;
    std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))
}
