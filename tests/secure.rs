//! `switchyard dev --secure` end to end: the real binary with every address
//! on port 0, Consul and Nomad over HTTPS with a generated CA, ACLs enforced
//! with the shipped policies, and every controller command run with exactly
//! the operator's environment from `dev.env` (nothing inherited), as on a
//! real secure cluster.
//!
//! One stack, one run, in order:
//! - the proxy discovers over TLS with its own token and serves `/hello`;
//!   the proxy's token cannot write the route key (Consul's exact 403
//!   text); anonymous and unknown tokens are refused by both APIs as the
//!   real agents refuse them; each agent's `/v1/acl/token/self` names the
//!   operator's token and policy; plain HTTP to the HTTPS port gets Go's
//!   answer;
//! - `status` works; `switch --to green` switches, and a second
//!   `switch --to green` succeeds changing nothing (one history entry); a
//!   wrong token fails `status` with a one-line 403 naming Consul;
//! - a second `switchyard proxy` (the proxy's least-privilege token, over
//!   TLS) registers itself in Consul; a switch waits for both proxies and
//!   both serve the new colour; `rollback` twice is one rollback;
//! - an instance registered through `/v1/catalog/register` on a node whose
//!   `serfHealth` is critical is shown as `node failed` and ignored: the
//!   switch goes through and no proxy routes to it;
//! - the job is canary-style (`canary = count` in both groups): `deploy`
//!   places canaries, promotes them and the standby serves the version;
//! - the second proxy stopped (SIGSTOP): its Consul check goes critical and
//!   the switch pre-flight refuses naming it, writing nothing; resumed and
//!   stopped with SIGTERM it deregisters itself with its own token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::ConsulClient;
use switchyard_hashi::tls::TlsConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::dev::{SecureDev, TempDir, history, operator_env, start_secure};
use crate::support::proxy_process::ProxyProcess;
use crate::support::{client, get_text};

const SERVICE: &str = "hello-service";
const ROUTE_KEY: &str = "switchyard/routes/hello-service";

/// The shipped demo job made canary-style: `canary = count` in both groups' `update` block
/// (Nomad's own blue/green recipe).
fn canary_job(dir: &Path) -> PathBuf {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hello-service.nomad.hcl"),
    )
    .unwrap();
    let line = "      max_parallel      = 2\n";
    assert_eq!(
        source.matches(line).count(),
        2,
        "the demo job's update changed"
    );
    assert_eq!(
        source.matches("count = 2").count(),
        2,
        "the demo job's count changed"
    );
    let job = source.replace(line, &format!("{line}      canary            = 2\n"));
    let path = dir.join("hello-service.nomad.hcl");
    std::fs::write(&path, job).unwrap();
    path
}

/// Runs `switchyard <args>` with exactly the operator's environment `env` (anything
/// inherited from the test's environment removed).
async fn switchyard(args: &[&str], env: &BTreeMap<String, String>, state: &Path) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args);
    if matches!(args.first(), Some(&("switch" | "deploy" | "rollback"))) {
        cmd.arg("--state-dir").arg(state);
    }
    operator_env(&mut cmd, env);
    cmd.env("NO_COLOR", "1");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last line of stderr: a failed command's one-line cause.
fn cause(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

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

/// Waits (at most 15 s) until `GET /hello` on `proxy` (with `headers`) answers `version`.
async fn wait_serves(proxy: SocketAddr, headers: &[(&str, &str)], version: &str) {
    let plain = client();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut req = plain.get(format!("http://{proxy}/hello"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let got = match req.send().await {
            Ok(resp) if resp.status() == 200 => resp
                .headers()
                .get("x-app-version")
                .map(|v| v.to_str().unwrap_or_default().to_owned()),
            _ => None,
        };
        if got.as_deref() == Some(version) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{proxy} {headers:?} still serves {got:?}, not {version}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `command` of every history entry, oldest first.
async fn commands(consul: &ConsulClient) -> Vec<String> {
    history(consul, SERVICE)
        .await
        .iter()
        .map(|e| e["command"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The route key's `ModifyIndex` (`None` while absent).
async fn route_index(consul: &ConsulClient) -> Option<u64> {
    let (pair, _) = consul
        .kv_get(ROUTE_KEY, &QueryOptions::default())
        .await
        .unwrap();
    pair.map(|p| p.modify_index)
}

/// A second `switchyard proxy` next to the dev stack's, configured as an operator would on a
/// real cluster: Consul over HTTPS with the CA, the proxy's own token from `acl/`, and its
/// registration in Consul.
fn second_proxy(dev: &SecureDev, dir: &Path) -> ProxyProcess {
    let config = dir.join("proxy-2.toml");
    std::fs::write(
        &config,
        format!(
            r#"[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[log]
format = "json"
access_log = false
[shutdown]
deregister_delay = "0s"
[upgrade]
socket = "{socket}"
[consul]
address = "{consul}"
token_file = "{token}"
ca_cert = "{ca}"
[registration]
check_interval = "1s"
check_timeout = "1s"
[[services]]
name = "{SERVICE}"
consul = {{}}
"#,
            consul = dev.env["CONSUL_HTTP_ADDR"],
            token = dev.token_file("consul-proxy").display(),
            ca = dev.ca_cert().display(),
            socket = dir.join("proxy-2-upgrade.sock").display(),
        ),
    )
    .unwrap();
    ProxyProcess::spawn(&config, false)
}

/// `GET https://<consul><path>` with `token`, as JSON.
async fn consul_json(
    https: &reqwest::Client,
    consul: SocketAddr,
    token: &str,
    path: &str,
) -> Value {
    agent_json(https, consul, "X-Consul-Token", token, path).await
}

/// `GET path` on an agent at `addr` with `token` in `token_header`; it
/// must answer 200 with JSON.
async fn agent_json(
    https: &reqwest::Client,
    addr: SocketAddr,
    token_header: &str,
    token: &str,
    path: &str,
) -> Value {
    let resp = https
        .get(format!("https://{addr}{path}"))
        .header(token_header, token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// The worst status of the checks of service `id` in Consul's view, as the management token
/// sees them.
async fn check_status(
    https: &reqwest::Client,
    consul: SocketAddr,
    token: &str,
    id: &str,
) -> String {
    let checks = consul_json(https, consul, token, "/v1/health/checks/switchyard-proxy").await;
    let mine: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ServiceID"] == id)
        .map(|c| c["Status"].as_str().unwrap_or_default())
        .collect();
    assert!(!mine.is_empty(), "no check of {id}: {checks}");
    ["critical", "warning"]
        .into_iter()
        .find(|s| mine.contains(s))
        .unwrap_or("passing")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_secure_runs_every_operator_scenario_with_only_dev_env() {
    let started = Instant::now();
    let tmp = TempDir::new("secure");
    let job = canary_job(&tmp.0);
    let stack = start_secure(&tmp.0, &["--job", job.to_str().unwrap()]).await;
    let data = stack.data.clone();
    let (consul, nomad, proxy) = (
        stack.addr("consul"),
        stack.addr("nomad"),
        stack.addr("proxy"),
    );
    let env = stack.env.clone();
    let state = tmp.0.join("state");
    let management = stack.token("consul-management");
    let admin = stack.consul(Some("consul-management"));

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
    let env = &env;
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
    // Each agent reads the operator's token back with the policy named as
    // the operator's commands create it (`consul acl token read -self`,
    // `nomad acl token self`).
    let me = consul_json(&https, consul, &operator, "/v1/acl/token/self").await;
    assert_eq!(me["SecretID"], operator.as_str());
    assert_eq!(me["Description"], "switchyard operator");
    assert_eq!(me["Policies"][0]["Name"], "switchyard-operator");
    let me = agent_json(
        &https,
        nomad,
        "X-Nomad-Token",
        &nomad_operator,
        "/v1/acl/token/self",
    )
    .await;
    assert_eq!(me["SecretID"], nomad_operator.as_str());
    assert_eq!(me["Name"], "switchyard operator");
    assert_eq!(me["Type"], "client");
    assert_eq!(me["Policies"], json!(["switchyard-operator"]));
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
    // The operator's environment: status, then `switch --to green` twice is one switch.
    let status = switchyard(&["status"], env, &state).await;
    assert!(status.status.success(), "{}", show(&status));
    assert!(stdout(&status).contains("blue"), "{}", show(&status));
    let switch = switchyard(&["switch", "--to", "green"], env, &state).await;
    assert!(switch.status.success(), "{}", show(&switch));
    assert!(
        stdout(&switch).contains("now serves green (was blue)"),
        "{}",
        show(&switch)
    );
    wait_serves(proxy, &[], "v2").await;
    let routed = route_index(&admin).await;
    let again = switchyard(&["switch", "--to", "green"], env, &state).await;
    assert!(again.status.success(), "{}", show(&again));
    assert!(
        stdout(&again).contains("already") && stdout(&again).contains("nothing changed"),
        "{}",
        show(&again)
    );
    assert_eq!(
        route_index(&admin).await,
        routed,
        "the second switch wrote the route key"
    );
    assert_eq!(commands(&admin).await, ["switch"], "one switch recorded");
    wait_serves(proxy, &[], "v2").await;

    // A wrong Consul token: a one-line 403 naming the API, non-zero exit.
    let mut wrong = env.clone();
    wrong.insert(
        "CONSUL_HTTP_TOKEN".into(),
        "6d1b1f5e-0000-4000-8000-000000000000".into(),
    );
    let denied = switchyard(&["status"], &wrong, &state).await;
    assert_ne!(denied.status.code(), Some(0), "{}", show(&denied));
    let last = cause(&denied);
    assert!(
        last.contains("Consul") && last.contains("403") && last.contains("ACL not found"),
        "{}",
        show(&denied)
    );
    eprintln!(
        "secure: TLS, ACLs, switch --to twice: {:?}",
        started.elapsed()
    );

    // A second proxy with the proxy's least-privilege token registers itself; a switch waits
    // for both, and both serve the new colour.
    let mut second = second_proxy(&stack, &tmp.0);
    let second_traffic = second.address("proxy listening").await;
    let registered = second.wait_for("registered in Consul").await;
    let second_id = registered["id"].as_str().unwrap().to_owned();
    assert!(second_id.starts_with("switchyard-proxy-"), "{registered}");
    wait_serves(second_traffic, &[], "v2").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while check_status(&https, consul, &management, &second_id).await != "passing" {
        assert!(
            Instant::now() < deadline,
            "the second proxy never passed its check"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let switch = switchyard(&["switch", "--to", "blue"], env, &state).await;
    assert!(switch.status.success(), "{}", show(&switch));
    assert!(
        stdout(&switch).contains("now serves blue (was green)")
            && stdout(&switch).contains("; 2 proxy(ies) followed in "),
        "{}",
        show(&switch)
    );
    wait_serves(proxy, &[], "v1").await;
    wait_serves(second_traffic, &[], "v1").await;

    // `rollback` twice is one rollback: back to green, then nothing changes.
    let rollback = switchyard(&["rollback"], env, &state).await;
    assert!(rollback.status.success(), "{}", show(&rollback));
    assert!(
        stdout(&rollback).contains("now serves green (was blue)")
            && stdout(&rollback).contains("; 2 proxy(ies) followed in "),
        "{}",
        show(&rollback)
    );
    wait_serves(proxy, &[], "v2").await;
    wait_serves(second_traffic, &[], "v2").await;
    let routed = route_index(&admin).await;
    let again = switchyard(&["rollback"], env, &state).await;
    assert!(again.status.success(), "{}", show(&again));
    assert!(
        stdout(&again).contains("already a rollback") && stdout(&again).contains("nothing changed"),
        "{}",
        show(&again)
    );
    assert_eq!(
        route_index(&admin).await,
        routed,
        "the second rollback wrote the route key"
    );
    assert_eq!(commands(&admin).await, ["switch", "switch", "rollback"]);
    wait_serves(second_traffic, &[], "v2").await;
    eprintln!(
        "secure: two proxies, rollback twice: {:?}",
        started.elapsed()
    );

    // A leftover registration on a failed node (its serfHealth critical), registered through
    // the catalog API with a token allowed to (the operator's is not): shown as `node failed`,
    // ignored by the switch and by every proxy.
    let ghost = json!({
        "Node": "failed-node",
        "Address": "127.0.0.1",
        "Service": {
            "ID": "hello-service-on-failed-node",
            "Service": SERVICE,
            "Tags": ["blue", "standby", "version=v1"],
            "Address": "127.0.0.1",
            "Port": 9,
        },
        "Checks": [{
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "critical",
        }],
    });
    let register = |token: String| {
        https
            .put(format!("https://{consul}/v1/catalog/register"))
            .header("X-Consul-Token", token)
            .json(&ghost)
            .send()
    };
    let refused = register(env["CONSUL_HTTP_TOKEN"].clone()).await.unwrap();
    assert_eq!(
        refused.status(),
        403,
        "the operator's token registered a node"
    );
    let registered = register(management.clone()).await.unwrap();
    assert_eq!(registered.status(), 200, "{:?}", registered.text().await);
    let status = switchyard(&["status", "--json", "--service", SERVICE], env, &state).await;
    assert!(status.status.success(), "{}", show(&status));
    let text = stdout(&status);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let ghost_seen: Vec<&Value> = instances_of(&doc)
        .into_iter()
        .filter(|i| i["id"] == "hello-service-on-failed-node")
        .collect();
    assert_eq!(ghost_seen.len(), 1, "{text}");
    assert_eq!(ghost_seen[0]["health"], "node failed", "{text}");
    let switch = switchyard(&["switch"], env, &state).await;
    assert!(switch.status.success(), "{}", show(&switch));
    assert!(
        stdout(&switch).contains("now serves blue (was green)"),
        "{}",
        show(&switch)
    );
    wait_serves(proxy, &[], "v1").await;
    wait_serves(second_traffic, &[], "v1").await;
    for admin_addr in [stack.addr("admin"), second.address("admin listening").await] {
        let seen = get_text(&plain, &format!("http://{admin_addr}/status")).await;
        assert!(seen.contains("\"blue\""), "{seen}");
        assert!(
            !seen.contains("hello-service-on-failed-node") && !seen.contains("127.0.0.1:9\""),
            "proxy {admin_addr} routes to the failed node: {seen}"
        );
    }
    eprintln!("secure: failed node ignored: {:?}", started.elapsed());

    // The canary-style job: deploy v3 to the standby (green) places canaries, promotes them
    // once healthy, and the standby serves v3 on both proxies.
    let nomad_admin = stack.nomad(Some("nomad-management"));
    let (job, _) = nomad_admin
        .job(SERVICE, &QueryOptions::default())
        .await
        .unwrap();
    let before = job.unwrap().version();
    let deploy = switchyard(&["deploy", "v3"], env, &state).await;
    assert!(deploy.status.success(), "{}", show(&deploy));
    let (deployment, _) = nomad_admin
        .job_deployment(SERVICE, &QueryOptions::default())
        .await
        .unwrap();
    let deployment = deployment.unwrap();
    assert_eq!(deployment.job_version, before + 1, "{deployment:?}");
    let green = &deployment.task_groups["green"];
    assert_eq!(green.desired_canaries, 2, "{deployment:?}");
    assert_eq!(green.placed_canaries.len(), 2, "{deployment:?}");
    assert!(green.promoted, "{deployment:?}");
    let preview = [("x-switchyard-pool", "standby")];
    wait_serves(proxy, &preview, "v3").await;
    wait_serves(second_traffic, &preview, "v3").await;
    wait_serves(proxy, &[], "v1").await;
    assert_eq!(
        commands(&admin).await,
        ["switch", "switch", "rollback", "switch", "deploy"]
    );
    eprintln!("secure: canary deploy: {:?}", started.elapsed());

    // The second proxy stopped: once its check is critical the switch refuses, naming it,
    // and writes nothing.
    second.signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while check_status(&https, consul, &management, &second_id).await != "critical" {
        assert!(
            Instant::now() < deadline,
            "the stopped proxy's check never went critical"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let routed = route_index(&admin).await;
    let refused = switchyard(&["switch"], env, &state).await;
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    let last = cause(&refused);
    assert!(
        last.starts_with(&format!(
            "switchyard: refusing to switch: proxy {second_id} ("
        )) && last.contains("is critical in Consul (--force overrides)"),
        "{}",
        show(&refused)
    );
    assert_eq!(
        route_index(&admin).await,
        routed,
        "the refused switch wrote the route key"
    );
    assert_eq!(
        commands(&admin).await.len(),
        5,
        "the refused switch recorded a change"
    );
    wait_serves(proxy, &[], "v1").await;
    eprintln!("secure: stopped proxy refused: {:?}", started.elapsed());

    // Resumed, then SIGTERM: it leaves Consul with its own token and exits 0.
    second.signal("CONT");
    second.signal("TERM");
    assert_eq!(second.exit_code(Duration::from_secs(20)).await, Some(0));
    let said = second.drain();
    assert!(
        said.iter()
            .any(|v| v["fields"]["message"] == "deregistered from Consul"),
        "{said:#?}"
    );
    let left = consul_json(
        &https,
        consul,
        &management,
        "/v1/catalog/service/switchyard-proxy",
    )
    .await;
    let ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ServiceID"].as_str().unwrap_or_default())
        .collect();
    assert!(!ids.contains(&second_id.as_str()), "{left}");
    assert_eq!(ids.len(), 1, "the dev stack's own proxy stays: {left}");
}

/// Every instance of a `status --json` report (an object per service, or an array of them).
fn instances_of(doc: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    collect_instances(doc, &mut out);
    out
}

fn collect_instances<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("id") && map.contains_key("health") && map.contains_key("address") {
                out.push(v);
            } else {
                map.values().for_each(|v| collect_instances(v, out));
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_instances(v, out)),
        _ => {}
    }
}
