//! Test fixtures: real upstream servers and a real proxy, all on
//! `127.0.0.1:0`.
//!
//! [`Upstream`] is a small hyper server with endpoints that misbehave on
//! purpose (slow, hanging, resetting, streaming, echoing headers and
//! bodies, WebSocket echo). [`ProxyHandle`] runs `switchyard_proxy::Proxy`
//! from TOML text with its listeners bound to ephemeral ports.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod browser;
pub mod consul;
pub mod dev;
pub mod faulty;
pub mod load;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
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
use switchyard_proxy::config::{Config, Env};
use switchyard_proxy::{Listeners, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
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
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (n, r, c) = (name.to_owned(), requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            // Connections die with the server: dropping the set aborts them.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let (stream, _) = tokio::select! {
                    s = listener.accept() => match s { Ok(s) => s, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (n, r) = (n.clone(), r.clone());
                conns.spawn(async move {
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
                });
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            requests,
            connections,
            stop: Some(stop_tx),
            task,
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

/// A port on which nothing listens (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A running proxy.
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub router: Arc<switchyard_proxy::routing::Router>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl ProxyHandle {
    /// Starts a proxy from TOML text (listener addresses in it are ignored:
    /// listeners are bound to 127.0.0.1:0).
    pub async fn start(toml: &str) -> Self {
        Self::start_env(toml, &Env::default()).await
    }

    pub async fn start_env(toml: &str, env: &Env) -> Self {
        let config = Config::parse(toml, Path::new("test.toml"), env).unwrap();
        let traffic = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = match &config.tls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let addr = traffic.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let tls_addr = tls.as_ref().map(|l| l.local_addr().unwrap());
        let proxy = Proxy::new(config).unwrap();
        let router = Arc::clone(proxy.router());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            proxy
                .run(
                    Listeners {
                        traffic,
                        tls,
                        admin: Some(admin),
                    },
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        let _ = tls_addr;
        Self {
            addr,
            admin: Some(admin_addr),
            router,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.unwrap(), path)
    }

    /// Signals shutdown and returns the task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
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

/// A keep-alive HTTP/1.1 client (reqwest, plain HTTP).
pub fn client() -> reqwest::Client {
    switchyard_hashi::tls::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
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
