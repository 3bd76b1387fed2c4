//! The proxy as an edge proxy: body timeouts in both directions,
//! forwarding headers, errors and metrics, HTTP/2 → HTTP/1 details.
//!
//! The timeout cases run against raw TCP peers (an upstream or a client
//! that stalls on purpose) so the test controls every byte and every pause.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::faults::metric;
use crate::support::*;

/// Reads from `s` until the end of a request or response head.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Waits until the peer closes `s` (EOF or error), reading and discarding
/// whatever arrives; `None` if it stays open for `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let res = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    res.ok().map(|()| start.elapsed())
}

/// A one-connection upstream: reads a request head, then runs `then`
/// (which reports through the returned receiver).
async fn raw_upstream<F, Fut, T>(then: F) -> (SocketAddr, oneshot::Receiver<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_head(&mut s).await;
        let _ = tx.send(then(s).await);
    });
    (addr, rx)
}

fn timeouts(extra: &str) -> String {
    format!("[timeouts]\n{extra}\n")
}

#[tokio::test]
async fn upload_slower_than_the_head_timeout_is_forwarded_whole() {
    // /headers reads the whole body before it answers. The upload takes
    // about 900 ms, three times the head timeout: the head timer must only
    // start once the body is through.
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        &timeouts("response_head = \"300ms\""),
    ))
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /headers HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"5\r\nhello\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; 4096];
    let n = s.read(&mut body).await.unwrap();
    let body = String::from_utf8_lossy(&body[..n]);
    assert!(body.contains("body-bytes: 30"), "{body}");
}

#[tokio::test]
async fn stalled_upstream_body_is_abandoned_and_both_connections_close() {
    let (up, closed) = raw_upstream(|mut s| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
            .await
            .unwrap();
        closed_within(&mut s, Duration::from_secs(5)).await
    })
    .await;
    let p = ProxyHandle::start(&static_config(
        &[up],
        &[],
        &timeouts("read_idle = \"300ms\""),
    ))
    .await;
    let start = Instant::now();
    let r = client().get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await;
    assert!(body.is_err(), "a truncated body must fail: {body:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let upstream_closed = closed.await.unwrap();
    assert!(upstream_closed.is_some(), "upstream connection left open");
    let series = r#"switchyard_abandoned_exchanges_total{reason="upstream_body"}"#;
    assert_eq!(metric(&p, series).await, 1.0);
}

#[tokio::test]
async fn client_that_stops_reading_frees_the_upstream() {
    // The upstream writes an endless chunked body; the client never reads.
    let (up, writes_failed) = raw_upstream(|mut s| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
        let start = Instant::now();
        let wrote = tokio::time::timeout(Duration::from_secs(15), async {
            while s.write_all(chunk.as_bytes()).await.is_ok() {}
        })
        .await;
        wrote.ok().map(|()| start.elapsed())
    })
    .await;
    let p = ProxyHandle::start(&static_config(
        &[up],
        &[],
        &timeouts("send_idle = \"300ms\""),
    ))
    .await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let failed = writes_failed.await.unwrap();
    assert!(failed.is_some(), "upstream still writing after 15 s");
    let series = r#"switchyard_abandoned_exchanges_total{reason="client_send"}"#;
    assert_eq!(metric(&p, series).await, 1.0);
    drop(c);
}

#[tokio::test]
async fn upstream_that_stops_reading_the_body_gets_504_and_is_closed() {
    let (up, closed) = raw_upstream(|mut s| async move {
        // Read nothing of the body for a while, then drain to see the close.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        closed_within(&mut s, Duration::from_secs(5)).await
    })
    .await;
    let p = ProxyHandle::start(&static_config(
        &[up],
        &[],
        &timeouts("send_idle = \"300ms\""),
    ))
    .await;
    let start = Instant::now();
    let body = vec![b'x'; 64 << 20];
    let r = client().post(p.url("/")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        r.text().await.unwrap().contains("stopped reading"),
        "not the send timeout"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        closed.await.unwrap().is_some(),
        "upstream connection left open"
    );
    let series = r#"switchyard_abandoned_exchanges_total{reason="upstream_send"}"#;
    assert_eq!(metric(&p, series).await, 1.0);
}

#[tokio::test]
async fn client_that_pauses_its_body_gets_408() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        &timeouts("read_idle = \"300ms\""),
    ))
    .await;
    let out = raw_exchange(
        p.addr,
        b"POST /headers HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let series = r#"switchyard_abandoned_exchanges_total{reason="client_body"}"#;
    assert_eq!(metric(&p, series).await, 1.0);
}

// ------------------------------------------------------------ forwarding

async fn upstream_saw(p: &ProxyHandle, head: &str) -> String {
    let req = format!("GET /headers HTTP/1.1\r\n{head}connection: close\r\n\r\n");
    let out = raw_exchange(p.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.to_ascii_lowercase()
}

#[tokio::test]
async fn untrusted_clients_cannot_forge_forwarding_headers() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let seen = upstream_saw(
        &p,
        "host: shop.example\r\nx-forwarded-host: evil.example\r\nx-forwarded-proto: https\r\n\
         x-forwarded-for: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nx-forwarded-port: 1\r\n\
         forwarded: for=6.6.6.6;host=evil.example\r\n",
    )
    .await;
    assert!(
        !seen.contains("evil") && !seen.contains("6.6.6.6"),
        "{seen}"
    );
    assert!(
        seen.contains("\nx-forwarded-host: shop.example\n"),
        "{seen}"
    );
    assert!(seen.contains("\nx-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("\nx-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert_eq!(seen.matches("x-forwarded-for:").count(), 1, "{seen}");
    assert!(
        !seen.contains("\nforwarded:") && !seen.contains("x-forwarded-port"),
        "{seen}"
    );
}

#[tokio::test]
async fn trusted_peers_forwarding_headers_are_extended_and_joined() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[forwarding]\ntrusted_peers = [\"127.0.0.0/8\"]\nforwarded = true\n",
    ))
    .await;
    let seen = upstream_saw(
        &p,
        "host: lb.example\r\nx-forwarded-proto: https\r\nx-forwarded-host: shop.example\r\n\
         x-forwarded-for: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nforwarded: for=10.0.0.1\r\n",
    )
    .await;
    // The load balancer terminated TLS: the app must see https.
    assert!(seen.contains("\nx-forwarded-proto: https\n"), "{seen}");
    assert!(
        seen.contains("\nx-forwarded-host: shop.example\n"),
        "{seen}"
    );
    assert!(
        seen.contains("\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(
        seen.contains("\nforwarded: for=10.0.0.1, for=127.0.0.1;proto=http;host=\"lb.example\"\n"),
        "{seen}"
    );
}

// ------------------------------------------------------ errors and metrics

#[tokio::test]
async fn proxy_made_errors_carry_service_and_colour() {
    let dead = dead_addr().await;
    let p = ProxyHandle::start(&static_config(&[dead], &[], "[retry]\nattempts = 0\n")).await;
    let r = client().get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let local = r#"switchyard_local_responses_total{colour="blue",service="svc",status="502"}"#;
    assert_eq!(metric(&p, local).await, 1.0);
    // Counted with the colour's requests, so its error ratio sees it.
    let requests =
        r#"switchyard_requests_total{class="5xx",colour="blue",service="svc",version="v1"}"#;
    assert_eq!(metric(&p, requests).await, 1.0);
}

fn ejected(p: &ProxyHandle) -> usize {
    p.router.table().services()[0]
        .active
        .endpoints
        .iter()
        .filter(|e| e.is_ejected())
        .count()
}

#[tokio::test]
async fn an_application_500_does_not_eject() {
    use crate::support::faulty::StatusUpstream;
    let x = StatusUpstream::start("x", 500).await;
    let y = StatusUpstream::start("y", 200).await;
    let p = ProxyHandle::start(&static_config(
        &[x.addr, y.addr],
        &[],
        "[ejection]\nconsecutive_failures = 1\n",
    ))
    .await;
    let c = client();
    for _ in 0..10 {
        c.get(p.url("/")).send().await.unwrap();
    }
    assert!(x.requests() > 0, "x never asked");
    assert_eq!(ejected(&p), 0, "a 500 is an answer, not a gateway failure");
    x.set_status(503);
    for _ in 0..10 {
        c.get(p.url("/")).send().await.unwrap();
    }
    assert_eq!(ejected(&p), 1, "a 503 is");
}

#[tokio::test]
async fn ejection_takes_at_most_half_a_pool() {
    use crate::support::faulty::StatusUpstream;
    let mut ups = Vec::new();
    for n in ["a", "b", "c", "d"] {
        ups.push(StatusUpstream::start(n, 503).await);
    }
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let p = ProxyHandle::start(&static_config(
        &addrs,
        &[],
        "[ejection]\nconsecutive_failures = 1\ncool_down = \"60s\"\n",
    ))
    .await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(p.url("/")).send().await.unwrap().status(), 503);
    }
    assert_eq!(ejected(&p), 2, "default cap is 50 % of 4");
}

// ------------------------------------------------------ HTTP/2 → HTTP/1

#[tokio::test]
async fn split_http2_cookies_reach_http1_joined() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{}/headers", p.addr))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&body);
    assert!(seen.contains("\ncookie: a=1; b=2\n"), "{seen}");
    assert_eq!(seen.matches("cookie:").count(), 1, "{seen}");
}

#[tokio::test]
async fn connection_header_cannot_delete_host() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let seen = upstream_saw(&p, "host: shop.example\r\nconnection: host\r\n").await;
    assert!(seen.contains("\nhost: shop.example\n"), "{seen}");
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused_not_stripped() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let out = raw_exchange(
        p.addr,
        b"POST /headers HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 501"), "{out}");
    assert_eq!(a.requests(), 0, "nothing forwarded");
    // Plain chunked is still forwarded.
    let out = raw_exchange(
        p.addr,
        b"POST /headers HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("body-bytes: 5"), "{out}");
}

// ------------------------------------------------------ upstream keep-alive

/// An upstream that gives idle keep-alive connections up after `idle`, the
/// way a server's close races a request already on the wire: a request
/// that arrives after the deadline finds the connection reset, unanswered.
async fn closes_idle_after(
    idle: Duration,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let n = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let n = n.clone();
            tokio::spawn(async move {
                let mut deadline: Option<Instant> = None;
                loop {
                    let head = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    if deadline.is_some_and(|d| Instant::now() > d) {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        return;
                    }
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    deadline = Some(Instant::now() + idle);
                }
            });
        }
    });
    (addr, answered)
}

#[tokio::test]
async fn upstream_closing_idle_connections_after_1s_costs_no_post() {
    let (up, answered) = closes_idle_after(Duration::from_secs(1)).await;
    // Default upstream_idle: the point is that the default is safe.
    let p = ProxyHandle::start(&static_config(&[up], &[], "")).await;
    let c = client();
    let mut statuses = Vec::new();
    for gap_ms in [0, 850, 950, 1050, 1150] {
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        let r = c.post(p.url("/")).body("payload").send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200; 5], "a POST lost to a keep-alive race");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 5);
}

/// Two static services, `svc` (under `/`) and `other` (under `/other`),
/// each with its own blue and green upstream, and `svc_preview` as the
/// inline `preview` table of `svc`.
fn two_services(
    svc: (&Upstream, &Upstream),
    other: (&Upstream, &Upstream),
    svc_preview: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[log]
access_log = false
{extra}
[[services]]
name = "svc"
static = {{ active = ["{}"], standby = ["{}"] }}
preview = {svc_preview}
[[services]]
name = "other"
static = {{ active = ["{}"], standby = ["{}"] }}
[[routes]]
service = "svc"
[[routes]]
path_prefix = "/other"
service = "other"
"#,
        svc.0.addr, svc.1.addr, other.0.addr, other.1.addr
    )
}

/// Who answered a GET: the upstream's name and the request line it saw.
async fn who_answers(p: &ProxyHandle, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut req = client().get(p.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let upstream = r.headers()["x-upstream"].to_str().unwrap().to_owned();
    (upstream, r.text().await.unwrap())
}

#[tokio::test]
async fn preview_access_is_per_service_and_a_refused_preview_is_an_ordinary_request() {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let (o_blue, o_green) = (
        Upstream::start("other-blue").await,
        Upstream::start("other-green").await,
    );
    // `svc` lets nobody preview; `other` has the default (loopback and
    // private ranges: this test's client).
    let p = ProxyHandle::start(&two_services(
        (&blue, &green),
        (&o_blue, &o_green),
        r#"{ access = "off" }"#,
        "",
    ))
    .await;
    // The application's own path under the prefix reaches it unchanged.
    let (up, _) = who_answers(&p, "/standby/headers", &[]).await;
    assert_eq!(up, "blue");
    let (up, seen) = who_answers(&p, "/headers", &[("x-switchyard-pool", "standby")]).await;
    assert_eq!(up, "blue");
    assert!(!seen.contains("x-switchyard-pool"), "{seen}");
    // The other service still previews from loopback.
    let (up, _) = who_answers(&p, "/standby/other/x", &[]).await;
    assert_eq!(up, "other-green");
    let (up, _) = who_answers(&p, "/other/x", &[("x-switchyard-pool", "standby")]).await;
    assert_eq!(up, "other-green");
}

#[tokio::test]
async fn restricted_preview_lets_in_listed_addresses_or_the_token() {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let (o_blue, o_green) = (
        Upstream::start("other-blue").await,
        Upstream::start("other-green").await,
    );
    let token = "preview-0123456789abcdef";
    // 127.0.0.1 is not in svc's list: only the token lets this client in.
    // `other` inherits [preview], whose list the test client is in.
    let p = ProxyHandle::start(&two_services(
        (&blue, &green),
        (&o_blue, &o_green),
        &format!(r#"{{ allow = ["192.0.2.0/24"], token = "{token}" }}"#),
        "[preview]\npath_prefix = \"/preview\"\ntoken_header = \"x-preview-key\"\nallow = [\"127.0.0.1\"]\n",
    ))
    .await;
    let (up, _) = who_answers(&p, "/preview/headers", &[]).await;
    assert_eq!(up, "blue", "no token, address not listed");
    let (up, _) = who_answers(
        &p,
        "/preview/headers",
        &[("x-preview-key", "wrong-token-0123456789")],
    )
    .await;
    assert_eq!(up, "blue", "wrong token");
    let (up, seen) = who_answers(&p, "/preview/headers", &[("x-preview-key", token)]).await;
    assert_eq!(up, "green");
    assert!(seen.starts_with("GET /headers "), "prefix stripped: {seen}");
    assert!(!seen.contains("x-preview-key"), "token forwarded: {seen}");
    // The old prefix is an ordinary path now.
    let (up, _) = who_answers(&p, "/standby/", &[("x-preview-key", token)]).await;
    assert_eq!(up, "blue");
    // By address.
    let (up, _) = who_answers(&p, "/preview/other", &[]).await;
    assert_eq!(up, "other-green");
}

#[tokio::test]
async fn behind_a_trusted_balancer_the_forwarded_client_decides_the_preview() {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    // The test client plays a load balancer on loopback; by default only
    // loopback and private clients may preview.
    let p = ProxyHandle::start(&static_config(
        &[blue.addr],
        &[green.addr],
        "[forwarding]\ntrusted_peers = [\"127.0.0.1\"]\n",
    ))
    .await;
    let internet = [("x-forwarded-for", "203.0.113.9")];
    let (up, _) = who_answers(&p, "/standby/", &internet).await;
    assert_eq!(up, "blue", "an internet client must not preview");
    let spoofed = [("x-forwarded-for", "10.0.0.1, 203.0.113.9")];
    let (up, _) = who_answers(&p, "/standby/", &spoofed).await;
    assert_eq!(
        up, "blue",
        "a client-written entry left of the last hop decides nothing"
    );
    let office = [("x-forwarded-for", "10.1.2.3")];
    let (up, _) = who_answers(&p, "/standby/", &office).await;
    assert_eq!(up, "green");
}

#[test]
fn preview_config_is_checked() {
    use switchyard_proxy::config::{Config, ConfigError, Env};
    let err = Config::parse(
        "[preview]\naccess = \"sometimes\"\n[[services]]\nname = \"a\"\nstatic = { active = [\"127.0.0.1:1\"] }\npreview = { allow = [\"nope\"], token = \"short\" }\n",
        std::path::Path::new("x.toml"),
        &Env::default(),
    )
    .unwrap_err();
    let ConfigError::Invalid { issues, .. } = err else {
        panic!("{err}")
    };
    let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "services[0].preview.allow[0]",
            "services[0].preview.token",
            "preview.access"
        ],
        "{issues:?}"
    );
}

async fn websocket(
    p: &ProxyHandle,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", p.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn websockets_count_against_the_connection_cap_and_gauge() {
    use futures_util::{SinkExt, StreamExt};
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[limits]\nmax_connections = 2\n",
    ))
    .await;
    let mut one = websocket(&p).await;
    let mut two = websocket(&p).await;
    // Both are upgraded and spliced now; their HTTP connections are over.
    for ws in [&mut one, &mut two] {
        ws.send("hi".into()).await.unwrap();
        assert_eq!(
            ws.next()
                .await
                .unwrap()
                .unwrap()
                .into_text()
                .unwrap()
                .as_str(),
            "a: hi"
        );
    }
    assert_eq!(metric(&p, "switchyard_client_connections").await, 2.0);
    let third = raw_exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(third.starts_with("HTTP/1.1 503"), "over the cap: {third}");
    // One closes: its place is free again.
    one.close(None).await.unwrap();
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = raw_exchange(
            p.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "place never freed: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(two);
}

#[tokio::test]
async fn shutdown_drains_websockets_to_their_deadline_then_closes_them() {
    use futures_util::{SinkExt, StreamExt};
    let a = Upstream::start("a").await;
    let mut p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        &format!(
            "{}[shutdown]\nderegister_delay = \"0s\"\n",
            timeouts("drain = \"1s\"\nshutdown_grace = \"10s\"")
        ),
    ))
    .await;
    let mut ws = websocket(&p).await;
    let started = Instant::now();
    let task = p.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still spliced during the drain.
    ws.send("still there".into()).await.unwrap();
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(msg.into_text().unwrap().as_str(), "a: still there");
    assert!(
        !task.is_finished(),
        "shutdown did not wait for the WebSocket"
    );
    // Closed at the deadline: the stream ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the WebSocket was never closed");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before the deadline: {closed_after:?}"
    );
    let _ = end;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("shutdown never finished")
        .unwrap();
}

#[tokio::test]
async fn only_configured_upgrade_protocols_are_passed_on() {
    let a = Upstream::start("a").await;
    let request = b"GET /headers HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: spdy/3, websocket\r\n\r\n";
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let seen = raw_exchange(p.addr, request, Duration::from_millis(500)).await;
    assert!(seen.contains("upgrade: websocket\n"), "{seen}");
    let request =
        b"GET /headers HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: spdy/3\r\n\r\n";
    let seen = raw_exchange(p.addr, request, Duration::from_millis(500)).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("upgrade"),
        "an unlisted protocol reached the upstream: {seen}"
    );
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[forwarding]\nupgrade_protocols = [\"websocket\", \"SPDY\"]\n",
    ))
    .await;
    let seen = raw_exchange(p.addr, request, Duration::from_millis(500)).await;
    assert!(seen.contains("upgrade: spdy/3\n"), "{seen}");
}

#[tokio::test]
async fn an_early_answer_is_forwarded_even_when_the_upstream_resets_the_upload() {
    // The upstream answers 413 as soon as it has the head and closes with
    // the body unread (the kernel resets the connection), while the client
    // is still sending 8 MiB. The proxy's next write fails; the answer is in
    // its socket all the same and must reach the client, not a 502.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_head(&mut s).await;
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large")
                    .await;
                // Closing with unread data sends a reset.
                drop(s);
            });
        }
    });
    let p = ProxyHandle::start(&static_config(&[up], &[], "")).await;
    let body = vec![b'x'; 8 << 20];
    for round in 0..5 {
        let r = client()
            .post(p.url("/upload"))
            .body(body.clone())
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            // The client may itself see the close while still sending.
            Err(e) => panic!("round {round}: no answer: {e}"),
        };
        assert_eq!(r.status(), 413, "round {round}");
        assert_eq!(r.text().await.unwrap(), "too large", "round {round}");
    }
}

#[tokio::test]
async fn retries_are_drawn_from_a_budget() {
    use crate::support::faulty::StatusUpstream;
    // Half the instances fail; without a budget every failed try would be
    // retried on the healthy one.
    let bad = StatusUpstream::start("bad", 503).await;
    let good = StatusUpstream::start("good", 200).await;
    let p = ProxyHandle::start(&static_config(
        &[bad.addr, good.addr],
        &[],
        "[retry]\nbudget_percent = 20\nbudget_min_per_second = 0\n[ejection]\nconsecutive_failures = 0\n",
    ))
    .await;
    let c = client();
    let requests = 100;
    let mut passed_on = 0;
    for _ in 0..requests {
        let r = c.get(p.url("/")).send().await.unwrap();
        match r.status().as_u16() {
            200 => {}
            503 => {
                assert_eq!(r.headers()["x-upstream"], "bad");
                passed_on += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let retries = metric(&p, r#"switchyard_retries_total{service="svc"}"#).await;
    let refused = metric(
        &p,
        r#"switchyard_retry_budget_exhausted_total{service="svc"}"#,
    )
    .await;
    assert!(
        retries <= (requests as f64) * 0.2 + 1.0,
        "{retries} retries for {requests} requests"
    );
    assert!(
        refused >= 1.0 && passed_on >= 1,
        "bad took {} requests",
        bad.requests()
    );
    assert_eq!(refused as usize, passed_on);
    assert_eq!(
        good.requests() + bad.requests(),
        requests + retries as usize
    );
}

#[tokio::test]
async fn a_response_broken_mid_body_is_not_counted_as_a_success() {
    let (up, _) = raw_upstream(|mut s| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
            .await
            .unwrap();
        // Closed 91 bytes short.
    })
    .await;
    let p = ProxyHandle::start(&static_config(&[up], &[], "")).await;
    let r = client().get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "a truncated body must fail");
    let series = |class: &str| {
        format!(
            r#"switchyard_requests_total{{class="{class}",colour="blue",service="svc",version="v1"}}"#
        )
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(&p, &series("5xx")).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the broken response was never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&p, &series("2xx")).await, 0.0);
}
