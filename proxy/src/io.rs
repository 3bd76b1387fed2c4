//! A client TCP stream the proxy can still write to after hyper gave up.
//!
//! hyper closes an HTTP/1 connection whose request head does not arrive in
//! time without answering. We want a `408 Request Timeout` there, so the
//! connection is served through [`SharedStream`], which keeps a second handle
//! on the socket. The stream also notes whether bytes arrived since the
//! last response was written: only then was a request really under way
//! (otherwise the connection was merely idle between requests and is
//! closed silently, as clients expect of keep-alive connections).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug)]
struct Shared {
    stream: TcpStream,
    read_since_write: AtomicBool,
}

/// A TCP stream shared between hyper and the connection task.
#[derive(Debug, Clone)]
pub(crate) struct SharedStream(Arc<Shared>);

impl SharedStream {
    /// Wraps an accepted stream.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self(Arc::new(Shared {
            stream,
            read_since_write: AtomicBool::new(false),
        }))
    }

    /// Whether request bytes arrived after the last response bytes left.
    pub(crate) fn request_pending(&self) -> bool {
        self.0.read_since_write.load(Ordering::Relaxed)
    }

    /// Writes a small, complete response without blocking (best effort: it
    /// fits the socket buffer) and closes the write side.
    pub(crate) fn write_final(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.0.stream.try_write(rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
        }
        let _ = socket_shutdown_write(&self.0.stream);
    }
}

fn socket_shutdown_write(s: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write)
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let s = &self.0;
        loop {
            ready!(s.stream.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            match s.stream.try_read(dst) {
                Ok(n) => {
                    if n > 0 {
                        s.read_since_write.store(true, Ordering::Relaxed);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        loop {
            ready!(s.stream.poll_write_ready(cx))?;
            match s.stream.try_write(buf) {
                Ok(n) => {
                    s.read_since_write.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        loop {
            ready!(s.stream.poll_write_ready(cx))?;
            match s.stream.try_write_vectored(bufs) {
                Ok(n) => {
                    s.read_since_write.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket_shutdown_write(&self.0.stream))
    }
}
