//! The response body the proxy sends to clients.
//!
//! Either an upstream body streamed through frame by frame (never buffered),
//! or a small body the proxy generated itself. The upstream variant carries a
//! [`ResponseGuard`]: when the body has been read to its end the upstream
//! connection goes back to its endpoint's pool; if the client goes away
//! first, the connection is dropped (HTTP/1 cannot reuse it) and the
//! outstanding-request counters still come down.
//!
//! Both directions have an idle timeout (`timeouts.read_idle`): a body that
//! pauses longer between two frames is abandoned with an error, which
//! closes the connections on both sides. [`RequestBody`] also reports its
//! progress, so the request path can start the response-head timer only
//! once the request body is sent, and notice an upstream that stops reading
//! it (`timeouts.send_idle`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::routing::Pool;
use crate::upstream::{Conn, OwnedInFlight, epoch, now_ms};

/// The error a body returns when it stalled past its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("body stalled for {0:?}")]
pub struct BodyStalled(pub Duration);

/// A request body's progress, shared between the body (written by the
/// upstream connection that pulls it) and the request path (which waits on it).
#[derive(Debug, Default)]
pub struct Progress {
    /// [`now_ms`] when the last frame was pulled (or the body started).
    last_ms: AtomicU64,
    /// The body has ended.
    done: AtomicBool,
    /// The last poll found no data from the client: a pause is the client's.
    waiting_on_client: AtomicBool,
    /// The client paused longer than the idle timeout.
    client_stalled: AtomicBool,
    ended: Notify,
}

impl Progress {
    /// Fresh progress, counting from now.
    pub fn new() -> Arc<Self> {
        let p = Self::default();
        p.last_ms.store(now_ms(), Ordering::Relaxed);
        Arc::new(p)
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Whether the body failed because the client paused too long.
    pub fn client_stalled(&self) -> bool {
        self.client_stalled.load(Ordering::Relaxed)
    }

    /// Whether the upstream has pulled nothing for `idle` although the
    /// client has data ready (the pause is not the client's).
    pub fn upstream_stalled(&self, idle: Duration) -> bool {
        !self.is_done()
            && !self.waiting_on_client.load(Ordering::Relaxed)
            && self.idle_since().elapsed() >= idle
    }

    /// When the last frame was pulled.
    pub fn idle_since(&self) -> Instant {
        epoch() + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the body has ended (at once if it has).
    pub async fn ended(&self) {
        while !self.is_done() {
            // notify_one keeps a permit, so an end between the check and
            // the wait is not missed.
            self.ended.notified().await;
        }
    }

    fn frame(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }

    fn end(&self) {
        self.done.store(true, Ordering::Release);
        self.ended.notify_one();
    }
}

/// The client's request body on its way upstream, with an idle timeout and
/// progress reporting.
pub struct RequestBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    progress: Arc<Progress>,
}

impl RequestBody {
    /// Wraps `inner`; a pause longer than `idle` fails it.
    pub fn new(inner: Incoming, idle: Duration, progress: Arc<Progress>) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            progress,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                this.timer = None;
                this.progress.frame();
                if this.inner.is_end_stream() {
                    this.progress.end();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.progress.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.progress
                    .waiting_on_client
                    .store(true, Ordering::Relaxed);
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.progress.client_stalled.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Holds an upstream exchange open until its response body ends.
pub struct ResponseGuard {
    conn: Option<Conn>,
    in_flight: OwnedInFlight,
    pool: Arc<Pool>,
}

impl ResponseGuard {
    /// A guard for an exchange on `conn`, counted in `pool`'s gauge.
    pub fn new(conn: Conn, in_flight: OwnedInFlight, pool: Arc<Pool>) -> Self {
        Self {
            conn: Some(conn),
            in_flight,
            pool,
        }
    }

    /// The response completed: the connection may carry another request.
    pub fn complete(mut self) {
        if let Some(c) = self.conn.take() {
            self.in_flight.endpoint().release(c);
        }
    }
}

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        self.pool.metrics.in_flight.dec();
    }
}

/// One poll of a body sent to a client.
type PolledFrame = Poll<Option<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>>;

/// How a proxied response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The whole body went out.
    Complete,
    /// The upstream broke or stalled mid-body: the client got a truncated
    /// response, counted as a 502.
    UpstreamBroken,
    /// The client went away before the end.
    ClientGone,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::UpstreamBroken => "upstream_broken",
            Ending::ClientGone => "client_gone",
        }
    }
}

/// The access-log line of a proxied request, written when its response ends.
#[derive(Debug)]
pub struct AccessLine {
    /// Client address.
    pub client: std::net::IpAddr,
    /// Method.
    pub method: http::Method,
    /// Path as received.
    pub path: String,
    /// Service name.
    pub service: String,
    /// Instance that answered.
    pub upstream: std::net::SocketAddr,
    /// When the request arrived.
    pub start: Instant,
}

/// Counts (and logs) a proxied response once, when its body ends: a
/// response broken mid-body is not a success.
#[derive(Debug)]
pub struct Finish {
    pool: Arc<Pool>,
    status: u16,
    /// Set when access logging is on (boxed: most responses carry none,
    /// and the body stays small).
    pub log: Option<Box<AccessLine>>,
}

impl Finish {
    /// A response with `status` from `pool`.
    pub fn new(pool: Arc<Pool>, status: u16) -> Self {
        Self {
            pool,
            status,
            log: None,
        }
    }

    /// Counts and logs the response's end.
    pub fn end(self, how: Ending) {
        let counted = match how {
            Ending::UpstreamBroken => 502,
            Ending::Complete | Ending::ClientGone => self.status,
        };
        self.pool.metrics.count(counted);
        if let Some(l) = self.log {
            tracing::info!(
                target: "access",
                client = %l.client,
                method = %l.method,
                path = %l.path,
                status = self.status,
                service = %l.service,
                colour = %self.pool.colour,
                upstream = %l.upstream,
                ending = how.as_str(),
                micros = l.start.elapsed().as_micros() as u64,
            );
        }
    }
}

/// A body sent to a client.
pub enum ProxyBody {
    /// Streamed from an upstream.
    Upstream {
        /// The upstream body.
        inner: Incoming,
        /// Released at end of stream.
        guard: Option<ResponseGuard>,
        /// Counted and logged at the end.
        finish: Option<Finish>,
        /// Longest pause between two frames.
        idle: Duration,
        /// Armed while the upstream keeps us waiting.
        timer: Option<Pin<Box<Sleep>>>,
    },
    /// Generated by the proxy.
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Local(None)
    }

    /// Wraps an upstream body; if it is already finished (HEAD, 204, 304)
    /// the connection is released at once. A pause longer than `idle`
    /// between two frames abandons it.
    pub fn upstream(inner: Incoming, guard: ResponseGuard, idle: Duration, finish: Finish) -> Self {
        let guard = if inner.is_end_stream() {
            guard.complete();
            None
        } else {
            Some(guard)
        };
        // A body that has already ended (HEAD, 204, 304) is counted now.
        let finish = if inner.is_end_stream() {
            finish.end(Ending::Complete);
            None
        } else {
            Some(finish)
        };
        ProxyBody::Upstream {
            inner,
            guard,
            finish,
            idle,
            timer: None,
        }
    }

    /// The response's pending count and log line, if it has not ended yet.
    pub fn finish_mut(&mut self) -> Option<&mut Finish> {
        match self {
            ProxyBody::Upstream { finish, .. } => finish.as_mut(),
            ProxyBody::Local(_) => None,
        }
    }

    fn ended(&mut self, how: Ending) {
        if let ProxyBody::Upstream { finish, .. } = self
            && let Some(f) = finish.take()
        {
            f.end(how);
        }
    }
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            ProxyBody::Local(None)
        } else {
            ProxyBody::Local(Some(b))
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let res = this.poll_upstream(cx);
        match &res {
            Poll::Ready(None) => this.ended(Ending::Complete),
            Poll::Ready(Some(Err(_))) => this.ended(Ending::UpstreamBroken),
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.ended(Ending::Complete),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.is_none(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (a complete body
        // has already been counted).
        self.ended(Ending::ClientGone);
    }
}

impl ProxyBody {
    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> PolledFrame {
        match self {
            ProxyBody::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream {
                inner,
                guard,
                idle,
                timer,
                ..
            } => {
                let res = Pin::new(&mut *inner).poll_frame(cx);
                match &res {
                    Poll::Pending => {
                        if guard.is_none() {
                            return Poll::Pending;
                        }
                        let idle = *idle;
                        let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                        if t.as_mut().poll(cx).is_ready() {
                            // Stalled: abandon. Dropping the guard (and then
                            // this body) closes the upstream connection; the
                            // error closes the client's.
                            if let Some(g) = guard.take() {
                                g.pool.metrics.body_stalled.inc();
                            }
                            tracing::debug!(
                                idle_ms = idle.as_millis() as u64,
                                "upstream response body stalled; abandoned"
                            );
                            return Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(_))) => *timer = None,
                    _ => {}
                }
                match &res {
                    Poll::Ready(None) => {
                        if let Some(g) = guard.take() {
                            g.complete();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                        if let Some(g) = guard.take() {
                            g.complete();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // Broken mid-body: the connection is not reusable.
                        guard.take();
                    }
                    _ => {}
                }
                res.map(|o| o.map(|r| r.map_err(Into::into)))
            }
        }
    }
}
