//! Response shapes against the published Consul samples in the shared
//! fixtures directory (`$SWITCHYARD_FIXTURES_DIR`, default
//! `hashi/tests/fixtures`): every field a sample has must be present in the
//! server's answer with the same JSON type, recursively.
//!
//! Rules of the comparison:
//! - a `null` in a sample accepts any type (the sample shows an unset value);
//! - arrays: elements are compared position by position, except checks
//!   (elements with a `CheckID`): the sample lists the service check before
//!   `serfHealth`, while Consul's state store (and the dev server) puts node
//!   checks first, so a sample check is compared with the answer's check of
//!   the same kind (node `serfHealth` or not); a non-empty sample needs a
//!   non-empty answer;
//! - maps keyed by user data (`Meta`, `NodeMeta`, `ServiceMeta`, and the
//!   top level of ID/name-keyed answers) are compared value-by-value rather
//!   than key-by-key.
//!
//! Justified exceptions: `Session` of a KV entry is omitted when no lock is
//! held (real Consul marks it `omitempty`).

#![allow(clippy::unwrap_used)]

mod consul_support;

use consul_support::{Server, start};
use serde_json::{Value, json};
use switchyard_testkit::json::{kind, sample};

fn fixture(name: &str) -> Value {
    sample(&format!("consul/{name}"))
}

const USER_MAPS: &[&str] = &["Meta", "NodeMeta", "ServiceMeta"];
const EXCEPTIONS: &[&str] = &["Session"];

fn assert_shape(expected: &Value, actual: &Value, path: &str, as_map: bool) {
    match expected {
        Value::Null => {}
        Value::Object(fields) => {
            let Some(actual_fields) = actual.as_object() else {
                panic!("{path}: expected object, got {}", kind(actual));
            };
            if as_map {
                for ev in fields.values() {
                    for (k, av) in actual_fields {
                        assert_shape(ev, av, &format!("{path}[{k}]"), false);
                    }
                }
                return;
            }
            for (k, ev) in fields {
                if EXCEPTIONS.contains(&k.as_str()) {
                    continue;
                }
                let Some(av) = actual_fields.get(k) else {
                    panic!(
                        "{path}: missing field {k:?} (answer has {:?})",
                        actual_fields.keys().collect::<Vec<_>>()
                    );
                };
                assert_shape(
                    ev,
                    av,
                    &format!("{path}.{k}"),
                    USER_MAPS.contains(&k.as_str()),
                );
            }
        }
        Value::Array(items) => {
            let Some(actual_items) = actual.as_array() else {
                panic!("{path}: expected array, got {}", kind(actual));
            };
            if !items.is_empty() {
                assert!(
                    !actual_items.is_empty(),
                    "{path}: expected a non-empty array"
                );
            }
            for (i, (ev, av)) in items.iter().zip(actual_items).enumerate() {
                let av = match ev.get("CheckID") {
                    Some(id) => {
                        let serf = id == "serfHealth";
                        actual_items
                            .iter()
                            .find(|a| (a["CheckID"] == "serfHealth") == serf)
                            .unwrap_or_else(|| panic!("{path}: no check of the kind of {id}"))
                    }
                    None => av,
                };
                assert_shape(ev, av, &format!("{path}[{i}]"), false);
            }
        }
        other => assert_eq!(
            kind(other),
            kind(actual),
            "{path}: type differs (sample {other}, answer {actual})"
        ),
    }
}

async fn seeded() -> Server {
    let s = start().await;
    s.register(json!({
        "ID": "redis", "Name": "redis", "Tags": ["primary"], "Address": "10.1.10.12", "Port": 8000,
        "Meta": {"redis_version": "4.0"},
        "TaggedAddresses": {"lan": {"address": "10.1.10.12", "port": 8000},
                            "wan": {"address": "198.18.1.2", "port": 80}},
        "Weights": {"Passing": 10, "Warning": 1},
        "Check": {"TTL": "30s", "Status": "passing", "Name": "Service 'redis' check"},
    }))
    .await;
    s.put_raw("/v1/kv/zip", "test").await;
    for k in ["web/bar", "web/foo", "web/subdir/x"] {
        s.put_raw(&format!("/v1/kv/{k}"), "v").await;
    }
    s
}

async fn compare(s: &Server, path: &str, fixture_name: &str, top_level_map: bool) {
    let resp = s.get(path).await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(status == 200, "{path}: status {status}");
    assert_shape(&fixture(fixture_name), &body, fixture_name, top_level_map);
}

#[tokio::test]
async fn read_endpoints_match_fixture_shapes() {
    let s = seeded().await;
    compare(
        &s,
        "/v1/health/service/redis",
        "health_service.response.json",
        false,
    )
    .await;
    compare(
        &s,
        "/v1/health/checks/redis",
        "health_checks.response.json",
        false,
    )
    .await;
    compare(
        &s,
        "/v1/health/state/any",
        "health_state.response.json",
        false,
    )
    .await;
    compare(
        &s,
        "/v1/catalog/services",
        "catalog_services.response.json",
        true,
    )
    .await;
    compare(
        &s,
        "/v1/catalog/service/redis",
        "catalog_service.response.json",
        false,
    )
    .await;
    compare(
        &s,
        "/v1/catalog/nodes",
        "catalog_nodes.response.json",
        false,
    )
    .await;
    compare(&s, "/v1/kv/zip", "kv_get.response.json", false).await;
    compare(
        &s,
        "/v1/kv/web/?keys&separator=/",
        "kv_get_keys.response.json",
        false,
    )
    .await;
    compare(
        &s,
        "/v1/agent/services",
        "agent_services.response.json",
        true,
    )
    .await;
    compare(&s, "/v1/agent/checks", "agent_checks.response.json", true).await;
    compare(
        &s,
        "/v1/status/leader",
        "status_leader.response.json",
        false,
    )
    .await;
    compare(&s, "/v1/status/peers", "status_peers.response.json", false).await;
    compare(
        &s,
        "/v1/catalog/service/redis?filter=ServiceMeta.redis_version%20%3D%3D%20%224.0%22",
        "filter_example_catalog_service_nodemeta_os_linux.response.json",
        false,
    )
    .await;
    compare(
        &s,
        "/v1/agent/services?filter=Meta.redis_version%20%3D%3D%20%224.0%22",
        "filter_example_agent_services_meta_env_qa.response.json",
        true,
    )
    .await;

    let resp = s.get("/v1/agent/health/service/id/redis").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_shape(
        &fixture("agent_health_service_id.response.json"),
        &body,
        "agent_health_service_id",
        false,
    );
    s.stop().await;
}

#[tokio::test]
async fn write_answers_match_fixtures() {
    let s = start().await;
    let put: Value = s.put_raw("/v1/kv/k", "v").await.json().await.unwrap();
    assert_eq!(put, fixture("kv_put.response.json"));
    let conflict: Value = s.put_raw("/v1/kv/k?cas=0", "v").await.json().await.unwrap();
    assert_eq!(conflict, fixture("kv_put_cas_conflict.response.json"));
    let del: Value = s
        .http
        .delete(s.url("/v1/kv/k"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del, fixture("kv_delete.response.json"));
    s.stop().await;
}

#[tokio::test]
async fn published_request_samples_are_accepted() {
    let s = start().await;
    // The register sample uses a script check (`Args`): stored, not run.
    let resp = s
        .put_json(
            "/v1/agent/service/register",
            &fixture("agent_service_register.request.json"),
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (_, services) = s.get_json("/v1/agent/services").await;
    assert_eq!(services["redis1"]["Weights"]["Passing"], 10);

    // Snake-case config-file check fragments inside a register body.
    let mut checks = Vec::new();
    for name in [
        "check_definition_http.fragment.json",
        "check_definition_tcp.fragment.json",
        "check_definition_ttl.fragment.json",
    ] {
        checks.push(fixture(name)["check"].clone());
    }
    s.register(json!({"name": "frag", "checks": checks})).await;
    let (_, agent_checks) = s.get_json("/v1/agent/checks").await;
    assert_eq!(agent_checks["api"]["Type"], "http");
    assert_eq!(agent_checks["api"]["Definition"]["Method"], "POST");
    assert_eq!(agent_checks["ssh"]["Type"], "tcp");
    assert_eq!(agent_checks["web-app"]["Type"], "ttl");

    // The check-register sample sets both HTTP and TCP and a script; it is a
    // valid interval check.
    let resp = s
        .put_json(
            "/v1/agent/check/register",
            &fixture("agent_check_register.request.json"),
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = s
        .put_json(
            "/v1/agent/check/update/mem",
            &fixture("agent_check_update.request.json"),
        )
        .await;
    // `mem` is an HTTP check, not a TTL one: Consul refuses the update.
    assert_eq!(resp.status(), 500);
    s.stop().await;
}
