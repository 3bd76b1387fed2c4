//! Shared test utilities for the dev Consul integration tests: start a real server
//! on `127.0.0.1:0`, talk to it with reqwest, poll for eventual states (the
//! server, the client and the polls come from `switchyard_testkit`).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use switchyard_testkit::consul::serve_dev_consul;
use switchyard_testkit::{Served, http_client, poll};

/// A running dev Consul.
pub struct Server {
    pub base: String,
    pub consul: DevConsul,
    pub http: reqwest::Client,
    served: Served<std::io::Result<()>>,
}

/// A test configuration: in memory, fast reaper.
pub fn config() -> ConsulConfig {
    ConsulConfig {
        data_dir: None,
        node_name: "test-node".to_owned(),
        datacenter: "dc1".to_owned(),
        advertise_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        reap_interval: Duration::from_millis(50),
        // These tests probe every few tens of milliseconds; Consul (and the
        // dev agent's default) would raise that to 1 s.
        min_check_interval: Duration::from_millis(10),
        ..ConsulConfig::default()
    }
}

/// A fresh, unique temporary directory.
pub fn temp_dir() -> PathBuf {
    switchyard_testkit::temp_dir("consul")
}

pub async fn start() -> Server {
    start_with(config()).await
}

pub async fn start_with(cfg: ConsulConfig) -> Server {
    let (consul, served) = serve_dev_consul(cfg).await;
    Server {
        base: served.url(),
        consul,
        http: http_client(),
        served,
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and waits for it to finish (state flushed).
    pub async fn stop(mut self) {
        if let Some(served) = self.served.stop(Duration::from_secs(10)).await {
            served.unwrap();
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
        let mut current = None;
        poll(within, Duration::from_millis(20), async || {
            current = self.check_status(id).await;
            (current.as_deref() == Some(status)).then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!("check {id} did not become {status} within {within:?} (now {current:?})")
        });
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
