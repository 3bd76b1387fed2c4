//! `switchyard dev` end to end, and the dev Consul against a third-party
//! Consul client.
//!
//! - `dev_runs_the_whole_stack_and_stops_cleanly` runs the real binary as a
//!   child process with every address on port 0, waits for `dev.json`, talks
//!   to the proxy, Consul and Nomad it announces, then sends SIGTERM and
//!   checks the exit code and that every `hello-service` process it started
//!   is gone.
//! - `dev_restart_after_sigkill_starts_clean` runs the real binary with the
//!   built-in demo (nothing but `switchyard` built), SIGKILLs it under load,
//!   starts it again on the same data directory and checks that the old
//!   tasks died with it, Consul lists exactly the four new instances, all
//!   passing, and the proxy answers; and that requests went to the access
//!   log file, not to the terminal.
//! - `py_consul_talks_to_the_dev_consul` runs `tests/compat/consul_client.py`
//!   (py-consul from PyPI, installed on demand) against a `DevConsul` on
//!   `127.0.0.1:0`, then reads what it wrote back with our own client.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{CheckStatus, ConsulClient, HealthQuery};

use crate::support::client;
use crate::support::dev::{DevChild, TempDir, addr, spawn_dev, wait_dev_json};

/// A process as `/proc/<pid>/stat` describes it: (command, state, parent).
fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Live `hello-service` processes whose parent is `parent`.
fn hello_children(parent: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            proc_stat(*pid).is_some_and(|(comm, state, ppid)| {
                comm == "hello-service" && state != 'Z' && ppid == parent
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether `pid` is still a running `hello-service` (a zombie has exited).
fn hello_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(comm, state, _)| comm == "hello-service" && state != 'Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_the_whole_stack_and_stops_cleanly() {
    let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let hello = bin.with_file_name("hello-service");
    assert!(
        hello.is_file(),
        "{} is missing: build it first with `cargo build -p hello-service` (the dev stack runs it as its tasks)",
        hello.display()
    );
    let tmp = TempDir::new("dev");
    let data = tmp.0.join("data");
    let log = tmp.0.join("dev.log");
    let mut dev = spawn_dev(
        &data,
        &log,
        &[
            "--ephemeral",
            "--hello-bin",
            hello.parent().unwrap().to_str().unwrap(),
        ],
    );
    let dev_pid = dev.child.id();

    // dev.json appears once everything is ready.
    let dev_json = data.join("dev.json");
    let doc = wait_dev_json(&mut dev, &data, Duration::from_secs(90)).await;
    let (consul, nomad, proxy, admin) = (
        addr(&doc, "consul"),
        addr(&doc, "nomad"),
        addr(&doc, "proxy"),
        addr(&doc, "admin"),
    );
    assert!(
        dev.log().contains("switchyard dev: ready"),
        "ready banner missing:\n{}",
        dev.log()
    );
    let http = client();

    // The proxy: the active colour is v1, the standby preview v2.
    let resp = http
        .get(format!("http://{proxy}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "v1");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Lionel Messi"), "{body}");
    let resp = http
        .get(format!("http://{proxy}/standby/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "v2");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Cristiano Ronaldo"), "{body}");
    let ready = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Consul: four passing instances, two per colour, with Nomad's tags.
    let entries: Vec<Value> = http
        .get(format!(
            "http://{consul}/v1/health/service/hello-service?passing"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entries.len(), 4, "{entries:#?}");
    let mut tag_sets: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["Service"]["Meta"]["external-source"], "nomad");
            assert!(
                e["Service"]["ID"]
                    .as_str()
                    .unwrap()
                    .starts_with("_nomad-task-")
            );
            serde_json::from_value(e["Service"]["Tags"].clone()).unwrap()
        })
        .collect();
    tag_sets.sort();
    let blue = vec!["blue".to_owned(), "active".into(), "version=v1".into()];
    let green = vec!["green".to_owned(), "standby".into(), "version=v2".into()];
    assert_eq!(
        tag_sets,
        vec![blue.clone(), blue, green.clone(), green],
        "tags of the passing instances"
    );

    // Nomad: four running allocations of the job.
    let allocs: Vec<Value> = http
        .get(format!("http://{nomad}/v1/job/hello-service/allocations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let running = allocs
        .iter()
        .filter(|a| a["ClientStatus"] == "running")
        .count();
    assert_eq!(running, 4, "{allocs:#?}");

    // The task processes are children of the dev process.
    let pids = hello_children(dev_pid);
    assert_eq!(
        pids.len(),
        4,
        "hello-service children of {dev_pid}: {pids:?}"
    );

    // SIGTERM: a clean exit, and nothing left behind.
    let stopped_at = Instant::now();
    dev.signal("TERM");
    let status = dev.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "switchyard dev still running 30 s after SIGTERM:\n{}",
            dev.log()
        )
    });
    assert!(status.success(), "exit status {status}:\n{}", dev.log());
    let took = stopped_at.elapsed();
    // Proxy grace, then shutdown_delay (1 s) and SIGTERM for the tasks.
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    let left: Vec<u32> = pids.into_iter().filter(|p| hello_alive(*p)).collect();
    assert!(
        left.is_empty(),
        "hello-service processes left behind: {left:?}"
    );
    assert!(!dev_json.exists(), "dev.json must not outlive the stack");
    let log = dev.log();
    let proxy_stop = log.find("component=\"proxy\"").expect("proxy stop logged");
    let nomad_stop = log.find("component=\"nomad\"").expect("nomad stop logged");
    let consul_stop = log
        .find("component=\"consul\"")
        .expect("consul stop logged");
    assert!(
        proxy_stop < nomad_stop && nomad_stop < consul_stop,
        "stop order must be proxy, Nomad, Consul:\n{log}"
    );
    // The ports are free again.
    assert!(std::net::TcpStream::connect(proxy).is_err());
    assert!(std::net::TcpStream::connect(consul).is_err());
}

/// Live `hello-service` processes, anywhere (a task that outlived its dev
/// stack has a new parent).
fn all_hello_processes() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| hello_alive(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_restart_after_sigkill_starts_clean() {
    let tmp = TempDir::new("dev-restart");
    let data = tmp.0.join("data");
    let http = client();

    // First run: persisted state, the built-in demo (no --hello-bin).
    let mut first = spawn_dev(&data, &tmp.0.join("first.log"), &[]);
    let doc = wait_dev_json(&mut first, &data, Duration::from_secs(90)).await;
    let proxy = addr(&doc, "proxy");
    let old = hello_children(first.child.id());
    assert_eq!(
        old.len(),
        4,
        "tasks of the first run: {old:?}\n{}",
        first.log()
    );

    // Load while it dies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ok = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("http://{proxy}/hello")).send().await
                    && r.status() == 200
                {
                    ok += 1;
                }
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(10)).unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.await.unwrap();
    assert!(served > 0, "no request served before the kill");

    // Its tasks die with it (parent-death signal).
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.iter().any(|p| hello_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: Vec<u32> = old.iter().copied().filter(|p| hello_alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "tasks outlived their dev stack: {survivors:?}"
    );
    // The killed run could not remove its dev.json; the next one must not be
    // mistaken for it.
    std::fs::remove_file(data.join("dev.json")).unwrap();

    // Second run on the same data directory.
    let mut second = spawn_dev(&data, &tmp.0.join("second.log"), &[]);
    let doc = wait_dev_json(&mut second, &data, Duration::from_secs(90)).await;
    let (consul, proxy) = (addr(&doc, "consul"), addr(&doc, "proxy"));
    let entries: Vec<Value> = http
        .get(format!("http://{consul}/v1/health/service/hello-service"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entries.len(), 4, "registered instances: {entries:#?}");
    for e in &entries {
        for check in e["Checks"].as_array().unwrap() {
            assert_eq!(check["Status"], "passing", "{e:#}");
        }
    }
    let new = hello_children(second.child.id());
    assert_eq!(new.len(), 4, "tasks of the second run: {new:?}");
    assert_eq!(
        all_hello_processes()
            .into_iter()
            .filter(|p| old.contains(p))
            .count(),
        0
    );
    let resp = http
        .get(format!("http://{proxy}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "v1");

    // Requests are in the access log file, not on the terminal.
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit status {status}:\n{}", second.log());
    let access = std::fs::read_to_string(data.join("access.log")).unwrap();
    assert!(
        access
            .lines()
            .any(|l| l.contains("path=/hello") && l.contains("status=200")),
        "{access}"
    );
    let terminal = second.log();
    assert!(!terminal.contains("path=/hello"), "{terminal}");
    assert!(terminal.contains("switchyard dev: ready"), "{terminal}");
    assert!(
        new.iter().all(|p| !hello_alive(*p)),
        "tasks left after SIGTERM"
    );
}

/// Makes `import consul` work, installing py-consul from PyPI if needed.
/// `Err` says why the test cannot run here.
fn python_with_py_consul() -> Result<(), String> {
    let has = |code: &str| {
        Command::new("python3")
            .args(["-c", code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("import sys") {
        return Err("python3 is not available".into());
    }
    if has("import consul; consul.Consul") {
        return Ok(());
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "py-consul>=1.5,<2",
        ])
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip could not install py-consul: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if has("import consul; consul.Consul") {
        Ok(())
    } else {
        Err("py-consul installed but `import consul` still fails".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_talks_to_the_dev_consul() {
    if let Err(why) = tokio::task::spawn_blocking(python_with_py_consul)
        .await
        .unwrap()
    {
        println!("SKIPPED py_consul_talks_to_the_dev_consul: {why}");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let consul = DevConsul::new(ConsulConfig::default()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(consul.serve(listener, async move {
        let _ = stop_rx.await;
    }));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/consul_client.py");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the py-consul script hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-consul script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("py-consul compat: ok"),
        "{stdout}\n{stderr}"
    );

    // What the Python client wrote, read back with switchyard's client.
    let ours = ConsulClient::new(switchyard_hashi::consul::ConsulConfig {
        address: format!("http://{addr}"),
        ..Default::default()
    })
    .unwrap();
    let (kv, _) = ours
        .kv_get("switchyard/compat/py", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(kv.unwrap().value.as_deref(), Some(&b"three"[..]));
    let (entries, _) = ours
        .health_service(
            "py-compat",
            &HealthQuery {
                passing: true,
                ..Default::default()
            },
            &QueryOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].service.id, "py-compat-1");
    assert_eq!(entries[0].service.port, 9999);
    assert_eq!(entries[0].service.tags, ["blue", "active"]);
    assert_eq!(entries[0].aggregated_status(), CheckStatus::Passing);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("dev Consul did not stop")
        .unwrap()
        .unwrap();
}

/// Runs `switchyard dev` with `extra` arguments (all addresses on port 0
/// unless overridden) and returns its exit status and log, failing the test
/// if it is still running after `within`.
fn run_dev_to_exit(
    tmp: &TempDir,
    extra: &[&str],
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let log = tmp.0.join("dev.log");
    let mut args = vec![
        "dev".to_owned(),
        "--ephemeral".into(),
        "--data-dir".into(),
        tmp.0.join("data").display().to_string(),
    ];
    for flag in [
        "--consul-addr",
        "--nomad-addr",
        "--proxy-addr",
        "--admin-addr",
    ] {
        if !extra.contains(&flag) {
            args.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
        }
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut dev = DevChild { child, log };
    let status = dev.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "switchyard dev did not exit within {within:?}:\n{}",
            dev.log()
        )
    });
    (status, dev.log())
}

#[test]
fn dev_fails_fast_on_a_busy_port() {
    let tmp = TempDir::new("dev-busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (status, log) = run_dev_to_exit(&tmp, &["--nomad-addr", &addr], Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot listen on {addr} for Nomad")),
        "{log}"
    );
    assert!(!tmp.0.join("data/dev.json").exists());
}

#[test]
fn dev_reports_a_job_file_nomad_cannot_parse() {
    let tmp = TempDir::new("dev-badjob");
    let job = tmp.0.join("broken.nomad.hcl");
    std::fs::write(&job, "job \"x\" {\n  group \"g\" {\n").unwrap();
    let (status, log) = run_dev_to_exit(
        &tmp,
        &["--job", job.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{log}");
    // The message names the file and carries Nomad's 400 from /v1/jobs/parse.
    assert!(log.contains(&format!("parsing {}", job.display())), "{log}");
    assert!(log.contains("HTTP 400"), "{log}");
    assert!(!tmp.0.join("data/dev.json").exists());
}
