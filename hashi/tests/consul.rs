use std::collections::BTreeMap;
use std::time::Duration;

use switchyard_hashi::consul::{
    AgentServiceCheck, AgentServiceRegistration, CheckStatus, ConsulClient, ConsulConfig,
    HealthQuery, KvWrite,
};
use switchyard_hashi::{Error, QueryMeta, QueryOptions};

use crate::support::{MockServer, Reply, closed_port, fixture};

fn client(server: &MockServer) -> ConsulClient {
    ConsulClient::new(ConsulConfig {
        address: server.url(),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn health_service_blocking_read() {
    let server = MockServer::always(
        Reply::json(fixture("consul/health_service.response.json"))
            .header("X-Consul-Index", 43)
            .header("X-Consul-KnownLeader", "true")
            .header("X-Consul-LastContact", 12),
    )
    .await;
    let consul = ConsulClient::new(ConsulConfig {
        // host:port without a scheme, as CONSUL_HTTP_ADDR usually is
        address: server.host_port(),
        token: Some("acl-token".into()),
        datacenter: Some("dc2".into()),
        ..Default::default()
    })
    .unwrap();
    let query = HealthQuery {
        passing: true,
        tags: vec!["blue".into(), "v 2".into()],
        filter: Some(r#"Service.Meta.colour == "blue""#.into()),
    };
    let opts = QueryOptions {
        index: 42,
        wait: Some(Duration::from_secs(300)),
        stale: true,
    };
    let (entries, meta) = consul.health_service("web", &query, &opts).await.unwrap();

    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].service.id, "redis");
    assert_eq!(entries[0].address(), "10.1.10.12");
    assert_eq!(entries[0].service.port, 8000);
    assert_eq!(
        meta,
        QueryMeta {
            index: 43,
            known_leader: true,
            last_contact: Duration::from_millis(12),
        }
    );

    let req = server.single();
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.target(),
        "/v1/health/service/web?index=42&wait=300000ms&stale&passing=1&tag=blue&tag=v%202\
         &filter=Service.Meta.colour%20%3D%3D%20%22blue%22&dc=dc2"
    );
    assert_eq!(req.header("x-consul-token"), Some("acl-token"));
    assert!(req.body.is_empty());
}

#[tokio::test]
async fn non_blocking_read_sends_no_index_and_no_token() {
    let server = MockServer::always(Reply::json("[]").header("X-Consul-Index", 7)).await;
    let consul = client(&server);
    let (entries, meta) = consul
        .health_service(
            "my service/x",
            &HealthQuery::default(),
            &QueryOptions::default(),
        )
        .await
        .unwrap();
    assert!(entries.is_empty());
    assert_eq!(meta.index, 7);
    assert!(!meta.known_leader);
    let req = server.single();
    assert_eq!(req.target(), "/v1/health/service/my%20service%2Fx");
    assert_eq!(req.header("x-consul-token"), None);
}

#[tokio::test]
async fn missing_headers_default_and_garbage_index_is_an_error() {
    let server = MockServer::always(Reply::json("[]")).await;
    let (_, meta) = client(&server)
        .catalog_service("web", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(meta, QueryMeta::default());

    let server = MockServer::always(Reply::json("[]").header("X-Consul-Index", "12abc")).await;
    let err = client(&server)
        .catalog_service("web", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidHeader { name: "X-Consul-Index", ref value } if value == "12abc"),
        "{err:?}"
    );
}

#[tokio::test]
async fn catalog_services_and_service() {
    let server = MockServer::start(|req| match req.path.as_str() {
        "/v1/catalog/services" => {
            Reply::json(r#"{"web": ["blue"], "consul": null}"#).header("X-Consul-Index", 5)
        }
        _ => Reply::json(fixture("consul/catalog_service.response.json"))
            .header("X-Consul-Index", 51),
    })
    .await;
    let consul = client(&server);
    let (services, meta) = consul
        .catalog_services(&QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(services["web"], ["blue"]);
    assert!(services["consul"].is_empty());
    assert_eq!(meta.index, 5);

    let (instances, meta) = consul
        .catalog_service(
            "web",
            &QueryOptions::blocking(5, Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    assert_eq!(instances[0].address(), "172.17.0.3");
    assert_eq!(instances[0].service_port, 5000);
    assert_eq!(meta.index, 51);
    assert_eq!(
        server.requests()[1].target(),
        "/v1/catalog/service/web?index=5&wait=1500ms"
    );
}

#[tokio::test]
async fn kv_get_found_and_missing() {
    let server = MockServer::start(|req| {
        if req.path == "/v1/kv/app/blue%20green/zip" {
            Reply::json(fixture("consul/kv_get.response.json")).header("X-Consul-Index", 200)
        } else {
            // Consul answers a missing key with 404, an empty body and the current index.
            Reply::new(404, "").header("X-Consul-Index", 77)
        }
    })
    .await;
    let consul = client(&server);

    let (pair, meta) = consul
        .kv_get("/app/blue green/zip", &QueryOptions::default())
        .await
        .unwrap();
    let pair = pair.unwrap();
    assert_eq!(pair.value.as_deref(), Some(&b"test"[..]));
    assert_eq!(pair.modify_index, 200);
    assert_eq!(meta.index, 200);

    let (pair, meta) = consul
        .kv_get(
            "app/missing",
            &QueryOptions::blocking(70, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(pair, None);
    assert_eq!(
        meta.index, 77,
        "a blocking read can wait for the key to appear"
    );
    assert_eq!(
        server.requests()[1].target(),
        "/v1/kv/app/missing?index=70&wait=60000ms"
    );
}

#[tokio::test]
async fn kv_list_and_keys() {
    let server = MockServer::start(|req| match req.query.as_deref() {
        Some("recurse") => {
            Reply::json(fixture("consul/kv_get.response.json")).header("X-Consul-Index", 3)
        }
        Some("keys&separator=%2F") => {
            Reply::json(fixture("consul/kv_get_keys.response.json")).header("X-Consul-Index", 4)
        }
        _ => Reply::new(404, "").header("X-Consul-Index", 9),
    })
    .await;
    let consul = client(&server);

    let (pairs, meta) = consul
        .kv_list("web/", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(meta.index, 3);

    let (keys, _) = consul
        .kv_keys("web/", Some("/"), &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(keys, ["/web/bar", "/web/foo", "/web/subdir/"]);

    // An empty prefix answers 404: that is an empty listing, not an error.
    let (keys, meta) = consul
        .kv_keys("nothing/", None, &QueryOptions::default())
        .await
        .unwrap();
    assert!(keys.is_empty());
    assert_eq!(meta.index, 9);

    let targets: Vec<_> = server.requests().iter().map(|r| r.target()).collect();
    assert_eq!(
        targets,
        [
            "/v1/kv/web/?recurse",
            "/v1/kv/web/?keys&separator=%2F",
            "/v1/kv/nothing/?keys"
        ]
    );
}

#[tokio::test]
async fn kv_put_cas_conflict_is_false() {
    let server = MockServer::always(Reply::json(fixture(
        "consul/kv_put_cas_conflict.response.json",
    )))
    .await;
    let written = client(&server)
        .kv_put(
            "switchyard/web/active",
            b"blue\n\x00",
            &KvWrite {
                cas: Some(5),
                flags: Some(u64::MAX),
            },
        )
        .await
        .unwrap();
    assert!(!written);
    let req = server.single();
    assert_eq!(req.method, "PUT");
    assert_eq!(
        req.target(),
        "/v1/kv/switchyard/web/active?cas=5&flags=18446744073709551615"
    );
    assert_eq!(req.body, b"blue\n\x00", "raw bytes, not JSON or base64");
    assert_eq!(req.header("content-type"), Some("application/octet-stream"));
}

#[tokio::test]
async fn kv_put_and_delete_succeed() {
    let server = MockServer::always(Reply::json("true")).await;
    let consul = client(&server);
    assert!(consul.kv_put("k", b"v", &KvWrite::default()).await.unwrap());
    assert!(consul.kv_delete("k", Some(0)).await.unwrap());
    assert!(consul.kv_delete("k", None).await.unwrap());
    let requests = server.requests();
    assert_eq!(requests[0].target(), "/v1/kv/k");
    assert_eq!(
        (requests[1].method.as_str(), requests[1].target()),
        ("DELETE", "/v1/kv/k?cas=0".to_owned())
    );
    assert_eq!(requests[2].target(), "/v1/kv/k");
}

#[tokio::test]
async fn agent_service_register_body() {
    let server = MockServer::always(Reply::new(200, "")).await;
    let consul = ConsulClient::new(ConsulConfig {
        address: server.url(),
        token: Some("t".into()),
        ..Default::default()
    })
    .unwrap();
    let reg = AgentServiceRegistration {
        id: "_nomad-task-abc-web-http".into(),
        name: "web".into(),
        tags: vec!["blue".into()],
        address: "127.0.0.1".into(),
        port: 23456,
        meta: BTreeMap::from([("external-source".into(), "nomad".into())]),
        checks: vec![AgentServiceCheck {
            check_id: "_nomad-check-1".into(),
            name: "alive".into(),
            http: "http://127.0.0.1:23456/health".into(),
            interval: "1s".into(),
            timeout: "500ms".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    consul.agent_service_register(&reg).await.unwrap();
    consul
        .agent_service_deregister("_nomad-task-abc-web-http")
        .await
        .unwrap();

    let requests = server.requests();
    let register = &requests[0];
    assert_eq!(
        (register.method.as_str(), register.path.as_str()),
        ("PUT", "/v1/agent/service/register")
    );
    assert_eq!(register.header("content-type"), Some("application/json"));
    assert_eq!(register.header("x-consul-token"), Some("t"));
    assert_eq!(
        register.json(),
        serde_json::json!({
            "ID": "_nomad-task-abc-web-http",
            "Name": "web",
            "Tags": ["blue"],
            "Address": "127.0.0.1",
            "Port": 23456,
            "Meta": {"external-source": "nomad"},
            "Checks": [{
                "CheckID": "_nomad-check-1",
                "Name": "alive",
                "HTTP": "http://127.0.0.1:23456/health",
                "Interval": "1s",
                "Timeout": "500ms"
            }]
        })
    );
    let deregister = &requests[1];
    assert_eq!(deregister.method, "PUT");
    assert_eq!(
        deregister.target(),
        "/v1/agent/service/deregister/_nomad-task-abc-web-http"
    );
}

#[tokio::test]
async fn agent_services_and_ttl_checks() {
    let server = MockServer::start(|req| {
        if req.path == "/v1/agent/services" {
            Reply::json(fixture("consul/agent_services.response.json"))
        } else {
            Reply::new(200, "")
        }
    })
    .await;
    let consul = client(&server);
    let services = consul.agent_services().await.unwrap();
    assert_eq!(services["redis"].port, 8000);

    consul
        .agent_check_ttl("service:web", CheckStatus::Passing, None)
        .await
        .unwrap();
    consul
        .agent_check_ttl("service:web", CheckStatus::Warning, Some("slow & steady"))
        .await
        .unwrap();
    consul
        .agent_check_ttl("service:web", CheckStatus::Critical, Some(""))
        .await
        .unwrap();
    let err = consul
        .agent_check_ttl("service:web", CheckStatus::Maintenance, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        4,
        "the maintenance update is refused locally"
    );
    let sent: Vec<_> = requests[1..]
        .iter()
        .map(|r| (r.method.clone(), r.target()))
        .collect();
    assert_eq!(
        sent,
        [
            (
                "PUT".to_owned(),
                "/v1/agent/check/pass/service%3Aweb".to_owned()
            ),
            (
                "PUT".to_owned(),
                "/v1/agent/check/warn/service%3Aweb?note=slow%20%26%20steady".to_owned()
            ),
            (
                "PUT".to_owned(),
                "/v1/agent/check/fail/service%3Aweb?note=".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn status_leader_is_a_json_string() {
    let server =
        MockServer::always(Reply::json(fixture("consul/status_leader.response.json"))).await;
    assert_eq!(
        client(&server).status_leader().await.unwrap(),
        "10.1.10.12:8300"
    );
    assert_eq!(server.single().path, "/v1/status/leader");
}

#[tokio::test]
async fn error_answers() {
    let server = MockServer::start(|req| match req.path.as_str() {
        "/v1/health/service/garbage" => Reply::json("{not json").header("X-Consul-Index", 1),
        "/v1/health/service/denied" => {
            Reply::new(403, "  Permission denied: token lacks service:read \n")
        }
        "/v1/kv/big" => Reply::new(413, "x".repeat(5000)),
        _ => Reply::new(500, "rpc error: No cluster leader"),
    })
    .await;
    let consul = client(&server);
    let read = |name: &'static str| {
        let consul = consul.clone();
        async move {
            consul
                .health_service(name, &HealthQuery::default(), &QueryOptions::default())
                .await
                .unwrap_err()
        }
    };

    let err = read("garbage").await;
    assert!(
        matches!(&err, Error::Decode { what, .. } if what == "response to GET /v1/health/service/garbage"),
        "{err:?}"
    );
    assert_eq!(err.status(), None);
    assert!(!err.is_transport());
    assert!(err.to_string().contains("line 1"), "{err}");

    let err = read("denied").await;
    assert_eq!(err.status(), Some(403));
    assert!(
        matches!(&err, Error::PermissionDenied(d) if d.message == "Permission denied: token lacks service:read"),
        "{err:?}"
    );

    let err = read("other").await;
    assert_eq!(err.status(), Some(500));

    let err = consul
        .kv_put("big", b"x", &KvWrite::default())
        .await
        .unwrap_err();
    let Error::Status { status, body } = err else {
        panic!("{err:?}")
    };
    assert_eq!(status, 413);
    assert!(
        body.len() < 1100,
        "error bodies are truncated: {} bytes",
        body.len()
    );
    assert!(body.ends_with('…'));

    // A 404 on a non-KV read is an error, not "empty".
    let server = MockServer::always(Reply::new(404, "not found")).await;
    let err = client(&server)
        .catalog_services(&QueryOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn transport_errors_are_classified() {
    let consul = ConsulClient::new(ConsulConfig {
        address: closed_port().await,
        ..Default::default()
    })
    .unwrap();
    let err = consul.status_leader().await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(!err.is_timeout());
    assert_eq!(err.status(), None);
    // The message carries the reason, not just the URL: logging `%err` is enough.
    let text = err.to_string();
    assert!(text.contains("/v1/status/leader"), "{text}");
    assert!(text.contains("connect"), "{text}");
    assert!(
        std::error::Error::source(&err).is_none(),
        "no repeated chain"
    );
}

#[tokio::test]
async fn invalid_addresses_and_arguments() {
    for address in ["ftp://127.0.0.1:8501", "127.0.0.1:8500/v1", "unix://"] {
        let err = ConsulClient::new(ConsulConfig {
            address: address.into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidAddress(_)),
            "{address}: {err:?}"
        );
    }
    let server = MockServer::always(Reply::json("[]")).await;
    let err = client(&server)
        .kv_get("a/../b", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(server.requests().is_empty());
}
