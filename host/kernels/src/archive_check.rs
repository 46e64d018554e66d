//! A bound libtorch's loader does not have: every length a TorchScript
//! archive's pickles declare must fit in the record that declares it.
//!
//! libtorch's unpickler reserves a string or byte buffer of the declared
//! length before it reads the bytes, and grows its memo table to the
//! declared index. One flipped bit in `data.pkl` (a 1-character
//! `BINUNICODE` declaring 2 GiB, found by the `torchscript` fuzz target)
//! made `CModule::load_data` take 2.2 GB of memory before it failed. So
//! before an artifact reaches libtorch, this walks every `.pkl` record of
//! the zip archive opcode by opcode and refuses one whose declared lengths
//! or memo indices exceed the record, whose opcodes are not pickle
//! opcodes, or that does not end with STOP. It reads each record into
//! memory bounded by the archive's own size (a record cannot decompress to
//! more than [`MAX_INFLATION`] times the artifact).
//!
//! Every storage a `data.pkl` or `constants.pkl` rebuilds a tensor from
//! must be a record holding at least the elements it declares: libtorch
//! trusts the declared count and read past a shortened record (a fuzz
//! finding: a SIGSEGV). What it does not bound: the prewarm forward runs
//! the artifact's own code — under a memory cap (`alloc_cap`), which work
//! forked onto another thread would escape, so source that calls `fork` is
//! refused here.

use std::io::{Cursor, Read};

/// A record may decompress to at most this many times the artifact's size
/// (TorchScript's own writer stores records uncompressed).
pub const MAX_INFLATION: u64 = 64;

/// Refuses an archive a pickle of which declares more than it holds (see
/// the module docs); `Ok` says nothing else about the archive.
pub fn check_archive(bytes: &[u8]) -> Result<(), String> {
    let entries = check_directory(bytes)?;
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a TorchScript archive (a zip file): {e}"))?;
    if archive.len() as u64 != entries {
        return Err(format!(
            "the archive's directory lists {entries} records but {} could be read: \
             refused, as libtorch might read records this check cannot see",
            archive.len()
        ));
    }
    if !archive.file_names().any(|n| n.ends_with("/data.pkl") || n == "data.pkl") {
        return Err("no data.pkl record: not a TorchScript archive".to_owned());
    }
    let bound = (bytes.len() as u64).saturating_mul(MAX_INFLATION);
    let mut storages = Vec::new();
    for index in 0..archive.len() {
        let mut record = archive.by_index(index).map_err(|e| format!("archive record {index}: {e}"))?;
        let name = record.name().to_owned();
        if record.size() > bound {
            return Err(format!(
                "record {name} declares {} bytes, over {MAX_INFLATION}× the {}-byte artifact",
                record.size(),
                bytes.len()
            ));
        }
        let code = is_code_record(&name);
        if !code && !name.ends_with(".pkl") && !name.ends_with(".debug_pkl") {
            continue;
        }
        let mut content = Vec::new();
        // `size()` was bounded above; `take` holds even if it lied.
        (&mut record).take(bound).read_to_end(&mut content).map_err(|e| format!("record {name} is corrupt: {e}"))?;
        if code {
            check_code(&content).map_err(|why| format!("record {name}: {why}"))?;
            continue;
        }
        let pickle = content;
        check_pickle(&pickle).map_err(|why| format!("record {name}: {why}"))?;
        // The tensors a pickle rebuilds: their storage records must hold them.
        let dir = match name.rsplit_once('/') {
            Some((prefix, "data.pkl")) => Some(format!("{prefix}/data/")),
            Some((prefix, "constants.pkl")) => Some(format!("{prefix}/constants/")),
            _ => None,
        };
        if let Some(dir) = dir {
            for storage in crate::archive_storage::storages(&pickle).map_err(|why| format!("record {name}: {why}"))? {
                storages.push((name.clone(), format!("{dir}{}", storage.key), storage));
            }
        }
    }
    for (pickle, record, storage) in storages {
        let size = archive.by_name(&record).map(|r| r.size()).map_err(|_| {
            format!("record {pickle} rebuilds a tensor from storage {record}, which the archive does not have")
        })?;
        if size < storage.bytes {
            return Err(format!(
                "record {pickle} rebuilds a tensor from storage {record} of {} × {} ({} bytes), but that record \
                 holds {size} bytes: libtorch would read past it",
                storage.numel, storage.kind, storage.bytes
            ));
        }
    }
    Ok(())
}

/// A record of TorchScript source (`<archive>/code/…/*.py`), the code
/// libtorch compiles and runs.
fn is_code_record(name: &str) -> bool {
    name.ends_with(".py") && (name.starts_with("code/") || name.contains("/code/"))
}

/// Refuses source that calls `fork`: TorchScript runs a forked call on
/// libtorch's inter-op thread pool, outside the per-thread memory cap
/// prewarm runs the kernel's code under (`alloc_cap`). A seed kernel has no
/// need of it. Any identifier `fork` or `_fork` followed by `(` counts,
/// whatever it is qualified with.
fn check_code(code: &[u8]) -> Result<(), String> {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < code.len() {
        if !is_ident(code[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < code.len() && is_ident(code[i]) {
            i += 1;
        }
        let ident = &code[start..i];
        if ident == b"fork" || ident == b"_fork" {
            let next = code[i..].iter().find(|b| !b.is_ascii_whitespace());
            if next == Some(&b'(') {
                return Err(format!(
                    "the kernel's code calls `{}(` at byte {start}: work forked onto another thread would run \
                     outside the prewarm memory cap; kernels must run on the calling thread",
                    String::from_utf8_lossy(ident)
                ));
            }
        }
    }
    Ok(())
}

const EOCD: &[u8; 4] = b"PK\x05\x06";
const ZIP64_LOCATOR: &[u8; 4] = b"PK\x06\x07";
const ZIP64_EOCD: &[u8; 4] = b"PK\x06\x06";

/// `len` bytes at `at`, little-endian (offsets come from the input: no
/// arithmetic on them may overflow).
fn field(bytes: &[u8], at: usize, len: usize) -> Result<u64, String> {
    at.checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .map(little_endian)
        .ok_or_else(|| format!("the archive's end records point past its end (byte {at})"))
}

/// The number of records the archive's end records declare, read the way
/// libtorch's zip reader reads them: a second fuzz finding was an archive
/// whose classic end record had been zeroed (0 records, which the zip crate
/// believed, so nothing was checked) while its ZIP64 end record still
/// listed every record (which libtorch believed, reading a pickle that
/// declared 3 GiB). So the archive must end exactly with its end record (no
/// comment, no trailing bytes, as TorchScript's writer leaves it), and a
/// ZIP64 end record, when present, must agree with the classic one.
fn check_directory(bytes: &[u8]) -> Result<u64, String> {
    let eocd = bytes.len().checked_sub(22).filter(|&at| &bytes[at..at + 4] == EOCD).ok_or_else(|| {
        "not a TorchScript archive: it does not end with a zip end-of-central-directory record \
         (a comment or trailing bytes, which TorchScript's writer never leaves)"
            .to_owned()
    })?;
    let (entries, dir_size, dir_offset) =
        (field(bytes, eocd + 10, 2)?, field(bytes, eocd + 12, 4)?, field(bytes, eocd + 16, 4)?);
    let Some(locator) = eocd.checked_sub(20).filter(|&at| &bytes[at..at + 4] == ZIP64_LOCATOR) else {
        return Ok(entries);
    };
    let record = usize::try_from(field(bytes, locator + 8, 8)?).map_err(|_| "ZIP64 end record offset".to_owned())?;
    if record.checked_add(4).and_then(|end| bytes.get(record..end)) != Some(ZIP64_EOCD.as_slice()) {
        return Err(format!("the ZIP64 locator points at byte {record}, which is not a ZIP64 end record"));
    }
    let (entries64, dir_size64, dir_offset64) =
        (field(bytes, record + 32, 8)?, field(bytes, record + 40, 8)?, field(bytes, record + 48, 8)?);
    // A classic field at its maximum defers to the ZIP64 one; any other
    // value must be the same number.
    let agree = |classic: u64, max: u64, zip64: u64| classic == zip64 || classic == max;
    if !(agree(entries, 0xffff, entries64)
        && agree(dir_size, 0xffff_ffff, dir_size64)
        && agree(dir_offset, 0xffff_ffff, dir_offset64))
    {
        return Err(format!(
            "the archive's two end records disagree (classic: {entries} records, directory {dir_size} bytes at \
             {dir_offset}; ZIP64: {entries64} records, {dir_size64} bytes at {dir_offset64}): readers would see \
             different archives"
        ));
    }
    Ok(entries64)
}

/// What follows an opcode.
pub(crate) enum Arg {
    None,
    Fixed(usize),
    /// A little-endian length of this many bytes, then that many bytes.
    Counted(usize),
    /// A signed 4-byte length (negative is refused), then that many bytes.
    SignedCounted,
    /// This many newline-terminated lines.
    Lines(usize),
    /// A memo index of this many bytes.
    Memo(usize),
}

/// Every opcode of pickle protocols 0–5 and what follows it.
pub(crate) fn arg_of(op: u8) -> Option<Arg> {
    Some(match op {
        // MARK EMPTY_TUPLE EMPTY_LIST EMPTY_DICT POP POP_MARK DUP NONE BINPERSID
        // REDUCE APPEND BUILD DICT APPENDS LIST OBJ SETITEM TUPLE SETITEMS
        b'(' | b')' | b']' | b'}' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'e' | b'l'
        | b'o' | b's' | b't' | b'u' => Arg::None,
        // NEWOBJ TUPLE1-3 NEWTRUE NEWFALSE EMPTY_SET ADDITEMS FROZENSET
        // NEWOBJ_EX STACK_GLOBAL NEXT_BUFFER READONLY_BUFFER
        0x81 | 0x85..=0x89 | 0x8f..=0x93 | 0x97 | 0x98 => Arg::None,
        // BININT1 PROTO EXT1
        b'K' | 0x80 | 0x82 => Arg::Fixed(1),
        // BININT2 EXT2
        b'M' | 0x83 => Arg::Fixed(2),
        // BININT EXT4
        b'J' | 0x84 => Arg::Fixed(4),
        // BINFLOAT FRAME
        b'G' | 0x95 => Arg::Fixed(8),
        // BINPUT BINGET / LONG_BINPUT LONG_BINGET
        b'q' | b'h' => Arg::Memo(1),
        b'r' | b'j' => Arg::Memo(4),
        // MEMOIZE takes the next index itself.
        0x94 => Arg::None,
        // SHORT_BINSTRING SHORT_BINBYTES SHORT_BINUNICODE LONG1
        b'U' | b'C' | 0x8c | 0x8a => Arg::Counted(1),
        // BINUNICODE BINBYTES
        b'X' | b'B' => Arg::Counted(4),
        // BINSTRING LONG4
        b'T' | 0x8b => Arg::SignedCounted,
        // BINUNICODE8 BINBYTES8 BYTEARRAY8
        0x8d | 0x8e | 0x96 => Arg::Counted(8),
        // GLOBAL INST
        b'c' | b'i' => Arg::Lines(2),
        // INT LONG FLOAT STRING UNICODE PERSID PUT GET
        b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'p' | b'g' => Arg::Lines(1),
        _ => return None,
    })
}

pub(crate) fn little_endian(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Walks one pickle; see the module docs.
pub fn check_pickle(pickle: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    while at < pickle.len() {
        let (op, start) = (pickle[at], at);
        at += 1;
        if op == b'.' {
            return Ok(());
        }
        let rest = pickle.len() - at;
        let short = |need: u64| {
            format!("opcode {op:#04x} at byte {start} declares {need} bytes; only {rest} remain in the record")
        };
        match arg_of(op).ok_or_else(|| format!("byte {op:#04x} at {start} is not a pickle opcode"))? {
            Arg::None => {}
            Arg::Fixed(n) => {
                if n > rest {
                    return Err(short(n as u64));
                }
                at += n;
            }
            Arg::Memo(n) => {
                if n > rest {
                    return Err(short(n as u64));
                }
                let index = little_endian(&pickle[at..at + n]);
                // Each memo entry is made by an opcode, so no valid index
                // reaches the record's length.
                if index >= pickle.len() as u64 {
                    return Err(format!(
                        "opcode {op:#04x} at byte {start} names memo entry {index} in a {}-byte record",
                        pickle.len()
                    ));
                }
                at += n;
            }
            Arg::Counted(n) => {
                if n > rest {
                    return Err(short(n as u64));
                }
                let len = little_endian(&pickle[at..at + n]);
                at += n;
                if len > (pickle.len() - at) as u64 {
                    return Err(short(len));
                }
                at += len as usize;
            }
            Arg::SignedCounted => {
                if rest < 4 {
                    return Err(short(4));
                }
                let len = i32::from_le_bytes([pickle[at], pickle[at + 1], pickle[at + 2], pickle[at + 3]]);
                at += 4;
                let len = u64::try_from(len)
                    .map_err(|_| format!("opcode {op:#04x} at byte {start} declares a negative length {len}"))?;
                if len > (pickle.len() - at) as u64 {
                    return Err(short(len));
                }
                at += len as usize;
            }
            Arg::Lines(n) => {
                for _ in 0..n {
                    let end = pickle[at..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or_else(|| format!("opcode {op:#04x} at byte {start}: its text argument never ends"))?;
                    at += end + 1;
                }
            }
        }
    }
    Err("the pickle ends without STOP".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)).unwrap()
    }

    fn finding() -> Vec<u8> {
        regression("oom-2GiB-from-one-mutated-fixture.pt")
    }

    fn regression(name: &str) -> Vec<u8> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/torchscript").join(name);
        std::fs::read(path).unwrap()
    }

    /// Calls of `fork`/`_fork` are refused however they are qualified or
    /// spaced; identifiers that merely contain the word are not.
    #[test]
    fn code_that_forks_is_refused_and_lookalikes_are_not() {
        for code in ["fut = fork(__forked_function)", "f = torch.jit._fork (self.half, x)", "x=fork\n(y)"] {
            let why = check_code(code.as_bytes()).unwrap_err();
            assert!(why.contains("fork(") && why.contains("prewarm memory cap"), "{code}: {why}");
        }
        for code in ["forked = fork_width(x)", "y = x.fork", "def prefork(x): return x", "# fork"] {
            check_code(code.as_bytes()).unwrap();
        }
        assert!(is_code_record("mlp/code/__torch__.py") && is_code_record("code/__torch__/m.py"));
        assert!(!is_code_record("mlp/code/__torch__.py.debug_pkl") && !is_code_record("mlp/data.pkl"));
        // Negative control: the committed fixtures' code passes.
        check_archive(&fixture("mlp_adapter.pt")).unwrap();
    }

    /// The second finding: the classic end record zeroed (the zip crate saw
    /// no records at all) while the ZIP64 one, which libtorch reads, listed
    /// a pickle declaring 3 GiB. Each of its two defects is refused alone,
    /// and the fixture passes (negative control).
    #[test]
    fn end_records_that_disagree_or_trailing_bytes_are_refused() {
        let found = regression("oom-2GiB-second-finding.pt");
        let why = check_archive(&found).unwrap_err();
        assert!(why.contains("end-of-central-directory"), "{why}");
        let original = fixture("mlp_adapter.pt");
        let eocd = original.len() - 22;
        // Only the classic record zeroed: the records disagree.
        let mut zeroed = original.clone();
        zeroed[eocd + 4..].fill(0);
        let why = check_archive(&zeroed).unwrap_err();
        assert!(why.contains("disagree") && why.contains("classic: 0 records"), "{why}");
        // Only trailing bytes.
        let mut trailing = original.clone();
        trailing.extend_from_slice(b"trailing");
        assert!(check_archive(&trailing).unwrap_err().contains("trailing bytes"));
        check_archive(&original).unwrap();
        // A ZIP64 locator pointing at byte 2^64 - 4 (found by the fuzz target
        // a minute after the check was added): refused, not a panic.
        let why = check_archive(&regression("panic-zip64-offset-overflow.pt")).unwrap_err();
        assert!(why.contains("ZIP64"), "{why}");
    }

    #[test]
    fn every_fixture_passes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pt") {
                check_archive(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
        assert!(checked >= 3, "fixtures found: {checked}");
    }

    /// `bottleneck.pt` rewritten with `data.pkl` replaced by `pickle`
    /// (checksums recomputed, as a deliberate attacker would).
    fn bottleneck_with(pickle: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let source = fixture("bottleneck.pt");
        let mut archive = zip::ZipArchive::new(Cursor::new(source.as_slice())).unwrap();
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for i in 0..archive.len() {
            let mut record = archive.by_index(i).unwrap();
            let name = record.name().to_owned();
            let mut bytes = Vec::new();
            record.read_to_end(&mut bytes).unwrap();
            if name.ends_with("/data.pkl") {
                pickle(&mut bytes);
            }
            out.start_file(name, stored).unwrap();
            std::io::Write::write_all(&mut out, &bytes).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn the_fuzz_finding_is_refused_and_so_is_its_mutation_with_checksums_fixed() {
        // As found: one byte of data.pkl flipped (libtorch ignores the
        // record checksum and reserved 2 GiB).
        let why = check_archive(&finding()).unwrap_err();
        assert!(why.contains("data.pkl is corrupt"), "{why}");
        // The same flip with checksums recomputed: the pickle walk refuses it.
        let flipped = bottleneck_with(|p| {
            assert_eq!(&p[461..467], b"X\x01\x00\x00\x002");
            p[465] = 0x80;
        });
        let why = check_archive(&flipped).unwrap_err();
        assert!(why.contains("data.pkl") && why.contains("declares 2147483649 bytes"), "{why}");
        // Negative controls: the fixture and its unmutated rewrite pass.
        check_archive(&fixture("bottleneck.pt")).unwrap();
        check_archive(&bottleneck_with(|_| {})).unwrap();
    }

    /// Through the loader: refused before libtorch sees it, as a typed
    /// error; the unmutated rewrite loads (negative control).
    #[test]
    fn the_loader_refuses_it_before_libtorch_reads_it() {
        let load = |bytes: Vec<u8>| {
            let fixture = crate::fixtures::get("bottleneck").expect("the bottleneck fixture");
            let entry = crate::CatalogEntry {
                descriptor: fixture.descriptor,
                artifact_sha256: "0".repeat(64),
                artifact_size: bytes.len() as u64,
                artifact_file: crate::CatalogEntry::artifact_file_for(&"0".repeat(64)),
                published_at_ms: 0,
            };
            crate::LoadedKernel::load(
                crate::VerifiedArtifact { entry, bytes },
                tch::Device::Cpu,
                crate::PrewarmLimits { runs: 1, memory_bytes: 1 << 30 },
                0,
            )
        };
        let flipped = bottleneck_with(|p| p[465] = 0x80);
        match load(flipped) {
            Err(crate::KernelError::LoadFailed { blueprint_id, detail }) => {
                assert_eq!(blueprint_id, "bottleneck");
                assert!(detail.contains("declares 2147483649 bytes"), "{detail}");
            }
            other => panic!("expected LoadFailed, got {:?}", other.map(|k| k.sha256().to_owned())),
        }
        load(bottleneck_with(|_| {})).expect("the rewritten fixture loads");
    }

    /// The third finding: `data/3` (fc2's bias, 32 floats) listed with size
    /// 0, which made libtorch read past the record (SIGSEGV). Negative
    /// control: the fixture's four storages are found and fit.
    #[test]
    fn a_storage_record_shorter_than_its_tensor_is_refused() {
        let why = check_archive(&regression("segv-storage-record-emptied.pt")).unwrap_err();
        assert!(why.contains("mlp_adapter/data/3") && why.contains("holds 0 bytes"), "{why}");
        let original = fixture("mlp_adapter.pt");
        let mut archive = zip::ZipArchive::new(Cursor::new(original.as_slice())).unwrap();
        let mut pickle = Vec::new();
        archive.by_name("mlp_adapter/data.pkl").unwrap().read_to_end(&mut pickle).unwrap();
        let found = crate::archive_storage::storages(&pickle).unwrap();
        let numel: Vec<(String, u64)> = found.into_iter().map(|s| (s.key, s.numel)).collect();
        let expected = [("0", 1024), ("1", 32), ("2", 1024), ("3", 32)].map(|(k, n)| (k.to_owned(), n));
        assert_eq!(numel, expected);
        check_archive(&original).unwrap();
    }

    #[test]
    fn pickles_that_overreach_are_refused() {
        // PROTO 2, BINUNICODE "ab", STOP: fine.
        check_pickle(b"\x80\x02X\x02\x00\x00\x00abq\x00.").unwrap();
        let cases: [(&[u8], &str); 7] = [
            (b"\x80\x02X\xff\x00\x00\x00ab.", "255 bytes"),
            (b"\x80\x02\x8d\x00\x00\x00\x00\x01\x00\x00\x00.", "4294967296 bytes"),
            (b"\x80\x02T\xff\xff\xff\xff.", "negative length"),
            (b"\x80\x02r\xff\xff\xff\x7f.", "memo entry 2147483647"),
            (b"\x80\x02cmodule\nname", "never ends"),
            (b"\x80\x02\xff.", "not a pickle opcode"),
            (b"\x80\x02N", "without STOP"),
        ];
        for (pickle, expected) in cases {
            let why = check_pickle(pickle).unwrap_err();
            assert!(why.contains(expected), "{pickle:?}: {why}");
        }
    }

    #[test]
    fn a_non_zip_is_refused() {
        assert!(check_archive(b"not a zip").unwrap_err().contains("not a TorchScript archive"));
    }
}
