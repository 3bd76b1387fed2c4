//! Bad input to the `switchyard` binary: a one-line cause on stderr, the
//! documented exit code (2 bad input, 1 failure), and nothing changed.

use std::path::Path;
use std::process::{Command, Output};

use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{ConsulClient, KvWrite};

fn switchyard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let state = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    let mut cmd = Command::new(Path::new(env!("CARGO_BIN_EXE_switchyard")));
    cmd.args(args)
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("NOMAD_ADDR")
        .env_remove("SWITCHYARD_PROXIES")
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir());
    if matches!(args.first(), Some(&("deploy" | "switch" | "rollback"))) {
        cmd.arg("--state-dir").arg(&state);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A dev Consul on an ephemeral port: its URL, a client, and how to stop it.
pub(crate) async fn dev_consul() -> (
    String,
    ConsulClient,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let consul = DevConsul::new(ConsulConfig::default()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(consul.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = ConsulClient::new(switchyard_hashi::consul::ConsulConfig {
        address: url.clone(),
        ..Default::default()
    })
    .unwrap();
    (url, client, stop, server)
}

/// The error output is one line starting with `switchyard: `.
fn one_line_cause(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = err.lines().last().unwrap_or("").to_owned();
    assert!(last.starts_with("switchyard: "), "stderr: {err}");
    last
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["deploy", "bad version!"], "version"),
        (&["deploy", ""], "version"),
        (&["deploy", "v3", "--deadline", "soon"], "soon"),
        (&["deploy", "v3", "--meta", "1team=core"], "1team"),
        (&["deploy", "v3", "--env", "LOG"], "KEY=VALUE"),
        (
            &["deploy", "v3", "--image", "app:${NOMAD_META_version}"],
            "image",
        ),
        (&["switch", "--service", "../etc"], "service"),
        (&["status", "--service", "a b"], "service"),
        (
            &["check-config", "/nonexistent/switchyard.toml"],
            "cannot read",
        ),
        (
            &["proxy", "--config", "/nonexistent/switchyard.toml"],
            "cannot read",
        ),
    ];
    for (args, needle) in cases {
        let out = switchyard(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let line = if out.stderr.starts_with(b"error:") {
            // clap's own message for a value it could not parse.
            String::from_utf8_lossy(&out.stderr).into_owned()
        } else {
            one_line_cause(&out)
        };
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn an_invalid_config_file_lists_every_problem_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[listener]\naddress = \"nope\"\n[[services]]\nname = \"a\"\nbalance = \"random\"\n",
    )
    .unwrap();
    let out = switchyard(&["check-config", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener.address"), "{err}");
    assert!(err.contains("services[0].balance"), "{err}");
    assert!(err.contains("services[0]: needs"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unreachable_agents_fail_with_1_and_a_garbage_route_key_is_refused_untouched() {
    // Nothing listens on the Nomad address; Consul is a real dev Consul.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nomad = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (consul_addr, client, stop, server) = dev_consul().await;
    let key = "switchyard/routes/hello-service";
    assert!(
        client
            .kv_put(key, b"{not json", &KvWrite::default())
            .await
            .unwrap()
    );
    let (before, _) = client.kv_get(key, &QueryOptions::default()).await.unwrap();

    let env = [
        ("CONSUL_HTTP_ADDR", consul_addr.as_str()),
        ("NOMAD_ADDR", nomad.as_str()),
    ];
    for args in [
        &["deploy", "v3"][..],
        &["switch"][..],
        &["switch", "--force"][..],
        &["rollback"][..],
    ] {
        let out = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let e: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                switchyard(&a, &e)
            }
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let line = one_line_cause(&out);
        assert!(
            line.len() < 400,
            "{args:?}: cause is not one short line: {line}"
        );
    }
    // Nothing was written over the operator's (broken) key.
    let (after, _) = client.kv_get(key, &QueryOptions::default()).await.unwrap();
    assert_eq!(
        before.map(|p| (p.modify_index, p.value)),
        after.map(|p| (p.modify_index, p.value))
    );
    let _ = stop.send(());
    let _ = server.await;
}

/// `switchyard demo` is the demo service: it serves its version on a real
/// socket, refuses bad arguments with exit code 2, and stops cleanly
/// (exit 0) on SIGTERM. The launcher the dev stack starts tasks through
/// refuses to run a task for a parent that is not its own.
#[tokio::test]
async fn demo_serves_the_demo_and_the_launcher_checks_its_parent() {
    use std::io::BufRead as _;
    let out = switchyard(&["demo", "--version", "v3", "--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument: --bogus"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--port", "0", "--version", "v3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // Kept open until the demo has exited: it prints a last line on stop.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let resp = crate::support::client()
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "v3");
    assert_eq!(
        resp.text().await.unwrap(),
        "Zinedine Zidane is the best player in the world!"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    drop(stdout);

    // PID 1 is never the parent of this test's child.
    let out = switchyard(&["launch-task", "1", "true"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(one_line_cause(&out).contains("is gone"), "{out:?}");
}

/// The controller follows the proxies' configuration: a service with its own colours and route
/// key is read through the key the proxies watch, and a switch writes that key, never the
/// default one.
#[tokio::test]
async fn the_route_key_and_colours_come_from_the_proxy_configuration() {
    let (consul_addr, client, stop, server) = dev_consul().await;
    // A dev Nomad without the job, and a proxy admin port that routes no service of that name.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nomad = format!("http://{}", listener.local_addr().unwrap());
    let dev_nomad =
        switchyard_devstack::nomad::DevNomad::new(switchyard_devstack::nomad::NomadConfig {
            consul_addr: consul_addr.clone(),
            ..Default::default()
        })
        .unwrap();
    let (stop_nomad, nomad_stopped) = tokio::sync::oneshot::channel::<()>();
    let nomad_server = tokio::spawn(dev_nomad.serve(listener, async {
        let _ = nomad_stopped.await;
    }));
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let admin_server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = admin.accept().await else {
                continue;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body = r#"{"ready":true,"services":[]}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let key = "edge/routing/web";
    let value = switchyard_model::RouteValue::new("Right", 4, "test");
    assert!(
        client
            .kv_put(key, &value.to_bytes(), &KvWrite::default())
            .await
            .unwrap()
    );
    let dir = std::env::temp_dir().join(format!("switchyard-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[consul]\naddress = \"{consul_addr}\"\n[[services]]\nname = \"web\"\ncolours = [\"left\", \"right\"]\nconsul = {{ route_key = \"{key}\" }}\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let env = [
        ("CONSUL_HTTP_ADDR", consul_addr.as_str()),
        ("NOMAD_ADDR", nomad.as_str()),
    ];
    let run = |args: Vec<String>| {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            switchyard(&a, &e)
        })
    };
    let args = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain([
                "--service".into(),
                "web".into(),
                "--config".into(),
                config.clone(),
            ])
            .collect()
    };
    // The report reads the configured key and colours.
    let out = run(args(&["status", "--json", "--proxy", &admin_url]))
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["active"], "right", "{report}");
    assert_eq!(report["decided_by"], "route-key");
    assert_eq!(report["route"]["generation"], 4);
    assert_eq!(report["colours"][0]["colour"], "left");
    // A forced switch (no instance anywhere) flips the configured key and nothing else; it
    // then fails on the role tags of a job that does not exist.
    let out = run(args(&["switch", "--force", "--proxy", &admin_url]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(one_line_cause(&out).contains("role tags"), "{out:?}");
    let (pair, _) = client.kv_get(key, &QueryOptions::default()).await.unwrap();
    let now = switchyard_model::RouteValue::parse(&pair.unwrap().value.unwrap()).unwrap();
    assert_eq!((now.active.as_str(), now.generation), ("left", 5));
    let (default_key, _) = client
        .kv_get("switchyard/routes/web", &QueryOptions::default())
        .await
        .unwrap();
    assert!(default_key.is_none(), "the default key was written");
    // With --json, an error is a JSON document on stdout too.
    let out = run(args(&["switch", "--json", "--to", "purple"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exit_code"], 2, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("unknown colour \"purple\""),
        "{doc}"
    );
    // A service the file does not have is bad input.
    let out = run(vec![
        "status".into(),
        "--service".into(),
        "nope".into(),
        "--config".into(),
        config.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(one_line_cause(&out).contains("no service \"nope\""));
    admin_server.abort();
    let _ = stop_nomad.send(());
    let _ = nomad_server.await;
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}
