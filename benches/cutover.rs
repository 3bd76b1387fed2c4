//! Cutover delay on loopback: how long after a route-key write returns does
//! the proxy answer from the new colour?
//!
//! Everything runs in this process: the dev Consul, the proxy (Consul
//! discovery, blocking queries) and two upstreams per colour. Each round
//! writes the route key with check-and-set (as `switchyard switch` does),
//! starts a clock when the write returns, and polls `GET /` over one
//! keep-alive connection until the new colour answers. The proxy's own
//! `switchyard_cutover_delay_seconds` histogram (route key `updated_at` →
//! table swapped) is read at the end.
//!
//! `cargo bench --bench cutover` (env: `CUTOVER_ROUNDS`, default 200;
//! `CUTOVER_GAP_MS`, the pause between switches, default 60 — switches are
//! minutes apart in real life, and the watch loop's churn limiter would
//! otherwise add its 50 ms spacing to back-to-back writes).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::KvWrite;
use switchyard_model::RouteValue;
use switchyard_proxy::config::{Config, Env};
use switchyard_proxy::{Listeners, Proxy};
use switchyard_testkit::{DevConsulServer, get_text, register};
use tokio::net::TcpListener;

const SERVICE: &str = "hello-service";

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An upstream answering every request with `x-upstream: <colour>`.
async fn upstream(colour: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("x-upstream", colour)
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn serving(c: &reqwest::Client, url: &str) -> Option<String> {
    let r = c.get(url).send().await.ok()?;
    let colour = r.headers().get("x-upstream")?.to_str().ok()?.to_owned();
    let _ = r.bytes().await;
    Some(colour)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Upper bucket bound holding quantile `q` of a Prometheus histogram.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |(le, _)| *le)
}

async fn run() {
    let rounds = env_num("CUTOVER_ROUNDS", 200);
    let gap = Duration::from_millis(env_num("CUTOVER_GAP_MS", 60));

    let dev = DevConsulServer::start().await;
    let (consul_addr, consul) = (dev.addr, &dev.client);
    for (i, colour) in ["blue", "blue", "green", "green"].into_iter().enumerate() {
        let addr = upstream(colour).await;
        let id = format!("{colour}-{i}");
        register(consul, SERVICE, &id, addr, colour, "active", "v1").await;
    }
    let key = switchyard_model::route_key(SERVICE);
    let first = RouteValue::new("blue", 1, "bench");
    assert!(
        consul
            .kv_put(
                &key,
                &first.to_bytes(),
                &KvWrite {
                    cas: Some(0),
                    flags: None
                }
            )
            .await
            .unwrap()
    );

    let toml = format!(
        "[log]\naccess_log = false\n[consul]\naddress = \"http://{consul_addr}\"\nwait = \"5m\"\n\
         [[services]]\nname = \"{SERVICE}\"\nconsul = {{}}\n"
    );
    let config = Config::parse(&toml, Path::new("bench.toml"), &Env::default()).unwrap();
    let traffic = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", traffic.local_addr().unwrap());
    let metrics_url = format!("http://{}/metrics", admin.local_addr().unwrap());
    let proxy = Proxy::new(config).unwrap();
    tokio::spawn(proxy.run(
        Listeners {
            traffic,
            tls: None,
            admin: Some(admin),
        },
        std::future::pending(),
    ));

    // One keep-alive connection for polling.
    let client = switchyard_hashi::tls::http_client_builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let ready = Instant::now();
    while serving(&client, &url).await.as_deref() != Some("blue") {
        assert!(
            ready.elapsed() < Duration::from_secs(10),
            "proxy never served blue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut delays = Vec::with_capacity(rounds as usize);
    let mut polls = 0u64;
    for round in 0..rounds {
        let (pair, _) = consul.kv_get(&key, &QueryOptions::default()).await.unwrap();
        let pair = pair.expect("route key exists");
        let current = RouteValue::parse(pair.value.as_deref().unwrap_or_default()).unwrap();
        let target = if current.active == "blue" {
            "green"
        } else {
            "blue"
        };
        let next = RouteValue::new(target, current.generation + 1, "bench");
        let written = consul
            .kv_put(
                &key,
                &next.to_bytes(),
                &KvWrite {
                    cas: Some(pair.modify_index),
                    flags: None,
                },
            )
            .await
            .unwrap();
        assert!(written, "round {round}: CAS write lost");
        let t0 = Instant::now();
        loop {
            polls += 1;
            if serving(&client, &url).await.as_deref() == Some(target) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "round {round}: never switched"
            );
        }
        delays.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(gap).await;
    }

    let mut sorted = delays.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "cutover (write returned -> first answer from the new colour), {rounds} switches, {gap:?} apart, {:.1} polls/switch:",
        polls as f64 / rounds.max(1) as f64
    );
    println!(
        "  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.90),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    );

    let text = get_text(&client, &metrics_url).await;
    let prefix = format!("switchyard_cutover_delay_seconds_bucket{{service=\"{SERVICE}\",le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    let count = buckets.last().map_or(0.0, |b| b.1);
    println!(
        "switchyard_cutover_delay_seconds ({count} observations, bucket upper bounds): p50 <= {} ms  p90 <= {} ms  p99 <= {} ms",
        bucket_quantile(&buckets, 0.50) * 1000.0,
        bucket_quantile(&buckets, 0.90) * 1000.0,
        bucket_quantile(&buckets, 0.99) * 1000.0,
    );
    let p99 = percentile(&sorted, 0.99);
    println!(
        "target p99 <= 25 ms: {}",
        if p99 <= 25.0 { "met" } else { "MISSED" }
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with no arguments besides
    // `--bench`-less flags; keep that quick.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}
