//! The floor under any proxy built on hyper 1.x: the least a reverse proxy
//! on hyper's HTTP/1 server and client connections does per request, run by
//! `benches/compare.sh` beside switchyard, nginx and haproxy so that each
//! round also says how much of switchyard's cost is hyper's and how much is
//! switchyard's own.
//!
//!   cargo build --release --example hyper-floor
//!   target/release/examples/hyper-floor LISTEN UPSTREAM [UPSTREAM...]
//!
//! What it does per request, and nothing more: hyper parses the request,
//! an `X-Forwarded-For` is appended (nginx's bench configuration does the
//! same), the next upstream in turn is picked, an idle pooled connection to
//! it is taken (or one is opened), hyper's client sends the request and
//! parses the answer, and the body streams back; the connection returns to
//! its pool when the body ends. It runs on a current-thread runtime with
//! jemalloc, as switchyard does on one CPU. It has none of what a
//! production proxy needs (routing table, timeouts, retries, limits,
//! metrics, hop-by-hop headers, HTTP/2, drain): it is a measuring stick,
//! never a thing to deploy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

struct Upstream {
    addr: SocketAddr,
    idle: Idle,
}

struct Floor {
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
}

/// The upstream's body; its connection goes back to the pool at the end.
struct Returning {
    body: Incoming,
    sender: Option<SendRequest<Incoming>>,
    idle: Idle,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some(s) = self.sender.take()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(s);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

type Answer = Response<UnsyncBoxBody<Bytes, hyper::Error>>;

fn bad_gateway() -> Answer {
    let body = Full::new(Bytes::from_static(b"bad gateway\n"))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

impl Floor {
    async fn sender(&self, up: &Upstream) -> Option<SendRequest<Incoming>> {
        loop {
            let pooled = up.idle.lock().ok()?.pop();
            match pooled {
                Some(s) if s.is_ready() => return Some(s),
                Some(_) => continue,
                None => break,
            }
        }
        let stream = TcpStream::connect(up.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(sender)
    }

    async fn handle(&self, mut req: Request<Incoming>, client: SocketAddr) -> Answer {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        let up = &self.upstreams[i];
        if let Ok(v) = HeaderValue::from_str(&client.ip().to_string()) {
            req.headers_mut().append("x-forwarded-for", v);
        }
        let Some(mut sender) = self.sender(up).await else {
            return bad_gateway();
        };
        match sender.send_request(req).await {
            Ok(resp) => resp.map(|body| {
                Returning {
                    body,
                    sender: Some(sender),
                    idle: Arc::clone(&up.idle),
                }
                .boxed_unsync()
            }),
            Err(_) => bad_gateway(),
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: hyper-floor LISTEN UPSTREAM [UPSTREAM...]");
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let upstreams: Vec<Upstream> = args
        .map(|a| a.parse().map_err(|_| usage()))
        .map(|addr| {
            addr.map(|addr| Upstream {
                addr,
                idle: Arc::default(),
            })
        })
        .collect::<Result<_, _>>()?;
    if upstreams.is_empty() {
        return Err(usage());
    }
    let floor = Arc::new(Floor {
        upstreams,
        next: AtomicUsize::new(0),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(listen).await?;
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let _ = stream.set_nodelay(true);
                let floor = Arc::clone(&floor);
                let service = service_fn(move |req| {
                    let floor = Arc::clone(&floor);
                    async move { Ok::<_, Infallible>(floor.handle(req, peer).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}
