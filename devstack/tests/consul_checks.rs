//! The dev Consul's own check runner: HTTP and TCP probes against real
//! listeners, TTL expiry and heartbeats, the critical-service reaper, and
//! that re-running a check without a status change wakes nobody.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use consul_support::{index_of, start};
use serde_json::{Value, json};

/// A tiny HTTP server on 127.0.0.1:0 answering `/health` with a settable code.
async fn health_target() -> (String, Arc<AtomicU16>, Arc<AtomicUsize>) {
    let code = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicUsize::new(0));
    let shared = Arc::clone(&code);
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let shared = Arc::clone(&shared);
            counter.fetch_add(1, Ordering::SeqCst);
            async move { StatusCode::from_u16(shared.load(Ordering::SeqCst)).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/health"), code, hits)
}

#[tokio::test]
async fn http_check_follows_the_target() {
    let s = start().await;
    let (url, code, _) = health_target().await;
    s.register(json!({"ID": "web-1", "Name": "web", "Port": 1,
        "Check": {"CheckID": "web-http", "HTTP": url, "Interval": "50ms", "Timeout": "1s"}}))
        .await;
    s.wait_check("web-http", "passing", Duration::from_secs(5))
        .await;
    let (_, passing) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);

    code.store(429, Ordering::SeqCst);
    s.wait_check("web-http", "warning", Duration::from_secs(5))
        .await;
    code.store(500, Ordering::SeqCst);
    s.wait_check("web-http", "critical", Duration::from_secs(5))
        .await;
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert!(
        checks["web-http"]["Output"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    let (_, passing) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(passing, json!([]));
    let resp = s.get("/v1/agent/health/service/id/web-1?format=text").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "critical");
    s.stop().await;
}

#[tokio::test]
async fn new_check_starts_critical_until_first_pass() {
    let s = start().await;
    s.register(json!({"ID": "w", "Name": "web", "Check": {"CheckID": "t", "TTL": "10s"}}))
        .await;
    assert_eq!(s.check_status("t").await.as_deref(), Some("critical"));
    let (_, passing) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(passing, json!([]));
    s.put_empty("/v1/agent/check/pass/t").await;
    let (_, passing) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn tcp_check_passes_on_open_port_and_fails_on_closed() {
    let s = start().await;
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_addr = open.local_addr().unwrap();
    let closed_addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    s.register(json!({"ID": "db", "Name": "db", "Checks": [
        {"CheckID": "open", "TCP": open_addr.to_string(), "Interval": "50ms", "Timeout": "1s", "Status": "critical"},
        {"CheckID": "closed", "TCP": closed_addr.to_string(), "Interval": "50ms", "Timeout": "1s", "Status": "passing"},
    ]}))
    .await;
    s.wait_check("open", "passing", Duration::from_secs(5))
        .await;
    s.wait_check("closed", "critical", Duration::from_secs(5))
        .await;
    drop(open);
    s.stop().await;
}

#[tokio::test]
async fn ttl_heartbeats_and_expiry() {
    let s = start().await;
    s.register(json!({"ID": "app", "Name": "app", "Check": {"CheckID": "hb", "TTL": "400ms"}}))
        .await;
    let health = |expected: u16| {
        let s = &s;
        async move {
            let resp = s.get("/v1/agent/health/service/id/app").await;
            assert_eq!(resp.status().as_u16(), expected);
            resp.json::<Value>().await.unwrap()
        }
    };
    health(503).await;
    assert_eq!(
        s.put_empty("/v1/agent/check/pass/hb?note=all%20good")
            .await
            .status(),
        200
    );
    let body = health(200).await;
    assert_eq!(body["AggregatedStatus"], "passing");
    assert_eq!(body["Checks"][0]["Output"], "all good");
    s.put_empty("/v1/agent/check/warn/hb").await;
    health(429).await;
    s.put_empty("/v1/agent/check/fail/hb").await;
    health(503).await;
    let resp = s
        .put_json(
            "/v1/agent/check/update/hb",
            &json!({"Status": "passing", "Output": "via update"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    health(200).await;
    let resp = s
        .put_json("/v1/agent/check/update/hb", &json!({"Status": "fine"}))
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(s.put_empty("/v1/agent/check/pass/nope").await.status(), 404);
    assert_eq!(
        s.get("/v1/agent/health/service/id/nope").await.status(),
        404
    );

    // No heartbeat for longer than the TTL: critical.
    s.wait_check("hb", "critical", Duration::from_secs(3)).await;
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert!(
        checks["hb"]["Output"]
            .as_str()
            .unwrap()
            .contains("TTL expired")
    );
    s.stop().await;
}

#[tokio::test]
async fn deregister_critical_service_after_removes_the_service() {
    let s = start().await;
    s.register(json!({"ID": "doomed", "Name": "doomed",
        "Check": {"CheckID": "d", "TTL": "1h", "DeregisterCriticalServiceAfter": "200ms"}}))
        .await;
    s.register(json!({"ID": "fine", "Name": "fine",
        "Check": {"TTL": "1h", "Status": "passing", "DeregisterCriticalServiceAfter": "200ms"}}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, services) = s.get_json("/v1/agent/services").await;
        if services.get("doomed").is_none() {
            assert!(services.get("fine").is_some(), "a passing service stays");
            break;
        }
        assert!(Instant::now() < deadline, "service was not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert!(checks.get("d").is_none(), "its checks go too");
    s.stop().await;
}

#[tokio::test]
async fn rerunning_check_with_same_status_does_not_wake_watchers() {
    let s = start().await;
    let (url, _code, hits) = health_target().await;
    s.register(json!({"ID": "w", "Name": "web",
        "Check": {"CheckID": "h", "HTTP": url, "Interval": "30ms"}}))
        .await;
    s.wait_check("h", "passing", Duration::from_secs(5)).await;
    let (idx, _) = s.get_json("/v1/health/service/web").await;
    let hits_before = hits.load(Ordering::SeqCst);
    let started = Instant::now();
    let resp = s
        .get(&format!("/v1/health/service/web?index={idx}&wait=600ms"))
        .await;
    let runs = hits.load(Ordering::SeqCst) - hits_before;
    assert!(runs >= 5, "the check ran only {runs} times during the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "woke after {:?}",
        started.elapsed()
    );
    assert_eq!(index_of(&resp), idx);
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert_eq!(checks["h"]["Status"], "passing", "the check kept running");
    s.stop().await;
}

#[tokio::test]
async fn default_agent_raises_short_intervals_to_one_second() {
    // The default configuration, as `switchyard dev` runs it.
    let s = consul_support::start_with(switchyard_devstack::consul::ConsulConfig {
        node_name: "test-node".into(),
        ..switchyard_devstack::consul::ConsulConfig::default()
    })
    .await;
    let (url, _, hits) = health_target().await;
    s.register(json!({"ID": "fast", "Name": "fast", "Port": 1,
        "Check": {"CheckID": "fast-http", "HTTP": url, "Interval": "100ms"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let n = hits.load(Ordering::SeqCst);
    // Staggered first run within 1 s, then every 1 s: at most 2 probes in
    // 1.6 s (a 100 ms interval would have made about 15).
    assert!((1..=2).contains(&n), "{n} probes in 1.6 s");
    s.stop().await;
}

#[tokio::test]
async fn thresholds_are_accepted_and_delay_passing() {
    let s = start().await;
    let (url, _, hits) = health_target().await;
    s.register(json!({"ID": "slow", "Name": "slow", "Port": 1,
        "Check": {"CheckID": "slow-http", "HTTP": url, "Interval": "30ms",
                  "success_before_passing": 4, "FailuresBeforeCritical": 2}}))
        .await;
    s.wait_check("slow-http", "passing", Duration::from_secs(5))
        .await;
    assert!(
        hits.load(Ordering::SeqCst) >= 4,
        "passing only after 4 successful probes"
    );
    s.stop().await;
}
