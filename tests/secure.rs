//! `switchyard dev --secure` end to end: the real binary with every address
//! on port 0, Consul and Nomad over HTTPS with a generated CA, ACLs enforced
//! with the shipped policies.
//!
//! One run covers: the proxy discovers over TLS with its own token and
//! serves `/hello`; `. dev.env; switchyard status` and `switchyard switch
//! --to green` work with the operator's tokens; a wrong token fails
//! `status` with a one-line 403 naming Consul; the proxy's token cannot
//! write the route key (Consul's exact 403 text); anonymous and unknown
//! tokens are refused by both APIs as the real agents refuse them; plain
//! HTTP to the HTTPS port gets Go's answer for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_hashi::tls::TlsConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::client;
use crate::support::dev::{TempDir, addr, spawn_dev, wait_dev_json};

/// The `export K=V` lines of `dev.env`.
fn read_env(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('\'').to_owned())
        })
        .collect()
}

/// Runs `switchyard <args>` with exactly the operator's environment from
/// `dev.env` (anything inherited from the test's environment removed).
async fn switchyard(args: &[&str], env: &BTreeMap<String, String>, state: &Path) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args);
    if matches!(args.first(), Some(&("switch" | "deploy" | "rollback"))) {
        cmd.arg("--state-dir").arg(state);
    }
    for var in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
        "NOMAD_CACERT",
        "NOMAD_CAPATH",
        "SWITCHYARD_PROXIES",
        "SWITCHYARD_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env).env("NO_COLOR", "1").kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("switchyard hung")
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A raw exchange: what the server answers to `request` before it closes.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("the HTTPS port kept a plain HTTP connection open")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_secure_serves_tls_and_enforces_the_shipped_acls() {
    let tmp = TempDir::new("secure");
    let data = tmp.0.join("data");
    let log = tmp.0.join("dev.log");
    let mut dev = spawn_dev(&data, &log, &["--secure", "--ephemeral"]);
    let doc = wait_dev_json(&mut dev, &data, Duration::from_secs(90)).await;
    let (consul, nomad, proxy) = (
        addr(&doc, "consul"),
        addr(&doc, "nomad"),
        addr(&doc, "proxy"),
    );

    // The proxy found the instances over TLS with its own token.
    let plain = client();
    let resp = plain
        .get(format!("http://{proxy}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "v1");

    // dev.env: the operator's six variables, HTTPS addresses, the CA.
    let env = read_env(&data.join("dev.env"));
    assert_eq!(env["CONSUL_HTTP_ADDR"], format!("https://{consul}"));
    assert_eq!(env["NOMAD_ADDR"], format!("https://{nomad}"));
    let ca = Path::new(&env["CONSUL_CACERT"]).to_path_buf();
    assert_eq!(env["NOMAD_CACERT"], env["CONSUL_CACERT"]);
    assert!(
        ca.starts_with(std::path::absolute(&data).unwrap().join("tls")),
        "{ca:?}"
    );
    let operator = env["CONSUL_HTTP_TOKEN"].clone();
    let nomad_operator = env["NOMAD_TOKEN"].clone();
    assert!(!operator.is_empty() && !nomad_operator.is_empty());
    let proxy_token = std::fs::read_to_string(data.join("acl/consul-proxy.token"))
        .unwrap()
        .trim()
        .to_owned();

    let https = switchyard_hashi::tls::http_client_builder_with(
        &TlsConfig {
            ca_cert: Some(ca.clone()),
            ..TlsConfig::default()
        },
        "test",
    )
    .unwrap()
    .build()
    .unwrap();
    let consul_url = |path: &str| format!("https://{consul}{path}");
    let route = "/v1/kv/switchyard/routes/hello-service";

    // The proxy's token reads the route key but cannot write it.
    let read = https
        .get(consul_url(route))
        .header("X-Consul-Token", &proxy_token)
        .send()
        .await
        .unwrap();
    assert!(matches!(read.status().as_u16(), 200 | 404), "{read:?}");
    let write = https
        .put(consul_url(route))
        .header("X-Consul-Token", &proxy_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    let text = write.text().await.unwrap();
    assert!(
        text.starts_with("Permission denied: token with AccessorID '")
            && text
                .ends_with("' lacks permission 'key:write' on \"switchyard/routes/hello-service\""),
        "{text}"
    );
    // The same token as a bearer token: the same answer.
    let bearer = https
        .put(consul_url(route))
        .bearer_auth(&proxy_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 403);

    // No token: the anonymous token, default deny. The key is refused; the
    // health list comes back empty (filtered), as Consul does.
    let anon = https.get(consul_url(route)).send().await.unwrap();
    assert_eq!(anon.status(), 403);
    assert!(
        anon.text()
            .await
            .unwrap()
            .starts_with("Permission denied: anonymous token lacks permission 'key:read'")
    );
    let anon_health = https
        .get(consul_url("/v1/health/service/hello-service"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon_health.status(), 200);
    assert_eq!(
        anon_health.headers()["x-consul-results-filtered-by-acls"],
        "true"
    );
    assert_eq!(
        anon_health.json::<Value>().await.unwrap(),
        serde_json::json!([])
    );
    let operator_health: Vec<Value> = https
        .get(consul_url("/v1/health/service/hello-service?passing"))
        .header("X-Consul-Token", &operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(operator_health.len(), 4);
    // An unknown token.
    let unknown = https
        .get(consul_url(route))
        .header("X-Consul-Token", "6d1b1f5e-0000-4000-8000-000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 403);
    assert_eq!(unknown.text().await.unwrap(), "ACL not found");

    // Nomad: no token, an unknown token, the operator's token.
    let nomad_url = format!("https://{nomad}/v1/jobs");
    let none = https.get(&nomad_url).send().await.unwrap();
    assert_eq!(none.status(), 403);
    assert_eq!(none.text().await.unwrap(), "Permission denied");
    let bad = https
        .get(&nomad_url)
        .header("X-Nomad-Token", "6d1b1f5e-0000-4000-8000-000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    assert_eq!(bad.text().await.unwrap(), "ACL token not found");
    let jobs = https
        .get(&nomad_url)
        .bearer_auth(&nomad_operator)
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), 200);

    // Plain HTTP to either HTTPS port: Go's answer, then the connection closes.
    for port in [consul, nomad] {
        let answer = raw(port, b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.0 400 Bad Request\r\n")
                && answer.ends_with("Client sent an HTTP request to an HTTPS server.\n"),
            "{answer:?}"
        );
    }
    // The operator's environment: status and switch work.
    let state = tmp.0.join("state");
    let status = switchyard(&["status"], &env, &state).await;
    assert!(status.status.success(), "{}", show(&status));
    let switch = switchyard(&["switch", "--to", "green"], &env, &state).await;
    assert!(switch.status.success(), "{}", show(&switch));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = plain
            .get(format!("http://{proxy}/hello"))
            .send()
            .await
            .unwrap();
        if resp.headers()["x-app-version"] == "v2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy still serves v1 after the switch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A wrong Consul token: a one-line 403 naming the API, non-zero exit.
    let mut wrong = env.clone();
    wrong.insert(
        "CONSUL_HTTP_TOKEN".into(),
        "6d1b1f5e-0000-4000-8000-000000000000".into(),
    );
    let denied = switchyard(&["status"], &wrong, &state).await;
    assert!(!denied.status.success(), "{}", show(&denied));
    assert_ne!(denied.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("Consul") && last.contains("403") && last.contains("ACL not found"),
        "{}",
        show(&denied)
    );
}
