//! Postcard decoding of every frame a peer can send: `ClientFrame` (what the
//! daemon reads: Hello and every `RequestBody`) and `ServerFrame` (what a
//! client reads from a daemon), through the codec's `decode_payload`.
//!
//! Input: 1 byte picks the frame type, the rest is a payload. Decoding may
//! allocate at most the daemon's request frame cap for any one allocation
//! (serde preallocates at most 1 MiB for a claimed sequence length); a frame
//! that decodes re-encodes to bytes that decode to the same encoding.
//!
//! Run: `scripts/fuzz.sh client_frame 60`.

use crate::{Input, with_alloc_cap};
use kasmina_client::codec::{DEFAULT_MAX_REQUEST_BYTES, decode_payload};
use leyline::protocol::{ClientFrame, ServerFrame};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(payload: &[u8]) {
    let decoded =
        with_alloc_cap(DEFAULT_MAX_REQUEST_BYTES as usize, "decoding a frame", || decode_payload::<T>(payload));
    let Ok(value) = decoded else { return };
    let once = postcard::to_stdvec(&value).expect("a decoded frame encodes");
    assert!(once.len() <= payload.len() + 16, "re-encoding grew from {} to {} bytes", payload.len(), once.len());
    let again: T = decode_payload(&once).expect("an encoded frame decodes");
    let twice = postcard::to_stdvec(&again).expect("a decoded frame encodes");
    assert_eq!(once, twice, "encoding is not stable across a round trip");
}

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let which = input.byte();
    let payload = input.rest();
    if which & 1 == 0 {
        round_trip::<ClientFrame>(payload);
    } else {
        round_trip::<ServerFrame>(payload);
    }
}
