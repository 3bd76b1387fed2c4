//! A scripted Consul API for fault injection: the two endpoints discovery
//! reads (`/v1/health/service/<svc>` and `/v1/kv/<key>`, both blocking)
//! plus KV check-and-set writes, shaped like ../shared/fixtures, with
//! switchable faults (500s, garbage JSON, empty answers, an index that goes
//! backwards, or not answering at all). Healthy-path tests use the dev
//! stack's Consul instead; this one exists to break things on purpose.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use switchyard_testkit::{AbortOnDrop, accept_loop};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A registered instance.
#[derive(Clone, Debug)]
pub struct Inst {
    pub id: String,
    pub addr: SocketAddr,
    pub tags: Vec<String>,
}

/// What the next health reads do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Status500,
    Garbage,
    Truncated,
    Empty,
}

#[derive(Debug)]
struct State {
    index: u64,
    instances: Vec<Inst>,
    route: Option<(Vec<u8>, u64)>,
    fault: Fault,
    /// Subtracted from every index sent (to simulate going backwards).
    index_offset: u64,
    health_reads: u64,
}

/// The scripted Consul; stopped (its connections cut) on drop.
pub struct FakeConsul {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    _task: AbortOnDrop,
}

impl FakeConsul {
    pub async fn start(service: &str, instances: Vec<Inst>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, service, instances)
    }

    pub fn serve(listener: TcpListener, service: &str, instances: Vec<Inst>) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            index: 10,
            instances,
            route: None,
            fault: Fault::None,
            index_offset: 0,
            health_reads: 0,
        }));
        let changed = Arc::new(Notify::new());
        let (s, c, svc) = (state.clone(), changed.clone(), service.to_owned());
        let task = accept_loop(listener, move |stream| {
            let (s, c, svc) = (s.clone(), c.clone(), svc.clone());
            async move {
                let handler = service_fn(move |req| handle(req, s.clone(), c.clone(), svc.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler)
                    .await;
            }
        });
        Self {
            addr,
            state,
            changed,
            _task: AbortOnDrop(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bump(&self, f: impl FnOnce(&mut State)) {
        {
            let mut s = self.state.lock().unwrap();
            f(&mut s);
            s.index += 1;
        }
        self.changed.notify_waiters();
    }

    pub fn set_instances(&self, instances: Vec<Inst>) {
        self.bump(|s| s.instances = instances);
    }

    pub fn set_route(&self, value: &[u8]) {
        self.bump(|s| {
            let idx = s.index + 1;
            s.route = Some((value.to_vec(), idx));
        });
    }

    pub fn set_fault(&self, fault: Fault) {
        self.bump(|s| s.fault = fault);
    }

    /// Makes every index sent from now on lower than before.
    pub fn index_backwards(&self, by: u64) {
        self.bump(|s| s.index_offset = by);
    }

    pub fn health_reads(&self) -> u64 {
        self.state.lock().unwrap().health_reads
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_owned())
    })
}

fn wait_of(req: &Request<Incoming>) -> Duration {
    query(req, "wait")
        .and_then(|w| {
            w.strip_suffix("ms")
                .and_then(|n| n.parse().ok())
                .map(Duration::from_millis)
                .or_else(|| {
                    w.strip_suffix('s')
                        .and_then(|n| n.parse().ok())
                        .map(Duration::from_secs)
                })
        })
        .unwrap_or(Duration::from_secs(300))
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    service: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let index: u64 = query(&req, "index")
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let wait = wait_of(&req);

    if req.method() == http::Method::PUT
        && let Some(key) = path.strip_prefix("/v1/kv/")
    {
        {
            let cas: Option<u64> = query(&req, "cas").and_then(|c| c.parse().ok());
            let key = key.to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let ok = {
                let mut s = state.lock().unwrap();
                let current = s.route.as_ref().map_or(0, |r| r.1);
                let allowed = match cas {
                    None => true,
                    Some(0) => s.route.is_none(),
                    Some(n) => n == current,
                };
                if allowed {
                    s.index += 1;
                    let idx = s.index;
                    s.route = Some((body.to_vec(), idx));
                }
                let _ = key;
                allowed
            };
            if ok {
                changed.notify_waiters();
            }
            return Ok(reply(
                StatusCode::OK,
                if ok { "true" } else { "false" },
                None,
            ));
        }
    }

    // Blocking: wait while the index has not passed the requested one.
    if index > 0 {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = changed.notified();
            {
                let s = state.lock().unwrap();
                if s.index.saturating_sub(s.index_offset) > index {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }

    let s = state.lock().unwrap();
    let sent_index = s.index.saturating_sub(s.index_offset).max(1);
    if path == format!("/v1/health/service/{service}") {
        drop(s);
        let mut s = state.lock().unwrap();
        s.health_reads += 1;
        match s.fault {
            Fault::Status500 => {
                return Ok(reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rpc error: No cluster leader",
                    None,
                ));
            }
            Fault::Garbage => {
                return Ok(reply(
                    StatusCode::OK,
                    "<html>not json</html>",
                    Some(sent_index),
                ));
            }
            Fault::Truncated => {
                return Ok(reply(
                    StatusCode::OK,
                    "[{\"Node\": {\"ID\": \"x\"",
                    Some(sent_index),
                ));
            }
            Fault::Empty => return Ok(reply(StatusCode::OK, "[]", Some(sent_index))),
            Fault::None => {}
        }
        let entries: Vec<_> = s
            .instances
            .iter()
            .map(|i| {
                json!({
                    "Node": {"ID": "node-1", "Node": "node-1", "Address": "127.0.0.1", "Datacenter": "dc1",
                             "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"}, "Meta": {}},
                    "Service": {"ID": i.id, "Service": service, "Tags": i.tags, "Address": i.addr.ip().to_string(),
                                "Port": i.addr.port(), "Meta": {}, "Weights": {"Passing": 1, "Warning": 1}},
                    "Checks": [
                        {"Node": "node-1", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                         "Notes": "", "Output": "", "ServiceID": "", "ServiceName": "", "ServiceTags": []},
                        {"Node": "node-1", "CheckID": format!("service:{}", i.id), "Name": "http", "Status": "passing",
                         "Notes": "", "Output": "", "ServiceID": i.id, "ServiceName": service, "ServiceTags": i.tags}
                    ]
                })
            })
            .collect();
        return Ok(reply(
            StatusCode::OK,
            &serde_json::to_string(&entries).unwrap(),
            Some(sent_index),
        ));
    }
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return Ok(match &s.route {
            None => reply(StatusCode::NOT_FOUND, "", Some(sent_index)),
            Some((value, modify)) => {
                let body = json!([{
                    "CreateIndex": modify, "ModifyIndex": modify, "LockIndex": 0, "Key": key, "Flags": 0,
                    "Value": base64::engine::general_purpose::STANDARD.encode(value), "Session": null
                }]);
                reply(StatusCode::OK, &body.to_string(), Some(*modify))
            }
        });
    }
    Ok(reply(StatusCode::NOT_FOUND, "unknown endpoint", None))
}

fn reply(status: StatusCode, body: &str, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    if let Some(i) = index {
        b = b
            .header("X-Consul-Index", i.to_string())
            .header("X-Consul-KnownLeader", "true")
            .header("X-Consul-LastContact", "0")
            .header("Content-Type", "application/json");
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}
