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
//! The servers, the proxy, the load loop and the waits come from `switchyard_testkit`.
//!
//! Prerequisite: `cargo build -p hello-service` (the binary is looked up beside the test
//! binary's build directory, `target/debug`).
//!
//! Each test file compiles this module on its own and uses a different part of it, so items
//! one file does not need are not dead code.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_controller::{Controller, Settings};
use switchyard_devstack::consul::ConsulConfig;
use switchyard_devstack::nomad::NomadConfig;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::nomad::{AllocationListStub, Job, NomadClient};
use switchyard_testkit::consul::serve_dev_consul;
use switchyard_testkit::nomad::serve_dev_nomad;
use switchyard_testkit::{
    Clock, LoadGen, ProxyHandle, Served, accept_loop, answered_by, consul_config, http_client, poll,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub(crate) use switchyard_testkit::workspace_root;

/// A fresh directory for one test's controller state; unique per process and call, so tests
/// running in parallel never share backups or switch records.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    switchyard_testkit::temp_dir(&format!("controller-{name}"))
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
        // Aborting this task drops the listener and every relayed connection.
        self.task = Some(accept_loop(l, move |mut inbound| async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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
        let addr = self.addr;
        let l = poll(
            Duration::from_secs(5),
            Duration::from_millis(20),
            async || TcpListener::bind(addr).await.ok(),
        )
        .await
        .unwrap_or_else(|| panic!("cannot rebind {addr}"));
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
    consul_server: Served<std::io::Result<()>>,
    nomad_server: Served<std::io::Result<()>>,
    proxy: ProxyHandle,
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
        let bin = switchyard_testkit::hello_bin_dir();
        let (_, consul_server) = serve_dev_consul(ConsulConfig::default()).await;
        let consul_url = consul_server.url();
        let (_, nomad_server) = serve_dev_nomad(NomadConfig {
            consul_addr: consul_url.clone(),
            extra_path: vec![bin],
            ..NomadConfig::default()
        })
        .await;
        let nomad_url = nomad_server.url();
        let proxy = ProxyHandle::start(&consul_config(
            &consul_url,
            "[registration]\ncheck_interval = \"1s\"",
        ))
        .await;

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
            Some(Gate::start(nomad_server.addr).await)
        } else {
            None
        };
        Stack {
            consul_url,
            nomad_url,
            nomad,
            gate,
            proxy_url: proxy.url(""),
            admin_url: proxy.admin_url(""),
            state_dir: temp_dir(name),
            consul_server,
            nomad_server,
            proxy,
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
        poll(
            Duration::from_secs(40),
            Duration::from_millis(200),
            async || {
                (version_served(&self.proxy_url).await.as_deref() == Some(version)).then_some(())
            },
        )
        .await
        .unwrap_or_else(|| panic!("{colour} never served {version}"));
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
        let tasks: [JoinHandle<()>; 3] = [
            self.proxy.begin_shutdown(),
            stopped(&mut self.nomad_server),
            stopped(&mut self.consul_server),
        ];
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Signals a server to stop; its task, to wait for.
fn stopped(server: &mut Served<std::io::Result<()>>) -> JoinHandle<()> {
    let task = server.begin_stop();
    tokio::spawn(async move {
        if let Some(t) = task {
            let _ = t.await;
        }
    })
}

/// The version the proxy answers `/hello` with, or `None` when it fails or does not say.
pub(crate) async fn version_served(proxy: &str) -> Option<String> {
    answered_by(&http_client(), &format!("{proxy}/hello"), "x-app-version").await
}

/// A load loop through the proxy, one request every `pause`: counts successes and failures
/// and the versions that answered.
pub(crate) struct Load(LoadGen);

impl Load {
    pub(crate) fn start(proxy: &str, pause: Duration) -> Load {
        Load(LoadGen::start_paced(
            1,
            format!("{proxy}/hello"),
            "x-app-version",
            Clock::new(),
            pause,
        ))
    }

    /// Stops the loop: (successful requests, failed requests, distinct versions that answered,
    /// in order of first appearance).
    pub(crate) async fn finish(self) -> (usize, usize, Vec<String>) {
        let samples = self.0.finish().await;
        let mut versions: Vec<String> = Vec::new();
        for s in samples.iter().filter(|s| s.ok) {
            if !versions.contains(&s.version) {
                versions.push(s.version.clone());
            }
        }
        let ok = samples.iter().filter(|s| s.ok).count();
        (ok, samples.len() - ok, versions)
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
