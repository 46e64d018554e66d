//! Frame codec: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! Both sides of the socket use it: [`encode_frame`] writes frames, and one
//! sans-IO [`FrameDecoder`] reads them whatever the transport — the blocking
//! readers here ([`read_frame_blocking`]) and the daemon's async reader feed
//! it bytes the same way. The length is checked against the cap before any
//! payload byte is buffered, and the payload buffer grows only as bytes
//! arrive, so a peer cannot make us allocate by announcing a huge frame.

mod decoder;

pub use decoder::{FrameDecoder, read_frame_blocking};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Default cap on a client frame: commands carry at most 16 KiB of
/// annotations and step reports a few hundred bytes per seed.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Default cap on a server frame: kernel artifacts (TorchScript bytes)
/// travel in responses.
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = 256 << 20;

/// Why a frame could not be read or written. EOF at a frame boundary is
/// [`FrameError::Eof`] (a clean close), anywhere else [`FrameError::Truncated`].
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the cap.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversized {
        /// Announced (or encoded) length.
        len: u64,
        /// Cap in force.
        max: u32,
    },
    /// The peer closed the stream inside a frame.
    #[error("stream ended inside a frame after {got} of {expected} bytes")]
    Truncated {
        /// Bytes received of the prefix or payload.
        got: usize,
        /// Bytes that were due.
        expected: usize,
    },
    /// The payload is not a valid encoding of the expected frame type.
    #[error("frame does not decode: {0}")]
    Garbage(String),
    /// The peer closed the stream between frames.
    #[error("stream closed")]
    Eof,
    /// The transport failed (includes read timeouts).
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded.
    #[error("frame could not be encoded: {0}")]
    Encode(postcard::Error),
}

/// Appends `value` as one frame to `out`; refuses frames over `max` bytes
/// (leaving `out` as it was).
pub fn encode_frame<T: Serialize>(value: &T, max: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    if let Err(e) = postcard::to_extend(value, VecSink(out)) {
        out.truncate(start);
        return Err(FrameError::Encode(e));
    }
    let len = out.len() - start - LENGTH_PREFIX_BYTES;
    if len > max as usize {
        out.truncate(start);
        return Err(FrameError::Oversized { len: len as u64, max });
    }
    // `len <= max`, a u32, so the cast is exact.
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Lets postcard write straight into a borrowed buffer.
struct VecSink<'a>(&'a mut Vec<u8>);

impl Extend<u8> for VecSink<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Decodes one payload; trailing bytes are garbage too.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload).map_err(|e| FrameError::Garbage(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Garbage(format!("{} trailing bytes after the frame's value", rest.len())));
    }
    Ok(value)
}
