//! Consul discovery against a scripted Consul API: blocking queries, route
//! key cutover, fail static under every fault, and recovery.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_model::RouteValue;

use crate::support::consul::{FakeConsul, Fault, Inst};
use crate::support::*;

pub(crate) use switchyard_testkit::{consul_config, eventually};

pub(crate) fn inst(id: &str, addr: SocketAddr, colour: &str, role: &str, version: &str) -> Inst {
    Inst {
        id: id.into(),
        addr,
        tags: switchyard_testkit::consul::instance_tags(colour, role, version),
    }
}

struct Stack {
    blue: Upstream,
    green: Upstream,
    consul: FakeConsul,
    proxy: ProxyHandle,
}

async fn stack(extra: &str) -> Stack {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let consul = FakeConsul::start(
        "hello-service",
        vec![
            inst("b1", blue.addr, "blue", "active", "v1"),
            inst("g1", green.addr, "green", "standby", "v2"),
        ],
    )
    .await;
    let proxy = ProxyHandle::start(&consul_config(&consul.url(), extra)).await;
    assert!(
        serves(&proxy, "blue", Duration::from_secs(5)).await,
        "proxy never served blue"
    );
    Stack {
        blue,
        green,
        consul,
        proxy,
    }
}

pub(crate) async fn status(p: &ProxyHandle) -> serde_json::Value {
    client()
        .get(p.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn tags_decide_until_the_route_key_appears_then_the_key_wins() {
    let s = stack("").await;
    let st = status(&s.proxy).await;
    let svc = &st["services"][0];
    assert_eq!(svc["decided_by"], "tags");
    assert_eq!(svc["active"]["colour"], "blue");
    assert_eq!(svc["active"]["version"], "v1");
    assert_eq!(svc["standby"]["colour"], "green");
    assert_eq!(svc["fail_static"], false);

    // The route key flips it; a blocking query wakes the proxy at once.
    let c = client();
    let written = Instant::now();
    s.consul
        .set_route(&RouteValue::new("green", 1, "test").to_bytes());
    let url = s.proxy.url("/");
    assert!(
        eventually(Duration::from_secs(2), async || who(&c, &url)
            .await
            .as_deref()
            == Some("green"))
        .await
    );
    assert!(
        written.elapsed() < Duration::from_millis(500),
        "cutover took {:?}",
        written.elapsed()
    );
    let st = status(&s.proxy).await;
    assert_eq!(st["services"][0]["decided_by"], "route-key");
    assert_eq!(st["services"][0]["generation"], 1);
    // Tags still say blue is active: the key wins.
    assert_eq!(
        who(&c, &s.proxy.url("/standby/")).await.as_deref(),
        Some("blue")
    );
    let metrics = get_text(&c, &s.proxy.admin_url("/metrics")).await;
    assert!(
        metrics.contains("switchyard_cutover_delay_seconds_count{service=\"hello-service\"} 1"),
        "{metrics}"
    );
    drop((s.blue, s.green));
}

/// The route key's colour is matched as tags are, case-insensitively: the same rule the
/// controller's `status` applies, so both name the same colour.
#[tokio::test]
async fn a_route_key_naming_a_colour_in_another_case_still_decides() {
    let s = stack("").await;
    s.consul
        .set_route(&RouteValue::new("Green", 2, "test").to_bytes());
    assert!(
        serves(&s.proxy, "green", Duration::from_secs(2)).await,
        "the proxy did not follow a route key naming \"Green\""
    );
    let st = status(&s.proxy).await;
    assert_eq!(st["services"][0]["decided_by"], "route-key");
    assert_eq!(st["services"][0]["active"]["colour"], "green");
    drop((s.blue, s.green));
}

#[tokio::test]
async fn fail_static_on_500_garbage_truncated_and_empty_answers_then_recovery() {
    let s = stack("").await;
    let c = client();
    for fault in [
        Fault::Status500,
        Fault::Garbage,
        Fault::Truncated,
        Fault::Empty,
    ] {
        s.consul.set_fault(fault);
        let admin = s.proxy.admin_url("/status");
        assert!(
            eventually(Duration::from_secs(3), async || {
                let st: serde_json::Value =
                    c.get(&admin).send().await.unwrap().json().await.unwrap();
                st["services"][0]["fail_static"] == true
            })
            .await,
            "fail static not reported for {fault:?}"
        );
        // Traffic keeps flowing to the last good active pool.
        for _ in 0..20 {
            assert_eq!(
                who(&c, &s.proxy.url("/")).await.as_deref(),
                Some("blue"),
                "{fault:?}"
            );
        }
        let metrics = get_text(&c, &s.proxy.admin_url("/metrics")).await;
        assert!(
            metrics.contains("switchyard_fail_static{service=\"hello-service\"} 1"),
            "{fault:?}"
        );
        // The status page's view: since when, and the episode in the history.
        let st = status(&s.proxy).await;
        let svc = &st["services"][0];
        assert!(svc["fail_static_since"].is_string(), "{fault:?}: {svc:#}");
        let last = svc["history"].as_array().and_then(|h| h.last()).cloned();
        assert_eq!(
            last.as_ref().map(|e| &e["kind"]),
            Some(&"fail_static".into()),
            "{svc:#}"
        );

        // A good answer ends fail static within one round trip.
        s.consul.set_fault(Fault::None);
        assert!(
            eventually(Duration::from_secs(3), async || {
                let st: serde_json::Value =
                    c.get(&admin).send().await.unwrap().json().await.unwrap();
                st["services"][0]["fail_static"] == false
            })
            .await,
            "no recovery after {fault:?}"
        );
        let st = status(&s.proxy).await;
        assert!(st["services"][0]["fail_static_since"].is_null(), "{st:#}");
        let last = st["services"][0]["history"]
            .as_array()
            .and_then(|h| h.last())
            .cloned();
        assert_eq!(
            last.map(|e| e["kind"].clone()),
            Some("recovered".into()),
            "{st:#}"
        );
    }
}

#[tokio::test]
async fn consul_down_keeps_serving_and_catches_up_when_back() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consul_addr = listener.local_addr().unwrap();
    let instances = vec![
        inst("b1", blue.addr, "blue", "active", "v1"),
        inst("g1", green.addr, "green", "standby", "v2"),
    ];
    let consul = FakeConsul::serve(listener, "hello-service", instances.clone());
    let p = ProxyHandle::start(&consul_config(&consul.url(), "")).await;
    let c = client();
    let url = p.url("/");
    assert!(
        eventually(Duration::from_secs(5), async || who(&c, &url)
            .await
            .as_deref()
            == Some("blue"))
        .await
    );

    drop(consul); // Consul is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..50 {
        assert_eq!(who(&c, &url).await.as_deref(), Some("blue"));
    }

    // It comes back (same port) with the route flipped: the proxy catches up.
    let listener = tokio::net::TcpListener::bind(consul_addr).await.unwrap();
    let consul = FakeConsul::serve(listener, "hello-service", instances);
    consul.set_route(&RouteValue::new("green", 5, "test").to_bytes());
    assert!(
        eventually(Duration::from_secs(12), async || who(&c, &url)
            .await
            .as_deref()
            == Some("green"))
        .await
    );
}

#[tokio::test]
async fn index_going_backwards_resets_and_picks_up_new_state() {
    let s = stack("").await;
    let c = client();
    s.consul.index_backwards(5);
    s.consul
        .set_route(&RouteValue::new("green", 2, "test").to_bytes());
    let url = s.proxy.url("/");
    assert!(
        eventually(Duration::from_secs(3), async || who(&c, &url)
            .await
            .as_deref()
            == Some("green"))
        .await
    );
}

#[tokio::test]
async fn empty_active_colour_never_replaces_a_serving_pool() {
    let s = stack("").await;
    let c = client();
    // Every blue instance disappears from ?passing (a Consul restart with an
    // empty catalog looks the same): blue keeps serving.
    s.consul
        .set_instances(vec![inst("g1", s.green.addr, "green", "standby", "v2")]);
    let admin = s.proxy.admin_url("/status");
    assert!(
        eventually(Duration::from_secs(3), async || {
            let st: serde_json::Value = c.get(&admin).send().await.unwrap().json().await.unwrap();
            st["services"][0]["fail_static"] == true
        })
        .await
    );
    for _ in 0..20 {
        assert_eq!(who(&c, &s.proxy.url("/")).await.as_deref(), Some("blue"));
    }
}

#[tokio::test]
async fn readyz_is_503_until_the_first_sync() {
    // Consul that is not there yet.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = ProxyHandle::start(&consul_config(&format!("http://{addr}"), "")).await;
    let c = client();
    let r = c.get(p.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("Consul"));
    // No instance known yet: traffic gets 503.
    assert_eq!(c.get(p.url("/")).send().await.unwrap().status(), 503);

    let blue = Upstream::start("blue").await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _consul = FakeConsul::serve(
        listener,
        "hello-service",
        vec![inst("b1", blue.addr, "blue", "active", "v1")],
    );
    let url = p.admin_url("/readyz");
    assert!(
        eventually(Duration::from_secs(12), async || c
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            == 200)
        .await
    );
}
