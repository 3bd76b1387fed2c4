//! The request path: one client request in, one upstream exchange out.
//!
//! ```text
//! client request
//!   → validate (method, host)             400 / 405
//!   → preview? (/standby prefix or header) choose active or standby
//!   → table.load() → lookup(host, path)   404
//!   → pool.pick(balance, tried)           503
//!   → checkout or connect                 retry elsewhere / 502 / 504
//!   → try_send_request (head timeout)     retry if unsent / 502 / 504
//!   → response head → client; body streams; connection back to the pool
//! ```
//!
//! Retry rules: a request that never left (connect failed, or the pooled
//! connection closed before the request was written — hyper hands the
//! request back) is retried on another instance whatever its method. A
//! request without a body and with an idempotent method (a "replayable"
//! request) is also retried on another instance when:
//!
//! - the connection drops before the response head;
//! - no response head arrives within `timeouts.response_head`: an instance
//!   that accepts but never answers (wedged, GC-paused, overloaded) must cost
//!   the user one timeout, not an error. The timeout also counts towards
//!   passive ejection, so after `ejection.consecutive_failures` of them the
//!   instance is skipped for `cool_down` and later requests stop paying;
//! - the instance answers **502, 503 or 504** and another instance of the
//!   pool has not been tried yet. These statuses say "this instance cannot
//!   serve right now" (its own upstream is down, it is draining or
//!   overloaded), not "this request is wrong", so another instance may well
//!   answer. Any other 5xx (500, 501, 505…) is the application's answer
//!   about this request and is passed through unchanged: replaying it would
//!   only multiply the work of a poisonous request. Every 502/503/504,
//!   retried or not, counts towards passive ejection (an application's 500
//!   does not: the instance answered). When no untried instance is left,
//!   the last 502/503/504 is passed to the client as it came.
//!
//! Every retry spends one of `retry.attempts`, so a request costs at most
//! `1 + attempts` upstream exchanges. A request whose body has been (even
//! partly) sent is never retried. Retries of requests that reached an
//! instance also draw from the service's retry budget (`retry.budget_percent`
//! of its requests over 10 s, plus `retry.budget_min_per_second`): once it is
//! spent, the failed try's answer goes to the client, so a failing colour
//! cannot multiply the load on the instances that still work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::upgrade::OnUpgrade;

use crate::body::{AccessLine, Finish, Progress, ProxyBody, RequestBody, ResponseGuard};
use crate::config::{
    ForwardingConfig, PreviewConfig, RETRY_BUDGET_WINDOW, RetryBudgetConfig, Timeouts,
};
use crate::error::ProxyError;
use crate::headers::{self, ClientInfo};
use crate::metrics::Abandon;
use crate::routing::{Pool, PreviewAsk, Router, Selected, ServiceRoutes};
use crate::server::ConnSlot;
use crate::tunnel;
use crate::upstream::{Conn, ConnectError, Endpoint, OwnedInFlight, UpstreamBody};

/// Settings of the request path.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Extra tries on other instances.
    pub retry_attempts: u32,
    /// How many retries a service may make.
    pub retry_budget: RetryBudgetConfig,
    /// Standby preview.
    pub preview: PreviewConfig,
    /// Forwarding headers.
    pub forwarding: ForwardingConfig,
    /// Most instances of a pool passive ejection may take out, in percent.
    pub max_ejected_percent: u32,
    /// Log every request.
    pub access_log: bool,
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Forwarder {
    router: Arc<Router>,
    settings: ForwardSettings,
    /// Per service, by name.
    budgets: std::collections::HashMap<String, RetryBudget>,
}

/// A request with its parts kept for a replay (bodiless requests only).
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Forwarder {
    /// A handler routing through `router`.
    pub fn new(router: Arc<Router>, settings: ForwardSettings) -> Self {
        let budgets = router
            .table()
            .services()
            .iter()
            .map(|s| (s.name.clone(), RetryBudget::new(settings.retry_budget)))
            .collect();
        Self {
            router,
            settings,
            budgets,
        }
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The request-path settings.
    pub fn settings(&self) -> &ForwardSettings {
        &self.settings
    }

    /// Handles one request. Never fails: errors become responses here.
    pub async fn handle(&self, req: Request<Incoming>, client: ClientInfo) -> Response<ProxyBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path_for_log = self
            .settings
            .access_log
            .then(|| req.uri().path().to_owned());
        match self.forward(req, client, start).await {
            Ok(Forwarded {
                mut resp,
                routed: Routed { service, pool },
                upstream,
            }) => {
                let status = resp.status().as_u16();
                if let Some(path) = path_for_log {
                    let line = AccessLine {
                        client: client.ip,
                        method,
                        path,
                        service: service.name.clone(),
                        upstream,
                        start,
                    };
                    // Logged when the body ends, with how it ended.
                    match resp.body_mut().finish_mut() {
                        Some(f) => f.log = Some(Box::new(line)),
                        None => tracing::info!(
                            target: "access",
                            client = %line.client,
                            method = %line.method,
                            path = %line.path,
                            status,
                            service = %service.name,
                            colour = %pool.colour,
                            upstream = %upstream,
                            micros = start.elapsed().as_micros() as u64,
                        ),
                    }
                }
                resp
            }
            Err(Failure { err: e, at }) => {
                let status = e.status();
                let (service, colour) = match &at {
                    Some(r) => (r.service.name.as_str(), r.pool.colour.as_str()),
                    None => ("", ""),
                };
                self.router
                    .metrics()
                    .local_response(status.as_u16(), service, colour);
                if let Some(path) = path_for_log {
                    tracing::info!(
                        target: "access",
                        client = %client.ip,
                        method = %method,
                        path = %path,
                        status = status.as_u16(),
                        service = %service,
                        colour = %colour,
                        error = %e,
                        micros = start.elapsed().as_micros() as u64,
                    );
                } else if e.status().is_server_error() {
                    tracing::warn!(error = %e, service = %service, colour = %colour, "request failed");
                }
                e.to_response()
            }
        }
    }

    /// The steps of the module doc's diagram, in its order: each returns
    /// the response its failure gets.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: ClientInfo,
        start: Instant,
    ) -> Result<Forwarded, Failure> {
        let host = RequestHost::of(&req)?;
        let (routed, uri) = self.route(&req, host.name()?, client, start)?;
        let upgrade = self.keeps_upgrade(&mut req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        // The connection's place in the limits, for an upgraded connection.
        let conn_slot = parts.extensions.remove::<ConnSlot>();
        let headers =
            self.upstream_headers(parts.headers, parts.version, upgrade, &host, client)?;
        let out = self.outgoing(parts.method, uri, headers, body, &routed.pool);

        let exchanged = self
            .exchange(
                &routed.service,
                &routed.pool,
                out.request,
                out.replay,
                out.progress.as_deref(),
            )
            .await;
        let (resp, guard, upstream) = match exchanged {
            Ok(x) => x,
            Err(err) => return Err(Failure::of_pool(err, routed, start)),
        };
        let upgrade = client_upgrade.map(|client| ClientUpgrade {
            client,
            slot: conn_slot,
        });
        let resp = self.respond(resp, guard, &routed, upgrade, start);
        Ok(Forwarded {
            resp,
            routed,
            upstream,
        })
    }

    /// The service and pool a request goes to (the preview header or path
    /// prefix may choose the standby pool, when the service lets this
    /// client preview), and the URI it is sent with: 404 without a route,
    /// 503 when the pool has no instance.
    fn route(
        &self,
        req: &Request<Incoming>,
        host: &str,
        client: ClientInfo,
        start: Instant,
    ) -> Result<(Routed, Uri), Failure> {
        let preview = &self.settings.preview;
        let ask = PreviewAsk {
            header: req
                .headers()
                .get(&preview.header)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"standby")),
            token: req
                .headers()
                .get(&preview.token_header)
                .map(HeaderValue::as_bytes),
            client: headers::client_address(req.headers(), client, &self.settings.forwarding),
        };
        let table = self.router.table();
        let Selected {
            service,
            role,
            path,
            stripped,
        } = table
            .select(preview, host, req.uri().path(), &ask)
            .ok_or_else(|| ProxyError::NoRoute {
                host: host.to_owned(),
                path: req.uri().path().to_owned(),
            })?;
        drop(table);
        let pool = Arc::clone(service.pool(role));
        if pool.endpoints.is_empty() {
            let err = ProxyError::NoInstance {
                service: service.name.clone(),
                pool: role.as_str(),
            };
            return Err(Failure::of_pool(err, Routed { service, pool }, start));
        }
        let uri = upstream_uri(req.uri(), path, stripped)?;
        Ok((Routed { service, pool }, uri))
    }

    /// Whether the request's upgrade offer stands: only the configured
    /// protocols are upgraded to (WebSocket by default); any other offer is
    /// dropped and the request goes on as an ordinary one.
    fn keeps_upgrade<B>(&self, req: &mut Request<B>) -> bool {
        req.version() == Version::HTTP_11
            && headers::wants_upgrade(req.headers())
            && headers::keep_upgrades(
                req.headers_mut(),
                &self.settings.forwarding.upgrade_protocols,
            )
    }

    /// The request's headers as the upstream gets them: hop-by-hop and
    /// preview headers out, one Host and at most one Content-Length,
    /// forwarding headers in. Transfer codings other than chunked are
    /// refused (501).
    fn upstream_headers(
        &self,
        mut headers: HeaderMap,
        version: Version,
        upgrade: bool,
        host: &RequestHost,
        client: ClientInfo,
    ) -> Result<HeaderMap, ProxyError> {
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        if chunked && !headers::only_chunked(&headers) {
            // Stripping the header would hand the upstream coded bytes it
            // cannot know are coded (RFC 9112 §6.1: 501).
            return Err(ProxyError::NotImplemented(
                "transfer codings other than chunked",
            ));
        }
        headers::strip_hop_by_hop(&mut headers, upgrade);
        if version == Version::HTTP_2 {
            // HTTP/2 may split cookies into several fields; HTTP/1 wants
            // one (RFC 9113 §8.2.3).
            headers::join_cookies(&mut headers);
        }
        let preview = &self.settings.preview;
        headers.remove(header::EXPECT);
        headers.remove(&preview.header);
        headers.remove(&preview.token_header);
        if chunked {
            // The body is re-framed by the upstream connection.
            headers.remove(header::CONTENT_LENGTH);
        } else if headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
            // hyper accepted repeated identical values; forward one.
            if let Some(v) = headers.get(header::CONTENT_LENGTH).cloned() {
                headers.insert(header::CONTENT_LENGTH, v);
            }
        }
        // The Host header already says it unless the authority decided.
        if host.from_authority
            && let Some(h) = &host.value
        {
            headers.insert(header::HOST, h.clone());
        }
        let via = if version == Version::HTTP_2 {
            "2 switchyard"
        } else {
            "1.1 switchyard"
        };
        headers::add_forwarded(
            &mut headers,
            client,
            host.value.as_ref(),
            via,
            self.settings.forwarding.emit_forwarded,
        );
        Ok(headers)
    }

    /// The request towards the upstream, with what a retry of it needs.
    fn outgoing(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Incoming,
        pool: &Pool,
    ) -> Outgoing {
        let bodiless = body.is_end_stream();
        // Keep the copy of the headers only when a replay may happen.
        let replay = replayable(
            &method,
            bodiless,
            self.settings.retry_attempts,
            pool.endpoints.len(),
        )
        .then(|| Replay {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
        });
        let (body, progress): (UpstreamBody, _) = if bodiless {
            (Either::Right(Empty::new()), None)
        } else {
            let progress = Progress::new();
            let body = RequestBody::new(
                body,
                self.settings.timeouts.read_idle,
                Arc::clone(&progress),
            );
            (Either::Left(body), Some(progress))
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Outgoing {
            request,
            replay,
            progress,
        }
    }

    /// The response towards the client: hop-by-hop headers out (an
    /// accepted upgrade keeps its pair) and the head counted; the body
    /// streams back through `guard`, or an accepted upgrade becomes a
    /// tunnel.
    fn respond(
        &self,
        mut resp: Response<Incoming>,
        guard: ResponseGuard,
        routed: &Routed,
        upgrade: Option<ClientUpgrade>,
        start: Instant,
    ) -> Response<ProxyBody> {
        let pool = &routed.pool;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(resp.headers_mut(), switching && upgrade.is_some());
        let status = resp.status().as_u16();
        pool.metrics.observe_head(start.elapsed().as_secs_f64());

        let (parts, body) = resp.into_parts();
        if switching && let Some(upgrade) = upgrade {
            pool.metrics.count(status);
            return self.tunnel(parts, body, upgrade, guard, routed);
        }
        let finish = Finish::new(Arc::clone(pool), status);
        let body = ProxyBody::upstream(body, guard, self.settings.timeouts.read_idle, finish);
        Response::from_parts(parts, body)
    }

    /// Joins both sides of an accepted upgrade in a tunnel of its own; the
    /// client gets the upstream's 101 head.
    fn tunnel(
        &self,
        parts: http::response::Parts,
        body: Incoming,
        upgrade: ClientUpgrade,
        guard: ResponseGuard,
        routed: &Routed,
    ) -> Response<ProxyBody> {
        let mut upstream_resp = Response::from_parts(parts.clone(), body);
        let upstream_upgrade = hyper::upgrade::on(&mut upstream_resp);
        tunnel::spawn(
            tunnel::Tunnel {
                client: upgrade.client,
                upstream: upstream_upgrade,
                guard,
                slot: upgrade.slot,
                closing: self.router.closing(),
            },
            Arc::clone(&routed.pool),
            routed.service.name.clone(),
        );
        Response::from_parts(parts, ProxyBody::empty())
    }
    /// Picks instances and sends, retrying by the rules in the module doc.
    ///
    /// Each try ends in one [`Attempt`]; the loop below is the only place
    /// that acts on a failed one: it counts the failure towards passive
    /// ejection, logs an ejection, and spends a retry or gives up.
    async fn exchange(
        &self,
        service: &ServiceRoutes,
        pool: &Arc<Pool>,
        mut req: Request<UpstreamBody>,
        replay: Option<Replay>,
        progress: Option<&Progress>,
    ) -> Result<(Response<Incoming>, ResponseGuard, SocketAddr), ProxyError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut tries_left = self.settings.retry_attempts;
        let budget = self.budgets.get(&service.name);
        if let Some(b) = budget {
            b.request();
        }
        let budget_left = || budget.is_none_or(RetryBudget::has_room);
        // A pooled connection that closed before our request was written is
        // not the instance's fault: one free redo on a fresh connection.
        let mut stale_redo = true;
        let mut last_err: Option<ProxyError> = None;
        // An HTTP/1.0 client may leave Host out, but the upstream is spoken
        // to in HTTP/1.1, where Host is mandatory (RFC 9112 §3.2) and strict
        // servers answer 400 without it: name the instance being tried.
        let synthetic_host = !req.headers().contains_key(header::HOST);

        loop {
            let Some(ep) = pool.pick(service.balance, &tried).cloned() else {
                return Err(last_err.unwrap_or_else(|| ProxyError::NoInstance {
                    service: service.name.clone(),
                    pool: "selected",
                }));
            };
            let addr = ep.addr();
            if synthetic_host && let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
                req.headers_mut().insert(header::HOST, v);
            }
            // A gateway error is worth another try only for a request that
            // can be replayed, with a try left and an instance not yet asked.
            let could_retry = replay.is_some()
                && tries_left > 0
                && pool
                    .endpoints
                    .iter()
                    .any(|e| e.addr() != addr && !tried.contains(&e.addr()));
            let leeway = Leeway {
                retry_status: could_retry && budget_left(),
                stale_redo,
            };
            let attempt = self
                .attempt(service, pool, &ep, req, progress, leeway)
                .await;
            let failed = match attempt {
                Attempt::Answered(resp, guard) => {
                    if could_retry && !leeway.retry_status && is_retryable_status(resp.status()) {
                        // Passed on as it came: the budget had no retry left.
                        service.metrics.retry_budget_exhausted.inc();
                    }
                    return Ok((resp, guard, addr));
                }
                Attempt::Failed(f) => f,
            };
            if let Retry::Redo(unsent) = failed.retry {
                stale_redo = false;
                tracing::debug!(upstream = %addr, "pooled connection was closed; redoing on a fresh one");
                req = unsent;
                continue;
            }
            if failed.instance_failed {
                self.instance_failed(service, pool, &ep);
            }
            tried.push(addr);
            // A request that never left costs no instance anything: its
            // retry is not drawn from the budget.
            let budgeted = !matches!(failed.retry, Retry::Unsent(_));
            let next = match failed.retry {
                Retry::Unsent(req) | Retry::Redo(req) => Some(req),
                Retry::IfReplayable => replay.as_ref().map(Replay::rebuild),
                Retry::Never => None,
            };
            let next = match next {
                Some(next) if tries_left > 0 && budgeted && budget.is_some_and(|b| !b.take()) => {
                    service.metrics.retry_budget_exhausted.inc();
                    tracing::debug!(upstream = %addr, error = %failed.err, "retry budget spent; not retrying");
                    drop(next);
                    None
                }
                other => other,
            };
            match next {
                Some(next) if tries_left > 0 => {
                    tries_left -= 1;
                    service.metrics.retries.inc();
                    tracing::debug!(upstream = %addr, error = %failed.err, "retrying on another instance");
                    req = next;
                    last_err = Some(failed.err);
                }
                _ => return Err(failed.err),
            }
        }
    }

    /// One try on one instance: connect (or reuse), send, await the
    /// response head. Counts the failure kind; the caller decides the rest.
    async fn attempt(
        &self,
        service: &ServiceRoutes,
        pool: &Arc<Pool>,
        ep: &Arc<Endpoint>,
        req: Request<UpstreamBody>,
        progress: Option<&Progress>,
        leeway: Leeway,
    ) -> Attempt {
        let addr = ep.addr();
        let in_flight = OwnedInFlight::new(Arc::clone(ep));
        pool.metrics.in_flight.inc();
        let in_flight_gauge = GaugeGuard(pool);

        let (mut conn, pooled) = match self.conn(service, ep).await {
            Ok(c) => c,
            // Never sent: any request may go elsewhere.
            Err(err) => return Attempt::failed(err, Retry::Unsent(req), true),
        };
        let send = conn.send(req);
        match response_head(send, &mut conn, progress, &self.settings.timeouts).await {
            Ok(Ok(resp)) => {
                let status = resp.status();
                match judge_status(status, leeway) {
                    // An answer, even an application's 500: the instance is
                    // up. Only gateway errors count towards ejection.
                    Judged::Up => ep.record_success(),
                    Judged::TryElsewhere => {
                        // Dropping the response and its connection: an
                        // unread body makes the connection unusable anyway.
                        let err = ProxyError::Upstream {
                            addr,
                            reason: format!("answered {status}"),
                        };
                        return Attempt::failed(err, Retry::IfReplayable, true);
                    }
                    // Passed to the client as it came, but still a failure.
                    Judged::PassOnFailed => self.instance_failed(service, pool, ep),
                }
                std::mem::forget(in_flight_gauge);
                let guard = ResponseGuard::new(conn, in_flight, Arc::clone(pool));
                Attempt::Answered(resp, guard)
            }
            Err(stall) => self.stalled(service, addr, stall),
            Ok(Err(e)) => self.send_failed(service, addr, e, pooled, progress, leeway),
        }
    }

    /// A connection to `ep`: an idle pooled one (`true`), else a new one.
    /// A failed connect is counted by kind.
    async fn conn(
        &self,
        service: &ServiceRoutes,
        ep: &Endpoint,
    ) -> Result<(Conn, bool), ProxyError> {
        if let Some(c) = ep.checkout().await {
            return Ok((c, true));
        }
        // Boxed: the connect is the rare path, and its state would
        // otherwise make every request's future larger.
        match Box::pin(ep.connect()).await {
            Ok(s) => Ok((s, false)),
            Err(ConnectError::Timeout) => {
                service.metrics.connect_timeouts.inc();
                Err(ProxyError::ConnectTimeout { addr: ep.addr() })
            }
            Err(other) => {
                service.metrics.connect_errors.inc();
                Err(ProxyError::Connect {
                    addr: ep.addr(),
                    reason: other.to_string(),
                })
            }
        }
    }

    /// A try whose wait ran out before the response head; dropping the
    /// exchange closes the connection.
    fn stalled(&self, service: &ServiceRoutes, addr: SocketAddr, stall: Stall) -> Attempt {
        let timeouts = &self.settings.timeouts;
        match stall {
            Stall::Head => {
                service.metrics.response_timeouts.inc();
                let err = ProxyError::ResponseTimeout {
                    addr,
                    timeout_ms: timeouts.response_head.as_millis(),
                };
                Attempt::failed(err, Retry::IfReplayable, true)
            }
            Stall::Send => {
                // The instance stopped reading the body: abandon both sides.
                self.router.metrics().abandoned(Abandon::UpstreamSend).inc();
                let err = ProxyError::SendTimeout {
                    addr,
                    timeout_ms: timeouts.send_idle.as_millis(),
                };
                Attempt::failed(err, Retry::Never, true)
            }
        }
    }

    /// A try hyper gave up on: the client's body is to blame, or the
    /// instance (a stale pooled connection is not its fault).
    fn send_failed(
        &self,
        service: &ServiceRoutes,
        addr: SocketAddr,
        mut e: TrySendError<Request<UpstreamBody>>,
        pooled: bool,
        progress: Option<&Progress>,
        leeway: Leeway,
    ) -> Attempt {
        if progress.is_some_and(Progress::client_stalled) {
            self.router.metrics().abandoned(Abandon::ClientBody).inc();
            let err = ProxyError::ClientBodyTimeout {
                timeout_ms: self.settings.timeouts.read_idle.as_millis(),
            };
            return Attempt::failed(err, Retry::Never, false);
        }
        if e.error().is_user() {
            // hyper blames the request side: the client's body stream
            // failed (invalid chunked framing, or the client went away
            // mid-upload). Not the instance's fault, so no 502, no
            // failure towards ejection, and no retry; the upstream saw a
            // truncated request it will discard.
            tracing::debug!(upstream = %addr, error = %e.error(), "request body from the client failed");
            let err = ProxyError::BadRequest("invalid or incomplete request body");
            return Attempt::failed(err, Retry::Never, false);
        }
        let reason = e.error().to_string();
        let err = ProxyError::Upstream { addr, reason };
        match e.take_message() {
            // A pooled connection that closed before the write is
            // staleness, not a failure of the instance.
            Some(unsent) if pooled && leeway.stale_redo => {
                Attempt::failed(err, Retry::Redo(unsent), false)
            }
            // Never written: safe to send again, body and all.
            Some(unsent) => {
                service.metrics.upstream_errors.inc();
                Attempt::failed(err, Retry::Unsent(unsent), true)
            }
            None => {
                service.metrics.upstream_errors.inc();
                Attempt::failed(err, Retry::IfReplayable, true)
            }
        }
    }
    /// Counts a failure of `ep` towards passive ejection, and counts and
    /// logs the ejection it may cause.
    /// Ejection never takes more than `ejection.max_ejected_percent` of the
    /// pool out at once.
    fn instance_failed(&self, service: &ServiceRoutes, pool: &Pool, ep: &Endpoint) {
        let n = pool.endpoints.len();
        let cap = n * self.settings.max_ejected_percent as usize / 100;
        let ejected = pool.endpoints.iter().filter(|e| e.is_ejected()).count();
        if ep.record_failure(ejected < cap) {
            service.metrics.ejections.inc();
            tracing::warn!(upstream = %ep.addr(), service = %service.name, "instance ejected after consecutive failures");
        }
    }
}

/// What a try may hand back instead of an answer or a failure.
#[derive(Clone, Copy)]
struct Leeway {
    /// A 502/503/504 may be dropped for a try elsewhere.
    retry_status: bool,
    /// A stale pooled connection may be redone once, for free.
    stale_redo: bool,
}

/// The host a request names: the authority of an absolute-form (or
/// HTTP/2) request, which wins over Host (RFC 9112 §3.2.2), else its one
/// Host header; either way exactly one host is forwarded.
#[derive(Debug)]
struct RequestHost {
    value: Option<HeaderValue>,
    /// The value came from the authority (so Host must be set to it).
    from_authority: bool,
}

impl RequestHost {
    /// The host of a request the proxy serves: CONNECT is refused (405); a
    /// bad authority, two Host headers, or an HTTP/1.1 request without a
    /// host are 400.
    fn of<B>(req: &Request<B>) -> Result<Self, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
        }
        let from_authority = req.uri().authority().is_some();
        let value = match req.uri().authority() {
            Some(a) => Some(
                HeaderValue::from_str(a.as_str())
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?,
            ),
            None => {
                let mut hosts = req.headers().get_all(header::HOST).iter();
                let first = hosts.next().cloned();
                if hosts.next().is_some() {
                    return Err(ProxyError::BadRequest("more than one Host header"));
                }
                first
            }
        };
        if value.is_none() && req.version() == Version::HTTP_11 {
            return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
        }
        Ok(Self {
            value,
            from_authority,
        })
    }

    /// The host to route by (empty when an HTTP/1.0 request named none).
    fn name(&self) -> Result<&str, ProxyError> {
        match &self.value {
            Some(v) => v
                .to_str()
                .map_err(|_| ProxyError::BadRequest("Host is not text")),
            None => Ok(""),
        }
    }
}

/// The origin-form URI towards the upstream: the request's own path and
/// query (a cheap shared copy) unless the preview prefix came off, leaving
/// `path`.
fn upstream_uri(uri: &Uri, path: &str, stripped: bool) -> Result<Uri, ProxyError> {
    let path_and_query = match (stripped, uri.path_and_query()) {
        (false, Some(pq)) => pq.clone(),
        _ => {
            let pq = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            PathAndQuery::try_from(pq).map_err(|_| ProxyError::BadRequest("invalid path"))?
        }
    };
    Ok(Uri::from(path_and_query))
}

/// Whether a request may be replayed on another instance: bodiless,
/// idempotent, with a try left and another instance to go to.
fn replayable(method: &Method, bodiless: bool, retry_attempts: u32, instances: usize) -> bool {
    bodiless && is_idempotent(method) && retry_attempts > 0 && instances > 1
}

/// Where a request was routed: its service and the pool (colour) serving
/// it.
struct Routed {
    service: Arc<ServiceRoutes>,
    pool: Arc<Pool>,
}

/// A response on its way to the client.
struct Forwarded {
    resp: Response<ProxyBody>,
    routed: Routed,
    /// The instance that answered.
    upstream: SocketAddr,
}

/// A request ready for the upstream, with what a retry of it needs.
struct Outgoing {
    request: Request<UpstreamBody>,
    /// Its parts, kept for a replay (a replayable request only).
    replay: Option<Replay>,
    /// How far its body has been sent (a request with a body only).
    progress: Option<Arc<Progress>>,
}

/// The client's side of an upgrade the proxy accepted.
struct ClientUpgrade {
    client: OnUpgrade,
    /// The connection's place in the limits, which the tunnel keeps.
    slot: Option<ConnSlot>,
}

/// A request that failed on the proxy's side, with the service and colour
/// it was routed to, when it got that far.
struct Failure {
    err: ProxyError,
    at: Option<Routed>,
}

impl From<ProxyError> for Failure {
    fn from(err: ProxyError) -> Self {
        Self { err, at: None }
    }
}

impl Failure {
    /// A failure after routing: counted with the pool's requests, so the
    /// per-colour error ratio sees the proxy's own 502/503/504 too.
    fn of_pool(err: ProxyError, routed: Routed, start: Instant) -> Self {
        routed
            .pool
            .metrics
            .observe(err.status().as_u16(), start.elapsed().as_secs_f64());
        Self {
            err,
            at: Some(routed),
        }
    }
}

/// How one try on one instance ended.
enum Attempt {
    /// A response head to pass on (possibly an error status that is not
    /// worth a retry).
    Answered(Response<Incoming>, ResponseGuard),
    /// No usable answer.
    Failed(Failed),
}

/// A failed try: the error the client gets if nothing else works, and what
/// may happen next.
struct Failed {
    err: ProxyError,
    retry: Retry,
    /// Whether this counts towards the instance's passive ejection.
    instance_failed: bool,
}

impl Attempt {
    fn failed(err: ProxyError, retry: Retry, instance_failed: bool) -> Self {
        Attempt::Failed(Failed {
            err,
            retry,
            instance_failed,
        })
    }
}

/// What a failed try allows (in the manner of a retry type on an error).
enum Retry {
    /// A pooled connection had closed before the request was written: one
    /// free redo (on a fresh connection), neither a failure nor a retry.
    Redo(Request<UpstreamBody>),
    /// The request never left: it may go to another instance whatever its
    /// method and body.
    Unsent(Request<UpstreamBody>),
    /// Part of the request may have been sent: only a replayable request
    /// (bodiless, idempotent) may go again.
    IfReplayable,
    /// Not again (the client's side failed).
    Never,
}

/// Which wait ran out before the response head.
enum Stall {
    /// The instance read none of the request body for `timeouts.send_idle`.
    Send,
    /// No response head within `timeouts.response_head` of the body's end.
    Head,
}

/// Awaits the response head of `send`: within `timeouts.response_head`
/// (on the connection's own head timer), or for a request with a body, as
/// [`head_after_body`] says.
async fn response_head<F, T>(
    send: F,
    conn: &mut Conn,
    progress: Option<&Progress>,
    timeouts: &Timeouts,
) -> Result<T, Stall>
where
    F: std::future::Future<Output = T>,
{
    match progress {
        None => before(send, conn.head_timer(timeouts.response_head)).await,
        // Boxed, as a request with a body is the rarer case and its wait
        // the larger state.
        Some(p) => Box::pin(head_after_body(send, conn, p, timeouts)).await,
    }
}

/// `send`'s output, unless `timer` fires first (`send` is polled first, as
/// `tokio::time::timeout` does).
async fn before<F, T>(send: F, timer: std::pin::Pin<&mut tokio::time::Sleep>) -> Result<T, Stall>
where
    F: std::future::Future<Output = T>,
{
    tokio::select! {
        biased;
        r = send => Ok(r),
        () = timer => Err(Stall::Head),
    }
}

/// Awaits the response head of a request with a body. The head timer
/// starts once the body has been sent (an upload may take longer than the
/// head timeout); until then the instance must keep reading it.
async fn head_after_body<F, T>(
    send: F,
    conn: &mut Conn,
    progress: &Progress,
    timeouts: &Timeouts,
) -> Result<T, Stall>
where
    F: std::future::Future<Output = T>,
{
    tokio::pin!(send);
    while !progress.is_done() {
        // While the client is the one pausing, its own read timeout runs;
        // look again one send timeout later.
        let due = progress.idle_since() + timeouts.send_idle;
        let check =
            tokio::time::Instant::from_std(due.max(Instant::now() + timeouts.send_idle / 4));
        tokio::select! {
            // An early answer (413, 401…) or a failure ends the wait.
            r = &mut send => return Ok(r),
            () = progress.ended() => {}
            () = tokio::time::sleep_until(check) => {
                if progress.upstream_stalled(timeouts.send_idle) {
                    return Err(Stall::Send);
                }
            }
        }
    }
    before(send, conn.head_timer(timeouts.response_head)).await
}

/// Decrements a pool's in-flight gauge unless forgotten (then the response
/// guard owns the decrement).
struct GaugeGuard<'a>(&'a Pool);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

impl Replay {
    fn rebuild(&self) -> Request<UpstreamBody> {
        let mut r = Request::new(Either::Right(Empty::new()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// What an upstream's answer makes of a try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judged {
    /// The instance answered (even an application's 500): it is up.
    Up,
    /// A gateway error with a try elsewhere allowed: dropped for that try.
    TryElsewhere,
    /// A gateway error passed to the client as it came: still a failure of
    /// the instance.
    PassOnFailed,
}

/// Judges an answer's status (see the module doc).
fn judge_status(status: StatusCode, leeway: Leeway) -> Judged {
    if !is_retryable_status(status) {
        Judged::Up
    } else if leeway.retry_status {
        Judged::TryElsewhere
    } else {
        Judged::PassOnFailed
    }
}

/// Upstream statuses after which a replayable request is tried on another
/// instance (see the module doc).
fn is_retryable_status(s: StatusCode) -> bool {
    matches!(
        s,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How many retries a service may still make: at most
/// `retry.budget_percent` of its requests over [`RETRY_BUDGET_WINDOW`], plus
/// `retry.budget_min_per_second` over the same window. Counted in one-second
/// buckets with atomics (no lock on the request path); a bucket is reused
/// once its second has left the window.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    floor: u64,
    buckets: Vec<BudgetBucket>,
}

#[derive(Debug, Default)]
struct BudgetBucket {
    /// The second (since the process epoch) this bucket counts, plus one (0 = unused).
    second: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let window = RETRY_BUDGET_WINDOW.as_secs().max(1);
        Self {
            percent: u64::from(config.percent),
            floor: u64::from(config.min_per_second) * window,
            buckets: (0..window).map(|_| BudgetBucket::default()).collect(),
        }
    }

    fn now() -> u64 {
        crate::upstream::now_ms() / 1000 + 1
    }

    fn bucket(&self, now: u64) -> &BudgetBucket {
        use std::sync::atomic::Ordering;
        let len = self.buckets.len() as u64;
        let b = &self.buckets[(now % len) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != now
            && b.second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Counts a request.
    pub fn request(&self) {
        let b = self.bucket(Self::now());
        b.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a retry would fit now.
    pub fn has_room(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = Self::now();
        let len = self.buckets.len() as u64;
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s != 0 && now.saturating_sub(s) < len {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        retries < requests * self.percent / 100 + self.floor
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn take(&self) -> bool {
        if !self.has_room() {
            return false;
        }
        self.bucket(Self::now())
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri.parse().unwrap();
        *req.version_mut() = version;
        for h in hosts {
            req.headers_mut()
                .append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        req
    }

    #[test]
    fn the_authority_wins_over_host_and_one_host_is_required() {
        let get = |uri, version, hosts: &[&str]| {
            RequestHost::of(&request(Method::GET, uri, version, hosts))
        };

        let h = get("http://a.example:81/x", Version::HTTP_11, &["b.example"]).unwrap();
        assert!(h.from_authority);
        assert_eq!(h.name().unwrap(), "a.example:81");

        let h = get("/x", Version::HTTP_11, &["b.example"]).unwrap();
        assert!(!h.from_authority);
        assert_eq!(h.name().unwrap(), "b.example");

        let two = get("/x", Version::HTTP_11, &["a.example", "b.example"]).unwrap_err();
        assert!(
            matches!(two, ProxyError::BadRequest("more than one Host header")),
            "{two}"
        );
        let none = get("/x", Version::HTTP_11, &[]).unwrap_err();
        assert!(
            matches!(
                none,
                ProxyError::BadRequest("HTTP/1.1 request without Host")
            ),
            "{none}"
        );

        // HTTP/1.0 may leave Host out: routed by the empty host.
        let h = get("/x", Version::HTTP_10, &[]).unwrap();
        assert_eq!(h.name().unwrap(), "");

        let connect = RequestHost::of(&request(
            Method::CONNECT,
            "a.example:443",
            Version::HTTP_11,
            &[],
        ));
        assert_eq!(
            connect.unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn a_host_that_is_not_text_is_refused_when_routed() {
        let mut req = request(Method::GET, "/", Version::HTTP_11, &[]);
        req.headers_mut().insert(
            header::HOST,
            HeaderValue::from_bytes(b"caf\xe9.example").unwrap(),
        );
        let h = RequestHost::of(&req).unwrap();
        let err = h.name().unwrap_err();
        assert!(
            matches!(err, ProxyError::BadRequest("Host is not text")),
            "{err}"
        );
    }

    #[test]
    fn the_upstream_uri_loses_only_the_preview_prefix() {
        let uri: Uri = "/standby/a/b?q=1".parse().unwrap();
        assert_eq!(upstream_uri(&uri, "/a/b", true).unwrap(), "/a/b?q=1");
        assert_eq!(
            upstream_uri(&"/standby".parse().unwrap(), "/", true).unwrap(),
            "/"
        );
        assert_eq!(
            upstream_uri(&uri, "/standby/a/b", false).unwrap(),
            "/standby/a/b?q=1"
        );
        // Absolute form goes out in origin form.
        let absolute: Uri = "http://a.example/x?y".parse().unwrap();
        assert_eq!(upstream_uri(&absolute, "/x", false).unwrap(), "/x?y");
    }

    #[test]
    fn only_bodiless_idempotent_requests_with_somewhere_to_go_are_replayable() {
        assert!(replayable(&Method::GET, true, 1, 2));
        assert!(replayable(&Method::PUT, true, 2, 3));
        assert!(!replayable(&Method::POST, true, 1, 2), "not idempotent");
        assert!(!replayable(&Method::GET, false, 1, 2), "has a body");
        assert!(!replayable(&Method::GET, true, 0, 2), "no retry configured");
        assert!(!replayable(&Method::GET, true, 1, 1), "no other instance");
    }

    #[test]
    fn only_gateway_errors_fail_a_try() {
        let leeway = |retry_status| Leeway {
            retry_status,
            stale_redo: true,
        };
        for ok in [200, 404, 500, 501, 505] {
            let s = StatusCode::from_u16(ok).unwrap();
            assert_eq!(judge_status(s, leeway(true)), Judged::Up, "{s}");
            assert_eq!(judge_status(s, leeway(false)), Judged::Up, "{s}");
        }
        for gateway in [502, 503, 504] {
            let s = StatusCode::from_u16(gateway).unwrap();
            assert_eq!(judge_status(s, leeway(true)), Judged::TryElsewhere, "{s}");
            assert_eq!(judge_status(s, leeway(false)), Judged::PassOnFailed, "{s}");
        }
    }
}
