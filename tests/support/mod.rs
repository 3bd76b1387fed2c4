//! Test fixtures: real upstream servers and a real proxy, all on
//! `127.0.0.1:0`.
//!
//! [`Upstream`] is a small hyper server with endpoints that misbehave on
//! purpose (slow, hanging, resetting, streaming, echoing headers and
//! bodies, WebSocket echo). What every crate's tests share (the proxy handle,
//! clients, waits, the dev Consul, load loops) comes from `switchyard_testkit`
//! and is re-exported here.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod browser;
pub mod consul;
pub mod dev;
pub mod faulty;
pub mod load;
pub mod proxy_process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_testkit::{AbortOnDrop, accept_loop, answered_by};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use switchyard_testkit::{ProxyHandle, client, consul_config, dead_addr, eventually, get_text};

pub type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// How an upstream behaves on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve the endpoints below.
    Normal,
    /// Accept and read, never answer.
    Hang,
    /// Read the request head, then close the connection.
    Reset,
}

/// A running upstream; stopped (its connections cut) on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        Self::start_mode(name, Mode::Normal).await
    }

    pub async fn start_mode(name: &str, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, name, mode)
    }

    /// Serves on an already bound listener (to restart on the same port).
    pub fn serve(listener: TcpListener, name: &str, mode: Mode) -> Self {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (n, r, c) = (name.to_owned(), requests.clone(), connections.clone());
        let task = accept_loop(listener, move |stream| {
            c.fetch_add(1, Ordering::SeqCst);
            let (n, r) = (n.clone(), r.clone());
            async move {
                match mode {
                    Mode::Hang => {
                        let mut s = stream;
                        let mut buf = vec![0u8; 65536];
                        while let Ok(k) = s.read(&mut buf).await {
                            if k == 0 {
                                break;
                            }
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Mode::Reset => {
                        let mut s = stream;
                        let mut buf = vec![0u8; 65536];
                        let _ = s.read(&mut buf).await;
                        r.fetch_add(1, Ordering::SeqCst);
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        drop(s);
                    }
                    Mode::Normal => {
                        let svc = service_fn(move |req| {
                            r.fetch_add(1, Ordering::SeqCst);
                            handle(req, n.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            requests,
            connections,
            _task: AbortOnDrop(task),
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(req: Request<Incoming>, name: String) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = if path == "/echo" {
        // Stream the request body straight back.
        let body = req.into_body();
        Response::builder()
            .header("x-upstream", &name)
            .body(body.boxed())
            .unwrap()
    } else if path == "/headers" {
        let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes().len())
            .unwrap_or(0);
        out.push_str(&format!("body-bytes: {body}\n"));
        Response::builder()
            .header("x-upstream", &name)
            .body(full(out))
            .unwrap()
    } else if path == "/slow" {
        let ms = query_param(&req, "ms").unwrap_or(500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::builder()
            .header("x-upstream", &name)
            .body(full(format!("slow {name}")))
            .unwrap()
    } else if path == "/stream" {
        let chunks = query_param(&req, "chunks").unwrap_or(5);
        let ms = query_param(&req, "ms").unwrap_or(100);
        let stream = futures_util::stream::unfold(0u64, move |i| async move {
            if i >= chunks {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some((
                Ok::<_, hyper::Error>(Frame::data(Bytes::from(format!("chunk {i}\n")))),
                i + 1,
            ))
        });
        Response::builder()
            .header("x-upstream", &name)
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
        Response::builder()
            .status(code)
            .header("x-upstream", &name)
            .body(full(format!("{code}")))
            .unwrap()
    } else if path == "/ws" {
        return Ok(websocket_echo(req, name));
    } else {
        Response::builder()
            .header("x-upstream", &name)
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret")
            .body(full(format!("hello from {name}")))
            .unwrap()
    };
    Ok(resp)
}

fn websocket_echo(mut req: Request<Incoming>, name: String) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() {
                let t = msg.into_text().unwrap_or_default();
                if ws.send(format!("{name}: {t}").into()).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(full(""))
        .unwrap()
}

/// A static-pool config with the given active and standby upstreams.
pub fn static_config(active: &[SocketAddr], standby: &[SocketAddr], extra: &str) -> String {
    let list = |a: &[SocketAddr]| {
        a.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[log]
access_log = false
{extra}
[[services]]
name = "svc"
static = {{ active = [{}], standby = [{}], active_version = "v1", standby_version = "v2" }}
"#,
        list(active),
        list(standby)
    )
}

/// Which upstream (its `x-upstream` header) answered `GET url`, if it answered 200.
pub async fn who(c: &reqwest::Client, url: &str) -> Option<String> {
    answered_by(c, url, "x-upstream").await
}

/// Whether the proxy's traffic port answers from `colour` within `within`.
pub async fn serves(proxy: &ProxyHandle, colour: &str, within: Duration) -> bool {
    let c = client();
    let url = proxy.url("/");
    eventually(within, async || {
        who(&c, &url).await.as_deref() == Some(colour)
    })
    .await
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts calls, for tests that want a cheap shared counter.
pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

/// An HTTP/2 prior-knowledge (h2c) request.
pub async fn h2c_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
