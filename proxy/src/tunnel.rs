//! Upgraded connections (WebSocket and friends), spliced both ways.
//!
//! After a `101 Switching Protocols`, the client and upstream connections are
//! joined byte for byte. A routing flip does not touch them: they keep
//! running on the colour they were opened on. When that colour stops being
//! active, its [`crate::routing::DrainSignal`] fires with a deadline; the
//! tunnel stays up until then (counted in `switchyard_draining_connections`)
//! and is then shut down cleanly (FIN both ways). If the colour becomes
//! active again before the deadline, the drain is called off.
//!
//! An upgraded connection is still a client connection: it holds its
//! connection's place in `limits.max_connections` and
//! `switchyard_client_connections`, and graceful shutdown waits for it,
//! closing it cleanly at the drain deadline (or the grace period's end).

use std::sync::Arc;
use std::time::Instant;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::body::ResponseGuard;
use crate::routing::Pool;
use crate::server::ConnSlot;

/// What an upgraded connection holds on to while it is open.
pub(crate) struct Tunnel {
    /// The client side, once hyper hands it over.
    pub client: OnUpgrade,
    /// The upstream side.
    pub upstream: OnUpgrade,
    /// The exchange, counted as in flight while the tunnel is open.
    pub guard: ResponseGuard,
    /// The client connection's place in `limits.max_connections`, the
    /// connection gauge and graceful shutdown.
    pub slot: Option<ConnSlot>,
    /// Shutdown's deadline for upgraded connections.
    pub closing: watch::Receiver<Option<Instant>>,
}

/// Splices the two upgraded connections in a task of its own.
pub(crate) fn spawn(tunnel: Tunnel, pool: Arc<Pool>, service: String) {
    let drain = pool.drain.subscribe();
    tokio::spawn(async move {
        let Tunnel {
            client,
            upstream,
            guard,
            slot,
            closing,
        } = tunnel;
        let _held = (guard, slot);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, service = %service, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let why = tokio::select! {
            res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, service = %service, "upgraded connection ended with an error");
                }
                return;
            }
            () = wait_for_drain(drain, &pool) => "drain deadline",
            () = wait_for_close(closing) => "shutdown",
        };
        tracing::info!(service = %service, colour = %pool.colour, "closing upgraded connection at {why}");
        let _ = client.shutdown().await;
        let _ = upstream.shutdown().await;
    });
}

/// Resolves at shutdown's deadline for upgraded connections.
async fn wait_for_close(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        let changed = match deadline {
            None => rx.changed().await,
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => return,
                changed = rx.changed() => changed,
            },
        };
        if changed.is_err() {
            // Signal gone with its router: never close.
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when the drain deadline of the tunnel's colour passes.
async fn wait_for_drain(mut rx: watch::Receiver<Option<Instant>>, pool: &Pool) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            None => {
                if rx.changed().await.is_err() {
                    // Signal gone with its router: never drain.
                    std::future::pending::<()>().await;
                }
            }
            Some(deadline) => {
                // Counted through a guard: when the connection ends on its
                // own during the drain, `spawn`'s select drops this future
                // mid-wait, and the gauge must still come back down.
                let counted = DrainingGuard::new(pool);
                let cancelled = tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => false,
                    changed = rx.changed() => changed.is_ok(),
                };
                drop(counted);
                if !cancelled {
                    return;
                }
            }
        }
    }
}

/// One draining connection in `switchyard_draining_connections`, for as
/// long as it lives.
struct DrainingGuard<'a>(&'a Pool);

impl<'a> DrainingGuard<'a> {
    fn new(pool: &'a Pool) -> Self {
        pool.metrics.draining.inc();
        Self(pool)
    }
}

impl Drop for DrainingGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.draining.dec();
    }
}
