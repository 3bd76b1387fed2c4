//! The operator's view of a `switchyard dev --secure` stack through the binary, each command
//! with the operator's environment from `dev.env` only (HTTPS, the CA, the operator's tokens)
//! and no proxy named by hand: `status` without `--service` reports every service the
//! proxies route (found through their Consul registration), and a hint `diagnose` prints
//! runs as printed in a shell.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::KvWrite;

use crate::support::dev::{TempDir, operator_env, start_secure};

/// Runs `switchyard args` (or, with `shell`, `sh -c args[0]` with the binary on `PATH`)
/// with the operator's environment `env`, in `cwd`, with no proxy named by hand.
fn run(args: &[&str], shell: bool, env: &BTreeMap<String, String>, cwd: &Path) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let mut cmd = if shell {
        let mut c = Command::new("sh");
        c.arg("-c").arg(args[0]);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    };
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    operator_env(
        &mut cmd,
        env.iter()
            .filter(|(k, _)| k.as_str() != "SWITCHYARD_PROXIES"),
    );
    cmd.env("PATH", path)
        .env("NO_COLOR", "1")
        .current_dir(cwd)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_routed_service_and_diagnose_hints_run() {
    let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let hello = bin.with_file_name("hello-service");
    assert!(
        hello.is_file(),
        "{} is missing: build it first with `cargo build -p hello-service`",
        hello.display()
    );
    let tmp = TempDir::new("operators");
    let dev = start_secure(
        &tmp.0,
        &["--hello-bin", hello.parent().unwrap().to_str().unwrap()],
    )
    .await;
    let env = &dev.env;
    let admin = dev.addr("admin").to_string();
    let cwd = tmp.0.clone();

    // No --service and no --proxy: the proxy is found in Consul and its service reported.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reports = loop {
        let out = run(&["status", "--json"], false, env, &cwd);
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if let Some(Value::Array(reports)) = &parsed
            && out.status.success()
            && reports.iter().all(|r| r["active"] == "blue")
            && reports
                .iter()
                .all(|r| r["colours"][1]["passing"].as_u64() >= Some(1))
        {
            break reports.clone();
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the routed services: {out:?}\n{}",
            dev.dev.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let services: Vec<&str> = reports
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["hello-service"]);
    assert_eq!(
        reports[0]["proxies"][0]["url"],
        format!("http://{admin}").as_str()
    );
    assert!(
        reports[0]["proxies"][0]["registered_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("switchyard-proxy-")),
        "{}",
        reports[0]["proxies"][0]
    );
    let out = run(&["status"], false, env, &cwd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("service hello-service "), "{text}");

    // A route key nobody can use: diagnose says so, and its hint, run as printed, fixes it.
    // The test's own writes use the management token.
    let kv = dev.consul(Some("consul-management"));
    let key = "switchyard/routes/hello-service";
    assert!(
        kv.kv_put(key, b"{not json", &KvWrite::default())
            .await
            .unwrap()
    );
    let out = run(&["diagnose", "--json"], false, env, &cwd);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "route-key-invalid")
        .unwrap_or_else(|| panic!("no route-key-invalid finding: {report}"));
    let hint = finding["next"].as_str().unwrap();
    assert!(hint.starts_with("switchyard switch "), "{hint}");
    let out = run(&[hint], true, env, &cwd);
    assert!(out.status.success(), "`{hint}` failed: {out:?}");
    let (pair, _) = kv.kv_get(key, &QueryOptions::default()).await.unwrap();
    let value: Value = serde_json::from_slice(&pair.unwrap().value.unwrap()).unwrap();
    assert_eq!(value["active"], "green", "{value}");
    let out = run(&["diagnose", "--json"], false, env, &cwd);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "route-key-invalid"),
        "{report}"
    );
    drop(dev);
}
