//! The routing table: which pool serves a request.
//!
//! [`RouteTable`] is immutable. The request path does exactly one
//! `ArcSwap::load` per request ([`Router::table`]), matches host and path
//! prefix, and picks the active or standby [`Pool`] of the service. Pool
//! sources (static config, Consul discovery) never touch a table: they hand
//! a whole [`ServiceSnapshot`] to [`Router::apply`], which builds a new table
//! off the request path and swaps it in. A request that already loaded the
//! old table keeps it (and its pools and endpoints) alive until it ends, so
//! a cutover never pulls a pool from under an in-flight request, and once a
//! table is swapped in every request that starts later sees it.
//!
//! A pool is keyed by colour (`blue`, `green`), never by "whoever carries the
//! active tag right now"; see `ARCHITECTURE.md` for how instances are sorted
//! into colours.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Balance, PreviewAccess, PreviewConfig, RouteConfig};
use crate::metrics::{Metrics, PoolMetrics, ServiceMetrics};
use crate::upstream::{Endpoint, PoolSettings};

/// Which of a service's two pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serving users.
    Active,
    /// The next version, reachable through the preview route.
    Standby,
}

impl Role {
    /// `active` or `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// One instance as a pool source sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceSpec {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Source's identifier (Consul service ID), if any.
    pub id: Option<String>,
    /// Version the instance claims (`version=` tag).
    pub version: Option<String>,
}

/// A colour's instances as a pool source sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSpec {
    /// Colour name (`blue`, `green`).
    pub colour: String,
    /// The version label (most common `version=` among instances).
    pub version: String,
    /// Instances.
    pub instances: Vec<InstanceSpec>,
}

/// Everything a source knows about one service, applied as a whole.
#[derive(Clone, Debug, Default)]
pub struct ServiceSnapshot {
    /// Service name (as in the config).
    pub name: String,
    /// The pool serving users.
    pub active: PoolSpec,
    /// The preview pool.
    pub standby: PoolSpec,
    /// Route generation: from the route key, or 0 when decided by tags.
    pub generation: u64,
    /// When the route key was written (for the cutover-delay histogram).
    pub route_written_at: Option<SystemTime>,
    /// What decided the active colour: `route-key`, `tags` or `static`.
    pub decided_by: &'static str,
    /// Source metadata for status: Consul index of the health watch.
    pub consul_index: u64,
    /// Source metadata for status: ModifyIndex of the route key.
    pub route_index: u64,
    /// Last successful sync with the source.
    pub last_sync: Option<SystemTime>,
    /// Serving the last good pools because the source failed.
    pub fail_static: bool,
    /// Why fail-static is in effect.
    pub fail_static_reason: Option<String>,
    /// Instances that did not fit a colour, for status.
    pub unassigned: Vec<InstanceSpec>,
}

/// One colour's live pool.
pub struct Pool {
    /// Colour.
    pub colour: String,
    /// Version label.
    pub version: String,
    /// Instances, in a stable order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Per-instance versions, parallel to `endpoints`.
    pub versions: Vec<Option<String>>,
    /// Per-instance source IDs, parallel to `endpoints`.
    pub ids: Vec<Option<String>>,
    /// Request-path metric handles.
    pub metrics: PoolMetrics,
    /// Drain signal shared by every table in which this colour appears.
    pub drain: Arc<DrainSignal>,
    rr: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("colour", &self.colour)
            .field("version", &self.version)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Picks an endpoint, skipping `exclude` (already tried) and ejected ones.
    /// Ejection never empties a pool: when every candidate is ejected, the
    /// least loaded ejected one is still used.
    pub fn pick(&self, balance: Balance, exclude: &[SocketAddr]) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let usable = |e: &Arc<Endpoint>| !exclude.contains(&e.addr()) && !e.is_ejected();
        let picked = match balance {
            Balance::RoundRobin => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.endpoints[(start + i) % n])
                    .find(|e| usable(e))
            }
            Balance::P2c => self.p2c(&usable),
        };
        picked.or_else(|| {
            // Everything is tried or ejected: prefer not-yet-tried ones.
            self.endpoints
                .iter()
                .filter(|e| !exclude.contains(&e.addr()))
                .min_by_key(|e| e.in_flight())
        })
    }

    fn p2c(&self, usable: &dyn Fn(&Arc<Endpoint>) -> bool) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 1 {
            return self.endpoints.first().filter(|e| usable(e));
        }
        let a = fastrand::usize(..n);
        let mut b = fastrand::usize(..n - 1);
        if b >= a {
            b += 1;
        }
        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
        match (usable(ea), usable(eb)) {
            (true, true) => Some(if eb.in_flight() < ea.in_flight() {
                eb
            } else {
                ea
            }),
            (true, false) => Some(ea),
            (false, true) => Some(eb),
            // Both unusable: scan for the least loaded usable one.
            (false, false) => self
                .endpoints
                .iter()
                .filter(|e| usable(e))
                .min_by_key(|e| e.in_flight()),
        }
    }
}

/// A service's two pools in one table.
#[derive(Debug)]
pub struct ServiceRoutes {
    /// Service name.
    pub name: String,
    /// Balancer.
    pub balance: Balance,
    /// The active pool.
    pub active: Arc<Pool>,
    /// The standby pool.
    pub standby: Arc<Pool>,
    /// The snapshot this was built from (for status).
    pub snapshot: ServiceSnapshot,
    /// When this proxy started serving this generation.
    pub applied_at: SystemTime,
    /// Per-service metric handles.
    pub metrics: ServiceMetrics,
}

impl ServiceRoutes {
    /// The pool for a role.
    pub fn pool(&self, role: Role) -> &Arc<Pool> {
        match role {
            Role::Active => &self.active,
            Role::Standby => &self.standby,
        }
    }
}

#[derive(Clone, Debug)]
struct Route {
    host: Option<String>,
    prefix: String,
    service: usize,
}

/// The immutable routing table.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    services: Vec<Arc<ServiceRoutes>>,
    /// Incremented on every swap.
    pub version: u64,
}

impl RouteTable {
    /// The service for a host and path, most specific route first.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<ServiceRoutes>> {
        let host = strip_port(host);
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|h| h.eq_ignore_ascii_case(host))
                    && prefix_matches(&r.prefix, path)
            })
            .and_then(|r| self.services.get(r.service))
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRoutes>> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every service.
    pub fn services(&self) -> &[Arc<ServiceRoutes>] {
        &self.services
    }
}

/// What a request says about the standby preview, for [`RouteTable::select`].
#[derive(Clone, Copy, Debug)]
pub struct PreviewAsk<'a> {
    /// The preview header is set to `standby`.
    pub header: bool,
    /// The value of the preview token header, if sent.
    pub token: Option<&'a [u8]>,
    /// The client's address (behind trusted peers: the first untrusted
    /// `X-Forwarded-For` entry); `None` when it cannot be told.
    pub client: Option<IpAddr>,
}

/// Where [`RouteTable::select`] sends a request.
#[derive(Debug)]
pub struct Selected<'p> {
    /// The service.
    pub service: Arc<ServiceRoutes>,
    /// Its active or standby pool.
    pub role: Role,
    /// The path to route and forward (the preview prefix taken off).
    pub path: &'p str,
    /// Whether the preview prefix was taken off.
    pub stripped: bool,
}

impl RouteTable {
    /// The service and pool for a request. The preview prefix or header
    /// selects the standby pool only when the service's preview access lets
    /// this request in; otherwise they are ordinary parts of a request to
    /// the active pool (an application path under the prefix reaches the
    /// application unchanged).
    pub fn select<'p>(
        &self,
        preview: &PreviewConfig,
        host: &str,
        path: &'p str,
        ask: &PreviewAsk<'_>,
    ) -> Option<Selected<'p>> {
        let prefixed = match path.strip_prefix(preview.path_prefix.as_str()) {
            Some("") => Some("/"),
            Some(rest) if rest.starts_with('/') => Some(rest),
            _ => None,
        };
        if ask.header || prefixed.is_some() {
            let p = prefixed.unwrap_or(path);
            if let Some(s) = self.lookup(host, p)
                && preview
                    .access
                    .get(&s.name)
                    .is_some_and(|a| preview_allowed(a, ask))
            {
                return Some(Selected {
                    service: Arc::clone(s),
                    role: Role::Standby,
                    path: p,
                    stripped: prefixed.is_some(),
                });
            }
        }
        self.lookup(host, path).map(|s| Selected {
            service: Arc::clone(s),
            role: Role::Active,
            path,
            stripped: false,
        })
    }
}

/// Whether a service's preview access lets a request in.
pub fn preview_allowed(access: &PreviewAccess, ask: &PreviewAsk<'_>) -> bool {
    match access {
        PreviewAccess::Off => false,
        PreviewAccess::Open => true,
        PreviewAccess::Restricted { allow, token } => {
            let by_address = ask
                .client
                .map(|ip| ip.to_canonical())
                .is_some_and(|ip| allow.iter().any(|n| n.contains(&ip)));
            let by_token = match (token, ask.token) {
                (Some(want), Some(given)) => {
                    bool::from(subtle::ConstantTimeEq::ct_eq(want.as_bytes(), given))
                }
                _ => false,
            };
            by_address || by_token
        }
    }
}

/// One line per service for the startup log: who may preview it.
pub fn describe_preview(preview: &PreviewConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = preview
        .access
        .iter()
        .map(|(name, a)| {
            let who = match a {
                PreviewAccess::Off => {
                    "off: the prefix and header reach the active colour".to_owned()
                }
                PreviewAccess::Open => "open to every client".to_owned(),
                PreviewAccess::Restricted { allow, token } => {
                    let nets: Vec<String> = allow.iter().map(ToString::to_string).collect();
                    let default = nets
                        == crate::config::DEFAULT_PREVIEW_ALLOW
                            .iter()
                            .map(|c| (*c).to_owned())
                            .collect::<Vec<_>>();
                    let from = if default {
                        "loopback and private ranges only".to_owned()
                    } else if nets.is_empty() {
                        "no address".to_owned()
                    } else {
                        nets.join(", ")
                    };
                    match token {
                        Some(_) => format!(
                            "allowed from {from}, or with the token in {}",
                            preview.token_header
                        ),
                        None => format!("allowed from {from}"),
                    }
                }
            };
            (name.clone(), who)
        })
        .collect();
    out.sort();
    out
}

/// `prefix` is stored without trailing slash; "" matches everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// Tells upgraded connections opened on a colour when that colour stopped
/// being active, so they can be closed after the drain deadline. Shared by
/// every table in which the colour appears.
#[derive(Debug)]
pub struct DrainSignal {
    tx: watch::Sender<Option<Instant>>,
}

impl DrainSignal {
    fn new() -> Self {
        Self {
            tx: watch::channel(None).0,
        }
    }

    /// Subscribes an upgraded connection.
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.tx.subscribe()
    }

    fn start(&self, deadline: Instant) {
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(deadline);
                true
            } else {
                false
            }
        });
    }

    fn cancel(&self) {
        self.tx.send_if_modified(|v| v.take().is_some());
    }

    /// Whether a drain is under way: the colour stopped being active, the
    /// deadline has not passed yet, and upgraded connections opened on it are
    /// still open (each one holds a subscription until it ends). Once the last
    /// of them is gone, or the deadline has closed them, there is nothing left
    /// to drain, even though the signal keeps its deadline until the colour is
    /// active again; reporting "draining" after that would hold a deploy to
    /// this colour back for no reason. Plain requests are not counted here:
    /// they show as in flight.
    pub fn draining(&self) -> bool {
        self.tx.receiver_count() > 0
            && self
                .tx
                .borrow()
                .is_some_and(|deadline| Instant::now() < deadline)
    }
}

#[derive(Default)]
struct Registry {
    endpoints: HashMap<SocketAddr, Weak<Endpoint>>,
    drains: HashMap<(String, String), Arc<DrainSignal>>,
    /// Per service: the service config (balance).
    balance: HashMap<String, Balance>,
    /// The configured routes, compiled into every table.
    routes: Vec<RouteConfig>,
}

/// Owns the current table and builds the next one.
pub struct Router {
    table: ArcSwap<RouteTable>,
    registry: Mutex<Registry>,
    settings: PoolSettings,
    drain_after: Duration,
    metrics: Arc<Metrics>,
    applied: watch::Sender<u64>,
    /// When upgraded connections close because the proxy shuts down.
    closing: watch::Sender<Option<Instant>>,
    /// Set once the proxy stops being ready: HTTP/1 keep-alive connections
    /// then end after their next response (`server::end_if_draining`).
    draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router with the given routes; each service starts with empty pools
    /// until its source applies a snapshot.
    pub fn new(
        routes: Vec<RouteConfig>,
        services: &[(String, Balance)],
        settings: PoolSettings,
        drain_after: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut registry = Registry::default();
        let mut built = Vec::new();
        for (name, balance) in services {
            registry.balance.insert(name.clone(), *balance);
            let snap = ServiceSnapshot {
                name: name.clone(),
                decided_by: "none",
                ..ServiceSnapshot::default()
            };
            built.push(Arc::new(build_service(
                &snap,
                *balance,
                &mut registry,
                settings,
                &metrics,
            )));
        }
        let table = RouteTable {
            routes: compile_routes(&routes, &built),
            services: built,
            version: 0,
        };
        registry.routes = routes;
        Self {
            table: ArcSwap::from_pointee(table),
            registry: Mutex::new(registry),
            settings,
            drain_after,
            metrics,
            applied: watch::channel(0).0,
            closing: watch::channel(None).0,
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current table: one atomic load.
    #[inline]
    pub fn table(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// The current table as an owned `Arc`.
    pub fn table_full(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Notified with the table version after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Shutdown: every upgraded connection closes cleanly once the drain
    /// time (`timeouts.drain`) or `within`, whichever is shorter, has
    /// passed, instead of being cut when the process exits.
    pub fn close_upgraded(&self, within: Duration) {
        let deadline = Instant::now() + self.drain_after.min(within);
        self.closing.send_if_modified(|d| {
            let earlier = d.is_none_or(|d| deadline < d);
            if earlier {
                *d = Some(deadline);
            }
            earlier
        });
    }

    /// From now on every HTTP/1 response ends its connection: closing an
    /// idle keep-alive connection races with the client's next request (a
    /// POST written into a closing socket fails, and clients do not retry
    /// it), so a stopping proxy lets each connection end after a complete
    /// exchange before the graceful shutdown closes the idle rest.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`Router::start_draining`] was called.
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Subscribes an upgraded connection to [`Router::close_upgraded`].
    pub fn closing(&self) -> watch::Receiver<Option<Instant>> {
        self.closing.subscribe()
    }

    /// The metrics this router reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Replaces one service's pools with a snapshot: builds a whole new
    /// table and swaps it in. Returns false when the snapshot equals what is
    /// served already (nothing swapped) or names an unknown service.
    pub fn apply(&self, snap: ServiceSnapshot) -> bool {
        let Ok(mut registry) = self.registry.lock() else {
            return false;
        };
        let old = self.table.load_full();
        let Some(idx) = old.services.iter().position(|s| s.name == snap.name) else {
            tracing::warn!(service = %snap.name, "snapshot for an unknown service ignored");
            return false;
        };
        let prev = &old.services[idx];
        if same_routing(&prev.snapshot, &snap) {
            return false;
        }
        let balance = registry
            .balance
            .get(&snap.name)
            .copied()
            .unwrap_or(Balance::P2c);
        let next = Arc::new(build_service(
            &snap,
            balance,
            &mut registry,
            self.settings,
            &self.metrics,
        ));

        // Upgraded connections on a colour that stops being active drain;
        // a colour that becomes active again stops draining.
        if prev.active.colour != next.active.colour && !prev.active.colour.is_empty() {
            prev.active.drain.start(Instant::now() + self.drain_after);
        }
        next.active.drain.cancel();

        let mut services = old.services.clone();
        services[idx] = Arc::clone(&next);
        let table = RouteTable {
            routes: compile_routes(&registry.routes, &services),
            services,
            version: old.version + 1,
        };

        // Addresses that left every pool: close their idle connections.
        let live: HashSet<SocketAddr> = table
            .services
            .iter()
            .flat_map(|s| s.active.endpoints.iter().chain(&s.standby.endpoints))
            .map(|e| e.addr())
            .collect();
        let gone: Vec<Arc<Endpoint>> = old
            .services
            .iter()
            .flat_map(|s| s.active.endpoints.iter().chain(&s.standby.endpoints))
            .filter(|e| !live.contains(&e.addr()))
            .cloned()
            .collect();
        registry
            .endpoints
            .retain(|a, w| live.contains(a) && w.strong_count() > 0);

        let version = table.version;
        self.table.store(Arc::new(table));
        drop(registry);
        for e in gone {
            e.retire();
        }

        self.count_applied(prev, &next);
        self.applied.send_replace(version);
        Self::log_applied(prev, &next, version);
        true
    }

    /// The metrics of a service whose routes were replaced (`prev` by
    /// `next`).
    fn count_applied(&self, prev: &ServiceRoutes, next: &ServiceRoutes) {
        self.metrics.table_updated();
        self.metrics
            .set_generation(&next.name, next.snapshot.generation);
        self.metrics.set_passing(
            &next.name,
            next.active.endpoints.len(),
            next.standby.endpoints.len(),
        );
        if prev.active.colour != next.active.colour
            && let Some(written) = next.snapshot.route_written_at
            && let Ok(delay) = next.applied_at.duration_since(written)
        {
            self.metrics
                .observe_cutover(&next.name, delay.as_secs_f64());
        }
    }

    /// Logs what changed for operators when a service's routes were
    /// replaced (a refresh that changed only Consul's indexes at debug
    /// level).
    fn log_applied(prev: &ServiceRoutes, next: &ServiceRoutes, version: u64) {
        let visible = prev.snapshot.active != next.snapshot.active
            || prev.snapshot.standby != next.snapshot.standby
            || prev.snapshot.generation != next.snapshot.generation
            || prev.snapshot.fail_static != next.snapshot.fail_static;
        if !visible {
            tracing::debug!(service = %next.name, table = version, "routing table refreshed (indexes only)");
            return;
        }
        tracing::info!(
            service = %next.name,
            active = %next.active.colour,
            active_version = %next.active.version,
            active_instances = next.active.endpoints.len(),
            standby = %next.standby.colour,
            standby_instances = next.standby.endpoints.len(),
            generation = next.snapshot.generation,
            decided_by = next.snapshot.decided_by,
            fail_static = next.snapshot.fail_static,
            "routing table updated"
        );
    }

    /// Replaces the routes (a configuration reload): the same pools behind
    /// new host / path-prefix rules, swapped in as one new table. Returns
    /// false when they equal the routes served already.
    pub fn set_routes(&self, routes: Vec<RouteConfig>) -> bool {
        let Ok(mut registry) = self.registry.lock() else {
            return false;
        };
        if registry.routes == routes {
            return false;
        }
        let old = self.table.load_full();
        let table = RouteTable {
            routes: compile_routes(&routes, &old.services),
            services: old.services.clone(),
            version: old.version + 1,
        };
        registry.routes = routes;
        let version = table.version;
        self.table.store(Arc::new(table));
        drop(registry);
        self.metrics.table_updated();
        self.applied.send_replace(version);
        tracing::info!(table = version, "routes replaced");
        true
    }

    /// Closes idle upstream connections past their idle timeout.
    pub fn expire_idle(&self) {
        let t = self.table.load();
        for s in &t.services {
            for e in s.active.endpoints.iter().chain(&s.standby.endpoints) {
                e.expire_idle();
            }
        }
    }
}

/// Whether a snapshot changes nothing that routing or status shows. The
/// sync time alone does not count: a resync that finds the same pools must
/// not rebuild the table.
fn same_routing(a: &ServiceSnapshot, b: &ServiceSnapshot) -> bool {
    a.active == b.active
        && a.standby == b.standby
        && a.generation == b.generation
        && a.fail_static == b.fail_static
        && a.fail_static_reason == b.fail_static_reason
        && a.decided_by == b.decided_by
        && a.consul_index == b.consul_index
        && a.route_index == b.route_index
        && a.unassigned == b.unassigned
}

fn build_service(
    snap: &ServiceSnapshot,
    balance: Balance,
    registry: &mut Registry,
    settings: PoolSettings,
    metrics: &Metrics,
) -> ServiceRoutes {
    let mut pool = |spec: &PoolSpec| -> Arc<Pool> {
        let endpoints: Vec<Arc<Endpoint>> = spec
            .instances
            .iter()
            .map(
                |i| match registry.endpoints.get(&i.addr).and_then(Weak::upgrade) {
                    Some(e) if !e.is_retired() => e,
                    _ => {
                        let e = Arc::new(Endpoint::new(i.addr, settings));
                        registry.endpoints.insert(i.addr, Arc::downgrade(&e));
                        e
                    }
                },
            )
            .collect();
        let drain = Arc::clone(
            registry
                .drains
                .entry((snap.name.clone(), spec.colour.clone()))
                .or_insert_with(|| Arc::new(DrainSignal::new())),
        );
        Arc::new(Pool {
            colour: spec.colour.clone(),
            version: spec.version.clone(),
            versions: spec.instances.iter().map(|i| i.version.clone()).collect(),
            ids: spec.instances.iter().map(|i| i.id.clone()).collect(),
            endpoints,
            metrics: metrics.pool(&snap.name, &spec.colour, &spec.version),
            drain,
            rr: AtomicUsize::new(fastrand::usize(..1024)),
        })
    };
    let active = pool(&snap.active);
    let standby = pool(&snap.standby);
    ServiceRoutes {
        name: snap.name.clone(),
        balance,
        active,
        standby,
        snapshot: snap.clone(),
        applied_at: SystemTime::now(),
        metrics: metrics.service(&snap.name),
    }
}

fn compile_routes(routes: &[RouteConfig], services: &[Arc<ServiceRoutes>]) -> Vec<Route> {
    routes
        .iter()
        .filter_map(|r| {
            let idx = services.iter().position(|s| s.name == r.service)?;
            Some(Route {
                host: r.host.clone(),
                prefix: r.path_prefix.clone(),
                service: idx,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(colour: &str, version: &str, ports: &[u16]) -> PoolSpec {
        PoolSpec {
            colour: colour.into(),
            version: version.into(),
            instances: ports
                .iter()
                .map(|p| InstanceSpec {
                    addr: ([127, 0, 0, 1], *p).into(),
                    id: None,
                    version: Some(version.into()),
                })
                .collect(),
        }
    }

    fn router() -> Router {
        let routes = vec![
            RouteConfig {
                host: Some("api.example".into()),
                path_prefix: String::new(),
                service: "b".into(),
            },
            RouteConfig {
                host: None,
                path_prefix: "/b".into(),
                service: "b".into(),
            },
            RouteConfig {
                host: None,
                path_prefix: String::new(),
                service: "a".into(),
            },
        ];
        Router::new(
            routes,
            &[
                ("a".into(), Balance::P2c),
                ("b".into(), Balance::RoundRobin),
            ],
            PoolSettings::default(),
            Duration::from_secs(30),
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn lookup_by_host_then_prefix_on_segment_boundaries() {
        let r = router();
        let t = r.table();
        assert_eq!(t.lookup("api.example:8080", "/x").unwrap().name, "b");
        assert_eq!(t.lookup("API.EXAMPLE", "/x").unwrap().name, "b");
        assert_eq!(t.lookup("other", "/b/c").unwrap().name, "b");
        assert_eq!(t.lookup("other", "/b").unwrap().name, "b");
        assert_eq!(t.lookup("other", "/bc").unwrap().name, "a");
        assert_eq!(t.lookup("[::1]:80", "/").unwrap().name, "a");
    }

    #[test]
    fn apply_swaps_whole_table_and_keeps_endpoints_across_flips() {
        let r = router();
        let snap = ServiceSnapshot {
            name: "a".into(),
            active: spec("blue", "v1", &[1, 2]),
            standby: spec("green", "v2", &[3, 4]),
            generation: 1,
            decided_by: "route-key",
            ..Default::default()
        };
        assert!(r.apply(snap.clone()));
        assert!(!r.apply(snap.clone()), "identical snapshot is not a change");
        let before = r.table_full();
        let blue_ep = Arc::clone(&before.service("a").unwrap().active.endpoints[0]);
        // An upgraded connection open on blue.
        let tunnel = before.service("a").unwrap().active.drain.subscribe();

        let flipped = ServiceSnapshot {
            active: snap.standby.clone(),
            standby: snap.active.clone(),
            generation: 2,
            ..snap
        };
        assert!(r.apply(flipped));
        let after = r.table();
        let a = after.service("a").unwrap();
        assert_eq!(a.active.colour, "green");
        assert!(Arc::ptr_eq(&a.standby.endpoints[0], &blue_ep));
        assert!(!blue_ep.is_retired());
        // The old table is still intact for requests that loaded it.
        assert_eq!(before.service("a").unwrap().active.colour, "blue");
        assert!(before.service("a").unwrap().active.drain.draining());
        assert!(!a.active.drain.draining());
        // Its last upgraded connection closed: nothing left to drain.
        drop(tunnel);
        assert!(!before.service("a").unwrap().active.drain.draining());
    }

    #[test]
    fn addresses_that_leave_are_retired() {
        let r = router();
        let mk = |ports: &[u16], g| ServiceSnapshot {
            name: "a".into(),
            active: spec("blue", "v1", ports),
            standby: spec("green", "v2", &[]),
            generation: g,
            ..Default::default()
        };
        r.apply(mk(&[1, 2], 1));
        let ep2 = Arc::clone(&r.table().service("a").unwrap().active.endpoints[1]);
        r.apply(mk(&[1], 2));
        assert!(ep2.is_retired());
        // Coming back gives a fresh endpoint.
        r.apply(mk(&[1, 2], 3));
        let again = Arc::clone(&r.table().service("a").unwrap().active.endpoints[1]);
        assert!(!again.is_retired());
    }

    #[test]
    fn p2c_prefers_less_loaded_and_skips_excluded() {
        let r = router();
        r.apply(ServiceSnapshot {
            name: "a".into(),
            active: spec("blue", "v1", &[1, 2]),
            ..Default::default()
        });
        let t = r.table();
        let pool = &t.service("a").unwrap().active;
        let busy = pool.endpoints[0].start_request();
        for _ in 0..50 {
            let e = pool.pick(Balance::P2c, &[]).unwrap();
            assert_eq!(e.addr().port(), 2);
        }
        drop(busy);
        let excl = [pool.endpoints[1].addr()];
        for _ in 0..50 {
            assert_eq!(pool.pick(Balance::P2c, &excl).unwrap().addr().port(), 1);
        }
        let both = [pool.endpoints[0].addr(), pool.endpoints[1].addr()];
        assert!(pool.pick(Balance::P2c, &both).is_none());
    }

    #[test]
    fn round_robin_cycles() {
        let r = router();
        r.apply(ServiceSnapshot {
            name: "b".into(),
            active: spec("blue", "v1", &[1, 2, 3]),
            ..Default::default()
        });
        let t = r.table();
        let pool = &t.service("b").unwrap().active;
        let ports: HashSet<u16> = (0..3)
            .map(|_| pool.pick(Balance::RoundRobin, &[]).unwrap().addr().port())
            .collect();
        assert_eq!(ports.len(), 3);
    }

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
