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

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
    parked: Arc<Mutex<Option<TcpStream>>>,
}

/// Where a stream dropped mid-request waits for the 408.
#[derive(Debug)]
pub(crate) struct Answerer {
    parked: Arc<Mutex<Option<TcpStream>>>,
}

/// Wraps an accepted stream; the answerer gets the socket back only if
/// hyper drops the stream while a request head is under way.
pub(crate) fn track(stream: TcpStream) -> (TrackedStream, Answerer) {
    let parked = Arc::new(Mutex::new(None));
    (
        TrackedStream {
            inner: Some(stream),
            pending: false,
            sniffing: true,
            parked: Arc::clone(&parked),
        },
        Answerer { parked },
    )
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
            && let Some(s) = self.inner.take()
            && let Ok(mut p) = self.parked.lock()
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
        res
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
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}
