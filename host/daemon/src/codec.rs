//! Frame codec: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! Used by both sides: async reads for the server, blocking reads for
//! [`crate::client::DaemonClient`]. The length is checked against the cap
//! before any payload byte is read, and payload buffers grow only as bytes
//! arrive, so a peer cannot make us allocate by announcing a huge frame.

use std::io::Read;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

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

fn check_len(prefix: [u8; LENGTH_PREFIX_BYTES], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(FrameError::Oversized { len: u64::from(len), max });
    }
    Ok(len as usize)
}

/// Reads one frame (async). `buf` is scratch space reused across calls.
pub async fn read_frame<R, T>(reader: &mut R, max: u32, buf: &mut Vec<u8>) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut got = 0;
    while got < LENGTH_PREFIX_BYTES {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Eof
            } else {
                FrameError::Truncated { got, expected: LENGTH_PREFIX_BYTES }
            });
        }
        got += n;
    }
    let len = check_len(prefix, max)?;
    buf.clear();
    let got = reader.take(len as u64).read_to_end(buf).await?;
    if got < len {
        return Err(FrameError::Truncated { got, expected: len });
    }
    decode_payload(buf)
}

/// Reads one frame (blocking). `buf` is scratch space reused across calls.
pub fn read_frame_blocking<R, T>(reader: &mut R, max: u32, buf: &mut Vec<u8>) -> Result<T, FrameError>
where
    R: Read,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut got = 0;
    while got < LENGTH_PREFIX_BYTES {
        let n = match reader.read(&mut prefix[got..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Eof
            } else {
                FrameError::Truncated { got, expected: LENGTH_PREFIX_BYTES }
            });
        }
        got += n;
    }
    let len = check_len(prefix, max)?;
    buf.clear();
    let got = reader.take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(FrameError::Truncated { got, expected: len });
    }
    decode_payload(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use leyline::protocol::{ClientFrame, Role};

    fn hello() -> ClientFrame {
        ClientFrame::Hello { protocol_version: 1, role: Role::Trainer, client_name: "t".into() }
    }

    #[test]
    fn round_trip_and_typed_errors() {
        let mut bytes = Vec::new();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        let mut r = bytes.as_slice();
        let mut buf = Vec::new();
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut r, 1024, &mut buf).unwrap(), hello());
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut r, 1024, &mut buf).unwrap(), hello());
        assert!(matches!(read_frame_blocking::<_, ClientFrame>(&mut r, 1024, &mut buf), Err(FrameError::Eof)));

        let mut cut = &bytes[..bytes.len() - 2];
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut cut, 1024, &mut buf).unwrap(), hello());
        assert!(matches!(
            read_frame_blocking::<_, ClientFrame>(&mut cut, 1024, &mut buf),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            read_frame_blocking::<_, ClientFrame>(&mut &bytes[..2], 1024, &mut buf),
            Err(FrameError::Truncated { got: 2, expected: 4 })
        ));
        assert!(matches!(
            read_frame_blocking::<_, ClientFrame>(&mut bytes.as_slice(), 3, &mut buf),
            Err(FrameError::Oversized { max: 3, .. })
        ));

        let garbage = [0, 0, 0, 3, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            read_frame_blocking::<_, ClientFrame>(&mut garbage.as_slice(), 1024, &mut buf),
            Err(FrameError::Garbage(_))
        ));
        let mut out = vec![9];
        assert!(matches!(encode_frame(&hello(), 2, &mut out), Err(FrameError::Oversized { max: 2, .. })));
        assert_eq!(out, vec![9], "a refused frame leaves the buffer as it was");
    }
}
