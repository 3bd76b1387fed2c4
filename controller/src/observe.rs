//! `observe`: [`Controller::observe`] gathers one service's state as seen from outside into
//! [`Observed`]; the derivations every planner shares (which colour is active, which task group
//! runs which colour, which instances pass) are methods of it.
//!
//! Each source is a `Result<_, String>`: an unreachable Consul does not stop `status` from
//! showing what Nomad says. The planners refuse when a source they need is missing.

use serde::Serialize;
use serde_json::Value;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{CheckStatus, HealthQuery, ServiceEntry};
use switchyard_hashi::nomad::{AllocationListStub, Deployment, Job};
use switchyard_model::flip;
use switchyard_model::{Classification, DecidedBy, RouteValue};
use tokio::task::JoinSet;

use crate::Controller;
use crate::version_check::VersionCheck;

/// The check ID of Consul's node liveness check.
pub const SERF_HEALTH: &str = "serfHealth";
use crate::history::{self, History, HistoryEntry};

/// Everything the planners look at.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The Consul service name.
    pub service: String,
    /// The Nomad job ID.
    pub job_id: String,
    /// The two colour tags.
    pub colours: [String; 2],
    /// The KV route key the proxies watch.
    pub route_key: String,
    /// Nomad's view, or why it could not be read.
    pub nomad: Result<NomadView, String>,
    /// Every registered instance of the service (passing or not), or why Consul could not be
    /// read.
    pub instances: Result<Vec<Instance>, String>,
    /// The route key (`None` when it does not exist), or why it could not be read.
    pub route: Result<Option<RouteKey>, String>,
    /// Each configured proxy's view.
    pub proxies: Vec<ProxyObservation>,
    /// The service's switch and deploy history (from Consul), or why it could not be read.
    pub history: Result<History, String>,
}

/// The job and its allocations.
#[derive(Clone, Debug, Default)]
pub struct NomadView {
    /// `None` when the job does not exist.
    pub job: Option<Job>,
    /// The job's allocations.
    pub allocations: Vec<AllocationListStub>,
    /// The job's latest deployment, `None` when it never had one.
    pub deployment: Option<Deployment>,
}

/// The route key as read from Consul.
#[derive(Clone, Debug)]
pub struct RouteKey {
    /// Its `ModifyIndex`: the `?cas=` value for the next write.
    pub modify_index: u64,
    /// The parsed value, or why it is unusable.
    pub value: Result<RouteValue, String>,
}

/// One Consul instance of the service.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    /// Consul service ID.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// The instance's tags.
    pub tags: Vec<String>,
    /// Index into the colour pair; `None` when tagged with both or neither colour.
    pub colour: Option<usize>,
    /// The worst status among its checks (service and node).
    pub health: CheckStatus,
    /// `name: status: output` of each check that is not passing.
    pub failing_checks: Vec<String>,
    /// Its node's `serfHealth` check is critical: the node failed, and Consul keeps the
    /// registration (up to 72 h) until the node is reaped. Such an instance is ignored by
    /// deploy waits, version checks and the switch pre-flight.
    #[serde(default)]
    pub node_failed: bool,
    /// What `GET /version` answered (`Ok`) or why it could not be asked (`Err`); `None` when
    /// not asked.
    pub reported_version: Option<Result<String, String>>,
}

impl Instance {
    /// The `version=` tag.
    pub fn version_tag(&self) -> Option<&str> {
        switchyard_model::version_of(&self.tags)
    }

    /// The role tag (`active` / `standby`).
    pub fn role_tag(&self) -> Option<&'static str> {
        switchyard_model::role_of(&self.tags)
    }

    /// Whether every check passes.
    pub fn passing(&self) -> bool {
        self.health == CheckStatus::Passing
    }

    /// The version it answered, when it answered.
    pub fn reported(&self) -> Option<&str> {
        self.reported_version
            .as_ref()
            .and_then(|r| r.as_ref().ok())
            .map(String::as_str)
    }
}

/// One proxy's `/status`, reduced to this service.
#[derive(Clone, Debug)]
pub struct ProxyObservation {
    /// Admin base URL.
    pub url: String,
    /// `Ok(None)`: the proxy answered but does not route this service.
    pub status: Result<Option<ProxyService>, String>,
    /// Its registration in Consul (under the proxy service); `None` for a proxy known only
    /// from `--proxy` / `SWITCHYARD_PROXIES`.
    pub registration: Option<ProxyRegistration>,
}

/// A proxy as registered in Consul.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyRegistration {
    /// Consul service ID.
    pub id: String,
    /// The node it is registered on.
    pub node: String,
    /// The worst status among its checks (its `/readyz` check and the node's).
    pub health: CheckStatus,
}

impl ProxyObservation {
    /// The proxy's registration when it is registered and not passing.
    pub fn not_passing(&self) -> Option<&ProxyRegistration> {
        self.registration
            .as_ref()
            .filter(|r| r.health != CheckStatus::Passing)
    }
}

/// A proxy's view of one service (from `GET /status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProxyService {
    /// Colour it serves.
    pub active_colour: String,
    /// Colour it holds as standby.
    pub standby_colour: String,
    /// Route generation it applied.
    pub generation: u64,
    /// `route-key`, `tags`, `static`.
    pub decided_by: String,
    /// Requests in flight to the active pool.
    pub active_in_flight: u64,
    /// Requests in flight to the standby pool.
    pub standby_in_flight: u64,
    /// Whether the active pool is draining.
    pub active_draining: bool,
    /// Whether the standby pool is draining (the colour switched away from).
    pub standby_draining: bool,
    /// Whether the proxy is holding its last good table because Consul data looked wrong.
    pub fail_static: bool,
    /// Why.
    pub fail_static_reason: Option<String>,
    /// Whether it has synced with Consul.
    pub synced: bool,
}

impl ProxyService {
    /// In-flight requests and draining state of the pool for `colour`: `(in_flight, draining)`.
    pub fn load_on(&self, colour: &str) -> (u64, bool) {
        if self.active_colour.eq_ignore_ascii_case(colour) {
            (self.active_in_flight, self.active_draining)
        } else if self.standby_colour.eq_ignore_ascii_case(colour) {
            (self.standby_in_flight, self.standby_draining)
        } else {
            (0, false)
        }
    }
}

/// Picks `service` out of a proxy's `/status` document. `Ok(None)` when the proxy does not
/// route it; `Err` when the document is not the expected shape.
pub fn parse_proxy_status(doc: &Value, service: &str) -> Result<Option<ProxyService>, String> {
    let services = doc
        .get("services")
        .and_then(Value::as_array)
        .ok_or("the /status document has no services list")?;
    let Some(s) = services
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(service))
    else {
        return Ok(None);
    };
    let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let pool = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
    let (active, standby) = (pool("active"), pool("standby"));
    let in_flight = |p: &Value| p.get("in_flight").and_then(Value::as_u64).unwrap_or(0);
    let draining = |p: &Value| p.get("draining").and_then(Value::as_bool).unwrap_or(false);
    Ok(Some(ProxyService {
        active_colour: str_at(&active, "colour"),
        standby_colour: str_at(&standby, "colour"),
        generation: s
            .get("generation")
            .and_then(Value::as_u64)
            .ok_or("the service entry has no generation")?,
        decided_by: str_at(s, "decided_by"),
        active_in_flight: in_flight(&active),
        standby_in_flight: in_flight(&standby),
        active_draining: draining(&active),
        standby_draining: draining(&standby),
        fail_static: s
            .get("fail_static")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        fail_static_reason: s
            .get("fail_static_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        synced: s.get("synced").and_then(Value::as_bool).unwrap_or(false),
    }))
}

impl Observed {
    /// The active colour (index into [`colours`](Self::colours)) and how it was decided, by the
    /// rule the proxies use ([`switchyard_model::decide_active`]): the route key, else the
    /// passing instances' role tags, ties kept at the colour the proxies serve. `None` when the
    /// route key does not decide and Consul's instances could not be read.
    pub fn active(&self) -> Option<(usize, DecidedBy)> {
        let route = self.route_value();
        let tagged = match &self.instances {
            Ok(list) => switchyard_model::count_active_tagged(
                list.iter()
                    .filter(|i| i.passing())
                    .map(|i| i.tags.as_slice()),
                &self.colours,
            ),
            Err(_) => {
                return route
                    .and_then(|v| self.colour_index(&v.active))
                    .map(|i| (i, DecidedBy::RouteKey));
            }
        };
        let a = switchyard_model::decide_active(&self.colours, route, tagged, self.proxies_serve());
        Some((a.index, a.decided_by))
    }

    /// The colour every proxy that routes the service says it serves, when they agree.
    pub fn proxies_serve(&self) -> Option<usize> {
        let mut seen = None;
        for p in &self.proxies {
            if let Ok(Some(s)) = &p.status {
                let i = self.colour_index(&s.active_colour)?;
                if seen.is_some_and(|x| x != i) {
                    return None;
                }
                seen = Some(i);
            }
        }
        seen
    }

    /// The last switch or rollback in the history, when the history was read.
    pub fn last_switch(&self) -> Option<&HistoryEntry> {
        self.history.as_ref().ok().and_then(History::last_switch)
    }

    /// The route key's parsed value, when it exists and parses.
    pub fn route_value(&self) -> Option<&RouteValue> {
        match &self.route {
            Ok(Some(RouteKey { value: Ok(v), .. })) => Some(v),
            _ => None,
        }
    }

    /// The index of a colour name (case-insensitive).
    pub fn colour_index(&self, colour: &str) -> Option<usize> {
        switchyard_model::colour_index(&self.colours, colour)
    }

    /// The job, when Nomad was read and the job exists.
    pub fn job(&self) -> Option<&Job> {
        self.nomad.as_ref().ok().and_then(|n| n.job.as_ref())
    }

    /// The task group that runs colour `i`: the group whose service (named after the Consul
    /// service) carries the colour tag; failing that, a group named after the colour.
    pub fn group_of(&self, i: usize) -> Option<String> {
        let job = self.job()?;
        let colour = self.colours.get(i)?;
        let names = job.group_names();
        names
            .iter()
            .find(|g| {
                job.group_service_tags(g, &self.service)
                    .is_some_and(|tags| {
                        matches!(
                            switchyard_model::classify(&tags, &self.colours),
                            Classification::Colour(c) if c == i
                        )
                    })
            })
            .or_else(|| names.iter().find(|g| g.eq_ignore_ascii_case(colour)))
            .cloned()
    }

    /// The instances of colour `i` that count: every registered one except those on failed
    /// nodes (empty when Consul could not be read).
    pub fn instances_of(&self, i: usize) -> Vec<&Instance> {
        self.registered_of(i)
            .into_iter()
            .filter(|x| !x.node_failed)
            .collect()
    }

    /// Every registered instance of colour `i`, including those on failed nodes.
    pub fn registered_of(&self, i: usize) -> Vec<&Instance> {
        match &self.instances {
            Ok(list) => list.iter().filter(|x| x.colour == Some(i)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// How many instances of colour `i` pass every check.
    pub fn passing_count(&self, i: usize) -> usize {
        self.instances_of(i).iter().filter(|x| x.passing()).count()
    }

    /// How instances prove their version: from the job's meta
    /// ([`VersionCheck::from_job`]); the default when the job could not be read.
    pub fn version_check(&self) -> Result<VersionCheck, String> {
        self.job()
            .map_or_else(|| Ok(VersionCheck::default()), VersionCheck::from_job)
    }

    /// The version colour `i` runs: the most common `version=` tag among its instances, else
    /// its group's `meta.version`.
    pub fn version_of(&self, i: usize) -> Option<String> {
        let instances = self.instances_of(i);
        switchyard_model::most_common(instances.iter().filter_map(|x| x.version_tag()))
            .map(str::to_owned)
            .or_else(|| {
                let g = self.group_of(i)?;
                self.job()?.group_meta(&g, "version").map(str::to_owned)
            })
    }
}

impl Controller {
    /// Gathers the service's state. Never fails: unreadable sources are recorded as errors.
    pub async fn observe(&self) -> Observed {
        let s = &self.settings;
        let (nomad, instances, route, proxies, history) = tokio::join!(
            self.observe_nomad(),
            self.observe_instances(),
            self.observe_route(),
            self.observe_proxies(),
            history::read(&self.consul, &s.service),
        );
        let mut obs = Observed {
            service: s.service.clone(),
            job_id: s.job.clone(),
            colours: s.colours.clone(),
            route_key: s.route_key.clone(),
            nomad,
            instances,
            route,
            proxies,
            history: history.map(|(h, _)| h).map_err(|e| e.to_string()),
        };
        // The job says how instances prove their version, so they are asked once it is read.
        let check = obs.version_check();
        if let Ok(list) = &mut obs.instances {
            match &check {
                Ok(check) => self.ask_versions(list, check).await,
                Err(e) => {
                    for i in list.iter_mut() {
                        i.reported_version = Some(Err(e.clone()));
                    }
                }
            }
        }
        obs
    }

    async fn observe_nomad(&self) -> Result<NomadView, String> {
        let opts = QueryOptions::default();
        let (job, _) = self
            .nomad
            .job(&self.settings.job, &opts)
            .await
            .map_err(|e| e.to_string())?;
        let (allocations, deployment) = match &job {
            Some(_) => {
                let (allocations, deployment) = tokio::join!(
                    self.nomad.job_allocations(&self.settings.job, false, &opts),
                    self.nomad.job_deployment(&self.settings.job, &opts),
                );
                (
                    allocations.map_err(|e| e.to_string())?.0,
                    deployment.map_err(|e| e.to_string())?.0,
                )
            }
            None => (Vec::new(), None),
        };
        Ok(NomadView {
            job,
            allocations,
            deployment,
        })
    }

    async fn observe_instances(&self) -> Result<Vec<Instance>, String> {
        let entries = self.health_entries().await?;
        Ok(entries
            .iter()
            .map(|e| to_instance(e, &self.settings.colours))
            .collect())
    }

    /// The instances of colour `index` in Consul now, except those on failed nodes.
    pub(crate) async fn live_instances_of(&self, index: usize) -> Result<Vec<Instance>, String> {
        Ok(self
            .health_entries()
            .await?
            .iter()
            .map(|e| to_instance(e, &self.settings.colours))
            .filter(|i| i.colour == Some(index) && !i.node_failed)
            .collect())
    }

    pub(crate) async fn health_entries(&self) -> Result<Vec<ServiceEntry>, String> {
        self.consul
            .health_service(
                &self.settings.service,
                &HealthQuery::default(),
                &QueryOptions::default(),
            )
            .await
            .map(|(e, _)| e)
            .map_err(|e| e.to_string())
    }

    /// Asks every instance its version as `check` says, concurrently (with
    /// [`VersionCheck::None`] nobody is asked).
    pub(crate) async fn ask_versions(&self, instances: &mut [Instance], check: &VersionCheck) {
        let path = match check {
            VersionCheck::Body { path } | VersionCheck::Header { path, .. } => path,
            VersionCheck::None => return,
        };
        let mut set = JoinSet::new();
        for (i, inst) in instances.iter().enumerate() {
            let http = self.http.clone();
            let url = format!("http://{}{path}", inst.address);
            let check = check.clone();
            set.spawn(async move { (i, ask_version(&http, &url, &check).await) });
        }
        while let Some(joined) = set.join_next().await {
            if let Ok((i, answer)) = joined
                && let Some(inst) = instances.get_mut(i)
            {
                inst.reported_version = Some(answer);
            }
        }
    }

    async fn observe_route(&self) -> Result<Option<RouteKey>, String> {
        let state = flip::read_key(&self.consul, &self.settings.route_key)
            .await
            .map_err(|e| e.to_string())?;
        Ok(state.value.map(|value| RouteKey {
            modify_index: state.modify_index,
            value,
        }))
    }

    /// The proxies to watch: those registered in Consul under `settings.proxy_service` plus
    /// every `--proxy` / `SWITCHYARD_PROXIES` entry, without duplicates. The built-in default
    /// (`http://127.0.0.1:8081`) stands in only when no proxy is registered.
    async fn proxy_urls(&self) -> Vec<(String, Option<ProxyRegistration>)> {
        let registered: Vec<(String, ProxyRegistration)> = match self
            .consul
            .service_instances(&self.settings.proxy_service)
            .await
        {
            Ok(found) => found
                .into_iter()
                .map(|p| {
                    (
                        format!("http://{}", p.address),
                        ProxyRegistration {
                            id: p.id,
                            node: p.node,
                            health: p.status,
                        },
                    )
                })
                .collect(),
            Err(e) => {
                tracing::warn!(service = %self.settings.proxy_service, error = %e, "cannot list the registered proxies");
                Vec::new()
            }
        };
        let defaulted = self.settings.proxies == [crate::settings::DEFAULT_PROXY];
        let mut urls: Vec<(String, Option<ProxyRegistration>)> =
            if defaulted && !registered.is_empty() {
                Vec::new()
            } else {
                self.settings
                    .proxies
                    .iter()
                    .map(|u| (u.clone(), None))
                    .collect()
            };
        for (url, reg) in registered {
            match urls.iter_mut().find(|(u, _)| *u == url) {
                Some((_, r)) => *r = Some(reg),
                None => urls.push((url, Some(reg))),
            }
        }
        urls
    }

    /// The services the proxies route (from each proxy's `/status`), in the order first seen.
    /// An error when no proxy answered.
    pub async fn routed_services(&self) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        let mut answered = 0;
        for (url, _) in self.proxy_urls().await {
            match fetch_status_doc(&self.http, &url).await {
                Ok(doc) => {
                    answered += 1;
                    let routed = doc
                        .get("services")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.get("name").and_then(Value::as_str));
                    for name in routed {
                        if !names.iter().any(|n| n == name) {
                            names.push(name.to_owned());
                        }
                    }
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        if answered == 0 {
            return Err(format!(
                "no proxy answered /status ({}); pass --service or --proxy",
                if errors.is_empty() {
                    "none is registered or given".to_owned()
                } else {
                    errors.join("; ")
                }
            ));
        }
        Ok(names)
    }

    pub(crate) async fn observe_proxies(&self) -> Vec<ProxyObservation> {
        let mut set = JoinSet::new();
        for (i, (url, registration)) in self.proxy_urls().await.into_iter().enumerate() {
            let http = self.http.clone();
            let service = self.settings.service.clone();
            set.spawn(async move {
                let status = fetch_proxy_status(&http, &url, &service).await;
                (
                    i,
                    ProxyObservation {
                        url,
                        status,
                        registration,
                    },
                )
            });
        }
        let mut out: Vec<(usize, ProxyObservation)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(x) = joined {
                out.push(x);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, p)| p).collect()
    }
}

pub(crate) fn to_instance(e: &ServiceEntry, colours: &[String; 2]) -> Instance {
    let colour = match switchyard_model::classify(&e.service.tags, colours) {
        Classification::Colour(c) => Some(c),
        _ => None,
    };
    Instance {
        id: e.service.id.clone(),
        address: format!("{}:{}", e.address(), e.service.port),
        tags: e.service.tags.clone(),
        colour,
        health: e.aggregated_status(),
        failing_checks: e
            .checks
            .iter()
            .filter(|c| c.status != CheckStatus::Passing)
            .map(|c| format!("{}: {}: {}", c.name, c.status, c.output.trim()))
            .collect(),
        reported_version: None,
        node_failed: e
            .checks
            .iter()
            .any(|c| c.check_id == SERF_HEALTH && c.status == CheckStatus::Critical),
    }
}

async fn ask_version(
    http: &reqwest::Client,
    url: &str,
    check: &VersionCheck,
) -> Result<String, String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let headers = resp.headers().clone();
    // A header check does not need the body; a long one is not read at all.
    let body = match check {
        VersionCheck::Header { .. } => String::new(),
        _ => resp.text().await.map_err(|e| e.to_string())?,
    };
    check.read(&headers, &body)
}

async fn fetch_status_doc(http: &reqwest::Client, base: &str) -> Result<Value, String> {
    let resp = http
        .get(format!("{base}/status"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    resp.json().await.map_err(|e| e.to_string())
}

async fn fetch_proxy_status(
    http: &reqwest::Client,
    base: &str,
    service: &str,
) -> Result<Option<crate::observe::ProxyService>, String> {
    let doc = fetch_status_doc(http, base).await?;
    crate::observe::parse_proxy_status(&doc, service)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::deploy::plan_deploy;
    use crate::switch::plan_switch;
    use crate::testing::*;
    use serde_json::json;

    #[test]
    fn proxy_status_is_parsed_for_one_service() {
        let doc = json!({"ready": true, "table_version": 3, "services": [
            {"name": "other", "generation": 9},
            {"name": "web", "source": "consul",
             "active": {"colour": "green", "version": "v2", "instances": [], "in_flight": 4, "draining": false},
             "standby": {"colour": "blue", "version": "v1", "instances": [], "in_flight": 2, "draining": true},
             "generation": 7, "decided_by": "route-key", "fail_static": true,
             "fail_static_reason": "all instances vanished", "synced": true}
        ]});
        let s = parse_proxy_status(&doc, "web").unwrap().unwrap();
        assert_eq!(s.active_colour, "green");
        assert_eq!(s.generation, 7);
        assert_eq!(s.load_on("blue"), (2, true));
        assert_eq!(s.load_on("GREEN"), (4, false));
        assert!(s.fail_static);
        assert_eq!(
            s.fail_static_reason.as_deref(),
            Some("all instances vanished")
        );
        assert_eq!(parse_proxy_status(&doc, "nope").unwrap(), None);
        assert!(parse_proxy_status(&json!({"x": 1}), "web").is_err());
        assert!(parse_proxy_status(&json!({"services": [{"name": "web"}]}), "web").is_err());
    }

    /// The controller decides the active colour by the proxies' rule: the route key in any
    /// case, else passing instances' role tags only, ties kept at what the proxies serve.
    #[test]
    fn active_colour_follows_the_proxies_rule() {
        use switchyard_model::DecidedBy;
        // A route key in another case still decides.
        let mut obs = observed();
        with_route(&mut obs, "Green", 3);
        assert_eq!(obs.active(), Some((1, DecidedBy::RouteKey)));
        assert_eq!(switching(plan_switch(&obs, false, None)).to, "blue");

        // Failing instances' tags do not count: the proxies see one passing blue `active`.
        let mut obs = observed();
        obs.instances = Ok(vec![
            inst(0, 1, "v1", "active", true),
            inst(1, 1, "v2", "active", false),
            inst(1, 2, "v2", "active", false),
        ]);
        assert_eq!(obs.active(), Some((0, DecidedBy::Tags)));

        // A tie (here: no role tag at all) keeps what the proxies serve, not the job's tags.
        let mut obs = observed();
        obs.instances = Ok(vec![inst(0, 1, "v1", "", true), inst(1, 1, "v2", "", true)]);
        obs.proxies = vec![serving("green")];
        assert_eq!(obs.active(), Some((1, DecidedBy::Tags)));
        assert_eq!(plan_deploy(&obs, "v3").unwrap().colour, "blue");
        // Proxies that disagree say nothing; then the first colour.
        obs.proxies = vec![serving("green"), serving("blue")];
        assert_eq!(obs.active(), Some((0, DecidedBy::Tags)));

        // Without Consul's instances only the route key can decide.
        let mut obs = observed();
        obs.instances = Err("connection refused".into());
        assert_eq!(obs.active(), None);
        with_route(&mut obs, "green", 2);
        assert_eq!(obs.active(), Some((1, DecidedBy::RouteKey)));
    }
}
