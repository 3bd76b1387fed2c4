//! The data plane end to end: real upstreams, a real proxy, real clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;

use crate::support::*;

#[tokio::test]
async fn forwards_and_balances_over_pooled_connections() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = ProxyHandle::start(&static_config(&[a.addr, b.addr], &[], "")).await;
    let c = client();
    for _ in 0..200 {
        let r = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(body.starts_with("hello from "), "{body}");
    }
    assert!(
        a.requests() > 20 && b.requests() > 20,
        "both instances serve"
    );
    // Sequential requests on one client connection reuse upstream
    // connections instead of opening one per request.
    assert!(
        a.connections() + b.connections() <= 4,
        "opened {} upstream connections for 200 requests",
        a.connections() + b.connections()
    );
}

#[tokio::test]
async fn proxying_headers_are_correct() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let r = client()
        .get(p.url("/headers"))
        .header("host", "example.test")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("x-forwarded-for", "10.1.1.1")
        .header("x-switchyard-pool", "active")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Hop-by-hop headers named by the upstream's Connection are removed.
    assert!(r.headers().get("x-hop").is_none());
    let seen = r.text().await.unwrap();
    assert!(seen.contains("host: example.test\n"), "{seen}");
    assert!(!seen.contains("x-drop-me"), "{seen}");
    // No trusted peers by default: the client's own value is replaced.
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: example.test\n"), "{seen}");
    assert!(seen.contains("via: 1.1 switchyard\n"), "{seen}");
    assert!(!seen.contains("x-switchyard-pool"), "{seen}");
}

#[tokio::test]
async fn standby_preview_by_prefix_and_header() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = ProxyHandle::start(&static_config(&[blue.addr], &[green.addr], "")).await;
    let c = client();
    let body = get_text(&c, &p.url("/")).await;
    assert_eq!(body, "hello from blue");
    let body = get_text(&c, &p.url("/standby/")).await;
    assert_eq!(body, "hello from green");
    let seen = get_text(&c, &p.url("/standby/headers?x=1")).await;
    assert!(
        seen.starts_with("GET /headers?x=1 "),
        "prefix stripped: {seen}"
    );
    let body = c
        .get(p.url("/"))
        .header("X-Switchyard-Pool", "standby")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello from green");
    // "/standbyx" is not under the prefix.
    let r = c.get(p.url("/standbyx")).send().await.unwrap();
    assert_eq!(r.headers()["x-upstream"], "blue");
}

#[tokio::test]
async fn request_and_response_bodies_stream() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let c = client();

    // Response: the first chunk arrives long before the last is produced.
    let start = Instant::now();
    let r = c
        .get(p.url("/stream?chunks=4&ms=300"))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"chunk 0"));
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "first chunk took {:?}",
        start.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("chunk 3"));
    assert!(start.elapsed() >= Duration::from_millis(850));

    // Request: a 4 MiB chunked upload is echoed back byte for byte.
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> = payload
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let r = c
        .post(p.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed = r.bytes().await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed.as_ref() == payload.as_slice());
}

#[tokio::test]
async fn websocket_is_spliced_both_ways() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", p.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(format!("ping {i}").into()).await.unwrap();
        let msg = ws.next().await.unwrap().unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), format!("a: ping {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(&[a.addr], &[], "")).await;
    let (status, body) = h2c_get(p.addr, "/headers").await;
    assert_eq!(status, 200);
    assert!(body.contains("via: 2 switchyard"), "{body}");
    assert!(body.contains(&format!("host: {}", p.addr)), "{body}");
}

#[tokio::test]
async fn retries_make_a_dead_instance_invisible() {
    let live = Upstream::start("live").await;
    let dead = dead_addr().await;
    let p = ProxyHandle::start(&static_config(
        &[live.addr, dead],
        &[],
        "[ejection]\nconsecutive_failures = 0\n",
    ))
    .await;
    let c = client();
    let mut failures = 0;
    for i in 0..1000 {
        let r = if i % 2 == 0 {
            c.get(p.url("/")).send().await
        } else {
            c.post(p.url("/echo")).body("payload").send().await
        };
        match r {
            Ok(r) if r.status() == 200 => {}
            _ => failures += 1,
        }
    }
    assert_eq!(failures, 0);
    assert_eq!(live.requests(), 1000);
}

#[tokio::test]
async fn idempotent_request_retried_when_connection_drops_but_post_is_not() {
    let resetter = Upstream::start_mode("reset", Mode::Reset).await;
    let good = Upstream::start("good").await;
    let p = ProxyHandle::start(&static_config(
        &[resetter.addr, good.addr],
        &[],
        "[upstream]\nmax_idle_per_instance = 0\n[ejection]\nconsecutive_failures = 0\n",
    ))
    .await;
    let c = client();
    for _ in 0..50 {
        let r = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET is retried on the good instance");
    }
    // A POST whose body was sent to the resetting instance is not retried.
    let mut bad_gateway = 0;
    for _ in 0..50 {
        let r = c.post(p.url("/echo")).body("x").send().await.unwrap();
        match r.status().as_u16() {
            200 => {}
            502 => bad_gateway += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(
        bad_gateway > 0,
        "some POSTs hit the resetting instance and got 502"
    );
    let before = good.requests();
    assert!(before >= 50);
}

#[tokio::test]
async fn errors_map_to_502_503_504_with_reasons() {
    let hang = Upstream::start_mode("hang", Mode::Hang).await;
    let reset = Upstream::start_mode("reset", Mode::Reset).await;
    let dead = dead_addr().await;
    let c = client();

    let p = ProxyHandle::start(&static_config(
        &[hang.addr],
        &[],
        "[timeouts]\nresponse_head = \"300ms\"\n",
    ))
    .await;
    let start = Instant::now();
    let r = c.get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(r.text().await.unwrap().contains("did not answer in time"));
    // No standby instance: 503.
    let r = c.get(p.url("/standby/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no standby instance of svc")
    );

    let p = ProxyHandle::start(&static_config(&[dead], &[], "")).await;
    let r = c.get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("could not connect"));

    let p = ProxyHandle::start(&static_config(&[reset.addr], &[], "")).await;
    let r = c.post(p.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("closed or broke"));
}

#[tokio::test]
async fn unknown_host_gets_404_naming_it() {
    let a = Upstream::start("a").await;
    let cfg = format!(
        "[log]\naccess_log = false\n[[services]]\nname = \"svc\"\nstatic = {{ active = [\"{}\"] }}\n[[routes]]\nhost = \"app.test\"\nservice = \"svc\"\n",
        a.addr
    );
    let p = ProxyHandle::start(&cfg).await;
    let c = client();
    let r = c
        .get(p.url("/x"))
        .header("host", "other.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(body.contains("other.test") && body.contains("/x"), "{body}");
    let r = c
        .get(p.url("/x"))
        .header("host", "APP.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_rejected() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[limits]\nmax_header_bytes = 8192\n",
    ))
    .await;
    let t = Duration::from_secs(3);

    let r = raw_exchange(p.addr, b"GARBAGE\r\n\r\n", t).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw_exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        t,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw_exchange(p.addr, big.as_bytes(), t).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let r = raw_exchange(p.addr, b"GET / HTTP/1.1\r\n\r\n", t).await;
    assert!(r.starts_with("HTTP/1.1 400"), "missing Host: {r}");
    let r = raw_exchange(
        p.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        t,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert_eq!(a.requests(), 0, "nothing malformed reached the upstream");
    // The proxy still serves.
    assert_eq!(client().get(p.url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn slow_request_head_gets_408_and_idle_connection_closes_silently() {
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[timeouts]\nclient_header = \"300ms\"\n",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");

    // An idle keep-alive connection is closed without an unsolicited response.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.is_empty(),
        "idle close sent {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_503_at_once_and_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Upstream::start("a").await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[limits]\nmax_connections = 2\n",
    ))
    .await;
    // Two keep-alive connections, each served once and left open, hold the cap.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The third is accepted and answered at once, not left in the backlog.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .expect("the excess connection was left unanswered")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("connection: close"), "{out}");
    let metrics = get_text(&client(), &p.admin_url("/metrics")).await;
    assert!(
        metrics.contains("switchyard_connections_refused_total 1\n"),
        "{metrics}"
    );
    assert_eq!(
        a.requests(),
        2,
        "the refused connection reached no upstream"
    );

    // Closing one held connection frees its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = raw_exchange(
            p.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SIGTERM sequence: readiness fails at once while the proxy still accepts and serves for
/// `shutdown.deregister_delay`; then new connections are refused and the request in flight
/// finishes within the grace period.
#[tokio::test]
async fn graceful_shutdown_fails_readiness_then_stops_accepting_and_drains() {
    let a = Upstream::start("a").await;
    let mut p = ProxyHandle::start(&static_config(
        &[a.addr],
        &[],
        "[timeouts]\nshutdown_grace = \"5s\"\n[shutdown]\nderegister_delay = \"800ms\"\n",
    ))
    .await;
    assert_eq!(
        client()
            .get(p.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let url = p.url("/slow?ms=1500");
    let inflight = tokio::spawn(async move { get_text(&client(), &url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let task = p.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not ready any more, but still accepting and serving new connections.
    let ready = client().get(p.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let fresh = client().get(p.url("/")).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "too slow to check"
    );
    // After the delay the listener is closed.
    tokio::time::sleep(Duration::from_millis(900).saturating_sub(started.elapsed())).await;
    assert!(tokio::net::TcpStream::connect(p.addr).await.is_err());
    assert_eq!(inflight.await.unwrap(), "slow a");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tls_listener_serves_h1_and_h2_via_alpn() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = Upstream::start("a").await;
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let extra = format!(
        "[listener.tls]\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let config = static_config(&[a.addr], &[], &extra);
    let parsed = switchyard_proxy::config::Config::parse(
        &config,
        std::path::Path::new("t.toml"),
        &Default::default(),
    )
    .unwrap();
    let traffic = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    let proxy = switchyard_proxy::Proxy::new(parsed).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(
        switchyard_proxy::Listeners {
            traffic,
            tls: Some(tls_listener),
            admin: None,
        },
        async {
            let _ = rx.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    for (alpn, want_h2) in [(b"h2".to_vec(), true), (b"http/1.1".to_vec(), false)] {
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        assert_eq!(negotiated_h2, want_h2);
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = http::Request::builder()
            .uri("https://localhost/headers")
            .header("host", "localhost")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = if want_h2 {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("x-forwarded-proto: https"), "{body}");
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn concurrent_load_with_instance_churn_has_no_errors() {
    // Many concurrent clients; one instance of three is dead throughout.
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dead = dead_addr().await;
    let p = ProxyHandle::start(&static_config(&[a.addr, b.addr, dead], &[], "")).await;
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = p.url("/");
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..100 {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::SeqCst), 0);
    assert_eq!(a.requests() + b.requests(), 2000);
}

/// An upstream that answers every request with `413` as soon as it has the
/// request head, without reading the body, and then closes the connection
/// (what a server with a body size limit does). Returns its address; it
/// serves until the test's runtime ends.
async fn early_413_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 10\r\n\
                          x-limit: 1024\r\nconnection: close\r\n\r\ntoo large\n",
                    )
                    .await;
                // Closing with the body unread: the kernel resets the
                // connection as more of the body arrives.
                drop(s);
            });
        }
    });
    addr
}

/// Sends `POST /upload` with a `len`-byte body through `proxy` on a raw
/// connection (the body written from another task while the answer is
/// read), and returns the answer's status line, headers and body as text.
async fn raw_post(proxy: std::net::SocketAddr, len: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: hello.test\r\nContent-Length: {len}\r\n\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(wr)
    });
    // Read until the head and its Content-Length worth of body are in; the
    // proxy may close (even reset) afterwards, which is not the point here.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                break;
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!(
                "reading the answer failed: {e}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(_) => panic!(
                "no answer within 10 s; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    writer.abort();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn an_early_answer_before_the_body_was_sent_is_forwarded_not_502() {
    let up = early_413_upstream().await;
    let p = ProxyHandle::start(&static_config(
        &[up],
        &[],
        "[ejection]\nconsecutive_failures = 0\n",
    ))
    .await;
    // A body far larger than the socket buffers between proxy and upstream:
    // the upstream's answer (and close) comes while most of it is unsent.
    for _ in 0..5 {
        let out = raw_post(p.addr, 8 * 1024 * 1024).await;
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.to_ascii_lowercase().contains("x-limit: 1024"), "{out}");
        assert!(out.ends_with("\r\n\r\ntoo large\n"), "{out}");
    }
}
