//! A client TCP stream the proxy can still answer on after hyper gave up.
//!
//! hyper closes an HTTP/1 connection whose request head does not arrive in
//! time without answering. We want a `408 Request Timeout` there, so each
//! plain-text connection keeps a duplicate handle of its socket
//! ([`Answerer`]) next to the stream hyper owns. The stream itself is a thin
//! wrapper ([`TrackedStream`]) that delegates every read and write to
//! tokio's `TcpStream` (so tokio's own read-readiness shortcuts still apply)
//! and only notes whether bytes arrived since the last response bytes left:
//! only then was a request really under way. Otherwise the connection was
//! merely idle between requests and is closed silently, as keep-alive
//! clients expect.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The stream hyper serves: tokio's `TcpStream` plus a "request pending" flag.
#[derive(Debug)]
pub(crate) struct TrackedStream {
    inner: TcpStream,
    pending: Arc<AtomicBool>,
}

/// A second handle on the socket, to answer 408 after hyper dropped its own.
#[derive(Debug)]
pub(crate) struct Answerer {
    socket: Option<socket2::Socket>,
    pending: Arc<AtomicBool>,
}

/// Splits an accepted stream into the served stream and its answerer. If
/// the socket cannot be duplicated (fd exhaustion), the connection is still
/// served; it just closes without a 408 on a header timeout.
pub(crate) fn track(stream: TcpStream) -> (TrackedStream, Answerer) {
    let pending = Arc::new(AtomicBool::new(false));
    let socket = socket2::SockRef::from(&stream).try_clone().ok();
    (
        TrackedStream {
            inner: stream,
            pending: Arc::clone(&pending),
        },
        Answerer { socket, pending },
    )
}

impl Answerer {
    /// Whether request bytes arrived after the last response bytes left.
    pub(crate) fn request_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Writes a small, complete response without blocking (best effort: it
    /// fits the socket buffer) and closes the write side.
    pub(crate) fn write_final(&self, bytes: &[u8]) {
        let Some(s) = &self.socket else { return };
        let mut rest = bytes;
        while !rest.is_empty() {
            match io::Write::write(&mut &*s, rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.pending.store(true, Ordering::Relaxed);
        }
        res
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.pending.store(false, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.pending.store(false, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
