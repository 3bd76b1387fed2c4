//! Client-facing listeners: accept, serve HTTP/1.1 and h2c (or TLS with
//! ALPN) on one port, and shut down gracefully.
//!
//! Each accepted connection runs in its own task inside a
//! `tracing` span with the client address. The hyper-util auto builder
//! detects HTTP/2 prior knowledge by its preface, so `curl --http2-prior-knowledge`
//! and ordinary HTTP/1.1 clients share the port. A semaphore caps open
//! connections: at the cap the proxy keeps accepting and answers each excess
//! plain-text connection with a canned `503` and `Connection: close` (TLS
//! ones are closed at once), counted in `switchyard_connections_refused_total`,
//! rather than leaving clients unanswered in the kernel backlog.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::{Limits, Timeouts};
use crate::forward::Forwarder;
use crate::headers::ClientInfo;
use crate::io::{self as tracked, Answerer, TrackedStream};
use crate::metrics::{Abandon, Metrics};

const OVER_CAPACITY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 58\r\nconnection: close\r\n\r\n503 service unavailable: too many open client connections\n";

const REQUEST_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 52\r\nconnection: close\r\n\r\n408 request timeout: the request head came too slow\n";

/// One client connection's place in `limits.max_connections`, in
/// `switchyard_client_connections` and in graceful shutdown. The connection
/// task holds it, and so does every upgraded connection (WebSocket) opened
/// on it: hyper hands an upgraded socket over and ends the connection
/// future, but the client is still connected until the tunnel ends.
#[derive(Clone, Debug)]
pub(crate) struct ConnSlot {
    _inner: Arc<SlotInner>,
}

#[derive(Debug)]
struct SlotInner {
    gauge: IntGauge,
    _permit: OwnedSemaphorePermit,
    /// Graceful shutdown waits until every watcher is dropped.
    _watcher: Watcher,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl ConnSlot {
    fn new(gauge: IntGauge, permit: OwnedSemaphorePermit, watcher: Watcher) -> Self {
        gauge.inc();
        Self {
            _inner: Arc::new(SlotInner {
                gauge,
                _permit: permit,
                _watcher: watcher,
            }),
        }
    }
}

/// Once the router is draining, an HTTP/1 response carries `Connection:
/// close` and hyper closes the connection after it (see
/// [`crate::routing::Router::start_draining`]); HTTP/2 connections get their
/// `GOAWAY` from the graceful shutdown, and a `101` keeps its upgrade.
fn end_if_draining<B>(draining: bool, version: http::Version, resp: &mut http::Response<B>) {
    if draining
        && version < http::Version::HTTP_2
        && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
    {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// Builds the connection builder both listeners use.
pub fn builder(timeouts: &Timeouts, limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_header)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.client_idle)
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    b
}

/// Accepts connections until the future is dropped. Each connection is
/// served by the forwarder current when it was accepted (a reload swaps it).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    current: Arc<ArcSwap<Forwarder>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
    limits: Limits,
    timeouts: Timeouts,
) {
    let handshake_timeout = timeouts.client_header;
    let forwarder = current.load_full();
    let client_stalled = forwarder
        .router()
        .metrics()
        .abandoned(Abandon::ClientSend)
        .clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(5);
    let metrics = Arc::clone(forwarder.router().metrics());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => {
                backoff = Duration::from_millis(5);
                s
            }
            Err(e) => {
                // EMFILE and friends: wait and try again rather than exit.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refuse(stream, tls.is_none(), &metrics);
            continue;
        };
        let forwarder = current.load_full();
        let send_idle = forwarder.settings().timeouts.send_idle;
        let _ = stream.set_nodelay(true);
        let stream = TrackedStream::new(stream, send_idle, client_stalled.clone());
        let client = ClientInfo {
            ip: peer.ip(),
            tls: tls.is_some(),
            // Decided once per connection, not per request.
            trusted: forwarder.settings().forwarding.trusts(peer.ip()),
        };
        let gauge = forwarder.router().metrics().client_connections().clone();
        let slot = ConnSlot::new(gauge, permit, graceful.watcher());
        let fwd = Arc::clone(&forwarder);
        let request_slot = slot.clone();
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let fwd = Arc::clone(&fwd);
            // An upgrade may outlive the connection future: it takes a share.
            if req.headers().contains_key(http::header::UPGRADE) {
                req.extensions_mut().insert(request_slot.clone());
            }
            // Boxed: an HTTP/1 connection keeps a slot the size of this
            // future for its whole life, idle or not. Boxed, the slot is a
            // pointer, and the request path's state lives only as long as
            // the request.
            Box::pin(async move {
                let version = req.version();
                let mut resp = fwd.handle(req, client).await;
                end_if_draining(fwd.router().draining(), version, &mut resp);
                Ok::<_, Infallible>(resp)
            })
        });
        let span = tracing::debug_span!("conn", client.addr = %peer);
        match &tls {
            None => {
                let (io, handle) = tracked::track(stream);
                let metrics = Arc::clone(&metrics);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(
                    async move {
                        if let Err(e) = conn.await {
                            on_conn_error(&*e, Some(&handle), &metrics);
                        }
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = Arc::clone(&builder);
                let metrics = Arc::clone(&metrics);
                let watcher = graceful.watcher();
                tokio::spawn(
                    async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => {
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(tls), service);
                                if let Err(e) = watcher.watch(conn.into_owned()).await {
                                    on_conn_error(&*e, None, &metrics);
                                }
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
        }
    }
}

/// Closes a connection over the cap at once; plain-text clients get a 503
/// first if it fits the socket buffer without waiting.
fn refuse(stream: tokio::net::TcpStream, plain: bool, metrics: &Metrics) {
    if plain {
        let _ = stream.try_write(OVER_CAPACITY_RESPONSE);
        let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
    }
    metrics.connection_refused();
    tracing::debug!("connection cap reached: connection refused");
}

fn on_conn_error(
    e: &(dyn std::error::Error + Send + Sync + 'static),
    io: Option<&Answerer>,
    metrics: &Metrics,
) {
    let timed_out = e
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout);
    if timed_out {
        if let Some(io) = io
            && io.answer_pending(REQUEST_TIMEOUT_RESPONSE)
        {
            metrics.local_response(408, "", "");
            tracing::debug!("request head too slow: answered 408");
        }
        return;
    }
    tracing::debug!(error = %e, "client connection ended with an error");
}

#[cfg(test)]
mod tests {
    #[test]
    fn canned_response_lengths_are_right() {
        for canned in [
            super::REQUEST_TIMEOUT_RESPONSE,
            super::OVER_CAPACITY_RESPONSE,
        ] {
            let text = std::str::from_utf8(canned).unwrap_or("");
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
            assert!(!body.is_empty());
            assert!(head.contains(&format!("content-length: {}", body.len())));
        }
    }
}
