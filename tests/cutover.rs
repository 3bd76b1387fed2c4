//! Cutover and admin behaviour against the dev Consul, real upstreams and a
//! real proxy.
//!
//! Every test here runs the whole control loop: instances are registered
//! through the Consul client, the proxy discovers them with blocking
//! queries, and `POST /switch` writes the route key with check-and-set.
//!
//! - in-flight requests finish on the colour they started on; requests
//!   that start after the switch's answer reach the new colour;
//! - WebSockets survive a switch until the drain deadline, are then closed
//!   cleanly, and `switchyard_draining_connections` tracks them;
//! - admin authentication (401 / 403 / 200, token never logged, loopback
//!   rule for tokenless proxies);
//! - concurrent switches: exactly one wins, the generation grows by one;
//! - safety refusals (409) and `force=true`;
//! - bad admin input.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::CheckStatus;
use switchyard_model::RouteValue;
use switchyard_testkit::proxy::consul_config_waiting;
use switchyard_testkit::{get_text, register_with_status};
use tokio_tungstenite::tungstenite::Message;

use crate::discovery::eventually;
use crate::support::load::DevConsulServer;
use crate::support::{ProxyHandle, Upstream, client, serves, who};

const SERVICE: &str = "hello-service";
const TOKEN: &str = "cutover-test-admin-token-7f3a9c";

/// A dev Consul on `127.0.0.1:0` (stopped on drop) with the registrations
/// these tests need.
pub(crate) struct Consul(DevConsulServer);

impl std::ops::Deref for Consul {
    type Target = DevConsulServer;
    fn deref(&self) -> &DevConsulServer {
        &self.0
    }
}

impl Consul {
    pub(crate) async fn start() -> Self {
        Self(DevConsulServer::start().await)
    }

    /// Registers an instance tagged `[colour, role, version=v]` with a TTL
    /// check in the given state.
    pub(crate) async fn register(
        &self,
        id: &str,
        addr: SocketAddr,
        colour: &str,
        role: &str,
        version: &str,
        status: CheckStatus,
    ) {
        register_with_status(
            &self.client,
            SERVICE,
            id,
            addr,
            [colour, role, version],
            status,
        )
        .await;
    }

    /// The route key's value, if any.
    pub(crate) async fn route(&self) -> Option<RouteValue> {
        let (pair, _) = self
            .client
            .kv_get(
                &switchyard_model::route_key(SERVICE),
                &QueryOptions::default(),
            )
            .await
            .unwrap();
        pair.and_then(|p| p.value)
            .map(|v| RouteValue::parse(&v).unwrap())
    }
}

/// Proxy configuration discovering `hello-service` from `consul`.
fn config(consul: &str, extra: &str) -> String {
    consul_config_waiting(consul, "5s", extra)
}

async fn wait_serving(p: &ProxyHandle, colour: &str) {
    assert!(
        serves(p, colour, Duration::from_secs(5)).await,
        "proxy never served {colour}"
    );
}

async fn metrics(p: &ProxyHandle) -> String {
    get_text(&client(), &p.admin_url("/metrics")).await
}

/// The value of one sample line in Prometheus text, e.g.
/// `switchyard_draining_connections{service="x",colour="blue"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn draining(text: &str, colour: &str) -> f64 {
    sample(
        text,
        &format!("switchyard_draining_connections{{colour=\"{colour}\",service=\"{SERVICE}\"}}"),
    )
    .or_else(|| {
        sample(
            text,
            &format!(
                "switchyard_draining_connections{{service=\"{SERVICE}\",colour=\"{colour}\"}}"
            ),
        )
    })
    .unwrap_or(0.0)
}

async fn switch(c: &reqwest::Client, p: &ProxyHandle, query: &str) -> (u16, String) {
    let r = c
        .post(p.admin_url(&format!("/switch?{query}")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Blue (active, v1) and green (standby, v2), one instance each, served.
struct Stack {
    blue: Upstream,
    green: Upstream,
    consul: Consul,
    proxy: ProxyHandle,
}

async fn stack(extra: &str) -> Stack {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let consul = Consul::start().await;
    consul
        .register(
            "b1",
            blue.addr,
            "blue",
            "active",
            "v1",
            CheckStatus::Passing,
        )
        .await;
    consul
        .register(
            "g1",
            green.addr,
            "green",
            "standby",
            "v2",
            CheckStatus::Passing,
        )
        .await;
    let proxy = ProxyHandle::start(&config(&consul.url(), extra)).await;
    wait_serving(&proxy, "blue").await;
    Stack {
        blue,
        green,
        consul,
        proxy,
    }
}

#[tokio::test]
async fn in_flight_request_finishes_on_the_old_colour_and_new_ones_reach_the_new() {
    let s = stack("").await;
    let c = client();
    let before = s.blue.requests();
    let slow = {
        let c = c.clone();
        let url = s.proxy.url("/slow?ms=1500");
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let from = r.headers()["x-upstream"].to_str().unwrap().to_owned();
            (status, from, r.text().await.unwrap())
        })
    };
    // The slow request has reached blue before the switch starts.
    let blue_requests = &s.blue.requests;
    assert!(
        eventually(Duration::from_secs(2), async || blue_requests
            .load(std::sync::atomic::Ordering::SeqCst)
            > before)
        .await
    );

    let (status, body) = switch(&c, &s.proxy, &format!("service={SERVICE}")).await;
    assert_eq!(status, 200, "{body}");
    let ack: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ack["active"], "green");
    assert_eq!(ack["previous"], "blue");
    assert_eq!(ack["generation"], 1);
    assert!(
        !slow.is_finished(),
        "the slow request ended before the switch"
    );

    // Everything that starts after the acknowledgement reaches green.
    let green_before = s.green.requests();
    for _ in 0..20 {
        assert_eq!(who(&c, &s.proxy.url("/")).await.as_deref(), Some("green"));
    }
    assert_eq!(s.green.requests(), green_before + 20);

    // The request that started on blue finishes there.
    let (status, from, body) = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status, from.as_str(), body.as_str()),
        (200, "blue", "slow blue")
    );
    assert_eq!(s.consul.route().await.unwrap().active, "green");
}

#[tokio::test]
async fn websocket_drains_until_the_deadline_then_closes_cleanly() {
    let s = stack("[timeouts]\ndrain = \"1s\"\n").await;
    let c = client();
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.proxy.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send("before".into()).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "blue: before");
    assert_eq!(draining(&metrics(&s.proxy).await, "blue"), 0.0);

    let (status, body) = switch(&c, &s.proxy, &format!("service={SERVICE}")).await;
    assert_eq!(status, 200, "{body}");
    let switched = Instant::now();

    // The old connection keeps working on blue during the drain…
    ws.send("during".into()).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "blue: during");
    let proxy = &s.proxy;
    assert!(
        eventually(Duration::from_millis(800), async || draining(
            &metrics(proxy).await,
            "blue"
        ) == 1.0)
        .await,
        "draining gauge never rose"
    );
    // …and a new one goes to green.
    let (mut fresh, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.proxy.addr))
        .await
        .unwrap();
    fresh.send("new".into()).await.unwrap();
    let m = fresh.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "green: new");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send("still".into()).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "blue: still");
    assert!(switched.elapsed() < Duration::from_secs(1));

    // At the deadline the proxy closes it: EOF (or a close frame), no hang.
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return "eof",
                Some(Ok(Message::Close(_))) => return "close",
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the drained WebSocket was not closed");
    let closed_after = switched.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed too early ({end}) after {closed_after:?}"
    );
    assert_eq!(draining(&metrics(&s.proxy).await, "blue"), 0.0);

    // The green connection is untouched.
    fresh.send("after".into()).await.unwrap();
    let m = fresh.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "green: after");
    assert_eq!(draining(&metrics(&s.proxy).await, "green"), 0.0);
}

#[tokio::test]
async fn websocket_closed_by_the_client_during_the_drain_leaves_the_gauge_at_zero() {
    let s = stack("[timeouts]\ndrain = \"5s\"\n").await;
    let c = client();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.proxy.addr))
        .await
        .unwrap();
    ws.send("hi".into()).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "blue: hi"
    );
    let (status, body) = switch(&c, &s.proxy, &format!("service={SERVICE}")).await;
    assert_eq!(status, 200, "{body}");
    let proxy = &s.proxy;
    assert!(
        eventually(Duration::from_secs(2), async || draining(
            &metrics(proxy).await,
            "blue"
        ) == 1.0)
        .await
    );
    // The client leaves long before the deadline.
    ws.close(None).await.unwrap();
    drop(ws);
    assert!(
        eventually(Duration::from_secs(2), async || draining(
            &metrics(proxy).await,
            "blue"
        ) == 0.0)
        .await,
        "gauge stuck: {}",
        metrics(proxy).await
    );
}

/// Log lines written by the proxy, captured with a scoped subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every log line of this test binary from the moment a test first asks
/// for it. A process-wide subscriber, because a thread-scoped one misses
/// events whose callsites other test threads registered first; the proxy's
/// own crate is captured at `trace`, everything else at `info`.
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,switchyard_proxy=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this binary");
        logs
    })
}

#[tokio::test]
async fn admin_token_gates_switch_and_never_reaches_the_logs() {
    let logs = captured_logs();
    let s = stack(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    let c = client();
    let url = s.proxy.admin_url(&format!("/switch?service={SERVICE}"));

    let r = c.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body = r.text().await.unwrap();
    assert!(body.contains("Authorization: Bearer"), "{body}");

    // Not a bearer credential at all.
    let r = c
        .post(&url)
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let wrong = "cutover-test-admin-token-WRONG1";
    let r = c.post(&url).bearer_auth(wrong).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("wrong admin token"));
    // A prefix of the right token is wrong too (no length leak shortcut).
    let r = c.post(&url).bearer_auth(&TOKEN[..10]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(s.consul.route().await, None, "a refused call wrote the key");

    // Reads need no token.
    for path in ["/status", "/metrics", "/healthz", "/readyz"] {
        let r = c.get(s.proxy.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    let r = c.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.consul.route().await.unwrap().active, "green");
    wait_serving(&s.proxy, "green").await;

    let text = logs.text();
    assert!(
        text.contains("admin call with a wrong token refused") && text.contains("switch served"),
        "the capture missed the proxy's logs:\n{text}"
    );
    assert!(!text.contains(TOKEN), "token leaked into the logs");
    assert!(
        !text.contains(wrong),
        "presented token leaked into the logs"
    );
    drop((s.blue, s.green));
}

#[tokio::test]
async fn concurrent_switches_one_wins_the_other_gets_409() {
    let s = stack("").await;
    // Two clients with warm connections, so both calls reach the admin
    // API in the same instant.
    let (c1, c2) = (client(), client());
    for c in [&c1, &c2] {
        assert_eq!(
            c.get(s.proxy.admin_url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let q = format!("service={SERVICE}");
    let ((s1, b1), (s2, b2)) = tokio::join!(switch(&c1, &s.proxy, &q), switch(&c2, &s.proxy, &q));
    let mut statuses = [s1, s2];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{b1} / {b2}");
    let loser = if s1 == 409 { &b1 } else { &b2 };
    assert!(
        loser.contains("another switch won") || loser.contains("already names"),
        "409 without a reason: {loser}"
    );
    let route = s.consul.route().await.unwrap();
    assert_eq!((route.active.as_str(), route.generation), ("green", 1));
    let st: serde_json::Value = client()
        .get(s.proxy.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["services"][0]["generation"], 1);
    assert_eq!(st["services"][0]["active"]["colour"], "green");

    // The next switch (sequential) goes back and adds exactly one more.
    let (status, body) = switch(&c1, &s.proxy, &q).await;
    assert_eq!(status, 200, "{body}");
    let route = s.consul.route().await.unwrap();
    assert_eq!((route.active.as_str(), route.generation), ("blue", 2));
}

#[tokio::test]
async fn switch_refused_while_standby_is_unhealthy_or_smaller_unless_forced() {
    let blue1 = Upstream::start("blue").await;
    let blue2 = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let consul = Consul::start().await;
    consul
        .register(
            "b1",
            blue1.addr,
            "blue",
            "active",
            "v1",
            CheckStatus::Passing,
        )
        .await;
    consul
        .register(
            "b2",
            blue2.addr,
            "blue",
            "active",
            "v1",
            CheckStatus::Passing,
        )
        .await;
    consul
        .register(
            "g1",
            green.addr,
            "green",
            "standby",
            "v2",
            CheckStatus::Critical,
        )
        .await;
    let p = ProxyHandle::start(&config(&consul.url(), "")).await;
    wait_serving(&p, "blue").await;
    let c = client();
    let q = format!("service={SERVICE}");

    let (status, body) = switch(&c, &p, &q).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no passing instance"), "{body}");
    assert_eq!(consul.route().await, None);

    // Green passes, but it is one instance against two.
    consul
        .register(
            "g1",
            green.addr,
            "green",
            "standby",
            "v2",
            CheckStatus::Passing,
        )
        .await;
    let status_url = p.admin_url("/status");
    assert!(
        eventually(Duration::from_secs(3), async || {
            let st: serde_json::Value = c
                .get(&status_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            st["services"][0]["standby"]["instances"]
                .as_array()
                .is_some_and(|i| i.len() == 1)
        })
        .await,
        "green never became a passing standby"
    );
    let (status, body) = switch(&c, &p, &q).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("1 passing instance(s), active blue has 2"),
        "{body}"
    );
    assert!(body.contains("force=true"), "{body}");
    assert_eq!(consul.route().await, None);

    let (status, body) = switch(&c, &p, &format!("{q}&force=true")).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..10 {
        assert_eq!(who(&c, &p.url("/")).await.as_deref(), Some("green"));
    }
    assert_eq!(consul.route().await.unwrap().generation, 1);
}

#[tokio::test]
async fn bad_admin_input_gets_precise_4xx() {
    let s = stack("").await;
    let c = client();
    let admin = |p: &str| s.proxy.admin_url(p);

    let r = c.post(admin("/switch?service=nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"], "unknown service \"nope\"");

    let r = c.post(admin("/switch")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("missing ?service="));

    let r = c
        .post(admin(&format!("/switch?service={SERVICE}&force=maybe")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("force must be true or false")
    );

    let r = c.get(admin("/no/such/thing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.post(admin("/%00%ff..")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = c
        .get(admin(&format!("/switch?service={SERVICE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    for path in ["/status", "/metrics", "/healthz", "/readyz"] {
        let r = c.delete(admin(path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], "GET");
    }

    // Nothing above changed anything.
    assert_eq!(s.consul.route().await, None);
    assert_eq!(who(&c, &s.proxy.url("/")).await.as_deref(), Some("blue"));
    drop((s.blue, s.green));
}

#[tokio::test]
async fn forced_switch_to_a_colour_without_instances_is_a_conflict_and_can_be_repaired() {
    let blue = Upstream::start("blue").await;
    let consul = Consul::start().await;
    consul
        .register(
            "b1",
            blue.addr,
            "blue",
            "active",
            "v1",
            CheckStatus::Passing,
        )
        .await;
    let p = ProxyHandle::start(&config(&consul.url(), "")).await;
    wait_serving(&p, "blue").await;
    let c = client();
    let q = format!("service={SERVICE}");

    // Green has no instance at all: the route moves, the proxy keeps blue.
    let (status, body) = switch(&c, &p, &format!("{q}&force=true")).await;
    assert_eq!(status, 409, "success claimed while blue is served: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["requested"], "green", "{body}");
    assert_eq!(doc["active"], "blue", "{body}");
    assert!(
        doc["error"].as_str().unwrap().contains("still serves blue"),
        "{body}"
    );
    assert_eq!(consul.route().await.unwrap().active, "green");
    assert_eq!(who(&c, &p.url("/")).await.as_deref(), Some("blue"));

    // The repair: switching again writes the route back to what is served.
    let (status, body) = switch(&c, &p, &q).await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["active"], "blue", "{body}");
    let route = consul.route().await.unwrap();
    assert_eq!(route.active, "blue");
    assert!(
        route.updated_by.contains("127.0.0.1"),
        "who switched is recorded: {route:?}"
    );
    let st: serde_json::Value = c
        .get(p.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["services"][0]["fail_static"], false, "{st}");
}

#[tokio::test]
async fn cross_site_browser_switch_is_refused() {
    let s = stack("").await;
    let c = client();
    for site in ["cross-site", "same-site"] {
        let r = c
            .post(s.proxy.admin_url(&format!("/switch?service={SERVICE}")))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{site}");
        assert!(r.text().await.unwrap().contains("cross-site"));
    }
    assert_eq!(s.consul.route().await, None);
    let r = c
        .post(s.proxy.admin_url(&format!("/switch?service={SERVICE}")))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
