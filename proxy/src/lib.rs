//! switchyard's data plane: an HTTP reverse proxy in front of blue/green
//! service groups.
//!
//! Module map, in request order:
//!
//! - [`server`]: listeners, HTTP/1.1 + h2c (+ TLS) on one port, graceful shutdown.
//! - [`forward`]: the request path: route, pick, send, retry, respond.
//! - [`headers`]: hop-by-hop removal and forwarding headers.
//! - [`routing`]: the immutable [`routing::RouteTable`] behind an `ArcSwap`,
//!   and the [`routing::Router`] that builds the next one.
//! - [`upstream`]: endpoints and their keep-alive pools.
//! - [`body`]: the response body that returns connections to their pool.
//! - [`error`]: every request-path failure and the one status mapping.
//! - [`discovery`]: Consul blocking-query watches that feed the router.
//! - [`registration`]: the proxy's own entry in Consul, found by the controller.
//! - [`admin`]: status, switch, metrics, health and readiness for operators.
//! - [`metrics`]: the Prometheus registry.
//! - [`config`]: the TOML file, loaded in two stages.
//! - [`tls`]: rustls setup.
//!
//! The library never binds sockets on its own: [`Listeners::bind`] does it,
//! and tests pass listeners bound to `127.0.0.1:0` straight to
//! [`Proxy::run`].

pub mod admin;
pub mod body;
pub mod config;
pub mod discovery;
pub mod error;
pub mod forward;
pub mod headers;
mod io;
pub mod metrics;
pub mod registration;
pub mod routing;
pub mod server;
pub mod tls;
mod tunnel;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::config::{Config, PoolSource};
use crate::discovery::{ServiceWatch, Watches};
use crate::forward::{ForwardSettings, Forwarder};
use crate::metrics::Metrics;
use crate::routing::{InstanceSpec, PoolSpec, Router, ServiceSnapshot};
use crate::upstream::PoolSettings;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The Consul client could not be built.
    #[error("Consul client: {0}")]
    Consul(#[from] switchyard_hashi::Error),
}

/// Bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// Plain-text traffic.
    pub traffic: TcpListener,
    /// TLS traffic.
    pub tls: Option<TcpListener>,
    /// Admin API.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the configuration asks for.
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        }
        Ok(Self {
            traffic: bind(config.listen).await?,
            tls: match &config.tls {
                Some(t) => Some(bind(t.listen).await?),
                None => None,
            },
            admin: match config.admin.listen {
                Some(a) => Some(bind(a).await?),
                None => None,
            },
        })
    }
}

/// A configured proxy, ready to run.
pub struct Proxy {
    config: Config,
    router: Arc<Router>,
    forwarder: Arc<Forwarder>,
    watches: Watches,
    tls: Option<TlsAcceptor>,
    /// The Consul client, when a service uses Consul discovery.
    consul: Option<switchyard_hashi::consul::ConsulClient>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listen", &self.config.listen)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the routing state from a validated configuration. Static pools
    /// are served at once; Consul-backed services start empty until their
    /// first sync.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        let settings = PoolSettings {
            max_idle: config.max_idle_per_instance,
            idle_timeout: config.timeouts.upstream_idle,
            connect_timeout: config.timeouts.connect,
            eject_after: config.ejection.consecutive_failures,
            cool_down: config.ejection.cool_down,
        };
        let services: Vec<_> = config
            .services
            .iter()
            .map(|s| (s.name.clone(), s.balance))
            .collect();
        let router = Arc::new(Router::new(
            config.routes.clone(),
            &services,
            settings,
            config.timeouts.drain,
            metrics,
        ));

        let mut watches = HashMap::new();
        let mut client = None;
        for s in &config.services {
            match &s.source {
                PoolSource::Static {
                    active,
                    standby,
                    active_version,
                    standby_version,
                } => {
                    let spec = |colour: &str, addrs: &[SocketAddr], version: &Option<String>| {
                        let version = version.clone().unwrap_or_else(|| "static".into());
                        PoolSpec {
                            colour: colour.to_owned(),
                            version: version.clone(),
                            instances: addrs
                                .iter()
                                .map(|a| InstanceSpec {
                                    addr: *a,
                                    id: None,
                                    version: Some(version.clone()),
                                })
                                .collect(),
                        }
                    };
                    router.apply(ServiceSnapshot {
                        name: s.name.clone(),
                        active: spec(&s.colours[0], active, active_version),
                        standby: spec(&s.colours[1], standby, standby_version),
                        generation: 1,
                        decided_by: "static",
                        last_sync: Some(SystemTime::now()),
                        ..ServiceSnapshot::default()
                    });
                }
                PoolSource::Consul { service, route_key } => {
                    let client = match &client {
                        Some(c) => Clone::clone(c),
                        None => {
                            let c = switchyard_hashi::consul::ConsulClient::new(
                                config.consul.client.clone(),
                            )?;
                            client = Some(c.clone());
                            c
                        }
                    };
                    watches.insert(
                        s.name.clone(),
                        ServiceWatch::new(
                            s.name.clone(),
                            service.clone(),
                            route_key.clone(),
                            s.colours.clone(),
                            Arc::clone(&router),
                            client,
                            config.consul.clone(),
                        ),
                    );
                }
            }
        }

        let tls = match &config.tls {
            Some(t) => Some(tls::acceptor(&t.cert, &t.key)?),
            None => None,
        };
        let forwarder = Arc::new(Forwarder::new(
            Arc::clone(&router),
            ForwardSettings {
                timeouts: config.timeouts,
                retry_attempts: config.retry_attempts,
                retry_budget: config.retry_budget,
                preview: config.preview.clone(),
                forwarding: config.forwarding.clone(),
                max_ejected_percent: config.ejection.max_ejected_percent,
                access_log: config.log.access_log,
            },
        ));
        Ok(Self {
            config,
            router,
            forwarder,
            watches: Watches(watches),
            tls,
            consul: client,
        })
    }

    /// The router (for tests and embedding).
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets
    /// in-flight requests finish within the grace period, and returns.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), StartError> {
        let Proxy {
            config,
            router,
            forwarder,
            watches,
            tls,
            consul,
        } = self;
        let (listening_tx, listening_rx) = watch::channel(false);

        let mut background = tokio::task::JoinSet::new();
        for w in watches.0.values() {
            background.spawn(Arc::clone(w).run());
        }
        {
            let router = Arc::clone(&router);
            background.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    router.expire_idle();
                }
            });
        }
        let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
        let registration = match (&config.registration, consul, admin_addr) {
            (Some(r), Some(client), Some(admin)) => {
                Some(registration::Registration::new(r, client, admin))
            }
            _ => None,
        };
        let registering = registration
            .clone()
            .map(|r| tokio::spawn(r.register_until_done()));
        if let Some(admin_listener) = listeners.admin {
            let admin = Arc::new(Admin {
                router: Arc::clone(&router),
                watches: watches.clone(),
                token: config.admin.token.clone(),
                listening: listening_rx,
                history: Default::default(),
            });
            if let Ok(a) = admin_listener.local_addr() {
                tracing::info!(address = %a, "admin listening");
            }
            background.spawn(admin::serve(admin_listener, admin));
        }

        let builder = Arc::new(server::builder(&config.timeouts, &config.limits));
        let graceful = GracefulShutdown::new();
        if let Ok(a) = listeners.traffic.local_addr() {
            tracing::info!(address = %a, "proxy listening");
        }
        for (service, who) in routing::describe_preview(&config.preview) {
            tracing::info!(service = %service, prefix = %config.preview.path_prefix, header = %config.preview.header, "standby preview {who}");
        }
        let plain = server::accept_loop(
            listeners.traffic,
            None,
            Arc::clone(&forwarder),
            Arc::clone(&builder),
            &graceful,
            config.limits,
            config.timeouts,
        );
        let secure = async {
            match (listeners.tls, tls) {
                (Some(l), Some(acceptor)) => {
                    if let Ok(a) = l.local_addr() {
                        tracing::info!(address = %a, "TLS listening");
                    }
                    server::accept_loop(
                        l,
                        Some(acceptor),
                        Arc::clone(&forwarder),
                        Arc::clone(&builder),
                        &graceful,
                        config.limits,
                        config.timeouts,
                    )
                    .await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        listening_tx.send_replace(true);
        tokio::select! {
            () = async { tokio::join!(plain, secure); } => {}
            () = shutdown => {}
        }
        // Listeners are closed now (the accept loops were dropped).
        listening_tx.send_replace(false);
        // Leave Consul first, so nobody waits on this proxy while it drains.
        if let Some(task) = registering {
            task.abort();
            let _ = task.await;
        }
        if let Some(r) = &registration {
            r.deregister().await;
        }
        let grace = config.timeouts.shutdown_grace;
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            open = router.metrics().client_connections().get(),
            "shutting down: waiting for in-flight requests"
        );
        // Upgraded connections are drained too, and closed cleanly by then.
        router.close_upgraded(grace);
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
        }
        background.shutdown().await;
        Ok(())
    }
}
