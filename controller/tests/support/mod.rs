//! The dev stack the controller's integration tests run against: a dev Consul, a dev Nomad
//! running real `hello-service` processes, and a switchyard proxy discovering through the dev
//! Consul, all on 127.0.0.1 ephemeral ports.
//!
//! - [`Stack`]: starts and stops the whole stack, optionally with a [`Gate`] between the
//!   controller and Nomad so a test can take the Nomad API away while allocations keep running.
//! - [`Gate`]: a TCP relay that can be switched off and back on at the same port.
//! - [`Load`]: users hitting the proxy while the controller works, recording what answered.
//! - [`version_served`], [`group_mut`], [`set_task_args`], [`alloc_ids`]: small helpers the
//!   cases share.
//!
//! Prerequisite: `cargo build -p hello-service` (the binary is looked up in
//! `<workspace>/target/debug`).
//!
//! Each test file compiles this module on its own and uses a different part of it, so items
//! one file does not need are not dead code.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_controller::{Controller, Settings};
use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use switchyard_devstack::nomad::{DevNomad, NomadConfig};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::nomad::{AllocationListStub, Job, NomadClient};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The workspace root, where `target/debug` and `config/` live.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh directory for one test's controller state; unique per process and call, so tests
/// running in parallel never share backups or switch records.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchyard-controller-it-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A TCP relay in front of the dev Nomad's API that can be taken down and brought back on the
/// same port: while it is down, connects are refused and open connections are cut, which is
/// what a Nomad agent whose HTTP listener went away looks like.
pub(crate) struct Gate {
    pub(crate) addr: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Gate {
    pub(crate) async fn start(target: SocketAddr) -> Gate {
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
    pub(crate) async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serves again on the same port.
    pub(crate) async fn up(&mut self) {
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

/// The running stack. Stopped (and its state directory removed) by [`Stack::shutdown`].
pub(crate) struct Stack {
    pub(crate) consul_url: String,
    /// The dev Nomad itself, never gated.
    pub(crate) nomad_url: String,
    /// A client of the dev Nomad itself (never gated): what the cluster really holds.
    pub(crate) nomad: NomadClient,
    /// When present, the controller reaches Nomad only through it.
    pub(crate) gate: Option<Gate>,
    pub(crate) proxy_url: String,
    pub(crate) admin_url: String,
    pub(crate) state_dir: PathBuf,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Starts everything with the controller talking to Nomad directly. The demo job is
    /// registered with one allocation per colour; `edit` may change it before that.
    pub(crate) async fn start(name: &str, edit: impl FnOnce(&mut Job)) -> Stack {
        Stack::launch(name, false, edit).await
    }

    /// As [`Stack::start`], with a [`Gate`] between the controller and Nomad.
    pub(crate) async fn start_gated(name: &str, edit: impl FnOnce(&mut Job)) -> Stack {
        Stack::launch(name, true, edit).await
    }

    async fn launch(name: &str, gated: bool, edit: impl FnOnce(&mut Job)) -> Stack {
        let bin = workspace_root().join("target/debug");
        assert!(
            bin.join("hello-service").exists(),
            "build hello-service first: cargo build -p hello-service"
        );
        let mut stops = Vec::new();
        let mut tasks = Vec::new();

        let consul = DevConsul::new(ConsulConfig::default()).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let consul_url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        tasks.push(tokio::spawn(async move {
            let _ = consul
                .serve(l, async {
                    let _ = rx.await;
                })
                .await;
        }));

        let nomad = DevNomad::new(NomadConfig {
            consul_addr: consul_url.clone(),
            extra_path: vec![bin],
            ..NomadConfig::default()
        })
        .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nomad_addr = l.local_addr().unwrap();
        let nomad_url = format!("http://{nomad_addr}");
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        tasks.push(tokio::spawn(async move {
            let _ = nomad
                .serve(l, async {
                    let _ = rx.await;
                })
                .await;
        }));

        let toml = format!(
            r#"
[log]
access_log = false
[consul]
address = "{consul_url}"
wait = "2s"
min_interval = "5ms"
[registration]
check_interval = "1s"
[[services]]
name = "hello-service"
consul = {{}}
"#
        );
        let config = switchyard_proxy::config::Config::parse(
            &toml,
            Path::new("test.toml"),
            &switchyard_proxy::config::Env::default(),
        )
        .unwrap();
        let traffic = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", traffic.local_addr().unwrap());
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let proxy = switchyard_proxy::Proxy::new(config).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        tasks.push(tokio::spawn(async move {
            let _ = proxy
                .run(
                    switchyard_proxy::Listeners {
                        traffic,
                        tls: None,
                        admin: Some(admin),
                    },
                    async {
                        let _ = rx.await;
                    },
                )
                .await;
        }));

        let nomad = NomadClient::new(switchyard_hashi::nomad::NomadConfig {
            address: nomad_url.clone(),
            ..Default::default()
        })
        .unwrap();
        let hcl = std::fs::read_to_string(workspace_root().join("config/hello-service.nomad.hcl"))
            .unwrap();
        let mut job = nomad.parse(&hcl, true).await.unwrap();
        for g in job.0["TaskGroups"].as_array_mut().unwrap() {
            g["Count"] = json!(1);
        }
        edit(&mut job);
        nomad.register(&job, None).await.unwrap();

        let gate = if gated {
            Some(Gate::start(nomad_addr).await)
        } else {
            None
        };
        Stack {
            consul_url,
            nomad_url,
            nomad,
            gate,
            proxy_url,
            admin_url,
            state_dir: temp_dir(name),
            stops,
            tasks,
        }
    }

    /// The gate in front of Nomad; the stack must have been started with one.
    pub(crate) fn gate(&mut self) -> &mut Gate {
        self.gate.as_mut().unwrap()
    }

    /// Controller settings for this stack; Nomad is reached through the gate when there is one.
    pub(crate) fn settings(&self) -> Settings {
        let mut s = Settings::from_lookup("hello-service", |_| None);
        s.consul.address = self.consul_url.clone();
        s.nomad.address = match &self.gate {
            Some(g) => format!("http://{}", g.addr),
            None => self.nomad_url.clone(),
        };
        s.proxies = vec![self.admin_url.clone()];
        s.state_dir = self.state_dir.clone();
        s.deadline = Duration::from_secs(40);
        s.drain_deadline = Duration::from_secs(10);
        s.poll_interval = Duration::from_millis(200);
        s
    }

    pub(crate) fn controller(&self) -> Controller {
        Controller::new(self.settings()).unwrap()
    }

    /// Waits until the proxy answers with `version`.
    pub(crate) async fn wait_serving(&self, colour: &str, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(40);
        while version_served(&self.proxy_url).await.as_deref() != Some(version) {
            assert!(Instant::now() < deadline, "{colour} never served {version}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The job as the dev Nomad holds it (read directly, never through the gate).
    pub(crate) async fn job(&self) -> Job {
        self.nomad
            .job("hello-service", &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap()
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(g) = self.gate.as_mut() {
            g.down().await;
        }
        // Proxy first, then Nomad (stops the processes), then Consul.
        for tx in self.stops.drain(..).rev() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..).rev() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// The version the proxy answers `/hello` with, or `None` when it fails or does not say.
pub(crate) async fn version_served(proxy: &str) -> Option<String> {
    let r = switchyard_hashi::tls::http_client_builder()
        .build()
        .unwrap()
        .get(format!("{proxy}/hello"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.headers()
        .get("x-app-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A load loop through the proxy, one request every `pause`: counts successes and failures
/// and the versions that answered.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, usize, Vec<String>)>,
}

impl Load {
    pub(crate) fn start(proxy: &str, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{proxy}/hello");
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let client = switchyard_hashi::tls::http_client_builder()
                .build()
                .unwrap();
            let mut ok = 0;
            let mut failed = 0;
            let mut versions: Vec<String> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        let v = r
                            .headers()
                            .get("x-app-version")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        if !versions.contains(&v) {
                            versions.push(v);
                        }
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(pause).await;
            }
            (ok, failed, versions)
        });
        Load { stop, task }
    }

    /// Stops the loop: (successful requests, failed requests, distinct versions that answered,
    /// in order of first appearance).
    pub(crate) async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The task group `name` of `job`.
pub(crate) fn group_mut<'a>(job: &'a mut Job, name: &str) -> &'a mut Value {
    job.0["TaskGroups"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["Name"] == name)
        .unwrap()
}

/// Replaces the arguments of the first task of `group`.
pub(crate) fn set_task_args(job: &mut Job, group: &str, args: Value) {
    group_mut(job, group)["Tasks"][0]["Config"]["args"] = args;
}

/// Arguments that make `hello-service` report its tagged version but fail its health check.
pub(crate) fn failing_health_args() -> Value {
    json!([
        "--port",
        "${NOMAD_PORT_http}",
        "--version",
        "${NOMAD_META_version}",
        "--fail-health"
    ])
}

/// Sorted IDs of the allocations of `group` that are meant to run.
pub(crate) fn alloc_ids(allocs: &[AllocationListStub], group: &str) -> Vec<String> {
    let mut ids: Vec<String> = allocs
        .iter()
        .filter(|a| a.task_group == group && a.desired_status == "run")
        .map(|a| a.id.clone())
        .collect();
    ids.sort();
    ids
}
