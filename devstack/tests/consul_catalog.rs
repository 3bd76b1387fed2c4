//! External nodes through `/v1/catalog/register` and `/deregister`, merged
//! into the catalog and health reads of a real dev Consul: a node-level
//! `serfHealth` that fails takes its instances out of `?passing`, node
//! checks come first in health entries, and Consul's error texts.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::time::Duration;

use consul_support::{Server, start};
use serde_json::{Value, json};

fn external(status: &str) -> Value {
    json!({
        "Node": "ext-1",
        "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
        "Address": "10.0.0.7",
        "TaggedAddresses": {"lan": "10.0.0.7"},
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "web-ext", "Service": "web", "Tags": ["blue"], "Address": "10.0.0.7", "Port": 9000},
        "Checks": [
            {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": status},
            {"CheckID": "web-ext-alive", "Name": "web alive", "ServiceID": "web-ext", "Status": "passing"},
        ],
    })
}

async fn put(s: &Server, path: &str, body: &Value) -> (u16, String) {
    let resp = s.put_json(path, body).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn ids(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn external_node_joins_reads_and_failed_node_leaves_passing() {
    let s = start().await;
    s.register(json!({"ID": "web-local", "Name": "web", "Port": 8000,
        "Check": {"CheckID": "web-local-ttl", "TTL": "1h", "Status": "passing"}}))
        .await;
    assert_eq!(
        put(&s, "/v1/catalog/register", &external("passing")).await,
        (200, "true".to_owned())
    );

    let (idx, all) = s.get_json("/v1/health/service/web?passing").await;
    assert_eq!(ids(&all), vec!["web-local", "web-ext"]);
    for entry in all.as_array().unwrap() {
        assert_eq!(
            entry["Checks"][0]["CheckID"], "serfHealth",
            "node checks first: {entry}"
        );
    }
    let ext = &all[1];
    assert_eq!(ext["Node"]["Node"], "ext-1");
    assert_eq!(ext["Node"]["Address"], "10.0.0.7");
    assert_eq!(ext["Node"]["Meta"]["rack"], "r1");
    assert_eq!(ext["Checks"][1]["CheckID"], "web-ext-alive");
    assert_eq!(ext["Checks"][1]["ServiceName"], "web");

    // A blocking watcher wakes when the external node fails.
    let waiter = {
        let http = s.http.clone();
        let url = s.url(&format!(
            "/v1/health/service/web?passing&index={idx}&wait=5s"
        ));
        tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    put(&s, "/v1/catalog/register", &external("critical")).await;
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ids(&woke),
        vec!["web-local"],
        "an instance on a failed node is not passing"
    );
    let (_, all) = s.get_json("/v1/health/service/web").await;
    assert_eq!(all[1]["Checks"][0]["Status"], "critical");

    let (_, state) = s.get_json("/v1/health/state/critical").await;
    assert!(
        state
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Node"] == "ext-1" && c["CheckID"] == "serfHealth")
    );
    let (_, nodes) = s.get_json("/v1/catalog/nodes").await;
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ext-1", "test-node"]);
    let (_, svc) = s.get_json("/v1/catalog/service/web?tag=blue").await;
    assert_eq!(svc.as_array().unwrap().len(), 1);
    assert_eq!(svc[0]["Node"], "ext-1");
    assert_eq!(svc[0]["ServicePort"], 9000);
    assert_eq!(svc[0]["NodeMeta"]["rack"], "r1");
    let (_, services) = s.get_json("/v1/catalog/services").await;
    assert_eq!(services["web"], json!(["blue"]));
    let (_, checks) = s.get_json("/v1/health/checks/web").await;
    assert_eq!(checks.as_array().unwrap().len(), 2);

    // Deregistering the service, then the node.
    let body = json!({"Node": "ext-1", "ServiceID": "web-ext"});
    assert_eq!(
        put(&s, "/v1/catalog/deregister", &body).await,
        (200, "true".to_owned())
    );
    let (_, all) = s.get_json("/v1/health/service/web").await;
    assert_eq!(ids(&all), vec!["web-local"]);
    let (_, nodes) = s.get_json("/v1/catalog/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 2, "the node stays");
    put(&s, "/v1/catalog/deregister", &json!({"Node": "ext-1"})).await;
    let (_, nodes) = s.get_json("/v1/catalog/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn sessions_on_external_nodes_follow_their_serf_health() {
    let s = start().await;
    put(&s, "/v1/catalog/register", &external("passing")).await;
    let resp = s
        .put_json(
            "/v1/session/create",
            &json!({"Node": "ext-1", "LockDelay": 0}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, body) = {
        let resp = s
            .put_raw(&format!("/v1/kv/ext/lock?acquire={id}"), "x")
            .await;
        (resp.status(), resp.text().await.unwrap())
    };
    assert_eq!(body, "true");
    put(&s, "/v1/catalog/register", &external("critical")).await;
    let (_, info) = s.get_json(&format!("/v1/session/info/{id}")).await;
    assert_eq!(
        info,
        json!([]),
        "a failed serfHealth invalidates the node's sessions"
    );
    let resp = s
        .put_json("/v1/session/create", &json!({"Node": "ext-1"}))
        .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.text().await.unwrap(),
        "Check 'serfHealth' is in critical state"
    );
    s.stop().await;
}

#[tokio::test]
async fn register_errors() {
    let s = start().await;
    for (body, status, text) in [
        (json!({"Address": "10.0.0.1"}), 500, "Must provide node"),
        (
            json!({"Node": "n"}),
            500,
            "Must provide address if SkipNodeUpdate is not set",
        ),
        (
            json!({"Node": "n", "Address": "10.0.0.1", "ID": "nope"}),
            500,
            "Bad node ID: uuid string is wrong length",
        ),
        (
            json!({"Node": "n", "Address": "10.0.0.1", "Check": {"CheckID": "c", "ServiceID": "none"}}),
            500,
            "Missing service registration",
        ),
    ] {
        assert_eq!(
            put(&s, "/v1/catalog/register", &body).await,
            (status, text.to_owned()),
            "{body}"
        );
    }
    let (status, text) = put(
        &s,
        "/v1/catalog/register",
        &json!({"Node": "test-node", "Address": "127.0.0.1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("test-node"), "{text}");
    let (status, text) = put(
        &s,
        "/v1/catalog/register",
        &json!({"Node": "n", "Address": "10.0.0.1", "Check": {"CheckID": "c", "Status": "sleepy"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("sleepy"), "{text}");
    assert_eq!(
        put(&s, "/v1/catalog/deregister", &json!({})).await,
        (500, "Must provide node".to_owned())
    );
    // Nothing was half-applied: only the agent's node exists.
    let (_, nodes) = s.get_json("/v1/catalog/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    s.stop().await;
}
