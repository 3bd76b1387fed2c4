//! HTTP clients and small request helpers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// A client with the workspace's TLS setup (rustls with the ring provider) and no timeout.
pub fn http_client() -> reqwest::Client {
    switchyard_hashi::tls::http_client_builder()
        .build()
        .expect("HTTP client")
}

/// A keep-alive client whose requests give up after 10 s.
pub fn client() -> reqwest::Client {
    switchyard_hashi::tls::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// The body of `GET url`; panics when the request fails.
pub async fn get_text(c: &reqwest::Client, url: &str) -> String {
    c.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
}

/// The value of `header` in the answer to `GET url`, when it answered 200; `None` when the
/// request failed, answered anything else or did not carry the header.
pub async fn answered_by(c: &reqwest::Client, url: &str, header: &str) -> Option<String> {
    let r = c.get(url).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A port on which nothing listens (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}
