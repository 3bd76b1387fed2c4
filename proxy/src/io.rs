//! A client TCP stream the proxy can still answer on after hyper gave up.
//!
//! hyper closes an HTTP/1 connection whose request head does not arrive in
//! time without answering. We want a `408 Request Timeout` there. The
//! stream hyper serves ([`TrackedStream`]) delegates every read and write to
//! tokio's `TcpStream` (so tokio's own read-readiness shortcuts still apply)
//! and only notes whether bytes arrived since the last response bytes left:
//! only then was a request really under way. When hyper drops the stream in
//! that state, the socket is not closed but parked in the connection's
//! [`Answerer`], which writes the 408 through the same socket if hyper's
//! error was the header timeout (and simply closes it otherwise). A
//! connection merely idle between requests is closed silently, as
//! keep-alive clients expect. One file descriptor per client connection:
//! nothing is duplicated.
//!
//! The stream also settles the protocol sniff cheaply. hyper-util's auto
//! builder reads up to 24 bytes to tell an HTTP/2 preface from HTTP/1 and
//! hands them back to hyper as a prefix; hyper then needs a second read
//! for the rest of the head and grows its 8 KiB read buffer to 16 KiB to
//! make room, which every idle keep-alive connection then keeps. Instead,
//! the first read only peeks: when the bytes waiting are not the start of
//! the HTTP/2 preface, it reports no bytes, which the sniff takes for
//! HTTP/1 with nothing buffered, and hyper reads the whole head from the
//! socket itself.
//!
//! The stream also bounds how long a write may wait for the client to read
//! (`timeouts.send_idle`): a client that stops reading a response fails
//! the connection instead of holding it, and the upstream one, forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The stream hyper serves: tokio's `TcpStream` plus a "request pending" flag.
#[derive(Debug)]
pub(crate) struct TrackedStream {
    /// Always `Some` until dropped (taken only in `Drop`).
    inner: Option<TcpStream>,
    pending: bool,
    /// The next read is the protocol sniff's first.
    sniffing: bool,
    /// Where the socket goes when dropped mid-request (plain-text only).
    parked: Option<Arc<Mutex<Option<TcpStream>>>>,
    send_idle: Duration,
    /// Armed while a write waits for the client to read.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: IntCounter,
}

impl TrackedStream {
    /// Wraps a client stream; a write blocked longer than `send_idle` fails
    /// and counts in `stalled`. No protocol sniff shortcut and no 408 until
    /// [`track`] is called (TLS streams are served without either).
    pub(crate) fn new(inner: TcpStream, send_idle: Duration, stalled: IntCounter) -> Self {
        Self {
            inner: Some(inner),
            pending: false,
            sniffing: false,
            parked: None,
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

/// Where a stream dropped mid-request waits for the 408.
#[derive(Debug)]
pub(crate) struct Answerer {
    parked: Arc<Mutex<Option<TcpStream>>>,
}

/// Prepares a plain-text stream for HTTP/1 and h2c: the first read only
/// peeks for the protocol sniff, and the answerer gets the socket back if
/// hyper drops the stream while a request head is under way.
pub(crate) fn track(mut stream: TrackedStream) -> (TrackedStream, Answerer) {
    let parked = Arc::new(Mutex::new(None));
    stream.sniffing = true;
    stream.parked = Some(Arc::clone(&parked));
    (stream, Answerer { parked })
}

impl Answerer {
    /// If the stream was dropped with request bytes unanswered, writes a
    /// small, complete response without blocking (best effort: it fits the
    /// socket buffer), closes the write side and returns true.
    pub(crate) fn answer_pending(&self, bytes: &[u8]) -> bool {
        let Some(s) = self.parked.lock().ok().and_then(|mut p| p.take()) else {
            return false;
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match s.try_write(rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
        }
        let _ = socket2::SockRef::from(&s).shutdown(std::net::Shutdown::Write);
        true
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if self.pending
            && let Some(parked) = &self.parked
            && let Some(s) = self.inner.take()
            && let Ok(mut p) = parked.lock()
        {
            *p = Some(s);
        }
    }
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(Err(gone()));
        };
        if this.sniffing {
            let mut head = [0u8; H2_PREFACE.len()];
            let mut peeked = ReadBuf::new(&mut head);
            match inner.poll_peek(cx, &mut peeked) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => {}
            }
            this.sniffing = false;
            let seen = peeked.filled();
            if !seen.is_empty() && !H2_PREFACE.starts_with(seen) {
                // HTTP/1: no bytes for the sniff; hyper reads them itself.
                return Poll::Ready(Ok(()));
            }
            // The preface (or its start), or end of stream: read as usual.
        }
        let before = buf.filled().len();
        let res = Pin::new(inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.pending = true;
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
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(Err(gone()));
        };
        let res = Pin::new(inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.pending = false;
        }
        this.write_progress(res, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(Err(gone()));
        };
        let res = Pin::new(inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.pending = false;
        }
        this.write_progress(res, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => return Poll::Ready(Err(gone())),
        };
        this.write_progress(res, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}
