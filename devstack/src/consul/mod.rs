//! A Consul-compatible HTTP API for the dev stack.
//!
//! Real Consul clients (the official Go and Python ones, our own Rust
//! client) talk to it unchanged, so the proxy's discovery and the dev Nomad's
//! service registration exercise the same code paths they use against a
//! real cluster. It models one node (this machine) that is also the only
//! server and the leader.
//!
//! Module map:
//! - `state`: data model, the raft-like index, per-table
//!   indexes, blocking-query wakeups.
//! - `kv`: `/v1/kv/...`.
//! - `agent`: `/v1/agent/...` (registration, TTL updates, local views);
//!   `agent_self`: `/v1/agent/self`.
//! - `session`: `/v1/session/...` and KV `acquire`/`release` (locks, TTLs,
//!   lock-delay, `release`/`delete` behavior).
//! - `catalog`: `/v1/catalog/...`, `/v1/health/...`, `/v1/status/...`;
//!   `catalog_ext`: `/v1/catalog/register` and `/deregister` for external
//!   nodes (merged into every catalog and health read).
//! - `filter`: the `?filter=` expression subset.
//! - `render`: response JSON shapes.
//! - `runner`: HTTP/TCP/TTL check execution and the critical-service reaper.
//! - `persist`: atomic JSON snapshots in the data directory.
//! - `http`, `duration`: query parsing, headers, errors, Go durations.
//! - [`acl`]: policies in Consul's rule language, tokens, decisions;
//!   `acl_http`: the enforcement in front of every endpoint (when
//!   [`ConsulConfig::acl`] is set).
//!
//! Deliberate gaps: of the ACL API only `/v1/acl/token/self` (tokens and
//! policies are given at start; other `/v1/acl/...` routes answer `404 page
//! not found`), transactions, prepared queries, events or connect; script
//! and gRPC checks are stored but not run; HTTP checks support plain
//! `http://` only.

pub mod acl;
mod acl_http;
mod agent;
mod agent_self;
mod catalog;
mod catalog_ext;
pub(crate) mod duration;
mod filter;
mod http;
mod kv;
mod persist;
mod render;
mod runner;
mod session;
mod state;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, put};

use self::persist::Persister;
use self::state::{Inner, NodeInfo, Store};

/// Settings of the dev Consul.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Where state is persisted; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Name of the single node (a hostname, or `switchyard-dev`).
    pub node_name: String,
    /// Datacenter name reported everywhere (`dc1`).
    pub datacenter: String,
    /// Address reported as the node address (and leader address).
    pub advertise_addr: IpAddr,
    /// How often the reaper looks for services to deregister after their
    /// `DeregisterCriticalServiceAfter`. Consul uses 30 s; tests go lower.
    pub reap_interval: Duration,
    /// Consul's `session_ttl_min`: the shortest session TTL accepted
    /// (10 s by default, like Consul; tests that need fast expiry lower it).
    pub session_ttl_min: Duration,
    /// Shortest check interval honoured. Consul's agent raises intervals
    /// below 1 s to 1 s, and so does the dev agent by default; this is a
    /// dev-only knob for tests that need sub-second probes and say so.
    pub min_check_interval: Duration,
    /// ACLs, enforced on every endpoint with default policy `deny`; `None`
    /// serves everything to everyone (Consul with ACLs disabled).
    pub acl: Option<Arc<acl::ConsulAcl>>,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            node_name: "switchyard-dev".to_owned(),
            datacenter: "dc1".to_owned(),
            advertise_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            reap_interval: Duration::from_secs(30),
            session_ttl_min: Duration::from_secs(10),
            min_check_interval: Duration::from_secs(1),
            acl: None,
        }
    }
}

/// Failures starting the dev Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The data directory or snapshot could not be read or created.
    #[error("consul state at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot exists but is not valid JSON of the expected shape.
    #[error("consul state at {path} is corrupt: {source}")]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
}

/// The dev Consul server. Cheap to clone: clones share one state.
#[derive(Debug, Clone)]
pub struct DevConsul {
    store: Arc<Store>,
    reap_interval: Duration,
    sessions: session::SessionConfig,
    acl: Option<Arc<acl::ConsulAcl>>,
}

impl DevConsul {
    /// Creates the server, loading persisted state from `data_dir` if there
    /// is any (the index continues from the saved one).
    pub fn new(cfg: ConsulConfig) -> Result<Self, ConsulError> {
        let (persister, loaded) = match &cfg.data_dir {
            Some(dir) => {
                let (p, loaded) = Persister::open(dir)?;
                (Some(p), loaded)
            }
            None => (None, None),
        };
        let mut inner = loaded.unwrap_or_else(|| Inner::fresh(uuid::Uuid::new_v4().to_string()));
        inner.min_check_interval = cfg.min_check_interval;
        inner.init_runtime(tokio::time::Instant::now());
        let node = NodeInfo {
            name: cfg.node_name.clone(),
            datacenter: cfg.datacenter.clone(),
            address: cfg.advertise_addr.to_string(),
        };
        Ok(Self {
            store: Arc::new(Store::new(node, inner, persister)),
            reap_interval: cfg.reap_interval,
            sessions: session::SessionConfig {
                ttl_min: cfg.session_ttl_min,
            },
            acl: cfg.acl,
        })
    }

    /// The HTTP API as a router, for serving on any listener. Checks only
    /// run while [`DevConsul::serve`] runs (or the background tasks are
    /// started with [`DevConsul::spawn_background`]).
    pub fn router(&self) -> Router {
        let router = self.api_router();
        match &self.acl {
            Some(acl) => router.layer(axum::middleware::from_fn_with_state(
                (Arc::clone(&self.store), Arc::clone(acl)),
                acl_http::enforce,
            )),
            None => router,
        }
    }

    fn api_router(&self) -> Router {
        Router::new()
            .route(
                "/v1/kv",
                get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
            )
            .route(
                "/v1/kv/",
                get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
            )
            .route(
                "/v1/kv/{*key}",
                get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
            )
            .route("/v1/agent/self", get(agent_self::agent_self))
            .route("/v1/agent/service/register", put(agent::service_register))
            .route(
                "/v1/agent/service/deregister/{id}",
                put(agent::service_deregister),
            )
            .route("/v1/agent/service/{id}", get(agent::service))
            .route("/v1/agent/services", get(agent::services))
            .route("/v1/agent/checks", get(agent::checks))
            .route("/v1/agent/check/register", put(agent::check_register))
            .route(
                "/v1/agent/check/deregister/{id}",
                put(agent::check_deregister),
            )
            .route("/v1/agent/check/pass/{id}", put(agent::check_pass))
            .route("/v1/agent/check/warn/{id}", put(agent::check_warn))
            .route("/v1/agent/check/fail/{id}", put(agent::check_fail))
            .route("/v1/agent/check/update/{id}", put(agent::check_update))
            .route("/v1/agent/health/service/id/{id}", get(agent::health_by_id))
            .route(
                "/v1/agent/health/service/name/{name}",
                get(agent::health_by_name),
            )
            .route("/v1/catalog/register", put(catalog_ext::register))
            .route("/v1/catalog/deregister", put(catalog_ext::deregister))
            .route("/v1/catalog/services", get(catalog::catalog_services))
            .route("/v1/catalog/service/{name}", get(catalog::catalog_service))
            .route("/v1/catalog/nodes", get(catalog::catalog_nodes))
            .route("/v1/health/service/{name}", get(catalog::health_service))
            .route("/v1/health/checks/{name}", get(catalog::health_checks))
            .route("/v1/health/state/{state}", get(catalog::health_state))
            .route("/v1/status/leader", get(catalog::status_leader))
            .route("/v1/status/peers", get(catalog::status_peers))
            .fallback(|| async { http::text(StatusCode::NOT_FOUND, "404 page not found") })
            // Bodies up to a few MB reach the handlers so an oversized KV
            // value gets Consul's own 413 message; larger ones are cut off
            // by the extractor (also a 413).
            .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
            .with_state(Arc::clone(&self.store))
            .merge(self.session_router())
            .merge(
                Router::new()
                    .route("/v1/acl/token/self", get(acl_http::token_self))
                    .with_state(self.acl.clone()),
            )
    }

    fn session_router(&self) -> Router {
        Router::new()
            .route("/v1/session/create", put(session::create))
            .route("/v1/session/destroy/{id}", put(session::destroy))
            .route("/v1/session/renew/{id}", put(session::renew))
            .route("/v1/session/info/{id}", get(session::info))
            .route("/v1/session/node/{node}", get(session::node))
            .route("/v1/session/list", get(session::list))
            .route("/v1/session/destroy/", put(session::missing_session))
            .route("/v1/session/renew/", put(session::missing_session))
            .route("/v1/session/info/", get(session::missing_session))
            .route("/v1/session/node/", get(session::missing_node))
            .with_state((Arc::clone(&self.store), self.sessions))
    }

    /// Starts the check runner and the reaper on the current runtime; they
    /// stop when the server shuts down. Use this when serving
    /// [`DevConsul::router`] yourself.
    pub fn spawn_background(&self) {
        tokio::spawn(runner::run_checks(Arc::clone(&self.store)));
        tokio::spawn(session::run_session_timers(Arc::clone(&self.store)));
        tokio::spawn(runner::run_reaper(
            Arc::clone(&self.store),
            self.reap_interval,
        ));
    }

    /// Ends blocking queries and background tasks, and flushes state to
    /// disk. Called by [`DevConsul::serve`] on shutdown.
    pub fn shutdown(&self) {
        self.store.shutdown.send_replace(true);
        self.store.flush();
    }

    /// Serves the API on `listener` (a `TcpListener`, or a
    /// [`crate::tls::TlsListener`] for HTTPS), with the check runner and the
    /// reaper, until `shutdown` resolves; then answers pending blocking
    /// queries, drains connections and flushes state to disk.
    pub async fn serve<L>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        self.spawn_background();
        let this = self.clone();
        let mut stopped = self.store.shutdown.subscribe();
        tokio::spawn(async move {
            shutdown.await;
            this.shutdown();
        });
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(?addr, acl = self.acl.is_some(), "consul: dev API listening");
        }
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        self.shutdown();
        result
    }
}
