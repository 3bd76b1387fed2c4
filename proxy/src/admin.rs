//! The admin listener, for operators and the controller. Own port,
//! `127.0.0.1:8081` by default, HTTP/1.1.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | the status page: one self-contained HTML document that polls `/status` |
//! | GET | `/healthz` | 200 while the process runs |
//! | GET | `/readyz` | 200 once every Consul-backed service has synced, else 503 |
//! | GET | `/status` | JSON: every service's colours, versions, instances, generation, sync and fail-static state |
//! | GET | `/metrics` | Prometheus text |
//! | POST | `/switch?service=S[&force=true]` | flip active and standby (check-and-set on the route key); 200 once this proxy serves the new colour, 409 when it keeps serving the old one |
//!
//! Mutating calls need `Authorization: Bearer <token>` when a token is
//! configured (compared in constant time); with no token configured they are
//! accepted from loopback peers only. The token is never logged. A mutating
//! call whose `Origin` names another host than the one it was sent to is
//! refused, and so is one a browser marks `Sec-Fetch-Site: cross-site` or
//! `same-site`, so a web page elsewhere cannot make a browser on the
//! operator's machine switch through the loopback rule. Every switch is
//! logged with who asked (peer address, token or loopback, user agent).
//!
//! `POST /switch` answers 200 only when this proxy serves the requested
//! colour. When the route names it but the proxy keeps serving the old one
//! (the new colour has no passing instance), it answers 409 saying so; a
//! switch from that state writes the route back to the colour served.

mod history;

pub use history::{Event, History};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use switchyard_model::flip::{self, FlipError, FlipRequest, Flipped};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::{ServiceWatch, Watches};
use crate::routing::{Pool, Router, ServiceRoutes, ServiceSnapshot};

/// How long `POST /switch` waits for this proxy to serve the new colour.
const SWITCH_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin API needs.
#[derive(Debug)]
pub struct Admin {
    /// The routing state.
    pub router: Arc<Router>,
    /// Consul watches by service.
    pub watches: Watches,
    /// Bearer token for mutating calls.
    pub token: Option<String>,
    /// Flips to true once listeners are bound.
    pub listening: watch::Receiver<bool>,
    /// Switches, deploys and fail-static episodes this proxy has seen.
    pub history: History,
}

/// The status page (`GET /`).
const PAGE: &str = include_str!("admin/page.html");
/// The page loads nothing from anywhere: inline script and style only, and
/// it talks to this admin port alone.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin API until the future is dropped.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let recorder = Arc::clone(&admin);
    tokio::join!(
        history::record(Arc::clone(&recorder.router), &recorder.history),
        accept_loop(listener, admin)
    );
}

async fn accept_loop(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, v: &impl Serialize) -> AdminResponse {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, reason: impl Into<String>) -> AdminResponse {
    json_response(status, &json!({ "error": reason.into() }))
}

impl Admin {
    /// Whether the proxy may take traffic.
    pub fn ready(&self) -> Result<(), String> {
        if !*self.listening.borrow() {
            return Err(
                "not accepting traffic: starting, shutting down or handed over to a new process"
                    .into(),
            );
        }
        if !self.watches.all_synced() {
            return Err("waiting for the first Consul sync".into());
        }
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResponse {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/") => page(),
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => match self.ready() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            (&Method::GET, "/metrics") => {
                let mut r = text(StatusCode::OK, self.router.metrics().render());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (&Method::GET, "/status") => {
                let mut doc = self.status();
                doc["admin"] = json!({
                    "token_required": self.token.is_some(),
                    "loopback": loopback_peer(peer.ip()),
                });
                json_response(StatusCode::OK, &doc)
            }
            (&Method::POST, "/switch") => {
                if let Err(resp) = self.authorize(&req, peer) {
                    return *resp;
                }
                let params = parse_query(&query);
                let Some(service) = params
                    .iter()
                    .find(|(k, _)| k == "service")
                    .map(|(_, v)| v.clone())
                else {
                    return error(StatusCode::BAD_REQUEST, "missing ?service=<name>");
                };
                let force = match params
                    .iter()
                    .find(|(k, _)| k == "force")
                    .map(|(_, v)| v.as_str())
                {
                    None | Some("false") | Some("0") => false,
                    Some("true") | Some("1") | Some("") => true,
                    Some(other) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("force must be true or false, got {other:?}"),
                        );
                    }
                };
                let who = caller(&req, peer, self.token.is_some());
                tracing::info!(service = %service, force, by = %who, "switch requested");
                self.switch(&service, force, &who).await
            }
            (_, "/" | "/healthz" | "/readyz" | "/metrics" | "/status") => {
                let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
                r
            }
            (_, "/switch") => {
                let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                r
            }
            _ => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no admin endpoint {path}; try /, /status, /metrics, /healthz, /readyz, POST /switch"
                ),
            ),
        }
    }

    fn authorize(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<(), Box<AdminResponse>> {
        if let Some(origin) = req.headers().get(header::ORIGIN)
            && !same_origin(origin, req.headers().get(header::HOST))
        {
            tracing::warn!(peer = %peer, "cross-origin admin call refused");
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "cross-origin admin call refused: Origin does not name this admin address",
            )));
        }
        if let Some(site) = req.headers().get("sec-fetch-site")
            && !matches!(site.as_bytes(), b"same-origin" | b"none")
        {
            tracing::warn!(peer = %peer, site = ?site, "cross-site admin call refused");
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "cross-site admin call refused: Sec-Fetch-Site is not same-origin",
            )));
        }
        match &self.token {
            Some(token) => {
                let Some(given) = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                else {
                    let mut r = error(
                        StatusCode::UNAUTHORIZED,
                        "this call needs Authorization: Bearer <admin token>",
                    );
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
                    );
                    return Err(Box::new(r));
                };
                if bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())) {
                    Ok(())
                } else {
                    tracing::warn!(peer = %peer, "admin call with a wrong token refused");
                    Err(Box::new(error(StatusCode::FORBIDDEN, "wrong admin token")))
                }
            }
            None if loopback_peer(peer.ip()) => Ok(()),
            None => Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "no admin token is configured, so mutating calls are accepted from loopback only",
            ))),
        }
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let table = self.router.table_full();
        let services: Vec<_> = table
            .services()
            .iter()
            .map(|s| {
                let sync = self
                    .watches
                    .0
                    .get(&s.name)
                    .map(|w| w.state().borrow().clone());
                let mut doc = service_status(s, sync);
                doc["traffic"] = json!(self.router.metrics().colour_traffic(&s.name));
                let events = self.history.events(&s.name);
                // When the current fail-static episode began, as observed.
                doc["fail_static_since"] = json!(
                    events
                        .iter()
                        .rev()
                        .find(|e| e.kind == "fail_static" || e.kind == "recovered")
                        .filter(|e| s.snapshot.fail_static && e.kind == "fail_static")
                        .map(|e| e.at.clone())
                );
                doc["history"] = json!(events);
                doc
            })
            .collect();
        json!({
            "ready": self.ready().is_ok(),
            "now": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "proxy": { "version": crate::metrics::VERSION, "commit": crate::metrics::COMMIT },
            "table_version": table.version,
            "services": services,
        })
    }

    async fn switch(&self, service: &str, force: bool, who: &str) -> AdminResponse {
        let started = Instant::now();
        let table = self.router.table_full();
        let Some(current) = table.service(service).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown service {service:?}"),
            );
        };
        drop(table);
        let (from, to) = (&current.active, &current.standby);
        if to.colour.is_empty() {
            return error(
                StatusCode::CONFLICT,
                format!("{service} has no standby colour yet"),
            );
        }
        if !force
            && let Some(why) = switch_refusal(
                service,
                (&from.colour, from.endpoints.len()),
                (&to.colour, to.endpoints.len()),
            )
        {
            return error(StatusCode::CONFLICT, why);
        }
        let target = to.colour.clone();
        let generation = match self.route_to(service, &current, &target, who).await {
            Ok(g) => g,
            Err(resp) => return *resp,
        };
        match self.served(service, generation).await {
            Some(now) if now.active.colour == target => {
                tracing::info!(service, active = %target, previous = %from.colour, generation, by = %who, "switch served");
                json_response(
                    StatusCode::OK,
                    &json!({
                        "service": service,
                        "active": target,
                        "previous": from.colour,
                        "generation": generation,
                        "cutover_ms": started.elapsed().as_secs_f64() * 1000.0,
                    }),
                )
            }
            Some(now) => {
                let why = now
                    .snapshot
                    .fail_static_reason
                    .clone()
                    .unwrap_or_else(|| format!("{target} has no passing instance"));
                tracing::warn!(service, requested = %target, serving = %now.active.colour, generation, by = %who, reason = %why, "switch not served");
                json_response(
                    StatusCode::CONFLICT,
                    &json!({
                        "error": format!(
                            "the route names {target} active (generation {generation}) but this proxy still serves {}: {why}. Once {target} has passing instances the proxy follows; to go back, switch again",
                            now.active.colour
                        ),
                        "service": service,
                        "requested": target,
                        "active": now.active.colour,
                        "generation": generation,
                    }),
                )
            }
            None => error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "route key written (generation {generation}) but this proxy did not serve it within {}s; check Consul connectivity",
                    SWITCH_ACK_TIMEOUT.as_secs()
                ),
            ),
        }
    }

    /// Makes `target` the service's active colour: the route key for a
    /// Consul-backed service, this proxy's own table for static pools.
    /// Returns the generation to wait for.
    async fn route_to(
        &self,
        service: &str,
        current: &ServiceRoutes,
        target: &str,
        who: &str,
    ) -> Result<u64, Box<AdminResponse>> {
        if let Some(w) = self.watches.0.get(service) {
            return self.write_route(w, current, target, who).await;
        }
        // Static pools: the flip is local to this proxy.
        let g = current.snapshot.generation + 1;
        let snap = ServiceSnapshot {
            active: current.snapshot.standby.clone(),
            standby: current.snapshot.active.clone(),
            generation: g,
            route_written_at: Some(SystemTime::now()),
            decided_by: "static",
            ..current.snapshot.clone()
        };
        self.router.apply(snap);
        Ok(g)
    }

    /// What this proxy serves for `service` once it has applied
    /// `generation`; `None` when that takes longer than
    /// [`SWITCH_ACK_TIMEOUT`].
    async fn served(&self, service: &str, generation: u64) -> Option<Arc<ServiceRoutes>> {
        let mut rx = self.router.subscribe();
        tokio::time::timeout(SWITCH_ACK_TIMEOUT, async {
            loop {
                {
                    let t = self.router.table();
                    if let Some(s) = t.service(service)
                        && s.snapshot.generation >= generation
                    {
                        return Arc::clone(s);
                    }
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }

    /// Check-and-set write of the route key (the shared flip); returns the new generation.
    async fn write_route(
        &self,
        w: &ServiceWatch,
        current: &ServiceRoutes,
        target: &str,
        who: &str,
    ) -> Result<u64, Box<AdminResponse>> {
        // The colour the route decided: the one that is not standby. It
        // differs from the pool served when the proxy kept the last good
        // pool because the decided colour had no passing instance; a switch
        // from there writes the route back to the colour actually served.
        let colours = w.colours();
        let decided = colours
            .iter()
            .find(|c| **c != current.standby.colour)
            .map_or(current.active.colour.as_str(), String::as_str);
        let by = format!("switchyard proxy admin API ({who})");
        let request = FlipRequest {
            key: w.route_key(),
            colours,
            from: decided,
            to: target,
            based_on: None,
            generation_floor: current.snapshot.generation,
            // An unusable key does not route anything; the switch replaces it.
            overwrite_unusable: true,
            by: &by,
        };
        let behind = |active: &str, generation: u64| {
            Box::new(error(
                StatusCode::CONFLICT,
                format!(
                    "route key already names {active} active (generation {generation}) but this proxy serves {}; retry once it has caught up",
                    current.active.colour
                ),
            ))
        };
        match flip::flip(w.client(), &request).await {
            Ok(Flipped::Written(v)) => Ok(v.generation),
            Ok(Flipped::AlreadyActive(v)) => Err(behind(&v.active, v.generation)),
            Err(FlipError::Moved {
                active, generation, ..
            }) => Err(behind(&active, generation)),
            Err(e @ (FlipError::Lost { .. } | FlipError::Unusable { .. })) => {
                Err(Box::new(error(StatusCode::CONFLICT, e.to_string())))
            }
            Err(e @ (FlipError::Read { .. } | FlipError::Unconfirmed { .. })) => {
                Err(Box::new(error(StatusCode::BAD_GATEWAY, e.to_string())))
            }
        }
    }
}

/// Why an unforced switch from the active pool to the standby one is
/// refused (each a colour and its passing instances): a standby without
/// passing instances, or with fewer than the active colour has.
fn switch_refusal(
    service: &str,
    (from, from_passing): (&str, usize),
    (to, to_passing): (&str, usize),
) -> Option<String> {
    if to_passing == 0 {
        return Some(format!(
            "refusing to switch {service}: standby colour {to} has no passing instance (force=true overrides)"
        ));
    }
    if to_passing < from_passing {
        return Some(format!(
            "refusing to switch {service}: standby colour {to} has {to_passing} passing instance(s), active {from} has {from_passing} (force=true overrides)"
        ));
    }
    None
}

fn pool_status(p: &Pool) -> serde_json::Value {
    let instances: Vec<_> = p
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "address": e.addr().to_string(),
                "id": p.ids.get(i).cloned().flatten(),
                "version": p.versions.get(i).cloned().flatten(),
                "health": if e.is_ejected() { "ejected" } else { "passing" },
                "in_flight": e.in_flight(),
                "idle_connections": e.idle_count(),
            })
        })
        .collect();
    json!({
        "colour": p.colour,
        "version": p.version,
        "instances": instances,
        "in_flight": p.endpoints.iter().map(|e| e.in_flight()).sum::<usize>(),
        "draining": p.drain.draining(),
        "draining_connections": p.metrics.draining.get(),
    })
}

fn service_status(
    s: &ServiceRoutes,
    sync: Option<crate::discovery::SyncState>,
) -> serde_json::Value {
    let snap = &s.snapshot;
    let fmt = |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_millis(t).to_string());
    json!({
        "name": s.name,
        "source": if sync.is_some() { "consul" } else { "static" },
        "active": pool_status(&s.active),
        "standby": pool_status(&s.standby),
        "generation": snap.generation,
        "decided_by": snap.decided_by,
        "route_written_at": fmt(snap.route_written_at),
        "applied_at": fmt(Some(s.applied_at)),
        "consul_index": sync.as_ref().map_or(snap.consul_index, |s| s.health_index),
        "route_index": sync.as_ref().map_or(snap.route_index, |s| s.route_index),
        "last_sync": sync.as_ref().and_then(|s| s.last_sync.clone()),
        "synced": sync.as_ref().is_none_or(|s| s.synced),
        "fail_static": snap.fail_static,
        "fail_static_reason": snap.fail_static_reason,
        "unassigned": snap.unassigned,
    })
}

fn page() -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Whether an `Origin` header names the host the request was sent to
/// (`Host`), whatever the scheme. `null` and unparsable origins do not.
fn same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(|h| h.to_str())) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Who made an authorized mutating call, for the log and the route key's
/// `updated_by`: the peer, how it was let in, and its user agent.
fn caller(req: &Request<Incoming>, peer: SocketAddr, token: bool) -> String {
    let how = if token { "token" } else { "loopback" };
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|a| {
            a.chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect::<String>()
        });
    match agent {
        Some(a) if !a.is_empty() => format!("{peer}, {how}, {a}"),
        _ => format!("{peer}, {how}"),
    }
}

/// Whether a peer counts as local for token-less mutating calls. On a
/// dual-stack (`[::]`) listener an IPv4 loopback client arrives as
/// `::ffff:127.0.0.1`, which is loopback too.
fn loopback_peer(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `a=1&b=x%20y` → pairs, percent-decoded; a bare `a` has an empty value.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_switch_without_a_token() {
        for (ip, local) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("192.0.2.2", false),
            ("10.0.0.1", false),
            ("::ffff:192.0.2.2", false),
            ("2001:db8::1", false),
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|_| unreachable!());
            assert_eq!(loopback_peer(ip), local, "{ip}");
        }
    }

    #[test]
    fn origin_must_name_the_admin_host() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        let host = v("127.0.0.1:8081");
        assert!(same_origin(&v("http://127.0.0.1:8081"), Some(&host)));
        assert!(same_origin(&v("https://127.0.0.1:8081"), Some(&host)));
        assert!(!same_origin(&v("http://evil.example"), Some(&host)));
        assert!(!same_origin(&v("http://127.0.0.1:8082"), Some(&host)));
        assert!(!same_origin(&v("null"), Some(&host)));
        assert!(!same_origin(&v("http://127.0.0.1:8081"), None));
    }

    #[test]
    fn query_parsing() {
        let q = parse_query("service=hello%2Dservice&force&x=a+b&bad=%zz&end=%4");
        assert_eq!(q[0], ("service".into(), "hello-service".into()));
        assert_eq!(q[1], ("force".into(), String::new()));
        assert_eq!(q[2], ("x".into(), "a b".into()));
        assert_eq!(q[3], ("bad".into(), "%zz".into()));
        assert_eq!(q[4], ("end".into(), "%4".into()));
    }

    #[test]
    fn a_switch_to_a_weaker_standby_is_refused() {
        assert_eq!(switch_refusal("web", ("blue", 2), ("green", 2)), None);
        assert_eq!(switch_refusal("web", ("blue", 0), ("green", 1)), None);
        assert_eq!(
            switch_refusal("web", ("blue", 1), ("green", 0)).as_deref(),
            Some(
                "refusing to switch web: standby colour green has no passing instance (force=true overrides)"
            )
        );
        assert_eq!(
            switch_refusal("web", ("blue", 3), ("green", 2)).as_deref(),
            Some(
                "refusing to switch web: standby colour green has 2 passing instance(s), active blue has 3 (force=true overrides)"
            )
        );
    }
}
