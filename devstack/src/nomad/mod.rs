//! Dev Nomad: a Nomad-compatible HTTP API with a local process driver.
//!
//! Module map:
//! - [`hcl`]: job files (HCL) to the API's JSON `Job` (`/v1/jobs/parse`),
//!   the `switchyard-jobspec` crate re-exported.
//! - `spec`: defaults (`Canonicalize`), the typed group view, and the
//!   destructive-versus-in-place comparison (`hashi/tests/fixtures/README.md` §N3).
//! - `state`: jobs/versions/allocations/deployments/evaluations under one
//!   index, and their JSON rendering.
//! - `sched`: register, revert, stop, per-group reconciliation, deployments
//!   and their health watcher.
//! - `resched`: reschedule policies of failed allocations (delay
//!   functions, attempts within an interval, `RescheduleTracker`).
//! - `runner`: one task per allocation, the `raw_exec`-style process driver,
//!   Consul registration order (register, run; deregister, delay, kill).
//! - `consul`: the few Consul agent endpoints used, over HTTP only, so the
//!   same code runs against the dev Consul or a real agent.
//! - `plan`: `/v1/job/:id/plan`, a dry run of the scheduler on a copy of
//!   the store, with Nomad's diff and annotations.
//! - `http`: the axum routes, blocking queries and Nomad's error shapes.
//!
//! Why a dev Nomad at all: the controller and the proxy use the same clients
//! against this and against a real cluster, so blue/green flows can be run and
//! tested on one machine. Fidelity to the fixtures in `hashi/tests/fixtures` is the
//! contract; anything not implemented answers as Nomad would for an unknown
//! route rather than inventing behaviour.

pub mod acl;
mod consul;
mod http;
mod leftovers;
mod plan;
mod resched;
mod runner;
mod sched;
mod spec;
mod state;
pub(crate) mod util;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

pub use consul::ConsulError;
pub use leftovers::exec_task;
pub use switchyard_jobspec as hcl;
pub use switchyard_jobspec::ParseError;

use runner::{RunnerCmd, RunnerHandle};
use state::{NodeInfo, Persisted, Store};

/// Settings of the dev Nomad.
#[derive(Debug, Clone)]
pub struct NomadConfig {
    /// Where jobs (and allocation directories) are kept; `None` keeps state
    /// in memory and allocation directories under the system temp dir.
    pub data_dir: Option<PathBuf>,
    /// Consul HTTP address services are registered with, e.g. `http://127.0.0.1:8500`.
    pub consul_addr: String,
    /// Node name shown in allocations.
    pub node_name: String,
    /// Datacenter (`NOMAD_DC`).
    pub datacenter: String,
    /// Region (`NOMAD_REGION`).
    pub region: String,
    /// Address tasks bind and services advertise.
    pub bind_ip: IpAddr,
    /// Range dynamic ports are picked from.
    pub port_range: RangeInclusive<u16>,
    /// Directories prepended to `PATH` for tasks (e.g. `target/debug`).
    pub extra_path: Vec<PathBuf>,
    /// A command every task is started through, followed by this process's
    /// PID, the task's program and its arguments; it must end in
    /// [`exec_task`] (in `switchyard`: the hidden `launch-task` subcommand),
    /// which ties the task's life to this process. `None` starts tasks
    /// directly.
    pub task_launcher: Option<Vec<std::ffi::OsString>>,
    /// The file listing live task process groups, read on start to stop what
    /// an earlier run left behind; `None` defaults to `<data_dir>/tasks.json`
    /// (no record without a data directory).
    pub task_record: Option<PathBuf>,
    /// The Nomad agent's Consul token (`consul { token = ... }`), sent with
    /// every registration.
    pub consul_token: Option<String>,
    /// CA certificate for an `https://` Consul address (`consul { ca_file
    /// = ... }`); `None` trusts the system's roots.
    pub consul_ca_cert: Option<PathBuf>,
    /// ACLs, enforced on every endpoint; `None` serves everything to
    /// everyone (Nomad with ACLs disabled).
    pub acl: Option<Arc<acl::NomadAcl>>,
}

impl Default for NomadConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            consul_addr: "http://127.0.0.1:8500".into(),
            node_name: "dev".into(),
            datacenter: "dc1".into(),
            region: "global".into(),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_range: 20000..=32000,
            extra_path: Vec::new(),
            task_launcher: None,
            task_record: None,
            consul_token: None,
            consul_ca_cert: None,
            acl: None,
        }
    }
}

/// Errors creating or running the dev Nomad.
#[derive(Debug, thiserror::Error)]
pub enum NomadError {
    /// Filesystem failure (data dir, state file).
    #[error("dev nomad I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The persisted state file could not be read back.
    #[error("dev nomad state file {path} is invalid: {reason}")]
    State {
        /// Path of the state file.
        path: PathBuf,
        /// Decoder error.
        reason: String,
    },
    /// The Consul client could not be set up (CA file, token).
    #[error("dev nomad: {0}")]
    Consul(#[from] ConsulError),
}

/// An API error: Nomad answers errors as text/plain with a status code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: ::http::StatusCode,
    pub(crate) msg: String,
    /// The table index a failed read saw (a 404 of a blocking read carries
    /// `X-Nomad-Index`, and blocks on it, like any other answer).
    pub(crate) index: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: ::http::StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
            index: None,
        }
    }
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(::http::StatusCode::BAD_REQUEST, msg)
    }
}

/// Shared state behind every clone of [`DevNomad`].
pub(crate) struct Inner {
    pub(crate) cfg: NomadConfig,
    pub(crate) node: NodeInfo,
    pub(crate) alloc_root: PathBuf,
    state_file: Option<PathBuf>,
    store: Mutex<Store>,
    persist_lock: Mutex<()>,
    index_tx: watch::Sender<u64>,
    pub(crate) consul: consul::ConsulAgent,
    runners: Mutex<HashMap<String, RunnerHandle>>,
    procs: Mutex<BTreeMap<u32, String>>,
    task_record: Option<PathBuf>,
    record_lock: Mutex<()>,
    shutdown_tx: watch::Sender<bool>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock must not take the whole API down.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// Runs `f` on the store, then publishes the new index and persists jobs
    /// if they changed.
    pub(crate) fn mutate<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, index, dirty) = {
            let mut s = relock(&self.store);
            let r = f(&mut s);
            let dirty = std::mem::take(&mut s.jobs_dirty);
            (r, s.index, dirty)
        };
        self.index_tx.send_replace(index);
        if dirty {
            self.persist();
        }
        r
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&relock(&self.store))
    }

    pub(crate) fn lock_runners(&self) -> MutexGuard<'_, HashMap<String, RunnerHandle>> {
        relock(&self.runners)
    }

    pub(crate) fn lock_procs(&self) -> MutexGuard<'_, BTreeMap<u32, String>> {
        relock(&self.procs)
    }

    pub(crate) fn index_rx(&self) -> watch::Receiver<u64> {
        self.index_tx.subscribe()
    }

    pub(crate) fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Writes jobs, versions and the index atomically (temp file + rename).
    fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let _guard = relock(&self.persist_lock);
        let snapshot = self.read(|s| Persisted {
            index: s.index,
            node_id: self.node.id.clone(),
            jobs: s.jobs.clone(),
        });
        let result = serde_json::to_vec_pretty(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(err) = result {
            tracing::error!(path = %path.display(), error = %err, "cannot persist dev nomad state");
        }
    }
}

/// The dev Nomad server. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct DevNomad {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DevNomad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevNomad")
            .field("node", &self.inner.node.name)
            .finish_non_exhaustive()
    }
}

impl DevNomad {
    /// Creates the server; with a `data_dir`, reloads persisted jobs and
    /// versions (their allocations are re-placed by [`DevNomad::serve`]).
    pub fn new(cfg: NomadConfig) -> Result<Self, NomadError> {
        let (alloc_root, state_file) = match &cfg.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.join("allocs"), Some(dir.join("nomad-state.json")))
            }
            None => (
                std::env::temp_dir()
                    .join(format!("switchyard-dev-nomad-{}", uuid::Uuid::new_v4()))
                    .join("allocs"),
                None,
            ),
        };
        std::fs::create_dir_all(&alloc_root)?;
        let mut store = Store::default();
        let mut node_id = uuid::Uuid::new_v4().to_string();
        if let Some(path) = state_file.as_ref().filter(|p| p.exists()) {
            let bytes = std::fs::read(path)?;
            let p: Persisted = serde_json::from_slice(&bytes).map_err(|e| NomadError::State {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            store.index = p.index;
            store.jobs_index = p.index;
            store.jobs = p.jobs;
            if !p.node_id.is_empty() {
                node_id = p.node_id;
            }
        }
        // The index starts at 1 and only grows.
        store.index = store.index.max(1);
        let (index_tx, _) = watch::channel(store.index);
        let (shutdown_tx, _) = watch::channel(false);
        let consul = consul::ConsulAgent::new(
            &cfg.consul_addr,
            cfg.consul_token.as_deref(),
            cfg.consul_ca_cert.as_deref(),
        )?;
        let task_record = cfg
            .task_record
            .clone()
            .or_else(|| cfg.data_dir.as_ref().map(|d| d.join("tasks.json")));
        let node = NodeInfo {
            id: node_id,
            name: cfg.node_name.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                node,
                alloc_root,
                state_file,
                store: Mutex::new(store),
                persist_lock: Mutex::new(()),
                index_tx,
                consul,
                runners: Mutex::new(HashMap::new()),
                procs: Mutex::new(BTreeMap::new()),
                task_record,
                record_lock: Mutex::new(()),
                shutdown_tx,
            }),
        })
    }

    /// The HTTP API as an axum router (for embedding or tests).
    pub fn router(&self) -> axum::Router {
        let router = http::router(self.inner.clone());
        match &self.inner.cfg.acl {
            Some(acl) => router.layer(axum::middleware::from_fn_with_state(
                Arc::clone(acl),
                acl::enforce,
            )),
            None => router,
        }
    }

    /// Serves the API on `listener` until `shutdown` resolves. First stops
    /// the tasks an earlier run left behind and removes their Consul
    /// registrations (see `leftovers`), then re-places the allocations of
    /// running jobs; on shutdown stops every allocation
    /// (deregister, shutdown delay, SIGTERM, SIGKILL after `kill_timeout`) and
    /// returns only once no child process is left.
    pub async fn serve<L>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        leftovers::reap(&self.inner).await;
        sched::restore(&self.inner);
        let inner = self.inner.clone();
        let stop_flag = self.inner.shutdown_tx.clone();
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Ends pending blocking queries so graceful shutdown does not wait minutes.
                stop_flag.send_replace(true);
            })
            .await;
        inner.shutdown_tx.send_replace(true);
        self.stop_all_allocations().await;
        result
    }

    /// Stops every allocation and waits for all child processes to exit.
    async fn stop_all_allocations(&self) {
        let handles: Vec<(String, RunnerHandle)> = self.inner.lock_runners().drain().collect();
        for (_, h) in &handles {
            let _ = h.tx.send(RunnerCmd::Stop);
        }
        for (id, h) in handles {
            if let Err(err) = h.join.await {
                tracing::error!(alloc_id = %id, error = %err, "allocation runner ended abnormally");
            }
        }
        // Belt and braces: nothing tracked may survive the server.
        let left: Vec<u32> = self.inner.lock_procs().keys().copied().collect();
        for pid in left {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// PIDs of the task processes currently running, with `alloc_id/task`.
    /// Useful to operators (`switchyard dev` status) and to tests.
    pub fn task_pids(&self) -> BTreeMap<u32, String> {
        self.inner.lock_procs().clone()
    }

    /// Where allocation directories (task logs) live.
    pub fn alloc_dir(&self) -> PathBuf {
        self.inner.alloc_root.clone()
    }
}
