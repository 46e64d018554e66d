//! Async frame reading for the handshake: a thin loop that reads bytes from
//! a tokio stream into the same [`FrameDecoder`] the blocking readers use,
//! so framing rules (caps, typed errors) live in one place, kasmina-client.

use kasmina_client::codec::{FrameDecoder, FrameError};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest single read. Frames read here are small (a Hello), so a small
/// stack buffer suffices; larger frames just take more reads.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// Reads one frame, and not one byte past it: each read asks for at most
/// what the frame still lacks, so whatever the peer sent next is still in
/// the socket when the connection moves to its blocking thread.
pub(crate) async fn read_frame<R, T>(reader: &mut R, decoder: &mut FrameDecoder) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        if let Some(value) = decoder.pop()? {
            return Ok(value);
        }
        let want = decoder.missing().min(READ_CHUNK_BYTES);
        let n = reader.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(decoder.end_of_stream());
        }
        decoder.feed(&chunk[..n])?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kasmina_client::codec::encode_frame;
    use leyline::protocol::{ClientFrame, Role};

    fn hello() -> ClientFrame {
        ClientFrame::Hello { protocol_version: 1, role: Role::Trainer, client_name: "t".into() }
    }

    #[tokio::test]
    async fn reads_exactly_one_frame_and_reports_typed_errors() {
        let mut bytes = Vec::new();
        encode_frame(&hello(), 1024, &mut bytes).unwrap();
        bytes.extend_from_slice(b"next");
        let mut r = bytes.as_slice();
        let got: ClientFrame = read_frame(&mut r, &mut FrameDecoder::new(1024)).await.unwrap();
        assert_eq!(got, hello());
        assert_eq!(r, b"next", "nothing after the frame was read");

        let mut cut = &bytes[..2];
        let err = read_frame::<_, ClientFrame>(&mut cut, &mut FrameDecoder::new(1024)).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got: 2, expected: 4 }));
        let mut empty: &[u8] = &[];
        let err = read_frame::<_, ClientFrame>(&mut empty, &mut FrameDecoder::new(1024)).await.unwrap_err();
        assert!(matches!(err, FrameError::Eof));
        let err = read_frame::<_, ClientFrame>(&mut bytes.as_slice(), &mut FrameDecoder::new(3)).await.unwrap_err();
        assert!(matches!(err, FrameError::Oversized { max: 3, .. }));
    }
}
