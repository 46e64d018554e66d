//! The one frame decoder. It owns no I/O: a reader feeds it whatever bytes
//! it has and pops whole frames. [`FrameDecoder::feed`] never takes a byte
//! past the end of the current frame, so a reader that offers exactly
//! [`FrameDecoder::missing`] bytes never reads beyond a frame — which the
//! daemon relies on when it hands a socket from its async handshake to a
//! blocking thread.

use std::io::BufRead;

use serde::de::DeserializeOwned;

use super::{FrameError, LENGTH_PREFIX_BYTES, decode_payload};

/// Payload capacity kept between frames. A larger buffer (a kernel
/// artifact can be hundreds of MiB) is released once its frame is popped,
/// so one big answer does not pin its memory for the connection's life.
const RETAINED_CAPACITY: usize = 1 << 20;

/// Incremental decoder of length-prefixed frames, capped at a maximum
/// payload size. After an error the stream's position is unknown: drop the
/// connection (and the decoder with it).
#[derive(Debug)]
pub struct FrameDecoder {
    max: u32,
    prefix: [u8; LENGTH_PREFIX_BYTES],
    prefix_got: usize,
    /// Payload length, once the whole prefix is in and within the cap.
    len: Option<usize>,
    payload: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            max: max_frame_bytes,
            prefix: [0; LENGTH_PREFIX_BYTES],
            prefix_got: 0,
            len: None,
            payload: Vec::new(),
        }
    }

    /// The cap in force.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max
    }

    /// Bytes still due before the current frame is whole: the rest of the
    /// prefix, else the rest of the payload; zero when a frame awaits [`Self::pop`].
    pub fn missing(&self) -> usize {
        match self.len {
            None => LENGTH_PREFIX_BYTES - self.prefix_got,
            Some(len) => len - self.payload.len(),
        }
    }

    /// Whether no byte of a frame is held (a stream may end cleanly here).
    pub fn is_between_frames(&self) -> bool {
        self.prefix_got == 0
    }

    /// Takes bytes of the current frame from the front of `bytes`, never
    /// past the frame's end, and returns how many it took (zero while a
    /// whole frame awaits [`Self::pop`]). The prefix is checked against the
    /// cap as soon as it is complete, before any payload byte is kept.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, FrameError> {
        let mut taken = 0;
        if self.len.is_none() {
            let n = (LENGTH_PREFIX_BYTES - self.prefix_got).min(bytes.len());
            self.prefix[self.prefix_got..self.prefix_got + n].copy_from_slice(&bytes[..n]);
            self.prefix_got += n;
            taken = n;
            if self.prefix_got < LENGTH_PREFIX_BYTES {
                return Ok(taken);
            }
            let len = u32::from_be_bytes(self.prefix);
            if len > self.max {
                return Err(FrameError::Oversized { len: u64::from(len), max: self.max });
            }
            self.len = Some(len as usize);
            self.payload.clear();
        }
        let rest = &bytes[taken..];
        let n = self.missing().min(rest.len());
        let want = self.payload.len() + n;
        if want > self.payload.capacity() {
            // Geometric growth as bytes arrive, but never past the announced
            // length: plain `extend` would round up (a 1 MiB frame could take
            // a 2 MiB buffer, a 256 MiB answer 512 MiB). Found by fuzzing
            // (fuzz/regressions/frame_decoder).
            let len = self.len.unwrap_or(want);
            let target = self.payload.capacity().saturating_mul(2).max(want).min(len);
            self.payload.reserve_exact(target - self.payload.len());
        }
        self.payload.extend_from_slice(&rest[..n]);
        Ok(taken + n)
    }

    /// Decodes and removes the whole frame, if there is one; the decoder
    /// then waits for the next frame (also when the payload is garbage).
    pub fn pop<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.len {
            Some(len) if self.payload.len() == len => {}
            _ => return Ok(None),
        }
        self.prefix_got = 0;
        self.len = None;
        let value = decode_payload(&self.payload);
        if self.payload.capacity() > RETAINED_CAPACITY {
            self.payload = Vec::new();
        }
        value.map(Some)
    }

    /// What the end of the stream means now: [`FrameError::Eof`] between
    /// frames, [`FrameError::Truncated`] inside one.
    pub fn end_of_stream(&self) -> FrameError {
        match self.len {
            None if self.prefix_got == 0 => FrameError::Eof,
            None => FrameError::Truncated { got: self.prefix_got, expected: LENGTH_PREFIX_BYTES },
            Some(len) => FrameError::Truncated { got: self.payload.len(), expected: len },
        }
    }
}

/// Reads one frame from a buffered blocking reader. Bytes after the frame
/// stay in `reader`'s buffer, so callers can tell whether more requests are
/// already waiting.
pub fn read_frame_blocking<R, T>(reader: &mut R, decoder: &mut FrameDecoder) -> Result<T, FrameError>
where
    R: BufRead + ?Sized,
    T: DeserializeOwned,
{
    loop {
        if let Some(value) = decoder.pop()? {
            return Ok(value);
        }
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if available.is_empty() {
            return Err(decoder.end_of_stream());
        }
        let used = decoder.feed(available)?;
        reader.consume(used);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::encode_frame;
    use leyline::protocol::{ClientFrame, Role};

    fn hello() -> ClientFrame {
        ClientFrame::Hello { protocol_version: 1, role: Role::Trainer, client_name: "t".into() }
    }

    fn read(bytes: &[u8], max: u32) -> Result<ClientFrame, FrameError> {
        read_frame_blocking(&mut &bytes[..], &mut FrameDecoder::new(max))
    }

    #[test]
    fn round_trip_and_typed_errors() {
        let mut bytes = Vec::new();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        let mut r = bytes.as_slice();
        let mut dec = FrameDecoder::new(1024);
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut r, &mut dec).unwrap(), hello());
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut r, &mut dec).unwrap(), hello());
        assert!(matches!(read_frame_blocking::<_, ClientFrame>(&mut r, &mut dec), Err(FrameError::Eof)));

        let mut cut = &bytes[..bytes.len() - 2];
        let mut dec = FrameDecoder::new(1024);
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut cut, &mut dec).unwrap(), hello());
        assert!(matches!(read_frame_blocking::<_, ClientFrame>(&mut cut, &mut dec), Err(FrameError::Truncated { .. })));
        assert!(matches!(read(&bytes[..2], 1024), Err(FrameError::Truncated { got: 2, expected: 4 })));
        assert!(matches!(read(&bytes, 3), Err(FrameError::Oversized { max: 3, .. })));
        assert!(matches!(read(&[0, 0, 0, 3, 0xFF, 0xFF, 0xFF], 1024), Err(FrameError::Garbage(_))));

        let mut out = vec![9];
        assert!(matches!(encode_frame(&hello(), 2, &mut out), Err(FrameError::Oversized { max: 2, .. })));
        assert_eq!(out, vec![9], "a refused frame leaves the buffer as it was");
    }

    #[test]
    fn byte_at_a_time_feeding_never_takes_past_a_frame() {
        let mut bytes = Vec::new();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        let frame_len = bytes.len();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();

        let mut dec = FrameDecoder::new(1024);
        for (i, b) in bytes[..frame_len].iter().enumerate() {
            assert!(dec.pop::<ClientFrame>().unwrap().is_none(), "frame whole after {i} bytes");
            assert_eq!(dec.feed(std::slice::from_ref(b)).unwrap(), 1);
        }
        assert_eq!(dec.missing(), 0);
        // A whole frame waits: nothing of the next one is taken.
        assert_eq!(dec.feed(&bytes[frame_len..]).unwrap(), 0);
        assert_eq!(dec.pop::<ClientFrame>().unwrap(), Some(hello()));
        assert!(dec.is_between_frames());
        // Offered everything at once, it takes exactly the next frame.
        assert_eq!(dec.feed(&bytes[frame_len..]).unwrap(), bytes.len() - frame_len);
        assert_eq!(dec.pop::<ClientFrame>().unwrap(), Some(hello()));
        assert!(matches!(dec.end_of_stream(), FrameError::Eof));
    }

    #[test]
    fn oversized_prefix_is_refused_before_any_payload_is_kept() {
        let mut dec = FrameDecoder::new(16);
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 64]);
        assert!(matches!(dec.feed(&bytes), Err(FrameError::Oversized { len, max: 16 }) if len == u64::from(u32::MAX)));
        assert_eq!(dec.payload.capacity(), 0, "nothing allocated for the announced payload");
        // The refusal is sticky: the stream cannot be resynchronised.
        assert!(matches!(dec.feed(&[0]), Err(FrameError::Oversized { .. })));
    }

    #[test]
    fn the_payload_buffer_never_grows_past_the_announced_length() {
        // fuzz/regressions/frame_decoder/payload-buffer-past-frame-length: a
        // 3-byte payload fed a byte at a time used to get an 8-byte buffer.
        let mut dec = FrameDecoder::new(1024);
        for b in [0, 0, 0, 3, 1, 2, 3] {
            dec.feed(&[b]).unwrap();
            assert!(dec.payload.capacity() <= 3, "capacity {}", dec.payload.capacity());
        }
        // A frame just over a power of two, in 64 KiB reads: doubling would
        // have reached twice the frame.
        let len = (1usize << 20) + 1;
        let mut dec = FrameDecoder::new(1 << 21);
        dec.feed(&(len as u32).to_be_bytes()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while dec.missing() > 0 {
            let n = dec.missing().min(chunk.len());
            dec.feed(&chunk[..n]).unwrap();
            assert!(dec.payload.capacity() <= len, "capacity {} > frame {len}", dec.payload.capacity());
        }
    }

    #[test]
    fn truncation_inside_the_payload_names_the_payload_length() {
        let mut dec = FrameDecoder::new(1024);
        dec.feed(&[0, 0, 0, 10, 1, 2, 3]).unwrap();
        assert_eq!(dec.missing(), 7);
        assert!(matches!(dec.end_of_stream(), FrameError::Truncated { got: 3, expected: 10 }));
    }

    #[test]
    fn garbage_payload_resets_for_the_next_frame() {
        let mut bytes = vec![0, 0, 0, 3, 0xFF, 0xFF, 0xFF];
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        let mut r = bytes.as_slice();
        let mut dec = FrameDecoder::new(1024);
        assert!(matches!(read_frame_blocking::<_, ClientFrame>(&mut r, &mut dec), Err(FrameError::Garbage(_))));
        assert_eq!(read_frame_blocking::<_, ClientFrame>(&mut r, &mut dec).unwrap(), hello());
    }

    #[test]
    fn a_large_payload_buffer_is_released_after_its_frame() {
        let big = vec![7u8; RETAINED_CAPACITY + 1];
        let mut bytes = Vec::new();
        encode_frame(&big, u32::MAX, &mut bytes).unwrap();
        let mut dec = FrameDecoder::new(u32::MAX);
        let back: Vec<u8> = read_frame_blocking(&mut bytes.as_slice(), &mut dec).unwrap();
        assert_eq!(back, big);
        assert_eq!(dec.payload.capacity(), 0);
    }
}
