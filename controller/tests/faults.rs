//! Nomad faults during a deploy, on the dev stack (dev Consul, dev Nomad running real
//! `hello-service` processes, a switchyard proxy discovering through the dev Consul).
//!
//! The controller reaches Nomad through [`Gate`], a TCP relay that can be switched off: while
//! it is down, connects are refused and open connections are cut, exactly what a Nomad agent
//! whose HTTP listener went away looks like, while the allocations keep running (the dev Nomad
//! itself keeps scheduling and health-checking them). Every case asserts the same contract:
//!
//! - the job ends at a version the error or outcome names (deployed or reverted);
//! - the active colour is untouched: its allocation IDs are unchanged and it answered every
//!   request made through the proxy during the deploy;
//! - a failure comes back as one clear error;
//! - the backup of the job taken before the register is on disk.
//!
//! Prerequisite: `cargo build -p hello-service` (looked up in `<workspace>/target/debug`).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_controller::{Controller, ControllerError, Settings};
use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use switchyard_devstack::nomad::{DevNomad, NomadConfig};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::nomad::{Job, NomadClient};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A TCP relay in front of the dev Nomad's API that can be taken down and brought back on the
/// same port.
struct Gate {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Gate {
    async fn start(target: SocketAddr) -> Gate {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut g = Gate {
            addr,
            target,
            task: None,
        };
        g.serve(l);
        g
    }

    fn serve(&mut self, l: TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            // Aborting this task drops the listener and every relayed connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Refuses connects and cuts open connections from now on.
    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serves again on the same port.
    async fn up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(l);
    }
}

struct Stack {
    consul_url: String,
    /// The dev Nomad itself (never gated): what the cluster really holds.
    nomad: NomadClient,
    gate: Gate,
    proxy_url: String,
    admin_url: String,
    state_dir: PathBuf,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Consul, Nomad (behind a gate) and a proxy; the demo job with one allocation per colour,
    /// `green_args` replacing the green task's arguments when given.
    async fn start(name: &str, green_args: Option<serde_json::Value>) -> Stack {
        let bin = workspace().join("target/debug");
        assert!(
            bin.join("hello-service").exists(),
            "build hello-service first: cargo build -p hello-service"
        );
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        let mut spawn = |f: Box<dyn FnOnce(oneshot::Receiver<()>) -> JoinHandle<()>>| {
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            tasks.push(f(rx));
        };

        let consul = DevConsul::new(ConsulConfig::default()).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let consul_url = format!("http://{}", l.local_addr().unwrap());
        spawn(Box::new(move |rx| {
            tokio::spawn(async move {
                let _ = consul
                    .serve(l, async {
                        let _ = rx.await;
                    })
                    .await;
            })
        }));

        let nomad = DevNomad::new(NomadConfig {
            consul_addr: consul_url.clone(),
            extra_path: vec![bin],
            ..NomadConfig::default()
        })
        .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nomad_addr = l.local_addr().unwrap();
        spawn(Box::new(move |rx| {
            tokio::spawn(async move {
                let _ = nomad
                    .serve(l, async {
                        let _ = rx.await;
                    })
                    .await;
            })
        }));

        let toml = format!(
            "[log]\naccess_log = false\n[consul]\naddress = \"{consul_url}\"\nwait = \"2s\"\nmin_interval = \"5ms\"\n[[services]]\nname = \"hello-service\"\nconsul = {{}}\n"
        );
        let config = switchyard_proxy::config::Config::parse(
            &toml,
            Path::new("faults.toml"),
            &switchyard_proxy::config::Env::default(),
        )
        .unwrap();
        let traffic = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", traffic.local_addr().unwrap());
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let proxy = switchyard_proxy::Proxy::new(config).unwrap();
        spawn(Box::new(move |rx| {
            tokio::spawn(async move {
                let listeners = switchyard_proxy::Listeners {
                    traffic,
                    tls: None,
                    admin: Some(admin),
                };
                let _ = proxy
                    .run(listeners, async {
                        let _ = rx.await;
                    })
                    .await;
            })
        }));

        let client = NomadClient::new(switchyard_hashi::nomad::NomadConfig {
            address: format!("http://{nomad_addr}"),
            ..Default::default()
        })
        .unwrap();
        let hcl =
            std::fs::read_to_string(workspace().join("config/hello-service.nomad.hcl")).unwrap();
        let mut job = client.parse(&hcl, true).await.unwrap();
        for g in job.0["TaskGroups"].as_array_mut().unwrap() {
            g["Count"] = json!(1);
            if g["Name"] == "green"
                && let Some(args) = &green_args
            {
                g["Tasks"][0]["Config"]["args"] = args.clone();
            }
        }
        client.register(&job, None).await.unwrap();

        let state_dir = std::env::temp_dir().join(format!(
            "switchyard-faults-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&state_dir).unwrap();
        let gate = Gate::start(nomad_addr).await;
        let stack = Stack {
            consul_url,
            nomad: client,
            gate,
            proxy_url,
            admin_url,
            state_dir,
            stops,
            tasks,
        };
        stack.wait_blue_serves().await;
        stack
    }

    /// A controller that reaches Nomad through the gate.
    fn controller(&self, deadline: Duration) -> Controller {
        let mut s = Settings::from_lookup("hello-service", |_| None);
        s.consul.address = self.consul_url.clone();
        s.nomad.address = format!("http://{}", self.gate.addr);
        s.proxies = vec![self.admin_url.clone()];
        s.state_dir = self.state_dir.clone();
        s.deadline = deadline;
        s.drain_deadline = Duration::from_secs(10);
        s.poll_interval = Duration::from_millis(200);
        s.http_timeout = Duration::from_secs(1);
        Controller::new(s).unwrap()
    }

    async fn wait_blue_serves(&self) {
        let deadline = Instant::now() + Duration::from_secs(40);
        while served(&self.proxy_url).await.as_deref() != Some("v1") {
            assert!(Instant::now() < deadline, "blue never served v1");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn job(&self) -> Job {
        self.nomad
            .job("hello-service", &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap()
    }

    /// IDs of the running allocations of `group`.
    async fn allocs(&self, group: &str) -> Vec<String> {
        let (allocs, _) = self
            .nomad
            .job_allocations("hello-service", false, &QueryOptions::default())
            .await
            .unwrap();
        let mut ids: Vec<String> = allocs
            .iter()
            .filter(|a| a.task_group == group && a.desired_status == "run")
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Waits until the job's version is `v` (the deploy registered).
    async fn wait_job_version(&self, v: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.job().await.version() < v {
            assert!(Instant::now() < deadline, "job never reached version {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn backups(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state_dir.join("backups"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    async fn shutdown(mut self) {
        self.gate.down().await;
        for tx in self.stops.drain(..).rev() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..).rev() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

async fn served(proxy: &str) -> Option<String> {
    let r = reqwest::get(format!("{proxy}/hello")).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.headers()
        .get("x-app-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Users hitting the proxy during the deploy: every answer must come from the active colour.
struct Users {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl Users {
    fn start(proxy: &str) -> Users {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let url = proxy.to_owned();
        let task = tokio::spawn(async move {
            let mut answers = 0;
            let mut wrong = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match served(&url).await {
                    Some(v) if v == "v1" => answers += 1,
                    other => wrong.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (answers, wrong)
        });
        Users { stop, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (answers, wrong) = self.task.await.unwrap();
        assert!(wrong.is_empty(), "answers not from blue v1: {wrong:?}");
        assert!(answers > 10, "too few requests: {answers}");
    }
}

/// Asserts the invariants every case shares.
async fn assert_active_untouched(stack: &Stack, blue_before: &[String]) {
    assert_eq!(
        stack.allocs("blue").await,
        blue_before,
        "blue allocations changed"
    );
    let job = stack.job().await;
    assert_eq!(job.group_meta("blue", "version"), Some("v1"));
    assert_eq!(served(&stack.proxy_url).await.as_deref(), Some("v1"));
    let backups = stack.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup: Job = serde_json::from_slice(&std::fs::read(&backups[0]).unwrap()).unwrap();
    assert_eq!(backup.group_meta("green", "version"), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_down_for_a_while_mid_deploy_then_back_the_deploy_completes() {
    let mut stack = Stack::start("blip", None).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = Users::start(&stack.proxy_url);
    let c = stack.controller(Duration::from_secs(60));
    let deploy = tokio::spawn(async move { c.deploy("v3").await });
    stack.wait_job_version(before + 1).await;
    stack.gate.down().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.gate.up().await;
    let outcome = deploy.await.unwrap().unwrap();
    users.finish().await;
    assert_eq!(outcome.job_version, before + 1);
    assert_eq!(outcome.version, "v3");
    let job = stack.job().await;
    assert_eq!(job.version(), before + 1, "deployed, nothing reverted");
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert!(Path::new(&outcome.backup).exists());
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_down_until_the_deadline_fails_clearly_and_leaves_the_deployed_version() {
    let mut stack = Stack::start("down", None).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = Users::start(&stack.proxy_url);
    let c = stack.controller(Duration::from_secs(8));
    let deploy = tokio::spawn(async move { c.deploy("v3").await });
    stack.wait_job_version(before + 1).await;
    stack.gate.down().await;
    let err = deploy.await.unwrap().unwrap_err();
    users.finish().await;
    let msg = err.to_string();
    println!("error: {msg}");
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert_eq!(err.exit_code(), 1);
    assert!(msg.contains("Nomad API was unreachable"), "{msg}");
    assert!(
        msg.contains(&format!(
            "reverting job hello-service to version {before} FAILED"
        )),
        "{msg}"
    );
    assert!(msg.contains("restore it from the backup"), "{msg}");
    let backups = stack.backups();
    assert!(msg.contains(&backups[0].display().to_string()), "{msg}");
    // Nothing could be undone: the job is at the deployed version, as the message says.
    let job = stack.job().await;
    assert_eq!(job.version(), before + 1);
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_never_healthy_are_reverted_and_the_active_colour_is_untouched() {
    let args = json!([
        "--port",
        "${NOMAD_PORT_http}",
        "--version",
        "${NOMAD_META_version}",
        "--fail-health"
    ]);
    let stack = Stack::start("unhealthy", Some(args)).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = Users::start(&stack.proxy_url);
    let err = stack
        .controller(Duration::from_secs(6))
        .deploy("v3")
        .await
        .unwrap_err();
    users.finish().await;
    let msg = err.to_string();
    println!("error: {msg}");
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert!(msg.contains("never healthy"), "{msg}");
    assert!(
        msg.contains(&format!("reverted to version {before}")),
        "{msg}"
    );
    let job = stack.job().await;
    assert_eq!(
        job.version(),
        before + 2,
        "deploy, then revert as a new version"
    );
    assert_eq!(job.group_meta("green", "version"), Some("v2"));
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_changed_concurrently_during_the_deploy_is_not_overwritten_by_the_revert() {
    let args = json!([
        "--port",
        "${NOMAD_PORT_http}",
        "--version",
        "${NOMAD_META_version}",
        "--fail-health"
    ]);
    let stack = Stack::start("concurrent", Some(args)).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = Users::start(&stack.proxy_url);
    let c = stack.controller(Duration::from_secs(6));
    let deploy = tokio::spawn(async move { c.deploy("v3").await });
    stack.wait_job_version(before + 1).await;
    // Another operator changes the job (an in-place change) while the deploy waits.
    let mut job = stack.job().await;
    job.0["Priority"] = json!(70);
    stack
        .nomad
        .register(&job, Some(job.job_modify_index()))
        .await
        .unwrap();
    let err = deploy.await.unwrap().unwrap_err();
    users.finish().await;
    let msg = err.to_string();
    println!("error: {msg}");
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert!(msg.contains("never healthy"), "{msg}");
    // The revert is check-and-set against the version the deploy made, so the other
    // operator's change wins and the error says what to do.
    assert!(
        msg.contains(&format!(
            "reverting job hello-service to version {before} FAILED"
        )),
        "{msg}"
    );
    assert!(msg.contains("restore it from the backup"), "{msg}");
    let job = stack.job().await;
    assert_eq!(
        job.version(),
        before + 2,
        "the concurrent change is the current version"
    );
    assert_eq!(job.0["Priority"], json!(70));
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}
