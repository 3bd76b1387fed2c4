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
//!
//! The stream also bounds how long a write may wait for the client to read
//! (`timeouts.send_idle`): a client that stops reading a response fails
//! the connection instead of holding it, and the upstream one, forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// The stream hyper serves: tokio's `TcpStream` plus a "request pending"
/// flag and a write idle timeout.
#[derive(Debug)]
pub(crate) struct TrackedStream {
    inner: TcpStream,
    pending: Arc<AtomicBool>,
    send_idle: Duration,
    /// Armed while a write waits for the client to read.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: IntCounter,
}

impl TrackedStream {
    /// Wraps a client stream; a write blocked longer than `send_idle` fails
    /// and counts in `stalled`.
    pub(crate) fn new(inner: TcpStream, send_idle: Duration, stalled: IntCounter) -> Self {
        Self {
            inner,
            pending: Arc::new(AtomicBool::new(false)),
            send_idle,
            timer: None,
            stalled,
        }
    }

    /// Notes a write's result: progress disarms the timer, a blocked write
    /// arms it, and past the timeout the write fails.
    fn write_progress<T>(
        &mut self,
        res: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match res {
            Poll::Pending => {
                let idle = self.send_idle;
                let t = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if t.as_mut().poll(cx).is_ready() {
                    self.stalled.inc();
                    tracing::debug!(
                        idle_ms = idle.as_millis() as u64,
                        "client stopped reading; connection abandoned"
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client read nothing within the send idle timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.timer = None;
                ready
            }
        }
    }
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
pub(crate) fn track(stream: TrackedStream) -> (TrackedStream, Answerer) {
    let pending = Arc::clone(&stream.pending);
    let socket = socket2::SockRef::from(&stream.inner).try_clone().ok();
    (stream, Answerer { socket, pending })
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
        this.write_progress(res, cx)
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
        this.write_progress(res, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_progress(res, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
