//! Fuzz target bodies, shared by the libFuzzer entry points in
//! `fuzz_targets/` (`cargo fuzz`) and the stable smoke runner
//! (`src/bin/smoke.rs`), so both exercise exactly the same code.
//!
//! - [`config`]: TOML text → `Config::parse` (and the validated config's
//!   invariants).
//! - [`consul_json`]: bytes → the route key parser and the serde decoding
//!   of Consul health and KV answers, the input a proxy takes from the
//!   network.
//! - [`RequestPath`]: bytes → a running proxy over TCP; it must answer or
//!   close, and keep serving.
//!
//! A target "fails" by panicking; every body here turns unexpected outcomes
//! into panics.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use switchyard_hashi::consul::{KvPair, ServiceEntry};
use switchyard_model::RouteValue;
use switchyard_proxy::config::{Config, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `Config::parse` on arbitrary text: never panics; what it accepts is
/// internally consistent.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = Env::default();
    if let Ok(c) = Config::parse(text, Path::new("fuzz.toml"), &env) {
        assert!(!c.services.is_empty(), "accepted a config without services");
        for r in &c.routes {
            assert!(
                c.services.iter().any(|s| s.name == r.service),
                "route to unknown service {}",
                r.service
            );
        }
        if let Some(t) = &c.admin.token {
            assert!(t.len() >= 16, "short admin token accepted");
        }
    }
}

/// Route-key values and Consul JSON answers: decoding never panics, and an
/// accepted route value survives a round trip.
pub fn consul_json(data: &[u8]) {
    if let Ok(v) = RouteValue::parse(data) {
        assert!(!v.active.trim().is_empty());
        let again = RouteValue::parse(&v.to_bytes()).expect("round trip of an accepted value");
        assert_eq!(again, v);
    }
    if let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(data) {
        for e in &entries {
            // What discovery reads from each entry.
            let _ = e.address().parse::<std::net::IpAddr>();
            let _ = switchyard_model::version_of(&e.service.tags);
        }
    }
    if let Ok(pairs) = serde_json::from_slice::<Vec<KvPair>>(data) {
        for p in &pairs {
            if let Some(v) = &p.value {
                let _ = RouteValue::parse(v);
            }
        }
    }
}

/// A proxy on `127.0.0.1:0` in front of a trivial upstream, on its own
/// runtime, for feeding raw request bytes.
pub struct RequestPath {
    rt: tokio::runtime::Runtime,
    proxy: SocketAddr,
}

impl RequestPath {
    /// Starts the upstream and the proxy.
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let proxy = rt.block_on(async {
            let up = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
            let up_addr = up.local_addr().expect("upstream addr");
            tokio::spawn(async move {
                while let Ok((mut s, _)) = up.accept().await {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        // Answer each read with a small response: enough
                        // for the proxy's request path to complete.
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(r).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let toml = format!(
                "[log]\naccess_log = false\n[timeouts]\nclient_header = \"1s\"\nresponse_head = \"1s\"\n\
                 [[services]]\nname = \"svc\"\nstatic = {{ active = [\"{up_addr}\"] }}\n"
            );
            let config =
                Config::parse(&toml, Path::new("fuzz.toml"), &Env::default()).expect("config");
            let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
            let addr = traffic.local_addr().expect("proxy addr");
            let proxy = switchyard_proxy::Proxy::new(config).expect("proxy");
            tokio::spawn(proxy.run(
                switchyard_proxy::Listeners {
                    traffic,
                    tls: None,
                    admin: None,
                },
                std::future::pending(),
            ));
            addr
        });
        Self { rt, proxy }
    }

    /// Sends `data` on a fresh connection: the proxy must answer with an
    /// HTTP response or close, within the client-header timeout plus
    /// slack, and must still serve a well-formed request afterwards.
    pub fn run(&self, data: &[u8]) {
        self.rt.block_on(async {
            let out = exchange(self.proxy, data, true, Duration::from_secs(4)).await;
            if let Some(out) = out {
                assert!(
                    out.is_empty() || out.starts_with(b"HTTP/1.") || is_h2(data),
                    "answer is not HTTP: {:?}",
                    String::from_utf8_lossy(&out[..out.len().min(200)])
                );
            } else {
                panic!("the proxy neither answered nor closed within 4 s");
            }
            let ok = exchange(
                self.proxy,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                false,
                Duration::from_secs(4),
            )
            .await
            .unwrap_or_default();
            assert!(
                ok.starts_with(b"HTTP/1.1 200"),
                "proxy stopped serving: {:?}",
                String::from_utf8_lossy(&ok)
            );
        });
    }
}

/// HTTP/2 prior knowledge gets HTTP/2 frames back, not an HTTP/1 line.
fn is_h2(data: &[u8]) -> bool {
    data.starts_with(b"PRI * HTTP/2.0")
}

/// Writes `data` (then half-closes, so a keep-alive connection ends at
/// once), reads until EOF. `None` on a timeout.
async fn exchange(
    addr: SocketAddr,
    data: &[u8],
    half_close: bool,
    within: Duration,
) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    // The proxy may close before reading everything: that is fine.
    let _ = s.write_all(data).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}
