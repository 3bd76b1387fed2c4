//! Zero downtime, proven in process: switches every ~200 ms under
//! concurrent keep-alive load, against the dev Consul, with real upstreams.
//!
//! The verdict is `switchyard_loadcheck::check`, the same code that judges
//! the k6 scenarios: no request may fail, and every request that starts
//! after a switch was acknowledged must be answered by the new colour. A
//! slow request already in flight when a switch happens must still finish,
//! on the colour that accepted it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use switchyard_loadcheck::{Options, Switch, check};

use crate::support::load::{Clock, DevConsulServer, LoadGen, register};
use crate::support::*;

const SERVICE: &str = "hello-service";
/// Switches in the load phase.
const SWITCHES: usize = 32;
/// Concurrent keep-alive clients.
const CLIENTS: usize = 8;

async fn pool_sizes(c: &reqwest::Client, p: &ProxyHandle) -> (usize, usize) {
    let st: serde_json::Value = match c.get(p.admin_url("/status")).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return (0, 0),
    };
    let n = |role: &str| {
        st["services"][0][role]["instances"]
            .as_array()
            .map_or(0, Vec::len)
    };
    (n("active"), n("standby"))
}

/// POST /switch; returns the new active colour.
async fn switch(c: &reqwest::Client, p: &ProxyHandle) -> String {
    let r = c
        .post(p.admin_url(&format!("/switch?service={SERVICE}")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(status, 200, "switch refused: {body}");
    body["active"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_every_200ms_under_load_fails_nothing_and_serves_nothing_stale() {
    let test_started = Instant::now();
    let consul = DevConsulServer::start().await;
    // Two real instances per colour; each answers with its version in
    // `x-upstream` and offers `/slow?ms=N`.
    let blue = [Upstream::start("v1").await, Upstream::start("v1").await];
    let green = [Upstream::start("v2").await, Upstream::start("v2").await];
    for (i, u) in blue.iter().enumerate() {
        register(
            &consul.client,
            SERVICE,
            &format!("blue-{i}"),
            u.addr,
            "blue",
            "active",
            "v1",
        )
        .await;
    }
    for (i, u) in green.iter().enumerate() {
        register(
            &consul.client,
            SERVICE,
            &format!("green-{i}"),
            u.addr,
            "green",
            "standby",
            "v2",
        )
        .await;
    }
    let version_of: HashMap<&str, &str> = [("blue", "v1"), ("green", "v2")].into();

    let proxy = ProxyHandle::start(&consul_config(&consul.url(), "")).await;
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sizes = pool_sizes(&c, &proxy).await;
        if sizes == (2, 2) && who(&c, &proxy.url("/")).await.as_deref() == Some("v1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy never served blue with both pools full: {sizes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. A slow request in flight across a switch finishes on the old colour.
    let blue_before: usize = blue.iter().map(Upstream::requests).sum();
    let slow_url = proxy.url("/slow?ms=1500");
    let slow = tokio::spawn({
        let c = c.clone();
        async move {
            let started = Instant::now();
            let r = c.get(&slow_url).send().await.unwrap();
            let status = r.status();
            let version = r
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = r.text().await.unwrap();
            (status, version, body, started.elapsed())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while blue.iter().map(Upstream::requests).sum::<usize>() == blue_before {
        assert!(Instant::now() < deadline, "slow request never reached blue");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(switch(&c, &proxy).await, "green");
    // Acknowledged: a request starting now is answered by green while the
    // slow one is still running on blue.
    assert_eq!(who(&c, &proxy.url("/")).await.as_deref(), Some("v2"));
    assert!(
        !slow.is_finished(),
        "the slow request ended before the switch was even checked"
    );
    let (status, version, body, took) = slow.await.unwrap();
    assert_eq!(
        status, 200,
        "in-flight request failed across the switch: {body}"
    );
    assert_eq!(
        version.as_deref(),
        Some("v1"),
        "in-flight request must finish where it started"
    );
    assert_eq!(body, "slow v1");
    assert!(took >= Duration::from_millis(1500), "{took:?}");

    // 2. Load while switching every ~200 ms.
    let clock = Clock::new();
    let mut log = vec![Switch {
        requested_ms: None,
        acked_ms: clock.now_ms(),
        active_version: "v2".to_owned(),
    }];
    let load = LoadGen::start(CLIENTS, proxy.url("/"), "x-upstream", clock);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut cutover = Vec::new();
    for _ in 0..SWITCHES {
        let requested_ms = clock.now_ms();
        let active = switch(&c, &proxy).await;
        let acked_ms = clock.now_ms();
        cutover.push(acked_ms - requested_ms);
        let version = version_of.get(active.as_str()).copied().unwrap_or("?");
        log.push(Switch {
            requested_ms: Some(requested_ms),
            acked_ms,
            active_version: version.to_owned(),
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let samples = load.finish().await;

    let report = check(&samples, &log, &Options::default());
    for s in report.stale_responses.iter().take(10) {
        eprintln!("STALE {s}");
    }
    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).take(5).collect();
    assert_eq!(
        report.failed, 0,
        "failed requests under switching, e.g. {failed:?}"
    );
    assert_eq!(
        report.stale, 0,
        "stale responses after acknowledged switches"
    );
    assert_eq!(report.switches as usize, SWITCHES + 1);
    assert_eq!(
        report.unjudged, 0,
        "every request started after the starting state was logged"
    );
    assert!(
        report.requests >= 300,
        "too little load to prove anything: {} requests",
        report.requests
    );
    // Both colours really served during the run, many times over.
    let v1 = samples.iter().filter(|s| s.version == "v1").count();
    let v2 = samples.iter().filter(|s| s.version == "v2").count();
    assert!(v1 > 50 && v2 > 50, "v1 {v1}, v2 {v2}");
    cutover.sort_by(f64::total_cmp);
    eprintln!(
        "switch under load: {} requests, {} switches, p50 {:.2} ms, p99 {:.2} ms; switch ack median {:.1} ms, max {:.1} ms; {:?} total",
        report.requests,
        SWITCHES,
        report.p50_ms,
        report.p99_ms,
        cutover.get(cutover.len() / 2).copied().unwrap_or(0.0),
        cutover.last().copied().unwrap_or(0.0),
        test_started.elapsed()
    );
    assert!(test_started.elapsed() < Duration::from_secs(60));
    drop((blue, green));
}
