//! Faults under load: every case runs 8 keep-alive clients against the
//! proxy while an instance (or Consul) misbehaves, and asserts that no
//! idempotent request failed.
//!
//! | case | how it fails | what keeps requests alive |
//! | --- | --- | --- |
//! | upstream dropped | server and its connections vanish | replay of bodiless GETs, connect-refused retry |
//! | SIGKILL | real `hello-service` killed | same, on a real process |
//! | SIGTERM | real `hello-service` drains and exits | graceful close + stale-connection redo |
//! | hang | accepts, never answers | response-head timeout retried elsewhere, then ejection |
//! | slow | `--delay-ms` | power of two choices on in-flight counts |
//! | 503 | answers 503 to everything | gateway-error retry, ejection, cool-down |
//! | Consul | down, 500, garbage, truncated, index backwards, empty restart | fail static, then catch-up |
//!
//! The Consul case also measures how long the proxy takes to catch up once
//! Consul answers correctly again, and bounds it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_proxy::routing::Router;

use crate::discovery::{consul_config, eventually, inst};
use crate::support::consul::{FakeConsul, Fault, Inst};
use crate::support::faulty::{HelloProcess, StatusUpstream, Tally};
use crate::support::load::{Clock, LoadGen};
use crate::support::*;

/// Concurrent clients in every load phase.
const CLIENTS: usize = 8;

async fn run_load(url: String, header: &'static str, f: impl AsyncFnOnce()) -> Tally {
    let load = LoadGen::start(CLIENTS, url, header, Clock::new());
    f().await;
    Tally::of(&load.finish().await)
}

fn assert_no_failures(t: &Tally, what: &str) {
    assert_eq!(
        t.failed, 0,
        "{what}: {} of {} failed: {t:?}",
        t.failed, t.total
    );
    assert!(
        t.total > 100,
        "{what}: too little load to mean anything: {t:?}"
    );
}

fn is_ejected(router: &Router, addr: SocketAddr) -> bool {
    router.table().services()[0]
        .active
        .endpoints
        .iter()
        .any(|e| e.addr() == addr && e.is_ejected())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dropped_mid_load_fails_no_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let p = ProxyHandle::start(&static_config(&[a.addr, b.addr, c.addr], &[], "")).await;
    let b_addr = b.addr;
    let mut b = Some(b);
    let t = run_load(p.url("/"), "x-upstream", async || {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(b.take()); // Listener and every open connection die at once.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    })
    .await;
    assert_no_failures(&t, "dropped upstream");
    assert!(t.count("b") > 0, "b served before it died: {t:?}");
    assert!(
        t.count("a") > t.count("b") && t.count("c") > t.count("b"),
        "{t:?}"
    );
    // Refused connects count as failures: the dead address is skipped now.
    assert!(is_ejected(&p.router, b_addr));
}

/// Binds `addr` again, waiting for the previous server's listener to close.
async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_killed_with_sigkill_mid_load_fails_no_request() {
    let a = HelloProcess::start("v1", &[]).await;
    let mut b = HelloProcess::start("v2", &[]).await;
    let p = ProxyHandle::start(&static_config(&[a.addr, b.addr], &[], "")).await;
    let t = run_load(p.url("/hello"), "x-app-version", async || {
        tokio::time::sleep(Duration::from_millis(700)).await;
        b.signal("KILL");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    })
    .await;
    assert_eq!(
        b.wait(Duration::from_secs(5)).await,
        None,
        "killed by a signal"
    );
    assert_no_failures(&t, "SIGKILL");
    assert!(t.count("v2") > 0, "v2 served before it died: {t:?}");
    assert!(t.count("v1") > t.count("v2"), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_stopped_with_sigterm_mid_load_fails_no_request() {
    let a = HelloProcess::start("v1", &[]).await;
    let mut b = HelloProcess::start("v2", &[]).await;
    let p = ProxyHandle::start(&static_config(&[a.addr, b.addr], &[], "")).await;
    let mut exit = None;
    let t = run_load(p.url("/hello"), "x-app-version", async || {
        tokio::time::sleep(Duration::from_millis(700)).await;
        b.signal("TERM");
        exit = Some(b.wait(Duration::from_secs(8)).await);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    })
    .await;
    assert_eq!(exit, Some(Some(0)), "a graceful stop exits 0");
    assert_no_failures(&t, "SIGTERM");
    assert!(t.count("v2") > 0, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_instance_costs_a_timeout_not_an_error_and_is_ejected() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let hang = Upstream::start_mode("hang", Mode::Hang).await;
    let p = ProxyHandle::start(&static_config(
        &[a.addr, b.addr, hang.addr],
        &[],
        "[timeouts]\nresponse_head = \"300ms\"\n[ejection]\nconsecutive_failures = 3\ncool_down = \"30s\"\n",
    ))
    .await;
    let t = run_load(p.url("/"), "x-upstream", async || {
        tokio::time::sleep(Duration::from_millis(2500)).await;
    })
    .await;
    assert_no_failures(&t, "hang");
    assert_eq!(t.count("hang"), 0);
    assert!(is_ejected(&p.router, hang.addr), "hang was not ejected");
    // Ejected after 3 timeouts and not retried for 30 s: only the first few
    // requests that landed on it paid the 300 ms.
    assert!(hang.connections() <= 3 + CLIENTS, "{}", hang.connections());
    assert!(t.max_ms < 2000.0, "a request waited {} ms", t.max_ms);
    let metrics = get_text(&client(), &p.admin_url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_ejections_total") && !l.ends_with(" 0")),
        "no ejection counted:\n{metrics}"
    );
}

/// An upstream that answers the first request on each connection and
/// then never answers again on it; counts the connections it accepted.
async fn answers_once_per_connection() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if !answered && seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// The response-head timer belongs to the pooled upstream connection and
/// is re-armed for each exchange on it: a wedged answer on a reused
/// connection still costs exactly one timeout, whether the timer last ran
/// out while the connection was idle or is pushed back from the previous
/// exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_times_out_a_wedged_answer() {
    let c = client();
    for idle_between in [Duration::from_millis(500), Duration::ZERO] {
        let (up, accepted) = answers_once_per_connection().await;
        let p = ProxyHandle::start(&static_config(
            &[up],
            &[],
            "[timeouts]\nresponse_head = \"300ms\"\nupstream_idle = \"5s\"\n[ejection]\nconsecutive_failures = 0\n",
        ))
        .await;
        let first = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.text().await.unwrap(), "ok");
        tokio::time::sleep(idle_between).await;
        let started = Instant::now();
        let second = c.get(p.url("/")).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(second.status(), 504, "after {idle_between:?} idle");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "the head timeout took {took:?} after {idle_between:?} idle"
        );
        // The wedged request went out on the pooled connection.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_instance_gets_fewer_requests_and_none_fail() {
    let a = HelloProcess::start("fast-a", &[]).await;
    let b = HelloProcess::start("fast-b", &[]).await;
    let slow = HelloProcess::start("slow", &["--delay-ms", "200"]).await;
    let p = ProxyHandle::start(&static_config(&[a.addr, b.addr, slow.addr], &[], "")).await;
    let t = run_load(p.url("/hello"), "x-app-version", async || {
        tokio::time::sleep(Duration::from_millis(2500)).await;
    })
    .await;
    assert_no_failures(&t, "slow");
    let (fa, fb, s) = (t.count("fast-a"), t.count("fast-b"), t.count("slow"));
    assert!(s > 0, "the slow instance is still used: {t:?}");
    assert!(
        s * 5 < fa.min(fb),
        "p2c did not route around the slow instance: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_answering_503_is_retried_around_ejected_and_comes_back() {
    let good = Upstream::start("good").await;
    let bad = StatusUpstream::start("bad", 503).await;
    let p = ProxyHandle::start(&static_config(
        &[good.addr, bad.addr],
        &[],
        "[ejection]\nconsecutive_failures = 3\ncool_down = \"1s\"\n",
    ))
    .await;
    let router = Arc::clone(&p.router);
    let mut saw_ejected = false;
    let t = run_load(p.url("/"), "x-upstream", async || {
        saw_ejected = eventually(Duration::from_secs(2), async || {
            is_ejected(&router, bad.addr)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert!(saw_ejected, "503 instance never ejected");
    assert_no_failures(&t, "503 retried");
    assert_eq!(t.count("bad"), 0, "no 503 reached a client: {t:?}");
    let bad_before = bad.requests();
    assert!(bad_before >= 3);

    // Healthy again: after the cool-down it takes traffic again.
    bad.set_status(200);
    let t = run_load(p.url("/"), "x-upstream", async || {
        tokio::time::sleep(Duration::from_millis(2500)).await;
    })
    .await;
    assert_no_failures(&t, "after recovery");
    assert!(t.count("bad") > 50, "recovered instance unused: {t:?}");
    assert!(!is_ejected(&p.router, bad.addr));
}

#[tokio::test]
async fn ejection_never_empties_a_pool_and_the_last_503_is_passed_through() {
    let x = StatusUpstream::start("x", 503).await;
    let y = StatusUpstream::start("y", 503).await;
    let p = ProxyHandle::start(&static_config(
        &[x.addr, y.addr],
        &[],
        "[ejection]\nconsecutive_failures = 1\ncool_down = \"60s\"\nmax_ejected_percent = 100\n",
    ))
    .await;
    let c = client();
    for i in 0..10 {
        let r = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        // The upstream's own answer, not the proxy's "no instance".
        let body = r.text().await.unwrap();
        assert!(body.ends_with("says 503"), "request {i}: {body}");
    }
    assert!(is_ejected(&p.router, x.addr) && is_ejected(&p.router, y.addr));
    // Both ejected, both still tried: each request tries one, then the other.
    assert_eq!(x.requests() + y.requests(), 20);
}

/// The value of a counter or gauge in the admin `/metrics` text (0 when the
/// series is absent).
pub(crate) async fn metric(p: &ProxyHandle, series: &str) -> f64 {
    let text = get_text(&client(), &p.admin_url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ejection_by_a_dropped_connection_is_counted() {
    // The instance reads the request and closes: a broken exchange, after
    // the request left. One failure ejects; the ejection must be counted.
    let x = Upstream::start_mode("x", Mode::Reset).await;
    let p = ProxyHandle::start(&static_config(
        &[x.addr],
        &[],
        "[ejection]\nconsecutive_failures = 1\ncool_down = \"60s\"\nmax_ejected_percent = 100\n",
    ))
    .await;
    let r = client().post(p.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(is_ejected(&p.router, x.addr));
    assert_eq!(
        metric(&p, r#"switchyard_ejections_total{service="svc"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn plain_500_is_the_application_answer_and_not_retried() {
    let x = StatusUpstream::start("x", 500).await;
    let y = StatusUpstream::start("y", 500).await;
    let p = ProxyHandle::start(&static_config(&[x.addr, y.addr], &[], "")).await;
    let c = client();
    for n in 1..=4 {
        let r = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(x.requests() + y.requests(), n, "a 500 is never replayed");
    }
}

// ------------------------------------------------------------------ Consul

/// How a Consul fault is injected and lifted.
#[derive(Clone, Copy, Debug)]
enum ConsulFault {
    Answer(Fault),
    IndexBackwards,
    Down,
    RestartEmpty,
}

/// The standby instances for step `k`: green plus a marker instance whose
/// arrival in the proxy's table shows that it caught up.
fn step_instances(blue: SocketAddr, green: SocketAddr, marker: SocketAddr, k: usize) -> Vec<Inst> {
    vec![
        inst("b1", blue, "blue", "active", "v1"),
        inst("g1", green, "green", "standby", "v2"),
        inst(&format!("marker-{k}"), marker, "green", "standby", "v2"),
    ]
}

/// Whether the proxy serves the instances of step `k` (whatever the other
/// watch says).
fn has_marker(router: &Router, k: usize) -> bool {
    let t = router.table();
    let id = format!("marker-{k}");
    t.services()[0]
        .snapshot
        .standby
        .instances
        .iter()
        .any(|i| i.id.as_deref() == Some(id.as_str()))
}

/// Fully caught up: the instances of step `k`, and no watch failing.
fn sees_marker(router: &Router, k: usize) -> bool {
    has_marker(router, k) && !fail_static(router)
}

fn fail_static(router: &Router) -> bool {
    router.table().services()[0].snapshot.fail_static
}

/// Polls until `f` holds; returns when it did.
async fn when(within: Duration, f: impl Fn() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Consul misbehaves for `HOLD` in six ways in a row while 8 clients keep
/// requesting: nothing fails, and each time the proxy catches up quickly
/// once Consul answers correctly. The health and route-key watches back off
/// independently, so "caught up" (new instances served and fail static
/// over) is bounded by the backoff, and the health watch alone must apply
/// the new instances within one round trip of Consul's first good answer.
///
/// Bounds, and why: after a read error the watch backs off (base 100 ms,
/// doubling, jitter in the upper half). After failing for `HOLD` the delay in
/// progress is at most `2 × HOLD + 100 ms`, so that is the longest a proxy can
/// legitimately stay behind a recovered Consul; the read that follows is an
/// index-0 read answered at once. Measured from the first health read that
/// Consul answers correctly, the proxy must serve the new state within one
/// round trip (`ONE_TRIP`, generous for a loaded CI machine). An index that
/// goes backwards is different: Consul does not wake a blocking query whose
/// index is ahead of its own, so the proxy notices at the end of its `wait`
/// (2 s here) and re-reads with index 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_faults_under_load_fail_nothing_and_the_proxy_catches_up() {
    const HOLD: Duration = Duration::from_millis(1500);
    const ONE_TRIP: Duration = Duration::from_millis(500);
    const WAIT: Duration = Duration::from_secs(2);
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let marker = dead_addr().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consul_addr = listener.local_addr().unwrap();
    let mut consul = Some(FakeConsul::serve(
        listener,
        "hello-service",
        step_instances(blue.addr, green.addr, marker, 0),
    ));
    let p = ProxyHandle::start(&consul_config(&consul.as_ref().unwrap().url(), "")).await;
    let router = Arc::clone(&p.router);
    assert!(
        when(Duration::from_secs(5), || sees_marker(&router, 0))
            .await
            .is_some(),
        "proxy never synced"
    );

    let faults = [
        ConsulFault::Answer(Fault::Status500),
        ConsulFault::Answer(Fault::Garbage),
        ConsulFault::Answer(Fault::Truncated),
        ConsulFault::IndexBackwards,
        ConsulFault::Down,
        ConsulFault::RestartEmpty,
    ];
    let mut report = Vec::new();
    let t = run_load(p.url("/"), "x-upstream", async || {
        for (i, fault) in faults.iter().enumerate() {
            let k = i + 1;
            let next = step_instances(blue.addr, green.addr, marker, k);
            let (t0, first_read) = match *fault {
                ConsulFault::Answer(f) => {
                    let c = consul.as_ref().unwrap();
                    c.set_fault(f);
                    assert!(
                        when(HOLD, || fail_static(&router)).await.is_some(),
                        "{fault:?}: fail static not entered"
                    );
                    tokio::time::sleep(HOLD).await;
                    c.set_instances(next);
                    c.set_fault(Fault::None);
                    let t0 = Instant::now();
                    let reads = c.health_reads();
                    let first = when(HOLD * 3, || c.health_reads() > reads).await;
                    (t0, first)
                }
                ConsulFault::IndexBackwards => {
                    let c = consul.as_ref().unwrap();
                    c.index_backwards(5);
                    c.set_instances(next);
                    (Instant::now(), None)
                }
                ConsulFault::Down => {
                    drop(consul.take());
                    assert!(
                        when(HOLD, || fail_static(&router)).await.is_some(),
                        "{fault:?}: fail static not entered"
                    );
                    tokio::time::sleep(HOLD).await;
                    let l = rebind(consul_addr).await;
                    let c = consul.insert(FakeConsul::serve(l, "hello-service", next));
                    let t0 = Instant::now();
                    let first = when(HOLD * 3, || c.health_reads() > 0).await;
                    (t0, first)
                }
                ConsulFault::RestartEmpty => {
                    drop(consul.take());
                    let l = rebind(consul_addr).await;
                    let c = consul.insert(FakeConsul::serve(l, "hello-service", Vec::new()));
                    // An empty catalog must not empty the active pool.
                    assert!(
                        when(HOLD * 3, || fail_static(&router)).await.is_some(),
                        "{fault:?}: an empty catalog was not treated as suspicious"
                    );
                    assert_eq!(router.table().services()[0].active.endpoints.len(), 1);
                    tokio::time::sleep(HOLD).await;
                    let reads = c.health_reads();
                    c.set_instances(next);
                    let t0 = Instant::now();
                    let first = when(HOLD, || c.health_reads() > reads).await;
                    (t0, first)
                }
            };
            let marker_at = when(WAIT * 3, || has_marker(&router, k)).await;
            let caught_up = when(WAIT * 3, || sees_marker(&router, k))
                .await
                .unwrap_or_else(|| panic!("{fault:?}: the proxy never caught up"));
            let total = caught_up - t0;
            // The health watch's own catch-up; the route watch recovers on
            // its own backoff schedule, which `total` covers.
            let after_first_read = first_read
                .zip(marker_at)
                .map(|(f, m)| m.saturating_duration_since(f));
            report.push(format!("{fault:?}: caught up {total:?} after Consul recovered ({after_first_read:?} after its first good answer)"));
            let bound = match fault {
                ConsulFault::IndexBackwards => WAIT + ONE_TRIP,
                ConsulFault::RestartEmpty => ONE_TRIP,
                _ => HOLD * 2 + Duration::from_millis(100) + ONE_TRIP,
            };
            assert!(total <= bound, "{fault:?}: caught up after {total:?} > {bound:?}");
            if let Some(d) = after_first_read {
                assert!(d <= ONE_TRIP, "{fault:?}: {d:?} after the first good answer");
            }
        }
    })
    .await;
    println!("{}", report.join("\n"));
    assert_no_failures(&t, "Consul faults");
    assert_eq!(t.count("blue"), t.total, "blue served throughout: {t:?}");
}
