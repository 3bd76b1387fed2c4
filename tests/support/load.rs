//! Load and switching helpers for zero-downtime tests.
//!
//! - [`DevConsulServer`]: the dev stack's Consul API on `127.0.0.1:0`, so
//!   discovery runs against the same server `switchyard dev` uses.
//! - [`register`]: an instance registered through the real Consul client,
//!   tagged `[colour, role, version=vN]`, with a TTL check reported passing.
//! - [`LoadGen`]: N keep-alive clients hammering one URL, recording each
//!   request as a `switchyard_loadcheck::Sample` (start, end, version).
//! - [`Clock`]: one time base for the load and the switch log, so the
//!   verdict compares like with like.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard_devstack::consul::{ConsulConfig as DevConsulConfig, DevConsul};
use switchyard_hashi::consul::{
    AgentServiceCheck, AgentServiceRegistration, CheckStatus, ConsulClient, ConsulConfig,
};
use switchyard_loadcheck::{Kind, Sample};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Milliseconds since a common origin, as `f64`.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }

    pub fn now_ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

/// A dev Consul serving on an ephemeral port until dropped.
pub struct DevConsulServer {
    pub addr: SocketAddr,
    pub client: ConsulClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl DevConsulServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let consul = DevConsul::new(DevConsulConfig::default()).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = consul
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        let client = ConsulClient::new(ConsulConfig {
            address: format!("http://{addr}"),
            ..ConsulConfig::default()
        })
        .unwrap();
        Self {
            addr,
            client,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DevConsulServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Registers `addr` as an instance of `service` and reports its TTL check
/// passing, so it shows up in `?passing` answers straight away.
pub async fn register(
    client: &ConsulClient,
    service: &str,
    id: &str,
    addr: SocketAddr,
    colour: &str,
    role: &str,
    version: &str,
) {
    let check_id = format!("{id}:ttl");
    let reg = AgentServiceRegistration {
        id: id.to_owned(),
        name: service.to_owned(),
        tags: vec![
            colour.to_owned(),
            role.to_owned(),
            format!("version={version}"),
        ],
        address: addr.ip().to_string(),
        port: addr.port(),
        check: Some(AgentServiceCheck {
            check_id: check_id.clone(),
            name: format!("{id} alive"),
            ttl: "10m".to_owned(),
            status: Some(CheckStatus::Passing),
            ..AgentServiceCheck::default()
        }),
        ..AgentServiceRegistration::default()
    };
    client.agent_service_register(&reg).await.unwrap();
    client
        .agent_check_ttl(&check_id, CheckStatus::Passing, Some("test"))
        .await
        .unwrap();
}

/// Concurrent keep-alive clients requesting one URL until stopped.
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl LoadGen {
    /// Starts `clients` tasks, each with its own connection pool, reading
    /// the answering version from `version_header`.
    pub fn start(clients: usize, url: String, version_header: &'static str, clock: Clock) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url) = (Arc::clone(&stop), url.clone());
                tokio::spawn(async move {
                    let client = switchyard_hashi::tls::http_client_builder()
                        .timeout(Duration::from_secs(10))
                        .pool_max_idle_per_host(1)
                        .build()
                        .unwrap();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start_ms = clock.now_ms();
                        let (ok, version) = match client.get(&url).send().await {
                            Ok(r) => {
                                let status = r.status();
                                let version = r
                                    .headers()
                                    .get(version_header)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let body = r.text().await;
                                (status == 200 && body.is_ok(), version)
                            }
                            Err(_) => (false, String::new()),
                        };
                        samples.push(Sample {
                            start_ms,
                            end_ms: clock.now_ms(),
                            measured_ms: None,
                            version,
                            ok,
                            kind: Kind::Http,
                        });
                    }
                    samples
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients (each finishes its current request) and returns
    /// every sample.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}
