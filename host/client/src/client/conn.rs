//! One connection's state: the stream, its buffers and the request/answer
//! exchange. Every call is serialised by [`super::DaemonClient`]'s lock.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use leyline::api::{ApiError, ApiErrorCode};
use leyline::protocol::{ClientFrame, RequestBody, ResponseBody, ServerFrame};

use super::{ClientError, ClientSettings};
use crate::codec::{self, FrameDecoder, FrameError};

/// The socket, Unix or loopback TCP.
pub(super) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// A connection after the handshake.
pub(super) struct Conn {
    pub(super) io: BufReader<Stream>,
    pub(super) settings: ClientSettings,
    pub(super) next_id: u64,
    /// Set after any transport failure: the stream position is unknown, so
    /// every later call fails loudly instead of reading a stale answer.
    pub(super) broken: Option<String>,
    pub(super) wbuf: Vec<u8>,
    /// Capped at `settings.max_response_bytes`.
    pub(super) decoder: FrameDecoder,
}

impl Conn {
    pub(super) fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.wbuf.clear();
        codec::encode_frame(frame, self.settings.max_request_bytes, &mut self.wbuf)?;
        let stream = self.io.get_mut();
        stream.write_all(&self.wbuf).map_err(FrameError::Io)?;
        Ok(())
    }

    /// Polls (without blocking) until the answer starts to arrive or
    /// `spin_wait` passes; the blocking read that follows then finds it
    /// buffered instead of sleeping until it arrives.
    fn poll_for_answer(&mut self) -> Result<(), ClientError> {
        let spin = self.settings.spin_wait;
        if spin.is_zero() || !self.io.buffer().is_empty() {
            return Ok(());
        }
        self.io.get_ref().set_nonblocking(true).map_err(FrameError::Io)?;
        let started = Instant::now();
        let polled = loop {
            match self.io.fill_buf() {
                Ok(_) => break Ok(()), // bytes, or EOF for the read to report
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && started.elapsed() < spin => {
                    std::thread::yield_now()
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        // Back to blocking reads (bounded by the request timeout) either way.
        self.io.get_ref().set_nonblocking(false).map_err(FrameError::Io)?;
        polled.map_err(|e| ClientError::Frame(FrameError::Io(e)))
    }

    pub(super) fn recv(&mut self) -> Result<ServerFrame, ClientError> {
        Ok(codec::read_frame_blocking(&mut self.io, &mut self.decoder)?)
    }

    /// One request and its answer; after a transport failure every later
    /// call fails at once.
    pub(super) fn call(&mut self, body: RequestBody) -> Result<ResponseBody, ApiError> {
        if let Some(why) = &self.broken {
            return Err(ApiError::new(
                ApiErrorCode::Transport,
                format!("connection unusable after an earlier failure: {why}"),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        match self.exchange(id, body) {
            Ok(answer) => answer,
            Err(err) => {
                self.broken = Some(err.to_string());
                Err(err.into())
            }
        }
    }

    fn exchange(&mut self, id: u64, body: RequestBody) -> Result<Result<ResponseBody, ApiError>, ClientError> {
        self.send(&ClientFrame::Request { correlation_id: id, body })?;
        self.poll_for_answer()?;
        match self.recv()? {
            ServerFrame::Response { correlation_id, body } if correlation_id == id => Ok(body),
            ServerFrame::Response { correlation_id, .. } => {
                Err(ClientError::Protocol(format!("answer to request {correlation_id} while waiting for {id}")))
            }
            ServerFrame::Closing(err) => Err(ClientError::Closed(err)),
            other => {
                Err(ClientError::Protocol(format!("unexpected {} while waiting for an answer", frame_name(&other))))
            }
        }
    }
}

/// A frame's variant name, for error messages.
pub(super) fn frame_name(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome { .. } => "Welcome",
        ServerFrame::Refused { .. } => "Refused",
        ServerFrame::Response { .. } => "Response",
        ServerFrame::Telemetry(_) => "Telemetry",
        ServerFrame::Closing(_) => "Closing",
    }
}
