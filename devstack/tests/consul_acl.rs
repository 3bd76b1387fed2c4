//! The dev Consul with ACLs on, over real sockets: which token a request
//! carries (header, bearer, `?token=`), what a missing permission answers
//! (Consul's 403 texts), and how lists are filtered to what the token may
//! read.

#![allow(clippy::unwrap_used)]

mod consul_support;

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_devstack::consul::ConsulConfig;
use switchyard_devstack::consul::acl::{ConsulAcl, ConsulPolicy, ConsulToken};

const ADMIN: &str = "11111111-1111-4111-8111-111111111111";
const WEB: &str = "22222222-2222-4222-8222-222222222222";

async fn secured() -> consul_support::Server {
    let web = ConsulPolicy::parse(
        "web.hcl",
        r#"
service "web" {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
key_prefix "web/" {
  policy = "write"
}
key "web/locked" {
  policy = "read"
}
"#,
    )
    .unwrap();
    let acl = ConsulAcl::new([
        ConsulToken::management("acc-admin".into(), ADMIN.into(), "admin"),
        ConsulToken::with_policies("acc-web".into(), WEB.into(), "web", [&web]),
    ]);
    consul_support::start_with(ConsulConfig {
        acl: Some(Arc::new(acl)),
        ..consul_support::config()
    })
    .await
}

async fn send(
    s: &consul_support::Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, bool) {
    let mut req = s.http.request(method, s.url(path));
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let filtered = resp
        .headers()
        .get("X-Consul-Results-Filtered-By-ACLs")
        .is_some();
    (resp.status().as_u16(), resp.text().await.unwrap(), filtered)
}

#[tokio::test]
async fn tokens_permissions_and_filtering() {
    use reqwest::Method;
    let s = secured().await;

    // Status needs no token.
    assert_eq!(
        send(&s, Method::GET, "/v1/status/leader", None, None)
            .await
            .0,
        200
    );

    // Registrations: the web token may register web, not db.
    let reg = |name: &str| json!({"ID": name, "Name": name, "Port": 1});
    let (code, _, _) = send(
        &s,
        Method::PUT,
        "/v1/agent/service/register",
        Some(WEB),
        Some(reg("web")),
    )
    .await;
    assert_eq!(code, 200);
    let (code, text, _) = send(
        &s,
        Method::PUT,
        "/v1/agent/service/register",
        Some(WEB),
        Some(reg("db")),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "Permission denied: token with AccessorID 'acc-web' lacks permission 'service:write' on \"db\""
    );
    let (code, _, _) = send(
        &s,
        Method::PUT,
        "/v1/agent/service/register",
        Some(ADMIN),
        Some(reg("db")),
    )
    .await;
    assert_eq!(code, 200);

    // Lists show what the token may read, and say when something was left out.
    let (code, text, filtered) =
        send(&s, Method::GET, "/v1/catalog/services", Some(WEB), None).await;
    assert_eq!(code, 200);
    let services: Value = serde_json::from_str(&text).unwrap();
    assert!(
        services.get("web").is_some() && services.get("db").is_none(),
        "{services}"
    );
    assert!(filtered);
    let (_, text, filtered) =
        send(&s, Method::GET, "/v1/catalog/services", Some(ADMIN), None).await;
    let services: Value = serde_json::from_str(&text).unwrap();
    assert!(services.get("db").is_some() && !filtered);
    let (_, text, _) = send(&s, Method::GET, "/v1/agent/services", Some(WEB), None).await;
    let agent: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(agent.as_object().unwrap().len(), 1, "{agent}");
    // A service the token may not read: an empty list, not a 403.
    let (code, text, filtered) =
        send(&s, Method::GET, "/v1/health/service/db", Some(WEB), None).await;
    assert_eq!((code, text.as_str(), filtered), (200, "[]", true));
    let (_, text, _) = send(&s, Method::GET, "/v1/health/service/web", Some(WEB), None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Deregistering someone else's service.
    let (code, text, _) = send(
        &s,
        Method::PUT,
        "/v1/agent/service/deregister/db",
        Some(WEB),
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert!(
        text.ends_with("lacks permission 'service:write' on \"db\""),
        "{text}"
    );

    // KV: exact rule beats the prefix; recursive reads are filtered.
    for (key, token, code) in [
        ("web/a", WEB, 200),
        ("web/locked", WEB, 403),
        ("other", WEB, 403),
        ("other", ADMIN, 200),
        ("web/locked", ADMIN, 200),
    ] {
        let got = send(
            &s,
            Method::PUT,
            &format!("/v1/kv/{key}"),
            Some(token),
            Some(json!(1)),
        )
        .await;
        assert_eq!(got.0, code, "PUT {key}: {}", got.1);
    }
    let (code, text, filtered) = send(&s, Method::GET, "/v1/kv/?keys", Some(WEB), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!(["web/a", "web/locked"])
    );
    assert!(filtered);
    // A recursive delete needs write on everything under the prefix.
    let (code, text, _) = send(&s, Method::DELETE, "/v1/kv/web/?recurse", Some(WEB), None).await;
    assert_eq!(code, 403, "{text}");

    // Sessions need session:write on the node.
    let (code, text, _) = send(
        &s,
        Method::PUT,
        "/v1/session/create",
        Some(WEB),
        Some(json!({})),
    )
    .await;
    assert_eq!(code, 403);
    assert!(
        text.contains("lacks permission 'session:write' on \"test-node\""),
        "{text}"
    );
    // agent:read for /v1/agent/self.
    let (code, _, _) = send(&s, Method::GET, "/v1/agent/self", Some(WEB), None).await;
    assert_eq!(code, 403);

    // The token by bearer and by ?token=; an unknown one; none at all.
    let bearer = s
        .http
        .get(s.url("/v1/kv/web/a"))
        .bearer_auth(WEB)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let (code, _, _) = send(
        &s,
        Method::GET,
        &format!("/v1/kv/web/a?token={WEB}"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, text, _) = send(&s, Method::GET, "/v1/kv/web/a", Some("nope"), None).await;
    assert_eq!((code, text.as_str()), (403, "ACL not found"));
    // Tokens are looked up by SecretID: the anonymous token's AccessorID is
    // no secret (its SecretID is `anonymous`).
    let (code, text, _) = send(
        &s,
        Method::GET,
        "/v1/kv/web/a",
        Some("00000000-0000-0000-0000-000000000002"),
        None,
    )
    .await;
    assert_eq!((code, text.as_str()), (403, "ACL not found"));
    let (code, text, _) = send(&s, Method::GET, "/v1/kv/web/a", None, None).await;
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "Permission denied: anonymous token lacks permission 'key:read' on \"web/a\". The anonymous token is used implicitly when a request does not specify a token."
    );
    s.stop().await;
}
