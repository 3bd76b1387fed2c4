//! Shared test utilities for the dev Consul integration tests: start a real server
//! on `127.0.0.1:0`, talk to it with reqwest, poll for eventual states.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running dev Consul.
pub struct Server {
    pub base: String,
    pub consul: DevConsul,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A test configuration: in memory, fast reaper.
pub fn config() -> ConsulConfig {
    ConsulConfig {
        data_dir: None,
        node_name: "test-node".to_owned(),
        datacenter: "dc1".to_owned(),
        advertise_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        reap_interval: Duration::from_millis(50),
        ..ConsulConfig::default()
    }
}

/// A fresh, unique temporary directory.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-consul-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn start() -> Server {
    start_with(config()).await
}

pub async fn start_with(cfg: ConsulConfig) -> Server {
    let consul = DevConsul::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(consul.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        consul,
        http: reqwest::Client::new(),
        stop: Some(tx),
        task: Some(task),
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and waits for it to finish (state flushed).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops promptly")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u64, Value) {
        let resp = self.get(path).await;
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        // Agent and status endpoints carry no index; report 0 for them.
        let idx = resp
            .headers()
            .get("X-Consul-Index")
            .map(|v| v.to_str().unwrap().parse().unwrap())
            .unwrap_or(0);
        (idx, resp.json().await.unwrap())
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_empty(&self, path: &str) -> reqwest::Response {
        self.http.put(self.url(path)).send().await.unwrap()
    }

    pub async fn register(&self, body: Value) {
        let resp = self.put_json("/v1/agent/service/register", &body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "register failed: {text}");
        assert!(text.is_empty(), "register answers an empty body");
    }

    /// Status of the check `id` per /v1/agent/checks (None if absent).
    pub async fn check_status(&self, id: &str) -> Option<String> {
        let (_, checks) = self.get_json("/v1/agent/checks").await;
        checks
            .get(id)
            .and_then(|c| c.get("Status"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Polls until the check reaches `status` or the deadline passes.
    pub async fn wait_check(&self, id: &str, status: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let current = self.check_status(id).await;
            if current.as_deref() == Some(status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "check {id} did not become {status} within {within:?} (now {current:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn index_of(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("X-Consul-Index")
        .expect("X-Consul-Index header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
