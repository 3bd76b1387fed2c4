//! Dev Consul HTTP API behaviour: KV, agent registration, blocking queries,
//! filters, errors and persistence, against a real server on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::{Server, index_of, start, start_with, temp_dir};
use serde_json::{Value, json};

fn web(id: &str, tags: &[&str], meta: Value, port: u16) -> Value {
    json!({"ID": id, "Name": "web", "Tags": tags, "Meta": meta, "Port": port, "Address": "127.0.0.1"})
}

// ----- KV --------------------------------------------------------------------

#[tokio::test]
async fn kv_put_get_raw_recurse_keys_delete() {
    let s = start().await;
    let resp = s.put_raw("/v1/kv/app/config?flags=42", "hello").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "true");
    s.put_raw("/v1/kv/app/sub/a", "1").await;
    s.put_raw("/v1/kv/app/sub/b", "2").await;
    s.put_raw("/v1/kv/other", "x").await;

    let (idx, v) = s.get_json("/v1/kv/app/config").await;
    let entry = &v[0];
    assert_eq!(entry["Key"], "app/config");
    assert_eq!(entry["Value"], "aGVsbG8=");
    assert_eq!(entry["Flags"], 42);
    assert_eq!(
        entry["ModifyIndex"].as_u64().unwrap(),
        idx,
        "single-key index is its ModifyIndex"
    );

    let raw = s.get("/v1/kv/app/config?raw").await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.text().await.unwrap(), "hello");

    let (_, rec) = s.get_json("/v1/kv/app/?recurse").await;
    let keys: Vec<&str> = rec
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["app/config", "app/sub/a", "app/sub/b"]);

    let (_, keys) = s.get_json("/v1/kv/app/?keys&separator=/").await;
    assert_eq!(keys, json!(["app/config", "app/sub/"]));
    let (_, all) = s.get_json("/v1/kv/?keys").await;
    assert_eq!(all.as_array().unwrap().len(), 4);

    let resp = s
        .http
        .delete(s.url("/v1/kv/app?recurse"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "true");
    assert_eq!(s.get("/v1/kv/app/config").await.status(), 404);
    assert_eq!(s.get("/v1/kv/app/?recurse").await.status(), 404);
    assert_eq!(s.get("/v1/kv/app/?keys").await.status(), 404);
    // The root keys listing is never a 404.
    s.http.delete(s.url("/v1/kv/other")).send().await.unwrap();
    let root = s.get("/v1/kv/?keys").await;
    assert_eq!(root.status(), 200);
    assert_eq!(root.json::<Value>().await.unwrap(), json!([]));
    s.stop().await;
}

#[tokio::test]
async fn kv_missing_key_is_404_with_index_and_blocking_works() {
    let s = start().await;
    s.put_raw("/v1/kv/unrelated", "1").await;
    let resp = s.get("/v1/kv/later").await;
    assert_eq!(resp.status(), 404);
    let idx = index_of(&resp);
    assert!(idx >= 1);
    assert_eq!(resp.headers()["X-Consul-KnownLeader"], "true");

    let url = s.url(&format!("/v1/kv/later?index={idx}&wait=5s"));
    let http = s.http.clone();
    let waiter = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!waiter.is_finished(), "blocking GET on a missing key waits");
    s.put_raw("/v1/kv/later", "now").await;
    let resp = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(index_of(&resp) > idx);
    s.stop().await;
}

#[tokio::test]
async fn kv_cas_race_has_exactly_one_winner() {
    let s = start().await;
    s.put_raw("/v1/kv/race", "0").await;
    let (idx, _) = s.get_json("/v1/kv/race").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = s.http.clone();
        let url = s.url(&format!("/v1/kv/race?cas={idx}"));
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .body(format!("writer-{i}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap().as_str() {
            "true" => wins += 1,
            "false" => {}
            other => panic!("unexpected body {other}"),
        }
    }
    assert_eq!(wins, 1, "exactly one CAS writer wins");
    s.stop().await;
}

#[tokio::test]
async fn kv_cas_zero_creates_only_and_delete_cas() {
    let s = start().await;
    assert_eq!(
        s.put_raw("/v1/kv/once?cas=0", "a")
            .await
            .text()
            .await
            .unwrap(),
        "true"
    );
    let resp = s.put_raw("/v1/kv/once?cas=0", "b").await;
    assert_eq!(resp.status(), 200, "a failed CAS is not an HTTP error");
    assert_eq!(resp.text().await.unwrap(), "false");
    let (idx, v) = s.get_json("/v1/kv/once").await;
    assert_eq!(v[0]["Value"], "YQ==");

    let del = |q: String| {
        let http = s.http.clone();
        let url = s.url(&format!("/v1/kv/once?{q}"));
        async move { http.delete(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(del(format!("cas={}", idx + 100)).await, "false");
    assert_eq!(del("cas=0".to_owned()).await, "false");
    assert_eq!(s.get("/v1/kv/once").await.status(), 200);
    assert_eq!(del(format!("cas={idx}")).await, "true");
    assert_eq!(s.get("/v1/kv/once").await.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn kv_rejects_bad_requests() {
    let s = start().await;
    let big = vec![b'x'; 512 * 1024 + 1];
    assert_eq!(s.put_raw("/v1/kv/big", big).await.status(), 413);
    let exactly = vec![b'x'; 512 * 1024];
    assert_eq!(s.put_raw("/v1/kv/big", exactly).await.status(), 200);
    let resp = s.put_raw("/v1/kv/k?cas=1&acquire=abc", "v").await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("Conflicting flags"));
    let resp = s
        .http
        .delete(s.url("/v1/kv/k?cas=1&recurse"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(s.put_raw("/v1/kv/k?cas=abc", "v").await.status(), 400);
    assert_eq!(s.put_raw("/v1/kv/k?flags=-1", "v").await.status(), 400);
    s.stop().await;
}

// ----- blocking queries -----------------------------------------------------

#[tokio::test]
async fn blocking_get_returns_on_write_with_higher_index() {
    let s = start().await;
    s.put_raw("/v1/kv/b", "1").await;
    let (idx, _) = s.get_json("/v1/kv/b").await;
    let url = s.url(&format!("/v1/kv/b?index={idx}&wait=10s"));
    let http = s.http.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    s.put_raw("/v1/kv/b", "2").await;
    let resp = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(index_of(&resp) > idx);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0]["Value"], "Mg==");
    s.stop().await;
}

#[tokio::test]
async fn blocking_get_times_out_with_same_index() {
    let s = start().await;
    s.put_raw("/v1/kv/t", "1").await;
    let (idx, _) = s.get_json("/v1/kv/t").await;
    let started = Instant::now();
    let resp = s.get(&format!("/v1/kv/t?index={idx}&wait=200ms")).await;
    let elapsed = started.elapsed();
    assert_eq!(index_of(&resp), idx);
    assert!(
        elapsed >= Duration::from_millis(190),
        "returned too early: {elapsed:?}"
    );
    // wait plus at most wait/16 of jitter, plus scheduling slack.
    assert!(
        elapsed < Duration::from_millis(1000),
        "returned too late: {elapsed:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn index_is_never_zero_and_lower_index_answers_at_once() {
    let s = start().await;
    for path in [
        "/v1/kv/none",
        "/v1/health/service/none",
        "/v1/catalog/services",
        "/v1/catalog/nodes",
        "/v1/health/state/any",
        "/v1/catalog/service/none",
        "/v1/health/checks/none",
    ] {
        let resp = s.get(path).await;
        assert!(index_of(&resp) >= 1, "{path} index");
        assert_eq!(resp.headers()["X-Consul-Query-Backend"], "blocking-query");
        assert_eq!(resp.headers()["X-Consul-LastContact"], "0");
        assert_eq!(resp.headers()["X-Consul-Effective-Consistency"], "leader");
    }
    s.put_raw("/v1/kv/x", "1").await;
    s.put_raw("/v1/kv/x", "2").await;
    let started = Instant::now();
    let resp = s.get("/v1/kv/x?index=1&wait=5s").await;
    assert!(index_of(&resp) > 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a lower index answers immediately"
    );
    s.stop().await;
}

#[tokio::test]
async fn unrelated_kv_write_does_not_wake_health_watch() {
    let s = start().await;
    s.register(web("web-1", &["blue"], json!({}), 8080)).await;
    let (idx, _) = s.get_json("/v1/health/service/web").await;
    let url = s.url(&format!("/v1/health/service/web?index={idx}&wait=800ms"));
    let http = s.http.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.put_raw(&format!("/v1/kv/noise/{i}"), "x").await;
        s.register(json!({"ID": format!("api-{i}"), "Name": "api", "Port": 9000 + i}))
            .await;
    }
    let resp = waiter.await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "woke early: {:?}",
        started.elapsed()
    );
    assert_eq!(index_of(&resp), idx);

    // A change to web itself wakes it.
    let url = s.url(&format!("/v1/health/service/web?index={idx}&wait=10s"));
    let http = s.http.clone();
    let waiter = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.register(web("web-2", &["green"], json!({}), 8081)).await;
    let resp = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(index_of(&resp) > idx);
    assert_eq!(
        resp.json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    s.stop().await;
}

#[tokio::test]
async fn identical_reregistration_does_not_wake_watchers() {
    let s = start().await;
    let body = json!({"ID": "web-1", "Name": "web", "Port": 8080,
                      "Check": {"TTL": "30s", "Status": "passing"}});
    s.register(body.clone()).await;
    let (idx, _) = s.get_json("/v1/health/service/web").await;
    s.register(body).await;
    let resp = s
        .get(&format!("/v1/health/service/web?index={idx}&wait=300ms"))
        .await;
    assert_eq!(index_of(&resp), idx);
    s.stop().await;
}

#[tokio::test]
async fn bad_blocking_params_are_400() {
    let s = start().await;
    for (q, msg) in [
        ("wait=abc", "Invalid wait time"),
        ("wait=10", "Invalid wait time"),
        ("index=abc", "Invalid index"),
        ("index=-1", "Invalid index"),
        ("stale&consistent", "Cannot specify ?stale with ?consistent"),
    ] {
        for path in ["/v1/kv/k", "/v1/health/service/web", "/v1/catalog/services"] {
            let resp = s.get(&format!("{path}?{q}")).await;
            assert_eq!(resp.status(), 400, "{path}?{q}");
            assert!(resp.text().await.unwrap().contains(msg), "{path}?{q}");
        }
    }
    let resp = s.get("/v1/catalog/services?stale").await;
    assert_eq!(resp.headers()["X-Consul-Effective-Consistency"], "stale");
    let resp = s.get("/v1/catalog/services?consistent").await;
    assert_eq!(
        resp.headers()["X-Consul-Effective-Consistency"],
        "consistent"
    );
    s.stop().await;
}

// ----- agent registration -----------------------------------------------------

#[tokio::test]
async fn register_accepts_snake_case_and_defaults() {
    let s = start().await;
    s.register(json!({
        "id": "r1", "name": "redis", "tags": ["primary"], "port": 6379,
        "meta": {"Some_Key": "v"},
        "tagged_addresses": {"lan": {"address": "127.0.0.1", "port": 6379}},
        "enable_tag_override": true,
        "check": {"check_id": "r1-ttl", "ttl": "30s", "status": "passing",
                   "deregister_critical_service_after": "90m"},
    }))
    .await;
    let (_, services) = s.get_json("/v1/agent/services").await;
    let r1 = &services["r1"];
    assert_eq!(r1["Service"], "redis");
    assert_eq!(r1["Tags"], json!(["primary"]));
    assert_eq!(r1["Port"], 6379);
    assert_eq!(
        r1["Meta"],
        json!({"Some_Key": "v"}),
        "meta keys are user data, kept as is"
    );
    assert_eq!(r1["EnableTagOverride"], true);
    assert_eq!(r1["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(r1["TaggedAddresses"]["lan"]["port"], 6379);
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert_eq!(checks["r1-ttl"]["Status"], "passing");
    assert_eq!(checks["r1-ttl"]["Type"], "ttl");
    assert_eq!(
        checks["r1-ttl"]["Definition"]["DeregisterCriticalServiceAfter"],
        "1h30m0s"
    );

    // ID defaults to Name; several checks get numbered IDs; no Status = critical.
    s.register(
        json!({"Name": "cache", "Checks": [{"TTL": "10s"}, {"TTL": "10s", "Name": "second"}]}),
    )
    .await;
    let (_, services) = s.get_json("/v1/agent/services").await;
    assert_eq!(services["cache"]["Tags"], json!([]));
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert_eq!(checks["service:cache:1"]["Status"], "critical");
    assert_eq!(checks["service:cache:1"]["Name"], "Service 'cache' check");
    assert_eq!(checks["service:cache:2"]["Name"], "second");
    s.stop().await;
}

#[tokio::test]
async fn register_validation_errors() {
    let s = start().await;
    for body in [
        json!({"ID": "x"}),
        json!({"Name": "x", "Address": "0.0.0.0"}),
        json!({"Name": "x", "Address": "::"}),
        json!({"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}),
        json!({"Name": "x", "Check": {"TTL": "10s", "Interval": "10s"}}),
        json!({"Name": "x", "Check": {"TTL": "10s", "Status": "bogus"}}),
        json!({"Name": "x", "Check": {"TTL": "ten"}}),
        json!({"Name": "x", "Port": "eighty"}),
    ] {
        let resp = s.put_json("/v1/agent/service/register", &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
    let resp = s.put_raw("/v1/agent/service/register", "{not json").await;
    assert_eq!(resp.status(), 400);
    let (_, services) = s.get_json("/v1/agent/services").await;
    assert_eq!(services, json!({}));
    s.stop().await;
}

#[tokio::test]
async fn replace_existing_checks_and_deregister() {
    let s = start().await;
    s.register(json!({"ID": "w", "Name": "web", "Checks": [
        {"CheckID": "a", "TTL": "10s"}, {"CheckID": "b", "TTL": "10s"}]}))
        .await;
    s.register(json!({"ID": "w", "Name": "web", "Checks": [{"CheckID": "a", "TTL": "10s"}]}))
        .await;
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert!(
        checks.get("b").is_some(),
        "without the flag old checks stay"
    );
    let resp = s
        .put_json(
            "/v1/agent/service/register?replace-existing-checks",
            &json!({"ID": "w", "Name": "web", "Checks": [{"CheckID": "a", "TTL": "10s"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert!(
        checks.get("b").is_none(),
        "replace-existing-checks removes unlisted checks"
    );
    assert!(checks.get("a").is_some());

    assert_eq!(
        s.put_empty("/v1/agent/service/deregister/w").await.status(),
        200
    );
    assert_eq!(s.get_json("/v1/agent/services").await.1, json!({}));
    assert_eq!(s.get_json("/v1/agent/checks").await.1, json!({}));
    let resp = s.put_empty("/v1/agent/service/deregister/nope").await;
    assert_eq!(resp.status(), 200, "unknown ID is a no-op");
    s.stop().await;
}

#[tokio::test]
async fn health_service_passing_tags_and_node() {
    let s = start().await;
    s.register(
        json!({"ID": "a", "Name": "web", "Tags": ["Blue", "v1"], "Port": 1,
                      "Check": {"TTL": "30s", "Status": "passing"}}),
    )
    .await;
    s.register(
        json!({"ID": "b", "Name": "web", "Tags": ["green"], "Port": 2,
                      "Check": {"TTL": "30s"}}),
    )
    .await;
    s.register(
        json!({"ID": "c", "Name": "web", "Tags": ["blue"], "Port": 3,
                      "Check": {"TTL": "30s", "Status": "warning"}}),
    )
    .await;
    let (idx_all, all) = s.get_json("/v1/health/service/web").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let entry = &all[0];
    assert_eq!(entry["Node"]["Address"], "127.0.0.1");
    assert_eq!(entry["Node"]["Node"], "test-node");
    assert_eq!(
        entry["Service"]["Address"], "",
        "service address kept as registered (empty)"
    );
    let check_ids: Vec<&str> = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert!(check_ids.contains(&"serfHealth"));

    let (idx_passing, passing) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(idx_passing, idx_all, "index reflects the unfiltered set");
    let ids: Vec<&str> = passing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a"]);
    let (_, passing_false) = s.get_json("/v1/health/service/web?passing=false").await;
    assert_eq!(passing_false.as_array().unwrap().len(), 3);
    assert_eq!(
        s.get("/v1/health/service/web?passing=maybe").await.status(),
        400
    );

    let (_, blue) = s.get_json("/v1/health/service/web?tag=BLUE").await;
    assert_eq!(
        blue.as_array().unwrap().len(),
        2,
        "tag matching ignores case"
    );
    let (_, blue_v1) = s.get_json("/v1/health/service/web?tag=blue&tag=v1").await;
    assert_eq!(
        blue_v1.as_array().unwrap().len(),
        1,
        "repeated tags are ANDed"
    );
    let (_, cat) = s.get_json("/v1/catalog/service/web?tag=green").await;
    assert_eq!(cat[0]["ServiceID"], "b");
    let (_, none) = s.get_json("/v1/health/service/nothing").await;
    assert_eq!(none, json!([]));

    let (_, services) = s.get_json("/v1/catalog/services").await;
    assert_eq!(services["web"], json!(["Blue", "v1", "green", "blue"]));
    let (_, crit) = s.get_json("/v1/health/state/critical").await;
    assert_eq!(crit.as_array().unwrap().len(), 1);
    assert_eq!(crit[0]["ServiceID"], "b");
    assert_eq!(s.get("/v1/health/state/bogus").await.status(), 400);
    let (_, checks) = s.get_json("/v1/health/checks/web").await;
    assert_eq!(checks.as_array().unwrap().len(), 3);
    s.stop().await;
}

#[tokio::test]
async fn node_check_failure_moves_every_service() {
    let s = start().await;
    s.register(json!({"ID": "a", "Name": "web", "Check": {"TTL": "30s", "Status": "passing"}}))
        .await;
    let resp = s
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "disk", "TTL": "30s", "Status": "passing"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (idx, passing) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    s.put_empty("/v1/agent/check/fail/disk").await;
    let resp = s
        .get(&format!(
            "/v1/health/service/web?passing&index={idx}&wait=5s"
        ))
        .await;
    assert!(index_of(&resp) > idx);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
    let resp = s
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "x", "TTL": "30s", "ServiceID": "nope"}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

// ----- filters -------------------------------------------------------------

#[tokio::test]
async fn filters_on_health_catalog_and_agent() {
    let s = start().await;
    s.register(web(
        "w1",
        &["blue", "canary"],
        json!({"version": "1"}),
        8001,
    ))
    .await;
    s.register(web(
        "w2",
        &["green"],
        json!({"version": "2", "env": "qa"}),
        8002,
    ))
    .await;
    s.register(web("w3", &[], json!({"version": "2"}), 8003))
        .await;

    async fn health_ids(s: &Server, filter: &str) -> Vec<String> {
        let resp = s
            .http
            .get(s.url("/v1/health/service/web"))
            .query(&[("filter", filter)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{filter}");
        let v: Value = resp.json().await.unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    assert_eq!(health_ids(&s, r#""blue" in Service.Tags"#).await, ["w1"]);
    assert_eq!(
        health_ids(&s, r#""blue" not in Service.Tags"#).await,
        ["w2", "w3"]
    );
    assert_eq!(
        health_ids(&s, r#"Service.Meta.version == "2""#).await,
        ["w2", "w3"]
    );
    assert_eq!(
        health_ids(&s, r#"Service.Meta["env"] == `qa`"#).await,
        ["w2"]
    );
    assert_eq!(health_ids(&s, "Service.Port == 8003").await, ["w3"]);
    assert_eq!(health_ids(&s, r#"Service.ID != "w1""#).await, ["w2", "w3"]);
    assert_eq!(
        health_ids(
            &s,
            r#"Service.Service == "web" and Node.Node == "test-node""#
        )
        .await,
        ["w1", "w2", "w3"]
    );
    assert_eq!(
        health_ids(
            &s,
            r#"Node.Address == "127.0.0.1" and Service.Tags is empty"#
        )
        .await,
        ["w3"]
    );
    assert_eq!(
        health_ids(&s, "Service.Tags is not empty").await,
        ["w1", "w2"]
    );
    assert_eq!(
        health_ids(&s, "Service.Meta.env is empty").await,
        ["w1", "w3"]
    );
    assert_eq!(
        health_ids(
            &s,
            r#"not ("canary" in Service.Tags or Service.Meta.env == "qa")"#
        )
        .await,
        ["w3"]
    );
    assert_eq!(
        health_ids(
            &s,
            r#"(Service.Port == 8001 or Service.Port == 8002) and "green" in Service.Tags"#
        )
        .await,
        ["w2"]
    );

    let resp = s
        .http
        .get(s.url("/v1/catalog/service/web"))
        .query(&[("filter", r#"ServiceMeta.version == "1""#)])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["ServiceID"], "w1");

    let resp = s
        .http
        .get(s.url("/v1/agent/services"))
        .query(&[("filter", r#"Meta.env == "qa""#)])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["w2"]
    );

    for bad in [
        r#"Service.ID =="#,
        r#"("x" in Service.Tags"#,
        "Service.ID = 1",
        "and or",
    ] {
        for path in [
            "/v1/health/service/web",
            "/v1/catalog/service/web",
            "/v1/agent/services",
        ] {
            let resp = s
                .http
                .get(s.url(path))
                .query(&[("filter", bad)])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{path} {bad}");
            assert!(!resp.text().await.unwrap().is_empty());
        }
    }
    s.stop().await;
}

// ----- status, errors ----------------------------------------------------------

#[tokio::test]
async fn status_and_http_errors() {
    let s = start().await;
    let (_, leader) = s.get_json("/v1/status/leader").await;
    assert_eq!(leader, json!("127.0.0.1:8300"));
    let (_, peers) = s.get_json("/v1/status/peers").await;
    assert_eq!(peers, json!(["127.0.0.1:8300"]));

    let resp = s.get("/v1/nope").await;
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    let resp = s
        .http
        .post(s.url("/v1/kv/foo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(
        allow.contains("GET") && allow.contains("PUT") && allow.contains("DELETE"),
        "{allow}"
    );
    let resp = s.get("/v1/agent/service/register").await;
    assert_eq!(resp.status(), 405);
    assert!(resp.headers()["allow"].to_str().unwrap().contains("PUT"));

    s.register(json!({"Name": "web"})).await;
    let pretty = s
        .get("/v1/agent/services?pretty")
        .await
        .text()
        .await
        .unwrap();
    assert!(pretty.contains("\n  "), "pretty output is indented");
    s.stop().await;
}

// ----- persistence -------------------------------------------------------

#[tokio::test]
async fn state_survives_restart() {
    let dir = temp_dir();
    let mut cfg = consul_support::config();
    cfg.data_dir = Some(dir.clone());
    let s = start_with(cfg.clone()).await;
    s.put_raw("/v1/kv/persist/me?flags=7", "kept").await;
    s.register(
        json!({"ID": "p1", "Name": "persisted", "Tags": ["t"], "Port": 1234,
                      "Check": {"CheckID": "p1-ttl", "TTL": "1h", "Status": "passing"}}),
    )
    .await;
    s.put_empty("/v1/agent/check/warn/p1-ttl?note=careful")
        .await;
    let (idx_before, _) = s.get_json("/v1/health/service/persisted").await;
    let (kv_idx, _) = s.get_json("/v1/kv/persist/me").await;
    s.stop().await;

    let s = start_with(cfg).await;
    let (kv_idx_after, kv) = s.get_json("/v1/kv/persist/me").await;
    assert_eq!(kv_idx_after, kv_idx);
    assert_eq!(kv[0]["Value"], "a2VwdA==");
    assert_eq!(kv[0]["Flags"], 7);
    let (idx_after, health) = s.get_json("/v1/health/service/persisted").await;
    assert_eq!(idx_after, idx_before);
    assert_eq!(health[0]["Service"]["Port"], 1234);
    assert_eq!(s.check_status("p1-ttl").await.as_deref(), Some("warning"));
    let (_, checks) = s.get_json("/v1/agent/checks").await;
    assert_eq!(checks["p1-ttl"]["Output"], "careful");
    s.put_raw("/v1/kv/persist/next", "x").await;
    let (next_idx, _) = s.get_json("/v1/kv/persist/next").await;
    assert!(
        next_idx > idx_before && next_idx > kv_idx,
        "index continues from the saved one"
    );
    s.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
