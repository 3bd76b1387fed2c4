//! Consul discovery: blocking queries in, whole service snapshots out.
//!
//! For each Consul-backed service two watch loops run:
//!
//! - **health**: `GET /v1/health/service/<svc>?passing&index=N&wait=W`, the
//!   instances whose every check passes;
//! - **route**: `GET /v1/kv/switchyard/routes/<svc>?index=N&wait=W`, the
//!   route key that names the active colour.
//!
//! Both follow Consul's client rules for blocking queries: the index sent is
//! the last one seen, reset to 0 when it goes backwards and never below 1
//! ([`switchyard_hashi::blocking::next_index`]); the happy path runs
//! unthrottled but churn is rate limited by a token bucket; errors back off
//! with jitter; and every `resync` period one read is made with index 0, a
//! full re-read that does not trust the index at all. A wake-up is not proof
//! of a change: the snapshot is rebuilt and [`Router::apply`] ignores it
//! when nothing routing-relevant differs.
//!
//! **Fail static.** When a read fails (Consul down, 5xx, garbage) or the
//! answer is suspicious (the active colour suddenly has no passing
//! instance), the service keeps its last good pools, says so once in the
//! log, in `switchyard_fail_static` and in `/status`, and recovers on the
//! next good answer. A non-empty active pool is never replaced by an empty
//! one. The standby pool may empty: that is what a deploy does to it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use switchyard_hashi::QueryOptions;
use switchyard_hashi::blocking::{Backoff, ChurnLimiter, next_index};
use switchyard_hashi::consul::{ConsulClient, HealthQuery, ServiceEntry};
use switchyard_model::{Classification, RouteValue};
use tokio::sync::watch;

use crate::config::ConsulSettings;
use crate::routing::{InstanceSpec, PoolSpec, Router, ServiceSnapshot};

/// What one service's watches know, merged into snapshots.
#[derive(Debug, Default)]
struct Knowledge {
    /// Last good health answer: (instances, consul index).
    health: Option<(Vec<Instance>, u64)>,
    /// Last route key: `None` = never read; `Some(None)` = absent.
    route: Option<Option<(RouteValue, u64)>>,
    /// Active colour index decided last time (for tag ties).
    previous_active: Option<usize>,
    /// Why we are failing static, per watch.
    health_failure: Option<String>,
    route_failure: Option<String>,
    /// Last successful read of either watch.
    last_sync: Option<SystemTime>,
}

#[derive(Clone, Debug, PartialEq)]
struct Instance {
    addr: SocketAddr,
    id: String,
    tags: Vec<String>,
}

/// Per-service sync state readable by the admin API.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncState {
    /// Both watches have answered at least once.
    pub synced: bool,
    /// Last successful read (RFC 3339).
    pub last_sync: Option<String>,
    /// Consul index of the health watch.
    pub health_index: u64,
    /// ModifyIndex of the route key (0 = absent).
    pub route_index: u64,
}

/// One service's discovery.
pub struct ServiceWatch {
    name: String,
    consul_service: String,
    route_key: String,
    colours: [String; 2],
    router: Arc<Router>,
    client: ConsulClient,
    settings: ConsulSettings,
    knowledge: Mutex<Knowledge>,
    state: watch::Sender<SyncState>,
}

impl std::fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatch")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServiceWatch {
    /// A watch for one service; call [`ServiceWatch::run`] to start it.
    pub fn new(
        name: String,
        consul_service: String,
        route_key: String,
        colours: [String; 2],
        router: Arc<Router>,
        client: ConsulClient,
        settings: ConsulSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            consul_service,
            route_key,
            colours,
            router,
            client,
            settings,
            knowledge: Mutex::new(Knowledge::default()),
            state: watch::channel(SyncState::default()).0,
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The KV route key.
    pub fn route_key(&self) -> &str {
        &self.route_key
    }

    /// The two colours.
    pub fn colours(&self) -> &[String; 2] {
        &self.colours
    }

    /// The Consul client (shared with the admin API's switch).
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    /// Sync state for status and readiness.
    pub fn state(&self) -> watch::Receiver<SyncState> {
        self.state.subscribe()
    }

    /// Runs both watch loops until the future is dropped.
    pub async fn run(self: Arc<Self>) {
        tokio::join!(
            Arc::clone(&self).health_loop(),
            Arc::clone(&self).route_loop()
        );
    }

    async fn health_loop(self: Arc<Self>) {
        let query = HealthQuery {
            passing: true,
            ..HealthQuery::default()
        };
        let mut w = WatchLoop::new(&self.settings);
        loop {
            let opts = w.next_options().await;
            match self
                .client
                .health_service(&self.consul_service, &query, &opts)
                .await
            {
                Ok((entries, meta)) => {
                    w.ok(meta.index);
                    let instances = entries.iter().filter_map(instance_of).collect();
                    self.on_health(Ok((instances, meta.index)));
                }
                Err(e) => {
                    self.router
                        .metrics()
                        .consul_watch_error(&self.name, "health");
                    self.on_health(Err(e.to_string()));
                    w.failed().await;
                }
            }
        }
    }

    async fn route_loop(self: Arc<Self>) {
        let mut w = WatchLoop::new(&self.settings);
        loop {
            let opts = w.next_options().await;
            match self.client.kv_get(&self.route_key, &opts).await {
                Ok((pair, meta)) => {
                    let parsed = match pair {
                        None => Ok(None),
                        Some(p) => {
                            match RouteValue::parse(p.value.as_deref().unwrap_or_default()) {
                                Ok(v) => Ok(Some((v, p.modify_index))),
                                Err(e) => Err(format!("route key {}: {e}", self.route_key)),
                            }
                        }
                    };
                    if parsed.is_err() {
                        self.router
                            .metrics()
                            .consul_watch_error(&self.name, "route");
                    }
                    w.ok(meta.index);
                    self.on_route(parsed);
                }
                Err(e) => {
                    self.router
                        .metrics()
                        .consul_watch_error(&self.name, "route");
                    self.on_route(Err(e.to_string()));
                    w.failed().await;
                }
            }
        }
    }

    fn on_health(&self, res: Result<(Vec<Instance>, u64), String>) {
        self.on_answer(
            res,
            "Consul health watch failed; serving the last good pools",
            |k| (&mut k.health, &mut k.health_failure),
        );
    }

    fn on_route(&self, res: Result<Option<(RouteValue, u64)>, String>) {
        self.on_answer(res, "route key watch failed; keeping the last route", |k| {
            (&mut k.route, &mut k.route_failure)
        });
    }

    /// Records one watch's answer (or failure, logged once per outage) and
    /// republishes the service.
    fn on_answer<T>(
        &self,
        res: Result<T, String>,
        failed: &'static str,
        slots: impl FnOnce(&mut Knowledge) -> (&mut Option<T>, &mut Option<String>),
    ) {
        let Ok(mut k) = self.knowledge.lock() else {
            return;
        };
        let (value, failure) = slots(&mut k);
        let ok = match res {
            Ok(v) => {
                *value = Some(v);
                *failure = None;
                true
            }
            Err(e) => {
                if failure.is_none() {
                    tracing::warn!(service = %self.name, error = %e, "{failed}");
                }
                *failure = Some(e);
                false
            }
        };
        if ok {
            k.last_sync = Some(SystemTime::now());
        }
        self.publish(&mut k);
    }

    /// Builds a snapshot from what is known and applies it.
    fn publish(&self, k: &mut Knowledge) {
        let (Some((instances, health_index)), Some(route)) = (&k.health, &k.route) else {
            // Not both answered yet: nothing to serve from.
            self.update_state(k, false);
            return;
        };
        let (by_colour, unassigned) = by_colour(instances, &self.colours);

        // Every instance here passes (`?passing`), as the shared rule wants.
        let active_tagged = switchyard_model::count_active_tagged(
            instances.iter().map(|i| i.tags.as_slice()),
            &self.colours,
        );
        let value = route.as_ref().map(|(v, _)| v);
        let decision =
            switchyard_model::decide_active(&self.colours, value, active_tagged, k.previous_active);
        if decision.unknown_route_colour
            && let Some(v) = value
        {
            tracing::warn!(service = %self.name, colour = %v.active, "route key names an unknown colour; deciding by tags");
        }
        let active = decision.index;
        let decided_by = decision.decided_by.as_str();
        let (generation, written, route_index) = match route {
            Some((v, modify)) => (
                v.generation,
                (decision.decided_by == switchyard_model::DecidedBy::RouteKey)
                    .then(|| v.written_at())
                    .flatten(),
                *modify,
            ),
            None => (0, None, 0),
        };
        let standby = 1 - active;

        let mut fail_static_reason = k.health_failure.clone().or_else(|| k.route_failure.clone());

        let mut active_pool = pool_spec(&self.colours[active], &by_colour[active]);
        let standby_pool = pool_spec(&self.colours[standby], &by_colour[standby]);

        // Never replace a non-empty active pool with an empty one.
        let table = self.router.table();
        if active_pool.instances.is_empty()
            && let Some(current) = table.service(&self.name)
            && !current.snapshot.active.instances.is_empty()
        {
            let keep = &current.snapshot.active;
            tracing::warn!(
                service = %self.name,
                colour = %active_pool.colour,
                "Consul lists no passing {} instance; keeping the last good {} pool",
                active_pool.colour,
                keep.colour
            );
            fail_static_reason.get_or_insert_with(|| {
                format!(
                    "no passing instance of the active colour {}; serving the last good {} pool",
                    active_pool.colour, keep.colour
                )
            });
            active_pool = keep.clone();
        }
        drop(table);

        k.previous_active = Some(active);
        let snapshot = ServiceSnapshot {
            name: self.name.clone(),
            active: active_pool,
            standby: standby_pool,
            generation,
            route_written_at: written,
            decided_by,
            consul_index: *health_index,
            route_index,
            last_sync: k.last_sync,
            fail_static: fail_static_reason.is_some(),
            fail_static_reason,
            unassigned,
        };
        let fail_static = snapshot.fail_static;
        self.router.apply(snapshot);
        self.router
            .metrics()
            .set_fail_static(&self.name, fail_static);
        self.update_state(k, true);
    }

    fn update_state(&self, k: &Knowledge, synced: bool) {
        let route_index = match &k.route {
            Some(Some((_, i))) => *i,
            _ => 0,
        };
        self.state.send_replace(SyncState {
            synced: synced || self.state.borrow().synced,
            last_sync: k
                .last_sync
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            health_index: k.health.as_ref().map_or(0, |h| h.1),
            route_index,
        });
    }
}

/// The instances of each colour (sorted by address), and those whose tags
/// name no colour.
fn by_colour(
    instances: &[Instance],
    colours: &[String; 2],
) -> ([Vec<InstanceSpec>; 2], Vec<InstanceSpec>) {
    let mut by_colour: [Vec<InstanceSpec>; 2] = [Vec::new(), Vec::new()];
    let mut unassigned = Vec::new();
    for i in instances {
        let spec = InstanceSpec {
            addr: i.addr,
            id: Some(i.id.clone()),
            version: switchyard_model::version_of(&i.tags).map(str::to_owned),
        };
        match switchyard_model::classify(&i.tags, colours) {
            Classification::Colour(c) => by_colour[c].push(spec),
            _ => unassigned.push(spec),
        }
    }
    for pool in &mut by_colour {
        pool.sort_by_key(|a| a.addr);
    }
    (by_colour, unassigned)
}

fn pool_spec(colour: &str, instances: &[InstanceSpec]) -> PoolSpec {
    let version =
        switchyard_model::most_common(instances.iter().filter_map(|i| i.version.as_deref()))
            .unwrap_or("unknown")
            .to_owned();
    PoolSpec {
        colour: colour.to_owned(),
        version,
        instances: instances.to_vec(),
    }
}

fn instance_of(e: &ServiceEntry) -> Option<Instance> {
    let ip: IpAddr = e.address().parse().ok()?;
    let port = Some(e.service.port).filter(|p| *p != 0)?;
    Some(Instance {
        addr: SocketAddr::new(ip, port),
        id: e.service.id.clone(),
        tags: e.service.tags.clone(),
    })
}

/// The index bookkeeping, rate limit, backoff and resync of one loop.
struct WatchLoop {
    index: u64,
    limiter: ChurnLimiter,
    backoff: Backoff,
    wait: Duration,
    resync: Duration,
    last_full: tokio::time::Instant,
}

impl WatchLoop {
    fn new(s: &ConsulSettings) -> Self {
        Self {
            index: 0,
            limiter: ChurnLimiter::new(5, s.min_interval),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            wait: s.wait,
            resync: s.resync,
            last_full: tokio::time::Instant::now(),
        }
    }

    async fn next_options(&mut self) -> QueryOptions {
        self.limiter.acquire().await;
        if self.last_full.elapsed() >= self.resync {
            // Periodic full re-read: do not trust the index.
            self.index = 0;
        }
        if self.index == 0 {
            self.last_full = tokio::time::Instant::now();
        }
        QueryOptions {
            index: self.index,
            wait: Some(self.wait),
            stale: false,
        }
    }

    fn ok(&mut self, returned: u64) {
        self.backoff.reset();
        let next = next_index(self.index, returned);
        if next < self.index {
            tracing::info!(
                previous = self.index,
                returned,
                "Consul index went backwards; starting over"
            );
        }
        self.index = next;
    }

    async fn failed(&mut self) {
        // After an error, start over with a fresh read.
        self.index = 0;
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}

/// Every service's watch, by name.
#[derive(Debug, Default, Clone)]
pub struct Watches(pub HashMap<String, Arc<ServiceWatch>>);

impl Watches {
    /// Whether every watched service has synced once.
    pub fn all_synced(&self) -> bool {
        self.0.values().all(|w| w.state.borrow().synced)
    }
}
