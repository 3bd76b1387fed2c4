//! `hello-service`: the demo workload of switchyard's blue/green walkthrough.
//!
//! A library with one entry point, [`run`]: the `hello-service` binary (the
//! Docker image's) and `switchyard demo` both call it.
//!
//! Module map:
//! - [`Config`] / [`parse_args`]: command line and environment (`NOMAD_PORT_http`,
//!   `HELLO_VERSION`), so the same binary runs by hand, under the dev stack and
//!   under a real Nomad `raw_exec` task without a wrapper script.
//! - [`player_line`]: the per-version answer. Each version names a different
//!   player so a human (or a load test) can tell at a glance which colour served
//!   a request.
//! - [`handle`]: the HTTP routes (`/`, `/hello`, `/health`, `/version`, `/ws`,
//!   `POST /echo`). Every request body is read before the answer (up to
//!   [`DRAIN_LIMIT`] for routes that ignore it), so an answer that does not
//!   need the body (a 405, a 404) never leaves unread bytes behind: closing
//!   a socket with unread data makes the kernel send a reset, which can
//!   destroy the answer before the client reads it.
//! - [`serve`]: the accept loop with graceful shutdown: on SIGTERM/SIGINT it
//!   stops accepting, lets in-flight requests finish and exits 0, which is what
//!   a zero-downtime switch relies on when the old colour is stopped.
//!
//! Nothing here panics on network input: every malformed request ends in an
//! HTTP error status or a closed connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// How long in-flight requests get to finish after a stop signal before the
/// process exits anyway. Nomad's `kill_timeout` for the demo job is 5 s, so
/// this stays below it and the exit is still clean.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);

/// The most of a request body a route that ignores bodies reads (and
/// discards) before answering. A larger body gets 413 and a closed
/// connection: the demo does not read megabytes it has no use for.
const DRAIN_LIMIT: u64 = 1 << 20;

/// The largest body `POST /echo` counts.
const ECHO_LIMIT: u64 = 64 << 20;

/// Runtime settings of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    /// Address to bind (`--listen`, default 127.0.0.1).
    listen: IpAddr,
    /// Port to bind (`--port`, else `NOMAD_PORT_http`).
    port: u16,
    /// Version label (`--version`, else `HELLO_VERSION`), e.g. `v1`.
    version: String,
    /// Make `/health` answer 500, to exercise deployments that never become healthy.
    fail_health: bool,
    /// Extra latency added to every HTTP answer, for tests of draining.
    delay: Duration,
}

const USAGE: &str = "usage: hello-service --port N --version vN [--listen 127.0.0.1] [--fail-health] [--delay-ms MS]\n\
  port defaults to $NOMAD_PORT_http, version to $HELLO_VERSION";

/// Parses the command line; `env` looks up environment variables (injected so
/// tests do not touch the process environment).
fn parse_args(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let mut listen: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut port: Option<String> = None;
    let mut version: Option<String> = None;
    let mut fail_health = false;
    let mut delay_ms: u64 = 0;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "--port" => port = Some(value("--port")?),
            "--version" => version = Some(value("--version")?),
            "--listen" => {
                let v = value("--listen")?;
                listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not an IP address: {v}"))?;
            }
            "--delay-ms" => {
                let v = value("--delay-ms")?;
                delay_ms = v
                    .parse()
                    .map_err(|_| format!("--delay-ms: not a number: {v}"))?;
            }
            "--fail-health" => fail_health = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    let port = port
        .or_else(|| env("NOMAD_PORT_http"))
        .ok_or_else(|| "no port: pass --port or set NOMAD_PORT_http".to_string())?;
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| format!("invalid port: {port}"))?;
    let version = version
        .or_else(|| env("HELLO_VERSION"))
        .ok_or_else(|| "no version: pass --version or set HELLO_VERSION".to_string())?;
    if version.is_empty() {
        return Err("version must not be empty".to_string());
    }
    Ok(Config {
        listen,
        port,
        version,
        fail_health,
        delay: Duration::from_millis(delay_ms),
    })
}

/// The greeting for a version: each known version has its own player so the
/// active colour is obvious from one response.
fn player_line(version: &str) -> String {
    let player = match version {
        "v1" => "Lionel Messi",
        "v2" => "Cristiano Ronaldo",
        "v3" => "Zinedine Zidane",
        "v4" => "Pelé",
        other => return format!("The player of version {other} is the best player in the world!"),
    };
    format!("{player} is the best player in the world!")
}

type Body = Full<Bytes>;

fn text(status: StatusCode, version: &HeaderValue, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert("x-app-version", version.clone());
    resp
}

/// Whether the request asks for a WebSocket upgrade (RFC 6455 §4.2.1).
fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    req.method() == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// Why a request body was not read to its end.
#[derive(Debug, PartialEq, Eq)]
enum BodyEnd {
    /// More than the limit arrived.
    TooLarge,
    /// The connection failed or the framing was invalid.
    Broken,
}

/// Reads `body` to its end, discarding the data, and returns its length.
async fn count_body(body: &mut Incoming, limit: u64) -> Result<u64, BodyEnd> {
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyEnd::Broken)?;
        if let Some(data) = frame.data_ref() {
            len = len.saturating_add(data.len() as u64);
            if len > limit {
                return Err(BodyEnd::TooLarge);
            }
        }
    }
    Ok(len)
}

/// The answer when a body could not be read: 413 for too large, 400 for a
/// broken one; both close the connection, whose framing is now unknown.
fn body_error(end: &BodyEnd, version: &HeaderValue) -> Response<Body> {
    let mut resp = match end {
        BodyEnd::TooLarge => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            version,
            "request body too large\n",
        ),
        BodyEnd::Broken => text(
            StatusCode::BAD_REQUEST,
            version,
            "invalid or incomplete request body\n",
        ),
    };
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Routes one request. Never fails: every outcome is an HTTP response.
async fn handle(
    cfg: Arc<Config>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let version =
        HeaderValue::from_str(&cfg.version).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    if !cfg.delay.is_zero() {
        tokio::time::sleep(cfg.delay).await;
    }
    let path = req.uri().path().to_string();
    if req.method() == Method::POST && path == "/echo" {
        return Ok(match count_body(req.body_mut(), ECHO_LIMIT).await {
            Ok(len) => text(
                StatusCode::OK,
                &version,
                format!("{} read {len} bytes\n", cfg.version),
            ),
            Err(end) => body_error(&end, &version),
        });
    }
    // No other route uses a body, but it is read all the same: answering
    // first and closing with the body unread would reset the connection.
    if let Err(end) = count_body(req.body_mut(), DRAIN_LIMIT).await {
        return Ok(body_error(&end, &version));
    }
    if path == "/echo" {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &version,
            "method not allowed\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(resp);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &version,
            "method not allowed\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(resp);
    }
    let resp = match path.as_str() {
        "/" | "/hello" => text(StatusCode::OK, &version, player_line(&cfg.version)),
        "/health" if cfg.fail_health => {
            text(StatusCode::INTERNAL_SERVER_ERROR, &version, "unhealthy")
        }
        "/health" => text(StatusCode::OK, &version, "ok"),
        "/version" => text(StatusCode::OK, &version, cfg.version.clone()),
        "/ws" => {
            let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
            match key {
                Some(key) if is_websocket_upgrade(&req) => {
                    let accept = derive_accept_key(key.as_bytes());
                    let upgrade = hyper::upgrade::on(&mut req);
                    let prefix = cfg.version.clone();
                    tokio::spawn(async move {
                        match upgrade.await {
                            Ok(upgraded) => {
                                let ws = WebSocketStream::from_raw_socket(
                                    TokioIo::new(upgraded),
                                    Role::Server,
                                    None,
                                )
                                .await;
                                echo(ws, &prefix).await;
                            }
                            Err(err) => eprintln!("hello-service: websocket upgrade failed: {err}"),
                        }
                    });
                    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, &version, Bytes::new());
                    resp.headers_mut().remove(header::CONTENT_TYPE);
                    let h = resp.headers_mut();
                    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                    if let Ok(v) = HeaderValue::from_str(&accept) {
                        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
                    }
                    resp
                }
                _ => text(
                    StatusCode::BAD_REQUEST,
                    &version,
                    "expected a websocket upgrade\n",
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, &version, "not found\n"),
    };
    Ok(resp)
}

/// Echoes text frames back prefixed with `<version>: `; answers pings; ends on
/// close or on any protocol error (the peer is untrusted).
async fn echo<S>(mut ws: WebSocketStream<S>, version: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(msg) = ws.next().await {
        let reply = match msg {
            Ok(Message::Text(t)) => Message::text(format!("{version}: {}", t.as_str())),
            Ok(Message::Binary(b)) => Message::Binary(b),
            Ok(Message::Ping(p)) => Message::Pong(p),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
}

/// Serves until `shutdown` resolves, then drains in-flight connections (up to
/// [`DRAIN_TIMEOUT`]) and returns.
async fn serve(
    listener: TcpListener,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // Transient accept errors (EMFILE, aborted handshakes) must not kill the service.
                        eprintln!("hello-service: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let cfg = cfg.clone();
                let svc = service_fn(move |req| handle(cfg.clone(), req));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("hello-service: drain timed out, exiting with open connections");
    }
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                eprintln!("hello-service: cannot watch SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        r = tokio::signal::ctrl_c() => { let _ = r; }
    }
}

/// Runs the demo with `args` (the command line without the program name):
/// parses them, serves until SIGTERM or SIGINT, drains, and returns the exit
/// code (0 after a clean stop, 1 on a run-time failure, 2 on bad arguments).
///
/// Both the `hello-service` binary and `switchyard demo` call this, so the
/// demo behaves the same whichever way it is started.
pub fn run(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    let cfg = match parse_args(args, |k| std::env::var(k).ok()) {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("hello-service: {msg}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("hello-service: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(serve_until_stopped(cfg))
}

async fn serve_until_stopped(cfg: Config) -> std::process::ExitCode {
    let addr = SocketAddr::new(cfg.listen, cfg.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("hello-service: cannot listen on {addr}: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "hello-service {} listening on {}",
        cfg.version,
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    match serve(listener, cfg, stop_signal()).await {
        Ok(()) => {
            println!("hello-service stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("hello-service: {err}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn args_and_env_fallbacks() {
        let cfg = parse_args(args("--port 8080 --version v2 --fail-health"), |_| None).unwrap();
        assert_eq!(cfg.port, 8080);
        assert_eq!(cfg.version, "v2");
        assert!(cfg.fail_health);
        assert_eq!(cfg.listen, IpAddr::V4(Ipv4Addr::LOCALHOST));

        let env = |k: &str| match k {
            "NOMAD_PORT_http" => Some("9000".to_string()),
            "HELLO_VERSION" => Some("v3".to_string()),
            _ => None,
        };
        let cfg = parse_args(args("--delay-ms=25 --listen 0.0.0.0"), env).unwrap();
        assert_eq!((cfg.port, cfg.version.as_str()), (9000, "v3"));
        assert_eq!(cfg.delay, Duration::from_millis(25));
        assert_eq!(cfg.listen, IpAddr::V4(Ipv4Addr::UNSPECIFIED));

        assert!(parse_args(args("--version v1"), |_| None).is_err());
        assert!(parse_args(args("--port nope --version v1"), |_| None).is_err());
        assert!(parse_args(args("--port 1 --version v1 --bogus"), |_| None).is_err());
        assert!(parse_args(args("--port"), |_| None).is_err());
    }

    #[test]
    fn players_per_version() {
        assert_eq!(
            player_line("v1"),
            "Lionel Messi is the best player in the world!"
        );
        assert_eq!(
            player_line("v2"),
            "Cristiano Ronaldo is the best player in the world!"
        );
        assert_eq!(
            player_line("v3"),
            "Zinedine Zidane is the best player in the world!"
        );
        assert_eq!(player_line("v4"), "Pelé is the best player in the world!");
        assert!(player_line("v9").contains("v9"));
    }

    async fn start(
        cfg_args: &str,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = parse_args(args(&format!("--port {} {cfg_args}", addr.port())), |_| {
            None
        })
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            serve(listener, cfg, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        (addr, tx, h)
    }

    /// Sends one HTTP/1.1 request and returns (status, headers+body text).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    #[tokio::test]
    async fn routes_answer_over_real_sockets() {
        let (addr, stop, h) = start("--version v2").await;
        let (st, body) = get(addr, "/").await;
        assert_eq!(st, 200);
        assert!(body.contains("Cristiano Ronaldo is the best player in the world!"));
        assert!(body.to_ascii_lowercase().contains("x-app-version: v2"));
        let (st, body) = get(addr, "/hello").await;
        assert_eq!(st, 200);
        assert!(body.contains("Cristiano Ronaldo"));
        let (st, body) = get(addr, "/health").await;
        assert_eq!(st, 200);
        assert!(body.ends_with("ok"));
        let (st, body) = get(addr, "/version").await;
        assert_eq!(st, 200);
        assert!(body.ends_with("\r\n\r\nv2"));
        assert_eq!(get(addr, "/nope").await.0, 404);
        assert_eq!(get(addr, "/ws").await.0, 400);
        stop.send(()).unwrap();
        h.await.unwrap();
    }

    /// Sends `POST path` with a `len`-byte body (written from another task,
    /// 50 ms after the head, while the answer is read) on a `Connection: close` request, and
    /// returns whether the whole body could be written and everything the
    /// server sent until it closed. An error reading (a reset) is a panic.
    async fn post(addr: SocketAddr, path: &str, len: usize) -> (bool, String) {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            // The body follows the head a moment later, as it does from a
            // client that streams it: an answer given without waiting for
            // the body is then on the wire before the body is.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let chunk = vec![b'x'; 16 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                wr.write_all(&chunk[..n]).await?;
                left -= n;
            }
            // Keep the write half open until the server closed: dropping it
            // here would half-close the connection, which is not what a
            // client waiting for its answer does.
            Ok::<_, std::io::Error>(wr)
        });
        let mut out = Vec::new();
        let read = rd.read_to_end(&mut out).await;
        let wrote = writer.await.unwrap().is_ok();
        let out = String::from_utf8_lossy(&out).into_owned();
        assert!(
            read.is_ok(),
            "reading the answer failed: {read:?}; got {out:?}"
        );
        (wrote, out)
    }

    #[tokio::test]
    async fn echo_reads_the_whole_body_and_answers_its_length() {
        let (addr, stop, h) = start("--version v2").await;
        let (wrote, out) = post(addr, "/echo", 300_000).await;
        assert!(wrote, "the whole body was accepted");
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert!(
            out.to_ascii_lowercase().contains("x-app-version: v2"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\nv2 read 300000 bytes\n"), "{out}");
        let (_, out) = post(addr, "/echo", 0).await;
        assert!(out.ends_with("v2 read 0 bytes\n"), "{out}");
        let (_, out) = get(addr, "/echo").await;
        assert_eq!(out.get(9..12), Some("405"), "{out}");
        stop.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test]
    async fn early_answers_read_the_body_before_closing() {
        // POSTs the demo refuses (405), each with a body far larger than the socket buffers: the answer
        // must arrive whole and the body must be taken in full, with no
        // reset on either side.
        let (addr, stop, h) = start("--version v1").await;
        for (path, status) in [("/hello", "405"), ("/version", "405")] {
            let (wrote, out) = post(addr, path, 900 * 1024).await;
            assert!(wrote, "POST {path}: the body was refused half way");
            assert_eq!(out.get(9..12), Some(status), "POST {path}: {out}");
        }
        // Beyond the drain limit the answer is a 413, never a reset.
        let (_, out) = post(addr, "/hello", (DRAIN_LIMIT as usize) + 1).await;
        assert_eq!(out.get(9..12), Some("413"), "{out}");
        stop.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test]
    async fn fail_health_answers_500() {
        let (addr, stop, h) = start("--version v1 --fail-health").await;
        assert_eq!(get(addr, "/health").await.0, 500);
        assert_eq!(get(addr, "/").await.0, 200);
        stop.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test]
    async fn in_flight_request_finishes_after_shutdown() {
        let (addr, stop, h) = start("--version v1 --delay-ms 300").await;
        let req = tokio::spawn(get(addr, "/hello"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let (st, body) = req.await.unwrap();
        assert_eq!(st, 200);
        assert!(body.contains("Lionel Messi"));
        h.await.unwrap();
        // The listener is gone once serve() returned.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn websocket_echo_prefixes_version() {
        let (addr, stop, h) = start("--version v3").await;
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("hi")).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), "v3: hi");
        ws.close(None).await.unwrap();
        stop.send(()).unwrap();
        h.await.unwrap();
    }
}
