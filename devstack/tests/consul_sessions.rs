//! Sessions, KV locks and `/v1/agent/self` on a real dev Consul over HTTP:
//! the lock life cycle a leader-election client drives (create, acquire,
//! renew, release, destroy), TTL expiry, lock-delay, `release` versus
//! `delete` behavior, check-bound invalidation, and Consul's error texts.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::{Server, start_with, temp_dir};
use serde_json::{Value, json};

/// A dev Consul whose `session_ttl_min` is low enough for sub-second TTLs.
async fn start_fast() -> Server {
    let mut cfg = consul_support::config();
    cfg.session_ttl_min = Duration::from_millis(100);
    start_with(cfg).await
}

async fn create(s: &Server, body: Value) -> String {
    let resp = s.put_json("/v1/session/create", &body).await;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "create: {v}");
    v["ID"].as_str().unwrap().to_owned()
}

async fn put_text(s: &Server, path: &str, body: &str) -> (u16, String) {
    let resp = s.put_raw(path, body.to_owned()).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn kv(s: &Server, key: &str) -> Option<Value> {
    let resp = s.get(&format!("/v1/kv/{key}")).await;
    if resp.status() == 404 {
        return None;
    }
    let v: Value = resp.json().await.unwrap();
    Some(v[0].clone())
}

#[tokio::test]
async fn create_defaults_info_list_node_and_destroy() {
    let s = start_fast().await;
    let (idx0, list) = s.get_json("/v1/session/list").await;
    assert_eq!(list, json!([]));
    let id = {
        let resp = s.put_empty("/v1/session/create").await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["ID"].as_str().unwrap().to_owned()
    };
    let (idx1, info) = s.get_json(&format!("/v1/session/info/{id}")).await;
    assert!(idx1 > idx0, "create moves the sessions index");
    let sess = &info[0];
    assert_eq!(sess["ID"], id.as_str());
    assert_eq!(sess["Node"], "test-node");
    assert_eq!(sess["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(sess["ServiceChecks"], Value::Null);
    assert_eq!(sess["LockDelay"], 15_000_000_000u64);
    assert_eq!(sess["Behavior"], "release");
    assert_eq!(sess["TTL"], "");
    assert_eq!(sess["CreateIndex"], idx1);
    let (_, node) = s.get_json("/v1/session/node/test-node").await;
    assert_eq!(node.as_array().unwrap().len(), 1);
    let (_, other) = s.get_json("/v1/session/node/elsewhere").await;
    assert_eq!(other, json!([]));

    // A blocking list wakes when the session is destroyed.
    let waiter = {
        let http = s.http.clone();
        let url = s.url(&format!("/v1/session/list?index={idx1}&wait=5s"));
        tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, body) = put_text(&s, &format!("/v1/session/destroy/{id}"), "").await;
    assert_eq!((code, body.as_str()), (200, "true"));
    assert_eq!(waiter.await.unwrap(), json!([]));
    let (_, info) = s.get_json(&format!("/v1/session/info/{id}")).await;
    assert_eq!(info, json!([]), "a missing session reads as []");
    let (code, body) = put_text(&s, &format!("/v1/session/destroy/{id}"), "").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "true"),
        "destroy is idempotent"
    );
    s.stop().await;
}

#[tokio::test]
async fn acquire_release_lock_index_and_session_field() {
    let s = start_fast().await;
    let a = create(&s, json!({"Name": "a"})).await;
    let b = create(&s, json!({"Name": "b"})).await;
    let (code, body) = put_text(&s, &format!("/v1/kv/lock/leader?acquire={a}"), "A").await;
    assert_eq!((code, body.as_str()), (200, "true"));
    let entry = kv(&s, "lock/leader").await.unwrap();
    assert_eq!(entry["Session"], a.as_str());
    assert_eq!(entry["LockIndex"], 1);
    let (_, body) = put_text(&s, &format!("/v1/kv/lock/leader?acquire={b}"), "B").await;
    assert_eq!(body, "false", "a held lock refuses another session");
    let (_, body) = put_text(&s, &format!("/v1/kv/lock/leader?release={b}"), "").await;
    assert_eq!(body, "false", "only the holder releases");
    // A plain write keeps the lock.
    put_text(&s, "/v1/kv/lock/leader", "plain").await;
    assert_eq!(kv(&s, "lock/leader").await.unwrap()["Session"], a.as_str());
    let (_, body) = put_text(&s, &format!("/v1/kv/lock/leader?release={a}"), "done").await;
    assert_eq!(body, "true");
    let entry = kv(&s, "lock/leader").await.unwrap();
    assert!(entry.get("Session").is_none(), "released: {entry}");
    assert_eq!(entry["Value"], "ZG9uZQ==", "release writes the body");
    let (_, body) = put_text(&s, &format!("/v1/kv/lock/leader?acquire={b}"), "B").await;
    assert_eq!(body, "true");
    assert_eq!(kv(&s, "lock/leader").await.unwrap()["LockIndex"], 2);

    let (code, body) = put_text(&s, "/v1/kv/lock/x?acquire=not-a-session", "").await;
    assert_eq!(code, 500);
    assert_eq!(body, "invalid session \"not-a-session\"");
    let (code, body) = put_text(&s, &format!("/v1/kv/lock/x?acquire={a}&cas=0"), "").await;
    assert_eq!(code, 400);
    assert_eq!(body, "Conflicting flags: cas, acquire, release");
    s.stop().await;
}

#[tokio::test]
async fn ttl_expiry_renew_and_lock_delay() {
    let s = start_fast().await;
    let holder = create(
        &s,
        json!({"TTL": "200ms", "LockDelay": "600ms", "Behavior": "release"}),
    )
    .await;
    let other = create(&s, json!({})).await;
    let (_, body) = put_text(&s, &format!("/v1/kv/ttl/lock?acquire={holder}"), "").await;
    assert_eq!(body, "true");
    // Renewing every 100 ms keeps a 200 ms session (timer: 2 x TTL) alive.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = s.put_empty(&format!("/v1/session/renew/{holder}")).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v[0]["ID"], holder.as_str());
        assert_eq!(v[0]["TTL"], "200ms");
    }
    // Stop renewing: within 2 x TTL (plus slack) the session is gone and the
    // key is released.
    let started = Instant::now();
    loop {
        let (_, info) = s.get_json(&format!("/v1/session/info/{holder}")).await;
        if info == json!([]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "TTL session never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expired_at = Instant::now();
    let entry = kv(&s, "ttl/lock").await.unwrap();
    assert!(entry.get("Session").is_none(), "expiry releases: {entry}");
    // Lock-delay: another session cannot take the key right away.
    let (_, body) = put_text(&s, &format!("/v1/kv/ttl/lock?acquire={other}"), "").await;
    assert_eq!(body, "false", "lock-delay refuses the acquire");
    loop {
        let (_, body) = put_text(&s, &format!("/v1/kv/ttl/lock?acquire={other}"), "").await;
        if body == "true" {
            break;
        }
        assert!(
            expired_at.elapsed() < Duration::from_secs(3),
            "lock-delay never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        expired_at.elapsed() >= Duration::from_millis(450),
        "lock-delay of 600 ms held for {:?}",
        expired_at.elapsed()
    );
    let resp = s.put_empty(&format!("/v1/session/renew/{holder}")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap(),
        format!("Session id '{holder}' not found")
    );
    s.stop().await;
}

#[tokio::test]
async fn delete_behavior_and_check_bound_invalidation() {
    let s = start_fast().await;
    // A node-level TTL check, initially critical: a session tied to it is
    // refused.
    let resp = s
        .put_json(
            "/v1/agent/check/register",
            &json!({"CheckID": "node-ok", "Name": "node ok", "TTL": "1h"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = s
        .put_json(
            "/v1/session/create",
            &json!({"NodeChecks": ["serfHealth", "node-ok"], "LockDelay": 0}),
        )
        .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.text().await.unwrap(),
        "Check 'node-ok' is in critical state"
    );
    s.put_empty("/v1/agent/check/pass/node-ok").await;
    let tied = create(
        &s,
        json!({"NodeChecks": ["serfHealth", "node-ok"], "Behavior": "delete", "LockDelay": "1ms"}),
    )
    .await;
    let (_, body) = put_text(&s, &format!("/v1/kv/tied/key?acquire={tied}"), "v").await;
    assert_eq!(body, "true");
    // The check fails: the session is invalidated and, with `delete`, its
    // key is deleted.
    s.put_empty("/v1/agent/check/fail/node-ok").await;
    let (_, info) = s.get_json(&format!("/v1/session/info/{tied}")).await;
    assert_eq!(info, json!([]));
    assert!(
        kv(&s, "tied/key").await.is_none(),
        "delete behavior deletes"
    );

    // Deregistering a service check invalidates sessions tied to it.
    s.register(json!({"ID": "w1", "Name": "web", "Port": 1,
        "Check": {"CheckID": "w1-ttl", "TTL": "1h", "Status": "passing"}}))
        .await;
    let svc = create(&s, json!({"ServiceChecks": [{"ID": "w1-ttl"}]})).await;
    let (_, info) = s.get_json(&format!("/v1/session/info/{svc}")).await;
    assert_eq!(
        info[0]["ServiceChecks"],
        json!([{"ID": "w1-ttl", "Namespace": ""}])
    );
    assert_eq!(
        info[0]["NodeChecks"],
        json!(["serfHealth"]),
        "service checks alone keep the default node check"
    );
    s.put_empty("/v1/agent/service/deregister/w1").await;
    let (_, info) = s.get_json(&format!("/v1/session/info/{svc}")).await;
    assert_eq!(info, json!([]));
    s.stop().await;
}

#[tokio::test]
async fn create_errors_use_consul_texts() {
    let s = start_with(consul_support::config()).await;
    for (body, status, text) in [
        (
            json!({"TTL": "5s"}),
            500,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        (
            json!({"TTL": "soon"}),
            500,
            "Session TTL 'soon' invalid: time: invalid duration \"soon\"",
        ),
        (
            json!({"Behavior": "keep"}),
            500,
            "Invalid Behavior setting 'keep'",
        ),
        (
            json!({"Checks": ["nope"]}),
            500,
            "Missing check 'nope' registration",
        ),
        (
            json!({"Node": "elsewhere"}),
            500,
            "Missing node registration",
        ),
    ] {
        let resp = s.put_json("/v1/session/create", &body).await;
        assert_eq!(resp.status(), status, "{body}");
        assert_eq!(resp.text().await.unwrap(), text, "{body}");
    }
    let resp = s.put_raw("/v1/session/create", "{not json").await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .starts_with("Request decode failed: ")
    );
    let resp = s.get("/v1/session/info/").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), "Missing session");
    // A TTL inside the default bounds is accepted.
    let id = create(&s, json!({"TTL": "15s", "LockDelay": 5})).await;
    let (_, info) = s.get_json(&format!("/v1/session/info/{id}")).await;
    assert_eq!(info[0]["TTL"], "15s");
    assert_eq!(
        info[0]["LockDelay"], 5_000_000_000u64,
        "small numbers are seconds"
    );
    s.stop().await;
}

#[tokio::test]
async fn sessions_and_locks_survive_restart() {
    let dir = temp_dir();
    let mut cfg = consul_support::config();
    cfg.data_dir = Some(dir.clone());
    let s = start_with(cfg.clone()).await;
    let id = create(&s, json!({"Name": "kept", "TTL": "30s"})).await;
    put_text(&s, &format!("/v1/kv/held?acquire={id}"), "x").await;
    s.stop().await;
    let s = start_with(cfg).await;
    let (_, info) = s.get_json(&format!("/v1/session/info/{id}")).await;
    assert_eq!(info[0]["Name"], "kept");
    assert_eq!(kv(&s, "held").await.unwrap()["Session"], id.as_str());
    let resp = s.put_empty(&format!("/v1/session/renew/{id}")).await;
    assert_eq!(resp.status(), 200);
    s.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn agent_self_reports_config_and_member() {
    let s = start_with(consul_support::config()).await;
    let (_, me) = s.get_json("/v1/agent/self").await;
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], "test-node");
    assert_eq!(me["Config"]["Server"], true);
    assert!(me["Config"]["Version"].as_str().unwrap().starts_with("1."));
    assert_eq!(me["Member"]["Name"], "test-node");
    assert_eq!(me["Member"]["Addr"], "127.0.0.1");
    assert_eq!(me["Member"]["Status"], 1);
    assert_eq!(me["Member"]["Tags"]["role"], "consul");
    let (_, nodes) = s.get_json("/v1/catalog/nodes").await;
    assert_eq!(me["Config"]["NodeID"], nodes[0]["ID"], "one node identity");
    s.stop().await;
}
