//! Test support for the dev Nomad: a small fake Consul agent, server start-up
//! helpers and a JSON shape comparison against the fixtures (the server, the
//! clients, the polls and the binary's location come from `switchyard_testkit`).
//!
//! The tests run real `hello-service` processes. Cargo only exposes
//! `CARGO_BIN_EXE_*` for binaries of the crate under test, so the binary is
//! located as `<workspace>/target/debug/hello-service`; build it first with
//! `cargo build -p hello-service`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as AxPath, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use serde_json::Value;
use switchyard_devstack::nomad::{DevNomad, NomadConfig};
use switchyard_testkit::json::{kind, sample};
use switchyard_testkit::nomad::serve_dev_nomad;
use switchyard_testkit::{Served, http_client};

/// What the fake agent saw.
#[derive(Default)]
pub struct FakeConsulState {
    pub services: BTreeMap<String, Value>,
    /// ("register" | "deregister", service id) in arrival order.
    pub log: Vec<(String, String)>,
}

/// A fake Consul agent: records registrations and runs the registered
/// HTTP/TCP checks on demand when health is asked for.
#[derive(Clone)]
pub struct FakeConsul {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeConsulState>>,
}

async fn register(
    State(st): State<Arc<Mutex<FakeConsulState>>>,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let id = v["ID"].as_str().unwrap_or_default().to_string();
    let mut s = st.lock().unwrap();
    s.log.push(("register".into(), id.clone()));
    s.services.insert(id, v);
    StatusCode::OK
}

async fn deregister(
    State(st): State<Arc<Mutex<FakeConsulState>>>,
    AxPath(id): AxPath<String>,
) -> StatusCode {
    let mut s = st.lock().unwrap();
    s.log.push(("deregister".into(), id.clone()));
    s.services.remove(&id);
    StatusCode::OK
}

async fn health(
    State(st): State<Arc<Mutex<FakeConsulState>>>,
    AxPath(id): AxPath<String>,
) -> StatusCode {
    let svc = st.lock().unwrap().services.get(&id).cloned();
    let Some(svc) = svc else {
        return StatusCode::NOT_FOUND;
    };
    let client = switchyard_hashi::tls::http_client_builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for c in svc["Checks"].as_array().cloned().unwrap_or_default() {
        if let Some(url) = c["HTTP"].as_str() {
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => {}
                _ => return StatusCode::SERVICE_UNAVAILABLE,
            }
        } else if let Some(addr) = c["TCP"].as_str()
            && tokio::net::TcpStream::connect(addr).await.is_err()
        {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    StatusCode::OK
}

impl FakeConsul {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeConsulState::default()));
        let app = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/health/service/id/{id}", get(health))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn services(&self) -> BTreeMap<String, Value> {
        self.state.lock().unwrap().services.clone()
    }

    pub fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }
}

pub use switchyard_testkit::{hello_bin_dir, wait_for, workspace_root};

/// A running dev Nomad.
pub struct Nomad {
    pub url: String,
    pub handle: DevNomad,
    served: Served<std::io::Result<()>>,
}

impl Nomad {
    pub async fn start(consul: &str, data_dir: Option<PathBuf>) -> Self {
        let cfg = NomadConfig {
            data_dir,
            consul_addr: consul.to_string(),
            extra_path: vec![hello_bin_dir()],
            ..NomadConfig::default()
        };
        let (handle, served) = serve_dev_nomad(cfg).await;
        Self {
            url: served.url(),
            handle,
            served,
        }
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn shutdown(&mut self) {
        if let Some(served) = self.served.stop(Duration::from_secs(60)).await {
            served.unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = http_client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut rb = http_client().request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (st, text) = self.send(reqwest::Method::POST, path, Some(body)).await;
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Parses the repository's job file through `/v1/jobs/parse`.
    pub async fn parse_job_file(&self) -> Value {
        let hcl = std::fs::read_to_string(workspace_root().join("config/hello-service.nomad.hcl"))
            .unwrap();
        let (st, job) = self
            .post(
                "/v1/jobs/parse",
                serde_json::json!({"JobHCL": hcl, "Canonicalize": true}),
            )
            .await;
        assert_eq!(st, 200, "{job}");
        job
    }

    pub async fn register(&self, job: &Value) -> Value {
        let (st, reply) = self.post("/v1/jobs", serde_json::json!({"Job": job})).await;
        assert_eq!(st, 200, "{reply}");
        reply
    }

    /// Live (desired run) allocations of a job.
    pub async fn live_allocs(&self, job: &str) -> Vec<Value> {
        let (_, allocs) = self.get(&format!("/v1/job/{job}/allocations")).await;
        allocs
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["DesiredStatus"] == "run")
            .cloned()
            .collect()
    }

    /// Waits until `n` live allocations are running, all on `version`.
    pub async fn wait_running(&self, job: &str, n: usize, version: u64) -> Vec<Value> {
        wait_for(Duration::from_secs(30), || async {
            let live = self.live_allocs(job).await;
            let ok = live.len() == n
                && live
                    .iter()
                    .all(|a| a["ClientStatus"] == "running" && a["JobVersion"] == version);
            ok.then_some(live)
        })
        .await
        .unwrap_or_else(|| panic!("{n} allocations of {job} never ran at version {version}"))
    }

    pub async fn wait_deployment(&self, job: &str, status: &str) -> Value {
        wait_for(Duration::from_secs(40), || async {
            let (_, d) = self.get(&format!("/v1/job/{job}/deployment")).await;
            (d["Status"] == status).then_some(d)
        })
        .await
        .unwrap_or_else(|| panic!("deployment of {job} never became {status}"))
    }
}

/// Host port of an allocation's `http` port.
pub fn http_port(alloc: &Value) -> u16 {
    alloc["AllocatedResources"]["Shared"]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Label"] == "http")
        .and_then(|p| p["Value"].as_u64())
        .unwrap() as u16
}

pub fn ids(allocs: &[Value], group: &str) -> Vec<String> {
    let mut v: Vec<String> = allocs
        .iter()
        .filter(|a| a["TaskGroup"] == group)
        .map(|a| a["ID"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Whether a process exists (signal 0).
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// A published Nomad sample: the repository keeps one copy of them beside
/// the client crate that decodes them (`SWITCHYARD_FIXTURES_DIR` overrides).
pub fn fixture(name: &str) -> Value {
    sample(&format!("nomad/{name}"))
}

/// Compares JSON types recursively for the keys both sides have (null on
/// either side matches anything; arrays compare their first elements).
/// Returns the mismatching paths and how many fields were compared.
pub fn shape_diff(fixture: &Value, ours: &Value, path: &str, out: &mut Vec<String>) -> usize {
    if fixture.is_null() || ours.is_null() {
        return 0;
    }
    if kind(fixture) != kind(ours) {
        out.push(format!(
            "{path}: fixture {} vs ours {}",
            kind(fixture),
            kind(ours)
        ));
        return 1;
    }
    match (fixture, ours) {
        // Maps keyed by group or task name: the names differ from the
        // fixture's, so compare its first entry with each of ours.
        (Value::Object(f), Value::Object(o))
            if [
                ".TaskGroups",
                ".TaskStates",
                ".Summary",
                ".QueuedAllocations",
            ]
            .iter()
            .any(|k| path.ends_with(k)) =>
        {
            let Some(fv) = f.values().next() else {
                return 0;
            };
            o.iter()
                .map(|(k, ov)| shape_diff(fv, ov, &format!("{path}.{k}"), out))
                .sum()
        }
        (Value::Object(f), Value::Object(o)) => {
            let mut n = 0;
            for (k, fv) in f {
                if let Some(ov) = o.get(k) {
                    n += 1 + shape_diff(fv, ov, &format!("{path}.{k}"), out);
                }
            }
            n
        }
        (Value::Array(f), Value::Array(o)) => match (f.first(), o.first()) {
            (Some(fv), Some(ov)) => shape_diff(fv, ov, &format!("{path}[0]"), out),
            _ => 0,
        },
        _ => 0,
    }
}

/// Asserts same shape and that at least `min_fields` were compared.
pub fn assert_shape(fixture_name: &str, ours: &Value, min_fields: usize) {
    let f = fixture(fixture_name);
    let mut diffs = Vec::new();
    let n = shape_diff(&f, ours, "$", &mut diffs);
    assert!(diffs.is_empty(), "{fixture_name}: {diffs:#?}");
    eprintln!("{fixture_name}: {n} fields compared");
    assert!(n >= min_fields, "{fixture_name}: only {n} fields in common");
}
