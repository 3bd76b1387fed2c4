//! `GET /v1/acl/token/self` on the dev Consul and the dev Nomad, over real
//! sockets: the token a request carries, with the real agents' field names;
//! what a missing or unknown token answers; what each answers with ACLs off.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use switchyard_devstack::consul::ConsulConfig;
use switchyard_devstack::consul::acl::{ConsulAcl, ConsulPolicy, ConsulToken};
use switchyard_devstack::nomad::NomadConfig;
use switchyard_devstack::nomad::acl::{NomadAcl, NomadPolicy, NomadToken};
use switchyard_testkit::http_client;
use switchyard_testkit::nomad::serve_dev_nomad;

const ADMIN: &str = "11111111-1111-4111-8111-111111111111";
const WEB: &str = "22222222-2222-4222-8222-222222222222";
const UNKNOWN: &str = "33333333-3333-4333-8333-333333333333";

async fn get(url: &str, header: &str, token: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = http_client().get(url);
    if let Some(t) = token {
        req = req.header(header, t);
    }
    let resp = req.send().await.unwrap();
    let index = resp
        .headers()
        .get(if header.starts_with("X-Consul") {
            "X-Consul-Index"
        } else {
            "X-Nomad-Index"
        })
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), resp.text().await.unwrap(), index)
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| humantime::parse_rfc3339(s).is_ok())
}

/// BLAKE2b-256 digests in base64 are 44 characters decoding to 32 bytes.
fn is_blake2b_256(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .is_ok_and(|b| b.len() == 32)
    })
}

#[tokio::test]
async fn consul_token_self() {
    let web = ConsulPolicy::parse("web.hcl", r#"service "web" { policy = "write" }"#)
        .unwrap()
        .named("web-writer");
    let acl = ConsulAcl::new([
        ConsulToken::management("acc-admin".into(), ADMIN.into(), "admin"),
        ConsulToken::with_policies("acc-web".into(), WEB.into(), "web", [&web]),
    ]);
    let s = consul_support::start_with(ConsulConfig {
        acl: Some(Arc::new(acl)),
        ..consul_support::config()
    })
    .await;
    let url = s.url("/v1/acl/token/self");

    let (code, body, index) = get(&url, "X-Consul-Token", Some(WEB)).await;
    assert_eq!(code, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["AccessorID"], "acc-web");
    assert_eq!(t["SecretID"], WEB);
    assert_eq!(t["Description"], "web");
    assert_eq!(t["Local"], false);
    let policies = t["Policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["Name"], "web-writer");
    assert!(uuid::Uuid::parse_str(policies[0]["ID"].as_str().unwrap()).is_ok());
    assert!(is_rfc3339(&t["CreateTime"]), "{t}");
    assert!(is_blake2b_256(&t["Hash"]), "{t}");
    // Consul's `SetHash`: BLAKE2b-256 of the description, "global" and the
    // policy IDs (expected value from Python's hashlib.blake2b).
    assert_eq!(
        policies[0]["ID"], "fbc5a3f0-53ac-47df-9483-04fe41e8fb8d",
        "the policy ID is derived from its name"
    );
    assert_eq!(t["Hash"], "2ZcFkPKbUtSzVunQMBp+2ywrwCXzhhS8FamvP2rbjLA=");
    assert_eq!(t["CreateIndex"], 2);
    assert_eq!(t["ModifyIndex"], 2);
    assert_eq!(index.as_deref(), Some("2"));

    // The management token holds Consul's global-management policy; the
    // bearer form of the token is read too.
    let resp = http_client()
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["AccessorID"], "acc-admin");
    assert_eq!(
        t["Policies"],
        json!([{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}])
    );
    // Hashes cover the description and the policies: different tokens differ.
    let (_, web_body, _) = get(&url, "X-Consul-Token", Some(WEB)).await;
    let web_t: Value = serde_json::from_str(&web_body).unwrap();
    assert_ne!(t["Hash"], web_t["Hash"]);

    // No token, an unknown one: Consul's 403.
    assert_eq!(
        get(&url, "X-Consul-Token", None).await.0,
        403,
        "no token reads no token"
    );
    let (code, body, _) = get(&url, "X-Consul-Token", Some(UNKNOWN)).await;
    assert_eq!((code, body.as_str()), (403, "ACL not found"));
    // The rest of the ACL API is not served.
    let (code, body, _) = get(&s.url("/v1/acl/tokens"), "X-Consul-Token", Some(ADMIN)).await;
    assert_eq!((code, body.as_str()), (404, "404 page not found"));
    s.stop().await;

    // ACLs off: Consul's 401.
    let s = consul_support::start().await;
    let (code, body, _) = get(&s.url("/v1/acl/token/self"), "X-Consul-Token", Some(WEB)).await;
    assert_eq!((code, body.as_str()), (401, "ACL support disabled"));
    s.stop().await;
}

#[tokio::test]
async fn nomad_token_self() {
    let operator = NomadPolicy::parse(
        "operator.hcl",
        r#"namespace "default" { policy = "write" }"#,
    )
    .unwrap()
    .named("switchyard-operator");
    let acl = NomadAcl::new([
        NomadToken {
            accessor_id: "acc-admin".into(),
            secret_id: ADMIN.into(),
            name: "Bootstrap Token".into(),
            policy: None,
        },
        NomadToken {
            accessor_id: "acc-op".into(),
            secret_id: WEB.into(),
            name: "switchyard operator".into(),
            policy: Some(Arc::new(operator)),
        },
    ]);
    let (_, mut served) = serve_dev_nomad(NomadConfig {
        acl: Some(Arc::new(acl)),
        ..NomadConfig::default()
    })
    .await;
    let url = format!("{}/v1/acl/token/self", served.url());

    let (code, body, index) = get(&url, "X-Nomad-Token", Some(WEB)).await;
    assert_eq!(code, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["AccessorID"], "acc-op");
    assert_eq!(t["SecretID"], WEB);
    assert_eq!(t["Name"], "switchyard operator");
    assert_eq!(t["Type"], "client");
    assert_eq!(t["Policies"], json!(["switchyard-operator"]));
    assert_eq!(t["Global"], false);
    assert!(is_rfc3339(&t["CreateTime"]), "{t}");
    assert!(is_blake2b_256(&t["Hash"]), "{t}");
    // Nomad's `SetHash`: BLAKE2b-256 of the name, the type, the policies and
    // "local" (expected value from Python's hashlib.blake2b).
    assert_eq!(t["Hash"], "Chi7prPaNuECVPV1bB4HGlhy4koUnZ73vCTfKzYRuYo=");
    assert_eq!(t["CreateIndex"], 2);
    assert_eq!(t["ModifyIndex"], 2);
    assert_eq!(index.as_deref(), Some("2"));

    let (code, body, _) = get(&url, "X-Nomad-Token", Some(ADMIN)).await;
    assert_eq!(code, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["Type"], "management");
    assert_eq!(t["Policies"], Value::Null);
    assert_eq!(t["Global"], true);

    // No token: Nomad's anonymous token; an unknown one: 403.
    let (code, body, _) = get(&url, "X-Nomad-Token", None).await;
    assert_eq!(code, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["AccessorID"], "anonymous");
    assert_eq!(t["Name"], "Anonymous Token");
    assert_eq!(t["Policies"], json!(["anonymous"]));
    let (code, body, _) = get(&url, "X-Nomad-Token", Some(UNKNOWN)).await;
    assert_eq!((code, body.as_str()), (403, "Permission denied"));
    // The rest of the ACL API is not served.
    let (code, body, _) = get(
        &format!("{}/v1/acl/tokens", served.url()),
        "X-Nomad-Token",
        Some(ADMIN),
    )
    .await;
    assert_eq!((code, body.as_str()), (404, "Invalid URL"));
    served.stop(Duration::from_secs(30)).await.unwrap().unwrap();

    // ACLs off: Nomad's `ACL.WhoAmI` answers its acls-disabled token.
    let (_, mut served) = serve_dev_nomad(NomadConfig::default()).await;
    let url = format!("{}/v1/acl/token/self", served.url());
    let (code, body, _) = get(&url, "X-Nomad-Token", Some(WEB)).await;
    assert_eq!(code, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["AccessorID"], "acls-disabled");
    assert_eq!(t["Name"], "ACLs disabled token");
    assert_eq!(t["Type"], "client");
    served.stop(Duration::from_secs(30)).await.unwrap().unwrap();
}
