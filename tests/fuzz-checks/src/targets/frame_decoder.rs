//! The daemon's frame decoder (`kasmina_client::codec::FrameDecoder`, used by
//! the handshake and every connection thread) against a reference reading
//! of the same bytes.
//!
//! Input: 2 bytes choose the frame cap (1..=4096), 1 byte the chunking
//! pattern, the rest is the byte stream a peer sends. The stream is fed in
//! chunks (sometimes only what [`FrameDecoder::missing`] asks for, as the
//! async handshake reader does) and every popped result must equal the
//! reference's; a payload buffer never grows past the announced length,
//! and decoding never allocates more than the daemon's frame cap.
//!
//! Run: `scripts/fuzz.sh frame_decoder 60`.

use crate::{Input, with_alloc_cap};
use kasmina_client::codec::{DEFAULT_MAX_REQUEST_BYTES, FrameDecoder, FrameError, LENGTH_PREFIX_BYTES, decode_payload};
use leyline::protocol::ClientFrame;

/// What one frame of the stream reads as, in a form both readings can compare.
#[derive(Debug, PartialEq)]
enum Read {
    Frame(Vec<u8>),
    Garbage,
    Oversized(u64),
    Truncated { got: usize, expected: usize },
    Eof,
}

fn classify(r: Result<ClientFrame, FrameError>) -> Read {
    match r {
        Ok(frame) => Read::Frame(postcard::to_stdvec(&frame).unwrap_or_default()),
        Err(FrameError::Garbage(_)) => Read::Garbage,
        Err(FrameError::Oversized { len, .. }) => Read::Oversized(len),
        Err(FrameError::Truncated { got, expected }) => Read::Truncated { got, expected },
        Err(FrameError::Eof) => Read::Eof,
        Err(other) => panic!("a byte slice cannot produce {other}"),
    }
}

/// The reference: the wire format read straight off the whole stream.
fn reference(mut s: &[u8], cap: u32) -> Vec<Read> {
    let mut out = Vec::new();
    loop {
        if s.is_empty() {
            out.push(Read::Eof);
            return out;
        }
        if s.len() < LENGTH_PREFIX_BYTES {
            out.push(Read::Truncated { got: s.len(), expected: LENGTH_PREFIX_BYTES });
            return out;
        }
        let len = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        if len > cap {
            out.push(Read::Oversized(u64::from(len)));
            return out;
        }
        let body = &s[LENGTH_PREFIX_BYTES..];
        let len = len as usize;
        if body.len() < len {
            out.push(Read::Truncated { got: body.len(), expected: len });
            return out;
        }
        out.push(classify(decode_payload::<ClientFrame>(&body[..len])));
        s = &body[len..];
    }
}

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let cap = u32::from(input.u16() % 4096) + 1;
    let pattern = input.byte();
    let stream = input.rest();
    let expected = reference(stream, cap);

    let mut decoder = FrameDecoder::new(cap);
    let mut got = Vec::new();
    let mut at = 0usize;
    let mut step = u32::from(pattern) | 1;
    let ask_missing = pattern & 0x80 != 0;
    loop {
        let popped =
            with_alloc_cap(DEFAULT_MAX_REQUEST_BYTES as usize, "decoding a frame", || decoder.pop::<ClientFrame>());
        match popped {
            Ok(Some(frame)) => {
                got.push(classify(Ok(frame)));
                assert!(decoder.is_between_frames(), "a popped decoder waits for a new frame");
                continue;
            }
            Ok(None) => {}
            Err(err) => {
                got.push(classify(Err(err)));
                continue;
            }
        }
        if at == stream.len() {
            got.push(classify(Err(decoder.end_of_stream())));
            break;
        }
        // A pseudo-random chunk length from the pattern byte (1..=64).
        step = step.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let mut n = ((step >> 16) % 64 + 1) as usize;
        if ask_missing {
            n = n.min(decoder.missing().max(1));
        }
        let chunk = &stream[at..(at + n).min(stream.len())];
        let fed = with_alloc_cap(cap as usize, "buffering a payload", || decoder.feed(chunk));
        match fed {
            Ok(used) => {
                assert!(used <= chunk.len(), "took more than offered");
                if used < chunk.len() {
                    assert_eq!(decoder.missing(), 0, "stopped short of a frame's end");
                }
                at += used;
            }
            Err(err) => {
                got.push(classify(Err(err)));
                break;
            }
        }
    }
    assert_eq!(got, expected, "decoder and reference disagree (cap {cap}, pattern {pattern})");
}
