//! Upstream instances and their keep-alive connection pools.
//!
//! An [`Endpoint`] is one `ip:port`. It owns a LIFO stack of idle HTTP/1.1
//! connections, an outstanding-request counter (for power-of-two-choices)
//! and its passive-health state. Endpoints outlive routing tables: the
//! [`crate::routing::Router`] hands the same `Arc<Endpoint>` to every table
//! that contains its address, so a flip from blue to green keeps both
//! colours' warm connections. When an address leaves the table it is
//! [`Endpoint::retire`]d: its idle connections close at once and connections
//! that come back from in-flight requests are closed instead of pooled.
//!
//! A connection goes back to the pool only once its response body has been
//! read to the end (see [`crate::body`]); a response abandoned half way closes
//! its connection, because HTTP/1 cannot reuse it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::body::RequestBody;

/// The body type sent upstream: the client's body as it streams in, or
/// nothing (which lets a bodiless request be rebuilt and retried).
pub type UpstreamBody = Either<RequestBody, Empty<Bytes>>;

/// A pooled HTTP/1.1 connection's request handle.
pub type Sender = http1::SendRequest<UpstreamBody>;

/// A deadline that does not come while the process runs (30 years).
const NEVER_IN_PRACTICE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// One upstream HTTP/1.1 connection as the pool holds it: its request
/// handle and its response-head timer, which lives as long as the
/// connection. Re-arming a registered tokio timer for a later deadline only
/// moves the deadline; a fresh timeout per request would be registered in
/// and removed from the runtime's timer wheel every time.
pub struct Conn {
    sender: Sender,
    head_timer: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(sender: Sender) -> Self {
        Self {
            sender,
            // Armed by the first exchange; never registered before that.
            head_timer: Box::pin(tokio::time::sleep(Duration::MAX)),
        }
    }

    /// Sends `req` on this connection; hyper hands an unsent request back.
    pub fn send(
        &mut self,
        req: http::Request<UpstreamBody>,
    ) -> impl Future<
        Output = Result<http::Response<Incoming>, TrySendError<http::Request<UpstreamBody>>>,
    > + use<> {
        self.sender.try_send_request(req)
    }

    /// The head timer, armed to fire `within` from now (a `within` too
    /// long to add to the clock, which a configuration may ask for, is a
    /// timer that never fires in practice, as `tokio::time::timeout` makes
    /// it).
    pub fn head_timer(&mut self, within: Duration) -> Pin<&mut Sleep> {
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(within)
            .unwrap_or_else(|| now + NEVER_IN_PRACTICE);
        let mut timer = self.head_timer.as_mut();
        timer.as_mut().reset(deadline);
        timer
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Settings shared by every endpoint.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// Idle connections kept per endpoint.
    pub max_idle: usize,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Consecutive failures before ejection (0 = never eject).
    pub eject_after: u32,
    /// How long an ejected endpoint is skipped.
    pub cool_down: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle: 256,
            idle_timeout: crate::config::DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            connect_timeout: Duration::from_secs(1),
            eject_after: 5,
            cool_down: Duration::from_secs(10),
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect did not finish in time.
    #[error("connect timed out")]
    Timeout,
    /// The OS refused or failed the connect.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// One upstream instance.
pub struct Endpoint {
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    in_flight: AtomicUsize,
    retired: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which this endpoint is ejected.
    ejected_until_ms: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// The process-wide origin of [`now_ms`].
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`].
pub(crate) fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Endpoint {
    /// A new endpoint with an empty pool.
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        Self {
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// The instance's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests currently outstanding on this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Idle pooled connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Marks a request as outstanding until the guard is dropped.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Whether passive health checking currently skips this endpoint.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Records a success: clears the failure streak.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns true when this failure ejected the endpoint
    /// (the caller counts and logs that). With `may_eject` false (its pool
    /// has as many instances ejected as it may), the streak is kept but
    /// the endpoint stays in.
    #[must_use]
    pub fn record_failure(&self, may_eject: bool) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.settings.eject_after;
        if limit == 0 || n < limit || !may_eject {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let cool = u64::try_from(self.settings.cool_down.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until_ms
            .store(now_ms().saturating_add(cool), Ordering::Relaxed);
        // Connections to a failing instance are suspect too.
        self.clear_idle();
        true
    }

    /// Stops pooling: closes idle connections now and every connection that
    /// is released later. Called when the address leaves the routing table.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.clear_idle();
    }

    /// Whether [`Endpoint::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    fn clear_idle(&self) {
        let drained: Vec<Idle> = match self.idle.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        // Dropping the senders outside the lock closes the connections.
        drop(drained);
    }

    /// Drops idle connections older than the idle timeout.
    pub fn expire_idle(&self) {
        let timeout = self.settings.idle_timeout;
        let expired: Vec<Idle> = match self.idle.lock() {
            Ok(mut v) => {
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *v)
                    .into_iter()
                    .partition(|i| i.since.elapsed() >= timeout || i.conn.is_closed());
                *v = keep;
                old
            }
            Err(_) => return,
        };
        drop(expired);
    }

    /// Returns a connection to the pool after its response completed.
    pub fn release(&self, conn: Conn) {
        if conn.is_closed() || self.is_retired() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.settings.max_idle
        {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Takes a pooled connection that is ready for a request, if any.
    pub async fn checkout(&self) -> Option<Conn> {
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            if idle.since.elapsed() >= self.settings.idle_timeout || idle.conn.is_closed() {
                continue;
            }
            let mut conn = idle.conn;
            if conn.sender.is_ready() {
                return Some(conn);
            }
            // The connection task may not have noticed yet that the previous
            // exchange completed; that takes one scheduling round, not I/O.
            match tokio::time::timeout(self.settings.connect_timeout, conn.sender.ready()).await {
                Ok(Ok(())) => return Some(conn),
                _ => continue,
            }
        }
    }

    /// Opens a new connection (TCP + HTTP/1.1 handshake).
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let stream =
            tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| ConnectError::Timeout)??;
        stream.set_nodelay(true)?;
        // Dead peers and silent middleboxes show up on long-idle or
        // long-running connections instead of hanging them.
        let keepalive =
            socket2::TcpKeepalive::new().with_time(crate::config::DEFAULT_UPSTREAM_TCP_KEEPALIVE);
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(UpstreamStream::new(stream)))
            .await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn::new(sender))
    }
}

/// An upstream socket that outlives a failed write. An instance may answer
/// before it has read the whole request body (413, 401, 405) and then
/// close or reset the connection; the proxy's next body write then fails,
/// and hyper would report that failure (a 502) without reading the answer
/// waiting in the socket. Here, once a write fails because the peer closed
/// or reset the connection, that write and every later one are discarded
/// instead: hyper goes on to read, and forwards the answer if it arrived
/// intact (as nginx does). If none arrived, the read side fails the
/// exchange as before.
#[derive(Debug)]
struct UpstreamStream {
    inner: TcpStream,
    /// The peer has gone on the write side: writes are discarded.
    write_gone: bool,
}

impl UpstreamStream {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            write_gone: false,
        }
    }

    /// Turns "the peer closed or reset" into a discarded write.
    fn on_write<T>(
        &mut self,
        res: std::task::Poll<std::io::Result<T>>,
        discarded: T,
    ) -> std::task::Poll<std::io::Result<T>> {
        match res {
            std::task::Poll::Ready(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(error = %e, "upstream closed while the request was being written; reading its answer");
                self.write_gone = true;
                std::task::Poll::Ready(Ok(discarded))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncRead for UpstreamStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for UpstreamStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.write_gone {
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        let res = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(res, buf.len())
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if this.write_gone {
            return std::task::Poll::Ready(Ok(len));
        }
        let res = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(res, len)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.write_gone {
            return std::task::Poll::Ready(Ok(()));
        }
        let res = std::pin::Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(res, ())
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.write_gone {
            return std::task::Poll::Ready(Ok(()));
        }
        let res = std::pin::Pin::new(&mut this.inner).poll_shutdown(cx);
        this.on_write(res, ())
    }
}

/// Decrements the endpoint's outstanding counter on drop.
pub struct InFlight<'a>(&'a Endpoint);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Like [`InFlight`] but owning an `Arc`, for guards that outlive a borrow.
pub struct OwnedInFlight(std::sync::Arc<Endpoint>);

impl OwnedInFlight {
    /// Marks a request outstanding on `ep` until dropped.
    pub fn new(ep: std::sync::Arc<Endpoint>) -> Self {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(ep)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &std::sync::Arc<Endpoint> {
        &self.0
    }
}

impl Drop for OwnedInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ejection_after_consecutive_failures_and_cool_down() {
        let ep = Endpoint::new(
            ([127, 0, 0, 1], 1).into(),
            PoolSettings {
                eject_after: 3,
                cool_down: Duration::from_millis(50),
                ..PoolSettings::default()
            },
        );
        assert!(!ep.record_failure(true));
        ep.record_success();
        assert!(!ep.record_failure(true));
        assert!(!ep.record_failure(true));
        assert!(ep.record_failure(true));
        assert!(ep.is_ejected());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!ep.is_ejected());
    }

    #[tokio::test]
    async fn a_head_timeout_past_the_clock_is_a_timer_that_does_not_fire() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::new(listener.local_addr().unwrap(), PoolSettings::default());
        let mut conn = ep.connect().await.unwrap();
        let timer = conn.head_timer(Duration::MAX);
        let fired = tokio::time::timeout(Duration::from_millis(50), timer).await;
        assert!(fired.is_err(), "the timer fired");
        // And re-armed for a short while, it fires.
        let timer = conn.head_timer(Duration::from_millis(10));
        let fired = tokio::time::timeout(Duration::from_secs(5), timer).await;
        assert!(fired.is_ok(), "the re-armed timer never fired");
    }

    #[test]
    fn in_flight_guard_counts() {
        let ep = Endpoint::new(([127, 0, 0, 1], 1).into(), PoolSettings::default());
        let a = ep.start_request();
        let b = ep.start_request();
        assert_eq!(ep.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(ep.in_flight(), 0);
    }
}
