//! On-disk layout: segment header and record frames.
//!
//! ```text
//! segment  = header record*
//! header   = magic[8] first_seq:u64le schema_version:u32le crc32(header[0..20]):u32le   (24 bytes)
//! record   = len:u32le crc32(len ‖ seq ‖ payload):u32le seq:u64le payload[len]        (16 + len bytes)
//! ```
//!
//! Why CRC32 and not a truncated SHA-256: the checksum defends against torn
//! writes and media corruption, not against an adversary (the journal is a
//! private file of the daemon; an attacker who can write it can also forge a
//! hash). CRC32 detects every burst error up to 32 bits and any other damage
//! with probability 1 − 2⁻³², is hardware-accelerated (crc32fast, ~GB/s),
//! and costs 4 bytes per record. The sequence number inside the checksummed
//! region is what stops a well-formed but stale record (e.g. from an earlier
//! life of a reused file) from being accepted: recovery demands consecutive
//! sequence numbers.

/// Magic bytes opening every segment; the last byte is the framing version.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KSJRNL\0\x01";
/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Bytes before each record's payload.
pub const RECORD_HEADER_LEN: usize = 16;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    /// Payload schema version the segment was written with.
    pub schema_version: u32,
}

/// Why a segment header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderDefect {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Short,
    /// Magic bytes differ (not a journal segment, or another framing version).
    BadMagic,
    /// Header checksum mismatch.
    Checksum,
}

impl SegmentHeader {
    /// Encodes the header with its checksum.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.schema_version.to_le_bytes());
        let crc = crc32fast::hash(&out[..20]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderDefect> {
        let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
            return Err(HeaderDefect::Short);
        };
        if h[..8] != SEGMENT_MAGIC {
            return Err(HeaderDefect::BadMagic);
        }
        if crc32fast::hash(&h[..20]) != le_u32(&h[20..24]) {
            return Err(HeaderDefect::Checksum);
        }
        Ok(SegmentHeader { first_seq: le_u64(&h[8..16]), schema_version: le_u32(&h[16..20]) })
    }
}

/// Fills the 16-byte record header at the front of `frame` (whose payload
/// follows it) for sequence number `seq`.
pub fn seal_record(frame: &mut [u8], seq: u64) {
    let len = u32::try_from(frame.len() - RECORD_HEADER_LEN).unwrap_or(u32::MAX);
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = record_crc(&frame[0..4], &frame[8..16], &frame[RECORD_HEADER_LEN..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Checksum over length, sequence number and payload.
pub fn record_crc(len: &[u8], seq: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(seq);
    hasher.update(payload);
    hasher.finalize()
}

/// What is wrong with the bytes where a record should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDefect {
    /// Fewer than 16 bytes left: the header itself was torn.
    ShortHeader,
    /// The length field exceeds the record cap (torn or corrupt length).
    Oversized {
        /// Length field.
        len: u32,
    },
    /// The payload runs past the end of the file.
    ShortPayload {
        /// Length field.
        len: u32,
    },
    /// Checksum mismatch.
    Checksum,
    /// Well-formed but with the wrong sequence number.
    SequenceGap {
        /// Sequence number required here.
        expected: u64,
        /// Sequence number found.
        found: u64,
    },
}

impl std::fmt::Display for RecordDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordDefect::ShortHeader => f.write_str("record header cut short"),
            RecordDefect::Oversized { len } => write!(f, "length field {len} exceeds the record cap"),
            RecordDefect::ShortPayload { len } => write!(f, "payload of {len} bytes runs past the end of the file"),
            RecordDefect::Checksum => f.write_str("checksum mismatch"),
            RecordDefect::SequenceGap { expected, found } => {
                write!(f, "sequence {found} where {expected} was expected")
            }
        }
    }
}

/// One structurally valid record found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Bytes the whole frame occupies.
    pub frame_len: usize,
}

/// Parses and checks the record starting at `bytes[0]`, which must carry
/// sequence number `expected`.
pub fn parse_record(bytes: &[u8], expected: u64, max_record_bytes: u32) -> Result<RawRecord<'_>, RecordDefect> {
    let Some(header) = bytes.get(..RECORD_HEADER_LEN) else {
        return Err(RecordDefect::ShortHeader);
    };
    let len = le_u32(&header[0..4]);
    if len > max_record_bytes {
        return Err(RecordDefect::Oversized { len });
    }
    let frame_len = RECORD_HEADER_LEN + len as usize;
    let Some(payload) = bytes.get(RECORD_HEADER_LEN..frame_len) else {
        return Err(RecordDefect::ShortPayload { len });
    };
    if record_crc(&header[0..4], &header[8..16], payload) != le_u32(&header[4..8]) {
        return Err(RecordDefect::Checksum);
    }
    let seq = le_u64(&header[8..16]);
    if seq != expected {
        return Err(RecordDefect::SequenceGap { expected, found: seq });
    }
    Ok(RawRecord { seq, payload, frame_len })
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], seq: u64) -> Vec<u8> {
        let mut f = vec![0u8; RECORD_HEADER_LEN];
        f.extend_from_slice(payload);
        seal_record(&mut f, seq);
        f
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader { first_seq: 42, schema_version: 1 };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert_eq!(SegmentHeader::decode(&bytes[..10]), Err(HeaderDefect::Short));
        bytes[9] ^= 1;
        assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderDefect::Checksum));
        bytes[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderDefect::BadMagic));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = frame(b"hello journal", 7);
        assert!(parse_record(&f, 7, 1024).is_ok());
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(parse_record(&g, 7, 1024).is_err(), "flip at byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn defects_are_named() {
        let f = frame(b"abc", 3);
        assert_eq!(parse_record(&f[..5], 3, 1024), Err(RecordDefect::ShortHeader));
        assert_eq!(parse_record(&f[..17], 3, 1024), Err(RecordDefect::ShortPayload { len: 3 }));
        assert_eq!(parse_record(&f, 3, 2), Err(RecordDefect::Oversized { len: 3 }));
        assert_eq!(parse_record(&f, 4, 1024), Err(RecordDefect::SequenceGap { expected: 4, found: 3 }));
    }
}
