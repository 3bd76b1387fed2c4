//! Decoding the published Consul samples (tests/fixtures/consul) and encoding registrations.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/consul/",
            $name
        ))
    };
}

#[test]
fn health_service_sample() {
    let entries: Vec<ServiceEntry> =
        serde_json::from_str(fixture!("health_service.response.json")).unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.node.id, "40e4a748-2192-161a-0510-9bf59fe950b5");
    assert_eq!(e.node.node, "foobar");
    assert_eq!(e.node.address, "10.1.10.12");
    assert_eq!(e.node.datacenter, "dc1");
    assert_eq!(e.node.tagged_addresses["wan"], "10.1.10.12");
    assert_eq!(e.node.meta["instance_type"], "t2.medium");
    assert_eq!(e.service.id, "redis");
    assert_eq!(e.service.service, "redis");
    assert_eq!(e.service.tags, ["primary"]);
    assert_eq!(e.service.port, 8000);
    assert_eq!(e.service.meta["redis_version"], "4.0");
    assert_eq!(
        e.service.tagged_addresses["wan"],
        ServiceAddress {
            address: "198.18.1.2".into(),
            port: 80
        }
    );
    assert_eq!(
        e.service.weights,
        Some(AgentWeights {
            passing: 10,
            warning: 1
        })
    );
    assert_eq!(e.checks.len(), 2);
    assert_eq!(e.checks[0].check_id, "service:redis");
    assert_eq!(e.checks[0].status, CheckStatus::Passing);
    assert_eq!(e.checks[0].service_id, "redis");
    assert_eq!(e.checks[0].service_tags, ["primary"]);
    assert_eq!(e.checks[1].check_id, "serfHealth");
    assert_eq!(e.checks[1].service_id, "");
    assert_eq!(e.address(), "10.1.10.12");
    assert_eq!(e.aggregated_status(), CheckStatus::Passing);
}

#[test]
fn service_entry_address_falls_back_to_node() {
    let mut entry = ServiceEntry::default();
    entry.node.address = "10.0.0.1".into();
    assert_eq!(entry.address(), "10.0.0.1");
    entry.service.address = "172.17.0.3".into();
    assert_eq!(entry.address(), "172.17.0.3");
}

#[test]
fn aggregated_status_is_the_worst() {
    let check = |status| HealthCheck {
        status,
        ..Default::default()
    };
    let entry = ServiceEntry {
        checks: vec![
            check(CheckStatus::Passing),
            check(CheckStatus::Critical),
            check(CheckStatus::Warning),
        ],
        ..Default::default()
    };
    assert_eq!(entry.aggregated_status(), CheckStatus::Critical);
}

#[test]
fn nulls_and_unknown_statuses_are_tolerated() {
    let json = r#"[{"Node": {"Node": "n", "Address": "10.0.0.2", "TaggedAddresses": null, "Meta": null},
        "Service": {"ID": "a", "Service": "web", "Tags": null, "Meta": null, "Port": 9000,
                    "Address": "", "TaggedAddresses": null},
        "Checks": [{"CheckID": "x", "Status": "bogus"}, {"CheckID": "y", "Status": "maintenance"}]},
        {"Node": {}, "Service": {}, "Checks": null}]"#;
    let entries: Vec<ServiceEntry> = serde_json::from_str(json).unwrap();
    assert_eq!(entries[0].address(), "10.0.0.2");
    assert!(entries[0].service.tags.is_empty());
    assert_eq!(entries[0].checks[0].status, CheckStatus::Unknown);
    assert_eq!(entries[0].checks[1].status, CheckStatus::Maintenance);
    assert!(entries[1].checks.is_empty());
}

#[test]
fn catalog_samples() {
    let services: BTreeMap<String, Vec<String>> =
        serde_json::from_str(fixture!("catalog_services.response.json")).unwrap();
    assert_eq!(services["postgresql"], ["primary", "secondary"]);
    assert!(services["consul"].is_empty());

    let instances: Vec<CatalogService> =
        serde_json::from_str(fixture!("catalog_service.response.json")).unwrap();
    let s = &instances[0];
    assert_eq!(s.id, "40e4a748-2192-161a-0510-9bf59fe950b5");
    assert_eq!(s.node, "t2.320");
    assert_eq!(s.address, "192.168.10.10");
    assert_eq!(s.node_meta["somekey"], "somevalue");
    assert_eq!(s.service_id, "32a2a47f7992:nodea:5000");
    assert_eq!(s.service_name, "web");
    assert_eq!(s.service_address, "172.17.0.3");
    assert_eq!(s.service_port, 5000);
    assert_eq!(s.service_tags, ["prod"]);
    assert_eq!(s.service_meta["web_meta_value"], "baz");
    assert_eq!(s.service_tagged_addresses["wan"].port, 512);
    assert_eq!((s.create_index, s.modify_index), (51, 51));
    assert_eq!(s.address(), "172.17.0.3");

    // TaggedAddresses: null, ServiceAddress "" (use the node address).
    let instances: Vec<CatalogService> = serde_json::from_str(fixture!(
        "filter_example_catalog_service_unfiltered.response.json"
    ))
    .unwrap();
    assert_eq!(instances.len(), 3);
    assert!(instances[0].tagged_addresses.is_empty());
    assert_eq!(instances[1].address(), "198.18.0.2");
    assert_eq!(instances[1].service_tags, ["test", "tag"]);
    assert_eq!(instances[2].modify_index, 28);
}

#[test]
fn kv_samples() {
    let pairs: Vec<KvPair> = serde_json::from_str(fixture!("kv_get.response.json")).unwrap();
    let p = &pairs[0];
    assert_eq!(p.key, "zip");
    assert_eq!(
        (p.create_index, p.modify_index, p.lock_index),
        (100, 200, 200)
    );
    assert_eq!(p.flags, 0);
    assert_eq!(p.value.as_deref(), Some(&b"test"[..]));
    assert_eq!(
        p.session.as_deref(),
        Some("adf4238a-882b-9ddc-4a9d-5b6758e4159e")
    );

    let keys: Vec<String> = serde_json::from_str(fixture!("kv_get_keys.response.json")).unwrap();
    assert_eq!(keys, ["/web/bar", "/web/foo", "/web/subdir/"]);

    for (file, expected) in [
        (fixture!("kv_put.response.json"), true),
        (fixture!("kv_put_cas_conflict.response.json"), false),
        (fixture!("kv_delete.response.json"), true),
    ] {
        assert_eq!(serde_json::from_str::<bool>(file).unwrap(), expected);
    }
}

#[test]
fn kv_values_null_unpadded_and_max_flags() {
    let json = r#"[{"Key": "a", "Value": null, "Flags": 18446744073709551615},
                   {"Key": "b", "Value": "dGVzdA"},
                   {"Key": "c", "Value": ""}]"#;
    let pairs: Vec<KvPair> = serde_json::from_str(json).unwrap();
    assert_eq!(pairs[0].value, None);
    assert_eq!(pairs[0].flags, u64::MAX);
    assert_eq!(pairs[0].session, None);
    assert_eq!(pairs[1].value.as_deref(), Some(&b"test"[..]));
    assert_eq!(pairs[2].value.as_deref(), Some(&b""[..]));

    assert!(serde_json::from_str::<KvPair>(r#"{"Value": "not base64!"}"#).is_err());

    // Round trip: standard, padded base64 on the wire.
    let pair = KvPair {
        key: "k".into(),
        value: Some(vec![0xff, 0x00, 0x10]),
        ..Default::default()
    };
    let json = serde_json::to_value(&pair).unwrap();
    assert_eq!(json["Value"], "/wAQ");
    let pair = KvPair {
        value: Some(b"te".to_vec()),
        ..Default::default()
    };
    assert_eq!(serde_json::to_value(&pair).unwrap()["Value"], "dGU=");
    assert_eq!(
        serde_json::from_value::<KvPair>(serde_json::to_value(&pair).unwrap()).unwrap(),
        pair
    );
}

#[test]
fn agent_services_samples() {
    let services: BTreeMap<String, AgentService> =
        serde_json::from_str(fixture!("agent_services.response.json")).unwrap();
    let redis = &services["redis"];
    assert_eq!(redis.id, "redis");
    assert_eq!(redis.port, 8000);
    assert_eq!(redis.address, "");
    assert_eq!(redis.datacenter, "dc1");
    assert_eq!(redis.tagged_addresses["lan"].address, "127.0.0.1");

    let services: BTreeMap<String, AgentService> = serde_json::from_str(fixture!(
        "filter_example_agent_services_unfiltered.response.json"
    ))
    .unwrap();
    assert_eq!(services.len(), 3);
    assert_eq!(services["redis2"].port, 1235);
    assert_eq!(services["redis3"].meta["env"], "qa");

    // Capitalised TaggedAddresses keys (the agent health endpoint's spelling).
    let health: serde_json::Value =
        serde_json::from_str(fixture!("agent_health_service_id.response.json")).unwrap();
    let service: AgentService = serde_json::from_value(health["Service"].clone()).unwrap();
    assert_eq!(
        service.tagged_addresses["wan"],
        ServiceAddress {
            address: "198.51.100.54".into(),
            port: 80
        }
    );
    let checks: Vec<HealthCheck> = serde_json::from_value(health["Checks"].clone()).unwrap();
    assert_eq!(checks[0].status, CheckStatus::Critical);
    assert!(checks[0].output.contains("connection refused"));
}

#[test]
fn health_and_agent_check_samples() {
    let checks: Vec<HealthCheck> =
        serde_json::from_str(fixture!("health_checks.response.json")).unwrap();
    assert_eq!(checks[0].name, "Service 'redis' check");
    assert_eq!(checks[0].service_name, "redis");

    let checks: BTreeMap<String, HealthCheck> =
        serde_json::from_str(fixture!("agent_checks.response.json")).unwrap();
    assert_eq!(checks["service:redis"].check_type, "tcp");
}

#[test]
fn status_leader_sample() {
    let leader: String = serde_json::from_str(fixture!("status_leader.response.json")).unwrap();
    assert_eq!(leader, "10.1.10.12:8300");
}

/// The registration body uses the Go client's field names (fixtures/README.md, C-agentgo) and
/// leaves empty fields out.
#[test]
fn registration_serialises_with_go_client_names() {
    let reg = AgentServiceRegistration {
        id: "web-blue-1".into(),
        name: "web".into(),
        tags: vec!["blue".into()],
        address: "10.0.0.5".into(),
        port: 21000,
        meta: BTreeMap::from([("colour".into(), "blue".into())]),
        check: Some(AgentServiceCheck {
            check_id: "web-blue-1-http".into(),
            name: "HTTP /health".into(),
            http: "http://10.0.0.5:21000/health".into(),
            method: "GET".into(),
            header: BTreeMap::from([("X-Probe".into(), vec!["1".into()])]),
            interval: crate::go_duration(std::time::Duration::from_secs(2)),
            timeout: "1s".into(),
            status: Some(CheckStatus::Passing),
            deregister_critical_service_after: "1m".into(),
            tls_skip_verify: true,
            success_before_passing: 2,
            ..Default::default()
        }),
        checks: vec![
            AgentServiceCheck {
                ttl: "30s".into(),
                notes: "reported by the app".into(),
                ..Default::default()
            },
            AgentServiceCheck {
                tcp: "10.0.0.5:21000".into(),
                interval: "10s".into(),
                args: vec!["/bin/true".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let json = serde_json::to_value(&reg).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    let mut top = keys(&json);
    top.sort();
    assert_eq!(
        top,
        [
            "Address", "Check", "Checks", "ID", "Meta", "Name", "Port", "Tags"
        ]
    );
    let mut check = keys(&json["Check"]);
    check.sort();
    assert_eq!(
        check,
        [
            "CheckID",
            "DeregisterCriticalServiceAfter",
            "HTTP",
            "Header",
            "Interval",
            "Method",
            "Name",
            "Status",
            "SuccessBeforePassing",
            "TLSSkipVerify",
            "Timeout",
        ]
    );
    assert_eq!(json["Check"]["Status"], "passing");
    assert_eq!(json["Check"]["Interval"], "2s");
    assert_eq!(json["Check"]["Header"]["X-Probe"][0], "1");
    assert_eq!(
        json["Checks"][0],
        serde_json::json!({"TTL": "30s", "Notes": "reported by the app"})
    );
    assert_eq!(
        json["Checks"][1],
        serde_json::json!({"TCP": "10.0.0.5:21000", "Interval": "10s", "ScriptArgs": ["/bin/true"]})
    );

    // An empty registration sends nothing at all (Go's omitempty), not nulls.
    assert_eq!(
        serde_json::to_value(AgentServiceRegistration::default()).unwrap(),
        serde_json::json!({})
    );
    // And it reads back.
    assert_eq!(
        serde_json::from_value::<AgentServiceRegistration>(json).unwrap(),
        reg
    );
}

/// The published register sample (script check, `Args`) and the agent config-file check
/// fragments (snake_case) read into the registration types.
#[test]
fn registration_samples_deserialise() {
    let reg: AgentServiceRegistration =
        serde_json::from_str(fixture!("agent_service_register.request.json")).unwrap();
    assert_eq!(reg.id, "redis1");
    assert_eq!(reg.name, "redis");
    assert_eq!(reg.tags, ["primary", "v1"]);
    assert_eq!(reg.port, 8000);
    let check = reg.check.unwrap();
    assert_eq!(check.args, ["/usr/local/bin/check_redis.py"]);
    assert_eq!(check.deregister_critical_service_after, "90m");
    assert_eq!(reg.weights.unwrap().passing, 10);

    let wrapped: serde_json::Value =
        serde_json::from_str(fixture!("check_definition_http.fragment.json")).unwrap();
    let http: AgentServiceCheck = serde_json::from_value(wrapped["check"].clone()).unwrap();
    assert_eq!(http.check_id, "api");
    assert_eq!(http.http, "https://localhost:5000/health");
    assert_eq!(http.method, "POST");
    assert_eq!(http.header["Content-Type"], ["application/json"]);
    assert_eq!(
        (http.interval.as_str(), http.timeout.as_str()),
        ("10s", "1s")
    );

    let wrapped: serde_json::Value =
        serde_json::from_str(fixture!("check_definition_ttl.fragment.json")).unwrap();
    let ttl: AgentServiceCheck = serde_json::from_value(wrapped["check"].clone()).unwrap();
    assert_eq!(
        (ttl.check_id.as_str(), ttl.ttl.as_str()),
        ("web-app", "30s")
    );

    let wrapped: serde_json::Value =
        serde_json::from_str(fixture!("check_definition_tcp.fragment.json")).unwrap();
    let tcp: AgentServiceCheck = serde_json::from_value(wrapped["check"].clone()).unwrap();
    assert_eq!(tcp.tcp, "localhost:22");

    let check: AgentServiceCheck =
        serde_json::from_str(fixture!("agent_check_register.request.json")).unwrap();
    assert_eq!(check.check_id, "mem");
    assert_eq!(check.http, "https://example.com");
    assert!(check.tls_skip_verify);
}

#[test]
fn config_from_lookup() {
    let cfg = ConsulConfig::from_lookup(|_| None);
    assert_eq!(cfg.address, DEFAULT_ADDRESS);
    assert_eq!(cfg.token, None);

    let cfg = ConsulConfig::from_lookup(|name| match name {
        "CONSUL_HTTP_ADDR" => Some("10.0.0.1:8500".into()),
        "CONSUL_HTTP_TOKEN" => Some("secret".into()),
        _ => None,
    });
    assert_eq!(cfg.address, "10.0.0.1:8500");
    assert_eq!(cfg.token.as_deref(), Some("secret"));
    assert!(!format!("{cfg:?}").contains("secret"));
    let client = ConsulClient::new(cfg).unwrap();
    assert_eq!(client.address(), "http://10.0.0.1:8500");

    let cfg = ConsulConfig::from_lookup(|_| Some(" ".into()));
    assert_eq!(cfg.address, DEFAULT_ADDRESS);
    assert_eq!(cfg.token, None);
}

#[test]
fn bad_token_is_rejected() {
    let err = ConsulClient::new(ConsulConfig {
        token: Some("a\nb".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

/// `CONSUL_*` variables → the config, as a table: (variables, what must come out).
#[test]
fn env_table() {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use crate::tls::TlsConfig;

    let from = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ConsulConfig::from_lookup(|name| map.get(name).cloned())
    };
    let cases: Vec<(&[(&str, &str)], &str)> = vec![
        (&[], "http://127.0.0.1:8500"),
        (&[("CONSUL_HTTP_ADDR", "10.0.0.1:8500")], "10.0.0.1:8500"),
        (
            &[("CONSUL_HTTP_ADDR", "https://consul:8501")],
            "https://consul:8501",
        ),
        (
            &[("CONSUL_HTTP_ADDR", "unix:///run/consul.sock")],
            "unix:///run/consul.sock",
        ),
        // CONSUL_HTTP_SSL makes a scheme-less address https, and never lets http win.
        (
            &[
                ("CONSUL_HTTP_ADDR", "consul:8501"),
                ("CONSUL_HTTP_SSL", "true"),
            ],
            "https://consul:8501",
        ),
        (
            &[
                ("CONSUL_HTTP_ADDR", "http://consul:8501"),
                ("CONSUL_HTTP_SSL", "1"),
            ],
            "https://consul:8501",
        ),
        (
            &[
                ("CONSUL_HTTP_ADDR", "unix:///run/consul.sock"),
                ("CONSUL_HTTP_SSL", "true"),
            ],
            "unix:///run/consul.sock",
        ),
        (
            &[
                ("CONSUL_HTTP_ADDR", "consul:8500"),
                ("CONSUL_HTTP_SSL", "false"),
            ],
            "consul:8500",
        ),
        (
            &[
                ("CONSUL_HTTP_ADDR", "consul:8500"),
                ("CONSUL_HTTP_SSL", "maybe"),
            ],
            "consul:8500",
        ),
        (&[("CONSUL_HTTP_SSL", "T")], "https://127.0.0.1:8500"),
    ];
    for (vars, address) in cases {
        assert_eq!(from(vars).address, address, "{vars:?}");
    }

    let cfg = from(&[
        ("CONSUL_HTTP_TOKEN", "tok"),
        ("CONSUL_HTTP_TOKEN_FILE", "/etc/consul/token"),
        ("CONSUL_CACERT", "/etc/consul/ca.pem"),
        ("CONSUL_CAPATH", "/etc/consul/cas"),
        ("CONSUL_CLIENT_CERT", "/etc/consul/cli.pem"),
        ("CONSUL_CLIENT_KEY", "/etc/consul/cli-key.pem"),
        ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
        ("CONSUL_HTTP_SSL_VERIFY", "false"),
    ]);
    assert_eq!(cfg.token.as_deref(), Some("tok"));
    assert_eq!(cfg.token_file, Some(PathBuf::from("/etc/consul/token")));
    assert_eq!(
        cfg.tls,
        TlsConfig {
            ca_cert: Some("/etc/consul/ca.pem".into()),
            ca_path: Some("/etc/consul/cas".into()),
            client_cert: Some("/etc/consul/cli.pem".into()),
            client_key: Some("/etc/consul/cli-key.pem".into()),
            server_name: Some("server.dc1.consul".into()),
            insecure_skip_verify: true,
        }
    );
    for (verify, skip) in [
        ("true", false),
        ("0", true),
        ("F", true),
        ("nope", false),
        ("", false),
    ] {
        assert_eq!(
            from(&[("CONSUL_HTTP_SSL_VERIFY", verify)])
                .tls
                .insecure_skip_verify,
            skip,
            "{verify:?}"
        );
    }
}
