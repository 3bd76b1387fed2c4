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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consul_addr = format!("http://{}", listener.local_addr().unwrap());
    let consul = DevConsul::new(ConsulConfig::default()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(consul.serve(listener, async {
        let _ = stopped.await;
    }));

    let client = ConsulClient::new(switchyard_hashi::consul::ConsulConfig {
        address: consul_addr.clone(),
        ..Default::default()
    })
    .unwrap();
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
