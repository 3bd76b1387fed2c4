//! Consul's per-client connection limit (`limits.http_max_conns_per_client`,
//! 200 by default): concurrent HTTP connections are counted per client IP
//! address; one over the limit gets `429 Too Many Requests` with Consul's
//! text (`Your IP is issuing too many concurrent connections, please rate
//! limit your calls`) written straight onto the socket, and is closed. On the
//! HTTPS port the agent writes the same bytes with a 10 ms deadline through
//! a TLS connection whose handshake has not happened, so a client only sees
//! the connection close; the dev stack closes it too.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Consul's default `http_max_conns_per_client`.
pub const DEFAULT_MAX_CONNS_PER_CLIENT: usize = 200;

const TOO_MANY: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls\n";

/// The answer to a connection over the limit, as Consul writes it.
fn too_many_response() -> String {
    format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TOO_MANY}",
        TOO_MANY.len()
    )
}

/// Open connections per client IP, and the limit (0: none).
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimit {
    /// A limit of `max` concurrent connections per client IP (0 turns it
    /// off, as in Consul).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `peer`; `None` when it is one too many.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Admitted> {
        let ip = peer.ip();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Admitted {
            limit: Arc::clone(self),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    /// Answers a plain HTTP connection over the limit and closes it (10 ms
    /// to write, like Consul's handler).
    pub(crate) fn refuse_http(mut stream: TcpStream) {
        tokio::spawn(async move {
            let answer = too_many_response();
            let write = stream.write_all(answer.as_bytes());
            let _ = tokio::time::timeout(Duration::from_millis(10), write).await;
            let _ = stream.shutdown().await;
        });
    }

    /// A plain HTTP listener with this limit.
    pub fn tcp(self: &Arc<Self>, listener: TcpListener) -> LimitedTcpListener {
        LimitedTcpListener {
            inner: listener,
            limit: Arc::clone(self),
        }
    }
}

/// One counted connection; released when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    limit: Arc<ConnLimit>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limit.release(self.ip);
    }
}

/// A stream that holds its place in the limit until it is dropped.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    _admitted: Option<Admitted>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, admitted: Option<Admitted>) -> Self {
        Self {
            inner,
            _admitted: admitted,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A plain HTTP listener for `axum::serve` that enforces a [`ConnLimit`].
#[derive(Debug)]
pub struct LimitedTcpListener {
    inner: TcpListener,
    limit: Arc<ConnLimit>,
}

impl axum::serve::Listener for LimitedTcpListener {
    type Io = Counted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => match self.limit.admit(peer) {
                    Some(admitted) => return (Counted::new(stream, Some(admitted)), peer),
                    None => ConnLimit::refuse_http(stream),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    async fn get(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn one_connection_over_the_limit_gets_consuls_429() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = ConnLimit::new(2);
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let listener = limit.tcp(listener);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut a).await.starts_with("HTTP/1.1 200"));
        assert!(get(&mut b).await.starts_with("HTTP/1.1 200"));
        // The third concurrent connection from this IP.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, too_many_response());
        assert!(answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        // Closing one frees its place.
        drop(a);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut d = TcpStream::connect(addr).await.unwrap();
            let mut head = [0u8; 64];
            // Refused connections are answered at once, before any request.
            match tokio::time::timeout(Duration::from_millis(200), d.read(&mut head)).await {
                Err(_) => {
                    assert!(get(&mut d).await.starts_with("HTTP/1.1 200"));
                    break;
                }
                Ok(_) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the place was never freed"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        assert!(get(&mut b).await.starts_with("HTTP/1.1 200"));
        server.abort();
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = ConnLimit::new(0);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let held: Vec<_> = (0..500).map(|_| limit.admit(peer).unwrap()).collect();
        assert_eq!(held.len(), 500);
        drop(held);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
