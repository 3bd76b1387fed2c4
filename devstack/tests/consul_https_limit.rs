//! The dev Consul over HTTPS (`switchyard dev --secure`'s listener, with a
//! CA generated for the run) and Consul's per-client connection limit on
//! that port: a connection over `http_max_conns_per_client` is closed before
//! its TLS handshake, and a place freed by a closing connection is taken by
//! the next one, which then gets real answers.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use switchyard_devstack::connlimit::ConnLimit;
use switchyard_devstack::consul::DevConsul;
use switchyard_devstack::tls::DevPki;
use switchyard_testkit::serve::Served;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const LIMIT: usize = 2;

fn connector(pki: &DevPki) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca_cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TCP connection and a TLS handshake against the CA of the run.
async fn tls_connect(
    tls: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// `GET /v1/status/leader` on a kept-alive connection; the status line and
/// the body.
async fn leader(conn: &mut TlsStream<TcpStream>) -> (String, String) {
    conn.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let text = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before the answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("Content-Length");
            if body.len() >= len {
                break text;
            }
        }
    };
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test]
async fn https_connections_over_the_per_client_limit_are_closed_before_the_handshake() {
    let dir = consul_support::temp_dir();
    let pki = DevPki::generate(&dir.join("tls"), &["127.0.0.1", "localhost"]).unwrap();
    let consul = DevConsul::new(consul_support::config()).unwrap();
    let server_pki = pki.clone();
    let served = Served::start(move |listener, stop| {
        let listener = server_pki.listener(listener, Some(ConnLimit::new(LIMIT)));
        consul.serve(listener, stop)
    })
    .await
    .abort_on_drop();
    let addr = served.addr;
    let tls = connector(&pki);

    // The limit's worth of connections, held open, each answered over TLS.
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        let mut conn = tls_connect(&tls, addr).await.unwrap();
        let (status, body) = leader(&mut conn).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "\"127.0.0.1:8300\"");
        held.push(conn);
    }

    // One more from the same address: closed before any TLS is spoken, so the
    // handshake fails (no 429 can be read over a connection that never
    // became TLS).
    let refused = tls_connect(&tls, addr).await;
    assert!(
        refused.is_err(),
        "a connection over the limit of {LIMIT} completed its handshake"
    );
    // A raw TCP client sees the close without a byte written.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("the connection over the limit was left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "the agent writes nothing readable before TLS");

    // The held connections keep working.
    for conn in &mut held {
        assert_eq!(leader(conn).await.0, "HTTP/1.1 200 OK");
    }

    // Closing one frees its place (the server notices the close
    // asynchronously, so the next connection may need a few tries).
    let mut first = held.remove(0);
    first.shutdown().await.unwrap();
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut fresh = loop {
        match tls_connect(&tls, addr).await {
            Ok(conn) => break conn,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the freed place was never taken: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (status, body) = leader(&mut fresh).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "\"127.0.0.1:8300\"");

    // And the limit holds again with the new one counted.
    assert!(tls_connect(&tls, addr).await.is_err());
    drop(served);
}
