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
//! - [`upgrade`]: handing the listening sockets to a new process.
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
pub mod upgrade;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
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

impl StartError {
    /// Maps an I/O error on the listener for `addr`.
    pub(crate) fn from_io(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Self {
        move |source| StartError::Bind { addr, source }
    }
}

/// Binds one listener.
pub(crate) async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(StartError::from_io(addr))
}

/// How often a stopping proxy looks whether its connections have all ended.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Why [`Proxy::run_until`] stops serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT: readiness fails and the Consul registration is
    /// removed at once, the listeners keep accepting for
    /// `shutdown.deregister_delay`, then close and in-flight requests get
    /// `timeouts.shutdown_grace`.
    Terminate,
    /// A new process holds the listeners (see [`upgrade`]): readiness fails,
    /// this process stops accepting at once and drains, and the Consul
    /// registration, which the new process renews, stays.
    HandedOver,
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
        let bind = bind_listener;
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

/// The request-path settings a configuration gives.
fn forward_settings(config: &Config) -> ForwardSettings {
    ForwardSettings {
        timeouts: config.timeouts,
        retry_attempts: config.retry_attempts,
        retry_budget: config.retry_budget,
        preview: config.preview.clone(),
        forwarding: config.forwarding.clone(),
        max_ejected_percent: config.ejection.max_ejected_percent,
        access_log: config.log.access_log,
    }
}

/// Serves a service's static pools (no-op for a Consul-backed one), at the
/// given generation.
fn apply_static(router: &Router, s: &config::ServiceConfig, generation: u64) -> bool {
    let PoolSource::Static {
        active,
        standby,
        active_version,
        standby_version,
    } = &s.source
    else {
        return false;
    };
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
        generation,
        decided_by: "static",
        last_sync: Some(SystemTime::now()),
        ..ServiceSnapshot::default()
    })
}

/// Why a reloaded configuration was not applied (the running one stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The service list changed in a way only a restart can apply.
    #[error(
        "services were added, removed or changed (name, colours, balance or discovery); the running configuration stays: restart or `proxy --upgrade` to apply"
    )]
    ServicesChanged,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Static services whose pools were replaced.
    pub pools: Vec<String>,
    /// Whether the routes changed.
    pub routes: bool,
    /// Keys that changed but take effect only on a restart or an upgrade.
    pub restart_only: Vec<&'static str>,
}

/// Applies a reloaded configuration to a running proxy: routes, static
/// pools and the request-path settings (response timeouts, retries, preview,
/// forwarding, ejection percentage, access log) at once; connections
/// accepted from then on use the new settings, open ones finish with those
/// they started with. Everything else needs a restart or `--upgrade`.
#[derive(Clone, Debug)]
pub struct Reloader {
    router: Arc<Router>,
    forwarder: Arc<ArcSwap<Forwarder>>,
    running: Arc<std::sync::Mutex<Config>>,
}

impl Reloader {
    /// Applies `next` (already validated), or refuses it whole.
    pub fn apply(&self, next: Config) -> Result<Reloaded, ReloadError> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same_service = |a: &config::ServiceConfig, b: &config::ServiceConfig| {
            a.name == b.name
                && a.colours == b.colours
                && a.balance == b.balance
                && match (&a.source, &b.source) {
                    (PoolSource::Consul { .. }, PoolSource::Consul { .. }) => {
                        format!("{:?}", a.source) == format!("{:?}", b.source)
                    }
                    (PoolSource::Static { .. }, PoolSource::Static { .. }) => true,
                    _ => false,
                }
        };
        if running.services.len() != next.services.len()
            || running
                .services
                .iter()
                .zip(&next.services)
                .any(|(a, b)| !same_service(a, b))
        {
            return Err(ReloadError::ServicesChanged);
        }
        let mut done = Reloaded::default();
        for (was, now) in running.services.iter().zip(&next.services) {
            if format!("{:?}", was.source) == format!("{:?}", now.source) {
                // Unchanged in the file: a local `POST /switch` stays in force.
                continue;
            }
            let generation = self
                .router
                .table()
                .service(&now.name)
                .map_or(0, |s| s.snapshot.generation);
            if apply_static(&self.router, now, generation + 1) {
                done.pools.push(now.name.clone());
            }
        }
        done.routes = self.router.set_routes(next.routes.clone());
        self.forwarder.store(Arc::new(Forwarder::new(
            Arc::clone(&self.router),
            forward_settings(&next),
        )));
        done.restart_only = restart_only_changes(&running, &next);
        *running = next;
        Ok(done)
    }
}

/// Keys that differ between `a` and `b` and that a reload does not apply.
fn restart_only_changes(a: &Config, b: &Config) -> Vec<&'static str> {
    fn differ(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (ta, tb) = (&a.timeouts, &b.timeouts);
    [
        ("listener", differ(&(a.listen, &a.tls), &(b.listen, &b.tls))),
        ("admin", differ(&a.admin, &b.admin)),
        ("log.format", a.log.format != b.log.format),
        (
            "timeouts.connect, client_header, client_idle, upstream_idle, shutdown_grace, drain",
            differ(
                &(
                    ta.connect,
                    ta.client_header,
                    ta.client_idle,
                    ta.upstream_idle,
                ),
                &(
                    tb.connect,
                    tb.client_header,
                    tb.client_idle,
                    tb.upstream_idle,
                ),
            ) || differ(
                &(ta.shutdown_grace, ta.drain),
                &(tb.shutdown_grace, tb.drain),
            ),
        ),
        ("limits", differ(&a.limits, &b.limits)),
        (
            "upstream",
            a.max_idle_per_instance != b.max_idle_per_instance,
        ),
        (
            "ejection.consecutive_failures, cool_down",
            differ(
                &(a.ejection.consecutive_failures, a.ejection.cool_down),
                &(b.ejection.consecutive_failures, b.ejection.cool_down),
            ),
        ),
        ("consul", differ(&a.consul, &b.consul)),
        ("registration", differ(&a.registration, &b.registration)),
        ("runtime", a.worker_threads != b.worker_threads),
        ("shutdown", differ(&a.shutdown, &b.shutdown)),
        ("upgrade", a.upgrade.socket != b.upgrade.socket),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// A configured proxy, ready to run.
pub struct Proxy {
    config: Config,
    router: Arc<Router>,
    /// Swapped by a reload; each new connection takes the current one.
    forwarder: Arc<ArcSwap<Forwarder>>,
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
                PoolSource::Static { .. } => {
                    apply_static(&router, s, 1);
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
        let forwarder = Arc::new(ArcSwap::from_pointee(Forwarder::new(
            Arc::clone(&router),
            forward_settings(&config),
        )));
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

    /// What applies a reloaded configuration to this proxy, before and
    /// while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            router: Arc::clone(&self.router),
            forwarder: Arc::clone(&self.forwarder),
            running: Arc::new(std::sync::Mutex::new(self.config.clone())),
        }
    }

    /// Serves until `shutdown` resolves, then stops as on SIGTERM
    /// ([`Stop::Terminate`]).
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), StartError> {
        self.run_until(listeners, async {
            shutdown.await;
            Stop::Terminate
        })
        .await
    }

    /// Serves until `stop` resolves, then stops the way it says, lets
    /// in-flight requests finish within the grace period, and returns.
    pub async fn run_until(
        self,
        listeners: Listeners,
        stop: impl std::future::Future<Output = Stop>,
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

        let mut background = spawn_background(&watches, &router);
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
        let admin_task = listeners.admin.map(|admin_listener| {
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
            background.spawn(admin::serve(admin_listener, admin))
        });

        let graceful = GracefulShutdown::new();
        let serving = Serving {
            config: &config,
            forwarder: &forwarder,
            graceful: &graceful,
        };
        let mut accepting = Box::pin(serving.accept(listeners.traffic, listeners.tls, tls));
        listening_tx.send_replace(true);
        let why = tokio::select! {
            () = &mut accepting => Stop::Terminate,
            why = stop => why,
        };
        // Readiness fails first, while the listeners still accept, and
        // HTTP/1 clients are told to reconnect (to whoever serves next).
        listening_tx.send_replace(false);
        router.start_draining();
        if let Some(task) = registering {
            task.abort();
            let _ = task.await;
        }
        match why {
            Stop::Terminate => {
                let delay = config.shutdown.deregister_delay;
                leave_consul(registration.as_ref(), delay, &mut accepting).await;
            }
            Stop::HandedOver => {
                // The admin socket is shared with the new process too: leave
                // its connections to it. The new process registers the same
                // service ID: keep the registration.
                if let Some(task) = &admin_task {
                    task.abort();
                }
                tracing::info!("listeners handed over: no longer accepting");
            }
        }
        // Close the listeners (the accept loops own them).
        drop(accepting);
        drain(&router, graceful, config.timeouts.shutdown_grace).await;
        background.shutdown().await;
        Ok(())
    }
}

/// Starts what runs beside the listeners for the proxy's whole life: the
/// Consul watches and the sweep of idle upstream connections.
fn spawn_background(watches: &Watches, router: &Arc<Router>) -> tokio::task::JoinSet<()> {
    let mut background = tokio::task::JoinSet::new();
    for w in watches.0.values() {
        background.spawn(Arc::clone(w).run());
    }
    let router = Arc::clone(router);
    background.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            router.expire_idle();
        }
    });
    background
}

/// What the accept loops share.
struct Serving<'a> {
    config: &'a Config,
    forwarder: &'a Arc<ArcSwap<Forwarder>>,
    graceful: &'a GracefulShutdown,
}

impl<'a> Serving<'a> {
    /// The accept loops of the traffic listener and, when configured, the
    /// TLS one; they end when their listeners fail, and dropping them closes
    /// the listeners.
    fn accept(
        self,
        traffic: TcpListener,
        tls_listener: Option<TcpListener>,
        tls: Option<TlsAcceptor>,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let Serving {
            config,
            forwarder,
            graceful,
        } = self;
        let builder = Arc::new(server::builder(&config.timeouts, &config.limits));
        if let Ok(a) = traffic.local_addr() {
            tracing::info!(address = %a, "proxy listening");
        }
        for (service, who) in routing::describe_preview(&config.preview) {
            tracing::info!(service = %service, prefix = %config.preview.path_prefix, header = %config.preview.header, "standby preview {who}");
        }
        let plain = server::accept_loop(
            traffic,
            None,
            Arc::clone(forwarder),
            Arc::clone(&builder),
            graceful,
            config.limits,
            config.timeouts,
        );
        let secure = async move {
            match (tls_listener, tls) {
                (Some(l), Some(acceptor)) => {
                    if let Ok(a) = l.local_addr() {
                        tracing::info!(address = %a, "TLS listening");
                    }
                    server::accept_loop(
                        l,
                        Some(acceptor),
                        Arc::clone(forwarder),
                        Arc::clone(&builder),
                        graceful,
                        config.limits,
                        config.timeouts,
                    )
                    .await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::join!(plain, secure);
        }
    }
}

/// SIGTERM's first step once readiness fails: leave Consul, then give
/// whoever sends traffic `delay` to notice while the listeners still accept.
async fn leave_consul(
    registration: Option<&registration::Registration>,
    delay: Duration,
    accepting: &mut (impl std::future::Future<Output = ()> + Unpin),
) {
    if let Some(r) = registration {
        r.deregister().await;
    }
    tracing::info!(
        delay_secs = delay.as_secs_f64(),
        "not ready: accepting until the deregister delay is over"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = accepting => {}
    }
}

/// Lets the open connections end within `grace` once the listeners are
/// closed, then closes what is left.
async fn drain(router: &Router, graceful: GracefulShutdown, grace: Duration) {
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        open = router.metrics().client_connections().get(),
        "shutting down: waiting for in-flight requests"
    );
    // Upgraded connections are drained too, and closed cleanly by then.
    router.close_upgraded(grace);
    // First half of the grace period: each HTTP/1 connection ends after
    // its next response (`Connection: close`), so no client sends a
    // request into a connection that is being closed; a connection
    // accepted in the last instant gets its first request answered.
    let started = tokio::time::Instant::now();
    let window = grace / 2;
    while graceful.count() > 0 && started.elapsed() < window {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // Then the rest: idle connections are closed, HTTP/2 ones get a
    // GOAWAY, requests still running may finish.
    let grace = grace.saturating_sub(started.elapsed());
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
}
