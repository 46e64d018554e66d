//! A connection's socket after the handshake, in blocking mode: the
//! connection thread reads, calls the host and writes on it directly, so a
//! request costs one wake-up on each side instead of a hop between threads.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// A Unix or loopback TCP stream in blocking mode.
#[derive(Debug)]
pub struct BlockingStream(Inner);

#[derive(Debug)]
enum Inner {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl BlockingStream {
    /// Takes a tokio Unix stream off the reactor and makes it blocking.
    pub fn from_tokio_unix(stream: tokio::net::UnixStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        Ok(BlockingStream(Inner::Unix(stream)))
    }

    /// Takes a tokio TCP stream off the reactor and makes it blocking.
    pub fn from_tokio_tcp(stream: tokio::net::TcpStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        Ok(BlockingStream(Inner::Tcp(stream)))
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(BlockingStream(match &self.0 {
            Inner::Unix(s) => Inner::Unix(s.try_clone()?),
            Inner::Tcp(s) => Inner::Tcp(s.try_clone()?),
        }))
    }

    /// Shuts down one or both directions for every handle on the socket.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &self.0 {
            Inner::Unix(s) => s.shutdown(how),
            Inner::Tcp(s) => s.shutdown(how),
        }
    }

    /// Bounds the next reads (the connection thread's frame and idle deadlines).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match &self.0 {
            Inner::Unix(s) => s.set_read_timeout(timeout),
            Inner::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    /// Bounds every write (a client that stops reading is dropped).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match &self.0 {
            Inner::Unix(s) => s.set_write_timeout(timeout),
            Inner::Tcp(s) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Unix(s) => s.read(buf),
            Inner::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Unix(s) => s.write(buf),
            Inner::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // unbuffered: every write is a send
    }
}
