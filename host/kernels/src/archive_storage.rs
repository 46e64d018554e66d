//! The tensor storages a TorchScript pickle refers to, read without running
//! the pickle.
//!
//! TorchScript writes each tensor's storage as a persistent id, the tuple
//! `("storage", torch.<Kind>Storage, key, location, numel)` followed by
//! BINPERSID; libtorch then reads record `data/<key>` (or `constants/<key>`)
//! as that many elements. It trusts `numel`: a record shortened to 0 bytes
//! made it read past the buffer (SIGSEGV, a `torchscript` fuzz finding).
//! [`storages`] lists every such tuple so that `archive_check` can compare
//! each with its record's size.
//!
//! Only what builds those tuples is modelled: marks, strings, small ints,
//! globals, the memo and tuples. Anything else is an opaque value; a
//! persistent id that is not a well-formed storage tuple is refused, since
//! libtorch would not know it either. Call it on a pickle that
//! [`check_pickle`](crate::archive_check::check_pickle) accepted: every
//! length is then known to fit.

use std::collections::HashMap;

use crate::archive_check::{Arg, arg_of, little_endian};

/// One storage a pickle refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The record's name under `data/` or `constants/`.
    pub key: String,
    /// The storage class, e.g. `FloatStorage`.
    pub kind: String,
    /// Elements declared.
    pub numel: u64,
    /// `numel` × the element size.
    pub bytes: u64,
}

#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Int(u64),
    Global(String, String),
    Tuple(Vec<Value>),
    Other,
}

/// Bytes per element of a storage class.
fn element_size(kind: &str) -> Option<u64> {
    Some(match kind {
        "BoolStorage" | "ByteStorage" | "CharStorage" | "QUInt8Storage" | "QInt8Storage" => 1,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "FloatStorage" | "IntStorage" | "QInt32Storage" => 4,
        "ComplexHalfStorage" => 4,
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

/// Every storage tuple of `pickle` (see the module docs).
pub fn storages(pickle: &[u8]) -> Result<Vec<StorageRef>, String> {
    // One list per open MARK; values outside any mark go to the first.
    let mut lists: Vec<Vec<Value>> = vec![Vec::new()];
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut found = Vec::new();
    let mut at = 0usize;
    while at < pickle.len() {
        let (op, start) = (pickle[at], at);
        at += 1;
        if op == b'.' {
            break;
        }
        let arg = arg_of(op).ok_or_else(|| format!("byte {op:#04x} at {start} is not a pickle opcode"))?;
        let (payload, next) = span(pickle, at, &arg)?;
        at = next;
        let top = lists.last_mut().ok_or("unbalanced marks")?;
        match op {
            b'(' => lists.push(Vec::new()),
            b't' => {
                let items = if lists.len() > 1 { lists.pop().unwrap_or_default() } else { Vec::new() };
                push(&mut lists, Value::Tuple(items));
            }
            b')' => top.push(Value::Tuple(Vec::new())),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let from = top.len().saturating_sub(n);
                let items = top.split_off(from);
                top.push(Value::Tuple(items));
            }
            b'X' | 0x8c | 0x8d => top.push(Value::Str(String::from_utf8_lossy(payload).into_owned())),
            b'K' | b'M' | b'J' => top.push(Value::Int(little_endian(payload))),
            b'c' => {
                let text = String::from_utf8_lossy(payload);
                let mut lines = text.split('\n');
                let module = lines.next().unwrap_or_default().to_owned();
                let name = lines.next().unwrap_or_default().to_owned();
                top.push(Value::Global(module, name));
            }
            b'q' | b'r' => {
                memo.insert(little_endian(payload), top.last().cloned().unwrap_or(Value::Other));
            }
            0x94 => {
                let index = memo.len() as u64;
                memo.insert(index, top.last().cloned().unwrap_or(Value::Other));
            }
            b'h' | b'j' => top.push(memo.get(&little_endian(payload)).cloned().unwrap_or(Value::Other)),
            b'Q' => {
                let id = top.pop().unwrap_or(Value::Other);
                found.push(storage_of(&id).map_err(|why| format!("persistent id at byte {start}: {why}"))?);
                top.push(Value::Other);
            }
            b'P' => return Err(format!("text persistent id at byte {start}: TorchScript writes BINPERSID only")),
            // POP, POP_MARK and the rest only change values this walk does
            // not read; a MARK's list is closed by what consumes it.
            b'1' | b'e' | b'l' | b'u' | b'd' | b'o' | 0x90 | 0x91 => {
                if lists.len() > 1 {
                    lists.pop();
                }
                push(&mut lists, Value::Other);
            }
            _ => {
                if !matches!(arg, Arg::None) || matches!(op, b'N' | b']' | b'}' | 0x88 | 0x89 | 0x8f) {
                    top.push(Value::Other);
                }
            }
        }
    }
    Ok(found)
}

fn push(lists: &mut [Vec<Value>], value: Value) {
    if let Some(top) = lists.last_mut() {
        top.push(value);
    }
}

/// The payload of an opcode at `at` and where the next opcode starts.
fn span<'a>(pickle: &'a [u8], at: usize, arg: &Arg) -> Result<(&'a [u8], usize), String> {
    let take = |from: usize, len: u64| -> Result<(&'a [u8], usize), String> {
        let len = usize::try_from(len).map_err(|_| "length over the address space".to_owned())?;
        let end = from.checked_add(len).filter(|&end| end <= pickle.len()).ok_or("a length past the record")?;
        Ok((&pickle[from..end], end))
    };
    match *arg {
        Arg::None => Ok((&[], at)),
        Arg::Fixed(n) | Arg::Memo(n) => take(at, n as u64),
        Arg::Counted(n) => {
            let (len, from) = take(at, n as u64)?;
            take(from, little_endian(len))
        }
        Arg::SignedCounted => {
            let (len, from) = take(at, 4)?;
            take(from, little_endian(len))
        }
        Arg::Lines(n) => {
            let mut end = at;
            for _ in 0..n {
                let nl = pickle[end..].iter().position(|&b| b == b'\n').ok_or("an unterminated line")?;
                end += nl + 1;
            }
            Ok((&pickle[at..end], end))
        }
    }
}

fn storage_of(id: &Value) -> Result<StorageRef, String> {
    let Value::Tuple(items) = id else { return Err("not a tuple".to_owned()) };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(module, kind), Value::Str(key), Value::Str(_location), Value::Int(numel)]
            if tag == "storage" && module == "torch" =>
        {
            let size = element_size(kind).ok_or_else(|| format!("unknown storage class torch.{kind}"))?;
            if key.is_empty() || key.contains('/') || key.contains("..") {
                return Err(format!("storage key {key:?} is not a record name"));
            }
            let bytes = numel.checked_mul(size).ok_or_else(|| format!("{numel} elements overflow"))?;
            Ok(StorageRef { key: key.clone(), kind: kind.clone(), numel: *numel, bytes })
        }
        _ => Err(format!("not a storage tuple (\"storage\", torch.<Kind>Storage, key, location, numel): {items:?}")),
    }
}
