//! [`Controller`]: gathers [`Observed`] state and carries plans out.
//!
//! Every write is check-and-set (Nomad `EnforceIndex` / `EnforcePriorVersion`, Consul
//! `?cas=`), so a concurrent operator is detected rather than overwritten. Every outcome is
//! verified from outside: Consul health, each instance's own `GET /version`, each proxy's
//! `GET /status`. Waits poll at [`Settings::poll_interval`] and are bounded by deadlines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{CheckStatus, ConsulClient, HealthQuery, KvWrite, ServiceEntry};
use switchyard_hashi::nomad::NomadClient;
use switchyard_model::{Classification, RouteValue};
use tokio::task::JoinSet;

use crate::observe::{Instance, NomadView, Observed, ProxyObservation, RouteKey, retag};
use crate::plan::{self, DeployPlan, SwitchPlan};
use crate::report::{self, DiagnoseReport, StatusReport};
use crate::state::{StateDir, SwitchRecord};
use crate::{ControllerError, Settings};

/// Receives progress lines (the binary prints them on stderr).
pub type ProgressSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The result of a successful deploy.
#[derive(Clone, Debug, Serialize)]
pub struct DeployOutcome {
    /// Service.
    pub service: String,
    /// Job.
    pub job: String,
    /// The colour that received the version.
    pub colour: String,
    /// Its group.
    pub group: String,
    /// The version deployed.
    pub version: String,
    /// The version it replaced.
    pub previous_version: Option<String>,
    /// The job version registered.
    pub job_version: u64,
    /// Instances verified (`host:port`).
    pub instances: Vec<String>,
    /// Where the job was saved before the change.
    pub backup: String,
    /// Wall time of the whole deploy.
    pub elapsed_ms: u128,
}

/// The result of a successful switch or rollback.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchOutcome {
    /// What was planned.
    pub plan: SwitchPlan,
    /// From the route key write until every proxy served the new generation.
    pub cutover_ms: u128,
    /// Proxies that confirmed.
    pub proxies_confirmed: Vec<String>,
    /// Proxies that do not route this service (skipped).
    pub proxies_skipped: Vec<String>,
    /// Whether the job's role tags were updated (false when they were already right).
    pub tags_updated: bool,
}

/// Runs the commands for one service.
#[derive(Clone)]
pub struct Controller {
    settings: Settings,
    consul: ConsulClient,
    nomad: NomadClient,
    http: reqwest::Client,
    state: StateDir,
    progress: ProgressSink,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Builds the clients. Makes no request.
    pub fn new(settings: Settings) -> Result<Self, ControllerError> {
        settings.validate()?;
        let consul = ConsulClient::new(settings.consul.clone())
            .map_err(|e| ControllerError::BadInput(format!("Consul address: {e}")))?;
        let nomad = NomadClient::new(settings.nomad.clone())
            .map_err(|e| ControllerError::BadInput(format!("Nomad address: {e}")))?;
        let http = switchyard_hashi::tls::http_client_builder()
            .timeout(settings.http_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ControllerError::BadInput(format!("HTTP client: {e}")))?;
        Ok(Controller {
            state: StateDir::new(settings.state_dir.clone()),
            settings,
            consul,
            nomad,
            http,
            progress: Arc::new(|_| {}),
        })
    }

    /// Sends progress lines to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = sink;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn say(&self, line: &str) {
        tracing::info!(service = %self.settings.service, "{line}");
        (self.progress)(line);
    }

    fn record_file(&self) -> String {
        self.state
            .root()
            .join("state")
            .join(format!("{}.json", self.settings.service))
            .display()
            .to_string()
    }

    // ---------------------------------------------------------------- observe

    /// Gathers the service's state. Never fails: unreadable sources are recorded as errors.
    pub async fn observe(&self) -> Observed {
        let s = &self.settings;
        let (nomad, instances, route, proxies) = tokio::join!(
            self.observe_nomad(),
            self.observe_instances(),
            self.observe_route(),
            self.observe_proxies(),
        );
        Observed {
            service: s.service.clone(),
            job_id: s.job.clone(),
            colours: s.colours.clone(),
            nomad,
            instances,
            route,
            proxies,
            last_switch: self.state.read_record(&s.service).ok().flatten(),
        }
    }

    async fn observe_nomad(&self) -> Result<NomadView, String> {
        let opts = QueryOptions::default();
        let (job, _) = self
            .nomad
            .job(&self.settings.job, &opts)
            .await
            .map_err(|e| e.to_string())?;
        let allocations = match &job {
            Some(_) => {
                self.nomad
                    .job_allocations(&self.settings.job, false, &opts)
                    .await
                    .map_err(|e| e.to_string())?
                    .0
            }
            None => Vec::new(),
        };
        Ok(NomadView { job, allocations })
    }

    async fn observe_instances(&self) -> Result<Vec<Instance>, String> {
        let entries = self.health_entries().await?;
        let mut instances: Vec<Instance> = entries
            .iter()
            .map(|e| to_instance(e, &self.settings.colours))
            .collect();
        self.ask_versions(&mut instances).await;
        Ok(instances)
    }

    async fn health_entries(&self) -> Result<Vec<ServiceEntry>, String> {
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

    /// Asks every instance `GET /version`, concurrently.
    async fn ask_versions(&self, instances: &mut [Instance]) {
        let mut set = JoinSet::new();
        for (i, inst) in instances.iter().enumerate() {
            let http = self.http.clone();
            let url = format!("http://{}/version", inst.address);
            set.spawn(async move { (i, ask_version(&http, &url).await) });
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
        let key = switchyard_model::route_key(&self.settings.service);
        let (pair, _) = self
            .consul
            .kv_get(&key, &QueryOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(pair.map(|p| RouteKey {
            modify_index: p.modify_index,
            value: match p.value.as_deref() {
                Some(bytes) => RouteValue::parse(bytes).map_err(|e| e.to_string()),
                None => Err("the key has no value".to_owned()),
            },
        }))
    }

    /// The proxies to watch: those registered in Consul under `settings.proxy_service` plus
    /// every `--proxy` / `SWITCHYARD_PROXIES` entry, without duplicates. The built-in default
    /// (`http://127.0.0.1:8081`) stands in only when no proxy is registered.
    async fn proxy_urls(&self) -> Vec<String> {
        let registered = match self
            .consul
            .service_instances(&self.settings.proxy_service)
            .await
        {
            Ok(found) => found
                .into_iter()
                .map(|p| format!("http://{}", p.address))
                .collect(),
            Err(e) => {
                tracing::warn!(service = %self.settings.proxy_service, error = %e, "cannot list the registered proxies");
                Vec::new()
            }
        };
        let defaulted = self.settings.proxies == [crate::settings::DEFAULT_PROXY];
        let mut urls: Vec<String> = if defaulted && !registered.is_empty() {
            Vec::new()
        } else {
            self.settings.proxies.clone()
        };
        for url in registered {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }

    async fn observe_proxies(&self) -> Vec<ProxyObservation> {
        let mut set = JoinSet::new();
        for (i, url) in self.proxy_urls().await.into_iter().enumerate() {
            let http = self.http.clone();
            let service = self.settings.service.clone();
            set.spawn(async move {
                let status = fetch_proxy_status(&http, &url, &service).await;
                (i, ProxyObservation { url, status })
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

    // ---------------------------------------------------------------- deploy

    /// `deploy <version>`: replaces the standby group's version, waits for it to be healthy and
    /// to answer the right version; reverts the job on any failure after the register.
    pub async fn deploy(&self, version: &str) -> Result<DeployOutcome, ControllerError> {
        let started = Instant::now();
        plan::validate_version(version)?;
        let obs = self.observe().await;
        let plan = plan::plan_deploy(&obs, version)?;
        self.execute_deploy(plan, started).await
    }

    /// Carries out a deploy plan made from an earlier observation: backup, drain wait,
    /// check-and-set register, health and version verification, revert on failure. A plan made
    /// from stale state fails at the register with [`ControllerError::Conflict`].
    pub async fn execute_deploy(
        &self,
        plan: DeployPlan,
        started: Instant,
    ) -> Result<DeployOutcome, ControllerError> {
        let version = plan.to_version.clone();
        let version = version.as_str();
        let backup = self.state.write_backup(&plan.original, &plan.group)?;
        self.say(&format!(
            "deploying {} to {} (group {} of job {}, was {}); backup {}",
            plan.to_version,
            plan.colour,
            plan.group,
            plan.job_id,
            plan.from_version.as_deref().unwrap_or("unset"),
            backup.display()
        ));
        if plan.wait_for_drain {
            self.wait_drained(&plan.colour).await?;
        }
        let registered = match self
            .nomad
            .register(&plan.job, Some(plan.enforce_index))
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_cas_conflict() => {
                return Err(ControllerError::Conflict(format!(
                    "job {} changed since it was read (another deploy or operator won: {e}); nothing was changed by this deploy",
                    plan.job_id
                )));
            }
            Err(e) => {
                return Err(ControllerError::hashi(
                    format!("registering job {}", plan.job_id),
                    e,
                ));
            }
        };
        let new_version = plan.prior_job_version + 1;
        tracing::info!(eval = %registered.eval_id, job_version = new_version, "job registered");
        let deadline = started + self.settings.deadline;
        let failure = match self.wait_standby(&plan, version, deadline).await {
            Ok(()) => match self.verify_versions(&plan.colour, version).await {
                Ok(instances) => {
                    let elapsed = started.elapsed();
                    self.say(&format!(
                        "{} now runs {version} on {} instance(s), verified on /version; took {:.1}s",
                        plan.colour,
                        instances.len(),
                        elapsed.as_secs_f64()
                    ));
                    return Ok(DeployOutcome {
                        service: plan.service.clone(),
                        job: plan.job_id.clone(),
                        colour: plan.colour.clone(),
                        group: plan.group.clone(),
                        version: version.to_owned(),
                        previous_version: plan.from_version.clone(),
                        job_version: new_version,
                        instances,
                        backup: backup.display().to_string(),
                        elapsed_ms: elapsed.as_millis(),
                    });
                }
                Err(why) => why,
            },
            Err(why) => why,
        };
        let reverted = self.revert(&plan, new_version, &backup).await;
        Err(ControllerError::Failed(format!(
            "deploy of {version} to {} failed after {:.1}s: {failure}; {reverted}",
            plan.colour,
            started.elapsed().as_secs_f64()
        )))
    }

    /// Waits until no proxy has requests in flight to, or is draining, `colour`.
    async fn wait_drained(&self, colour: &str) -> Result<(), ControllerError> {
        let deadline = Instant::now() + self.settings.drain_deadline;
        let mut last = String::new();
        loop {
            let proxies = self.observe_proxies().await;
            let busy: Vec<String> = proxies
                .iter()
                .filter_map(|p| match &p.status {
                    Ok(Some(s)) => {
                        let (n, d) = s.load_on(colour);
                        (n > 0 || d).then(|| {
                            format!(
                                "{}: {n} in flight{}",
                                p.url,
                                if d { ", draining" } else { "" }
                            )
                        })
                    }
                    Ok(None) => None,
                    Err(e) => Some(format!("{}: unreachable ({e})", p.url)),
                })
                .collect();
            if busy.is_empty() {
                return Ok(());
            }
            let line = format!("waiting for {colour} to drain: {}", busy.join("; "));
            if line != last {
                self.say(&line);
                last = line;
            }
            if Instant::now() >= deadline {
                return Err(ControllerError::Failed(format!(
                    "{colour} did not drain within {}s ({}); nothing was changed",
                    self.settings.drain_deadline.as_secs(),
                    busy.join("; ")
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Waits until the standby group's allocations of the new job version run and every
    /// instance of its colour in Consul passes with `version=<version>`.
    async fn wait_standby(
        &self,
        plan: &DeployPlan,
        version: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        let colour_idx = self
            .settings
            .colours
            .iter()
            .position(|c| *c == plan.colour)
            .unwrap_or(0);
        let new_version = plan.prior_job_version + 1;
        let mut last = String::new();
        loop {
            let allocs = self
                .nomad
                .job_allocations(&plan.job_id, false, &QueryOptions::default())
                .await
                .map(|(a, _)| a);
            // Nomad may be unreachable while the allocations keep running: say so rather
            // than report the wait as a health problem.
            let nomad_down = allocs.as_ref().err().map(|e| e.to_string());
            let running = match &allocs {
                Ok(a) => a
                    .iter()
                    .filter(|a| {
                        a.task_group == plan.group
                            && a.desired_status == "run"
                            && a.client_status == "running"
                            && a.job_version >= new_version
                    })
                    .count(),
                Err(_) => 0,
            };
            let failed_deployment = self.failed_deployment(&plan.job_id, new_version).await;
            let instances = self.health_entries().await.unwrap_or_default();
            let mine: Vec<Instance> = instances
                .iter()
                .map(|e| to_instance(e, &self.settings.colours))
                .filter(|i| i.colour == Some(colour_idx))
                .collect();
            let ready = mine
                .iter()
                .filter(|i| i.passing() && i.version_tag() == Some(version))
                .count();
            let stale = mine
                .iter()
                .filter(|i| i.version_tag() != Some(version))
                .count();
            let expected = usize::try_from(plan.expected_count).unwrap_or(usize::MAX);
            let line = format!(
                "waiting for {}: {running}/{expected} allocation(s) running, {ready}/{expected} passing with version={version}{}{}",
                plan.colour,
                if stale > 0 {
                    format!(", {stale} old instance(s) still registered")
                } else {
                    String::new()
                },
                match &nomad_down {
                    Some(e) => format!(" (Nomad API unreachable: {e})"),
                    None => String::new(),
                }
            );
            if line != last {
                self.say(&line);
                last = line;
            }
            if running >= expected && ready >= expected && stale == 0 {
                return Ok(());
            }
            if let Some(why) = failed_deployment {
                return Err(format!("Nomad deployment failed ({why})"));
            }
            if Instant::now() >= deadline {
                if let Some(e) = nomad_down {
                    return Err(format!(
                        "the Nomad API was unreachable at the deadline of {}s ({e}), so the allocations of group {} could not be confirmed ({ready}/{expected} passing with version={version} in Consul)",
                        self.settings.deadline.as_secs(),
                        plan.group
                    ));
                }
                let failing: Vec<String> = mine
                    .iter()
                    .filter(|i| !i.passing())
                    .map(|i| format!("{} {}", i.address, i.failing_checks.join(", ")))
                    .collect();
                return Err(format!(
                    "never healthy within the deadline of {}s ({ready}/{expected} passing with version={version}{})",
                    self.settings.deadline.as_secs(),
                    if failing.is_empty() {
                        String::new()
                    } else {
                        format!("; failing: {}", failing.join("; "))
                    }
                ));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn failed_deployment(&self, job: &str, version: u64) -> Option<String> {
        let (d, _) = self
            .nomad
            .job_deployment(job, &QueryOptions::default())
            .await
            .ok()?;
        let d = d?;
        (d.job_version == version && d.status == "failed").then_some(d.status_description)
    }

    /// Asks every instance of `colour` for its version; all must answer `version`.
    async fn verify_versions(&self, colour: &str, version: &str) -> Result<Vec<String>, String> {
        let entries = self.health_entries().await?;
        let mut mine: Vec<Instance> = entries
            .iter()
            .map(|e| to_instance(e, &self.settings.colours))
            .filter(|i| {
                i.colour
                    .is_some_and(|c| self.settings.colours[c].eq_ignore_ascii_case(colour))
            })
            .collect();
        self.ask_versions(&mut mine).await;
        let mut wrong = Vec::new();
        for i in &mine {
            match &i.reported_version {
                Some(Ok(v)) if v == version => {}
                Some(Ok(v)) => wrong.push(format!("{} answered version {v:?}", i.address)),
                Some(Err(e)) => wrong.push(format!("{} did not answer /version ({e})", i.address)),
                None => wrong.push(format!("{} was not asked", i.address)),
            }
        }
        if mine.is_empty() {
            return Err(format!("no instance of {colour} is registered"));
        }
        if wrong.is_empty() {
            Ok(mine.into_iter().map(|i| i.address).collect())
        } else {
            Err(format!(
                "wrong version (expected {version:?}): {}",
                wrong.join("; ")
            ))
        }
    }

    /// Reverts the job to the version it had before the deploy and waits for the standby to
    /// come back; returns a sentence for the error message.
    async fn revert(
        &self,
        plan: &DeployPlan,
        current_version: u64,
        backup: &std::path::Path,
    ) -> String {
        self.say(&format!(
            "reverting job {} to version {}",
            plan.job_id, plan.prior_job_version
        ));
        match self
            .nomad
            .revert(&plan.job_id, plan.prior_job_version, Some(current_version))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                return format!(
                    "reverting job {} to version {} FAILED ({e}); the job is left as it is; restore it from the backup {}",
                    plan.job_id,
                    plan.prior_job_version,
                    backup.display()
                );
            }
        }
        let Some(old) = plan.from_version.clone() else {
            return format!(
                "job {} reverted to version {}",
                plan.job_id, plan.prior_job_version
            );
        };
        let revert_plan = DeployPlan {
            prior_job_version: current_version,
            ..plan.clone()
        };
        let deadline = Instant::now() + self.settings.deadline;
        match self.wait_standby(&revert_plan, &old, deadline).await {
            Ok(()) => format!(
                "job {} reverted to version {}; {} runs {old} again",
                plan.job_id, plan.prior_job_version, plan.colour
            ),
            Err(e) => format!(
                "job {} reverted to version {}, but {} has not recovered: {e}",
                plan.job_id, plan.prior_job_version, plan.colour
            ),
        }
    }

    // ---------------------------------------------------------------- switch

    /// `switch`: pre-flight, route key write (check-and-set), wait for every proxy, then
    /// update the job's role tags.
    pub async fn switch(&self, force: bool) -> Result<SwitchOutcome, ControllerError> {
        let obs = self.observe().await;
        let plan = plan::plan_switch(&obs, force)?;
        self.execute_switch(plan).await
    }

    /// `rollback`: a switch back to the colour that was active before the last switch.
    pub async fn rollback(&self) -> Result<SwitchOutcome, ControllerError> {
        let obs = self.observe().await;
        let plan = plan::plan_rollback(&obs, &self.settings.job, &self.record_file())?;
        self.execute_switch(plan).await
    }

    async fn execute_switch(&self, plan: SwitchPlan) -> Result<SwitchOutcome, ControllerError> {
        for w in &plan.warnings {
            self.say(&format!("warning (forced): {w}"));
        }
        let key = switchyard_model::route_key(&plan.service);
        let value = RouteValue::new(&plan.to, plan.generation, &self.settings.operator);
        let started = Instant::now();
        let written = self
            .consul
            .kv_put(
                &key,
                &value.to_bytes(),
                &KvWrite {
                    cas: Some(plan.cas),
                    flags: None,
                },
            )
            .await
            .map_err(|e| ControllerError::hashi(format!("writing {key}"), e))?;
        if !written {
            return Err(ControllerError::Conflict(format!(
                "{key} changed since it was read (another switch won); nothing was changed by this call"
            )));
        }
        self.say(&format!(
            "route key {key}: {} -> {} (generation {})",
            plan.from, plan.to, plan.generation
        ));
        let record = SwitchRecord {
            service: plan.service.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            from_version: plan.from_version.clone(),
            to_version: plan.to_version.clone(),
            generation: plan.generation,
            at: value.updated_at.clone(),
        };
        let record_result = self.state.write_record(&record);
        let (confirmed, skipped) = self.wait_proxies(&plan, started).await?;
        let cutover_ms = started.elapsed().as_millis();
        self.say(&format!(
            "{} proxy(ies) serve {} (generation {}) {cutover_ms} ms after the route key write",
            confirmed.len(),
            plan.to,
            plan.generation
        ));
        record_result?;
        let tags_updated = self.update_role_tags(&plan.to).await.map_err(|e| {
            ControllerError::Failed(format!(
                "traffic is switched to {} but the job's role tags were not updated: {e}; run `switchyard diagnose --service {}`",
                plan.to, plan.service
            ))
        })?;
        Ok(SwitchOutcome {
            plan,
            cutover_ms,
            proxies_confirmed: confirmed,
            proxies_skipped: skipped,
            tags_updated,
        })
    }

    /// Waits until every proxy that routes the service reports `generation >= new` and serves
    /// the target colour.
    async fn wait_proxies(
        &self,
        plan: &SwitchPlan,
        started: Instant,
    ) -> Result<(Vec<String>, Vec<String>), ControllerError> {
        let deadline = started + self.settings.proxy_deadline;
        loop {
            let proxies = self.observe_proxies().await;
            let mut confirmed = Vec::new();
            let mut skipped = Vec::new();
            let mut behind = Vec::new();
            for p in proxies {
                match &p.status {
                    Ok(Some(s))
                        if s.generation >= plan.generation
                            && s.active_colour.eq_ignore_ascii_case(&plan.to) =>
                    {
                        confirmed.push(p.url)
                    }
                    Ok(Some(s)) => behind.push(format!(
                        "{} serves {} at generation {}",
                        p.url, s.active_colour, s.generation
                    )),
                    Ok(None) => skipped.push(p.url),
                    Err(e) => behind.push(format!("{} unreachable ({e})", p.url)),
                }
            }
            if behind.is_empty() {
                return Ok((confirmed, skipped));
            }
            if Instant::now() >= deadline {
                return Err(ControllerError::Failed(format!(
                    "route key written (generation {}, active {}) but not every proxy followed within {}s: {}",
                    plan.generation,
                    plan.to,
                    self.settings.proxy_deadline.as_secs(),
                    behind.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the job's role tags match `active` (an in-place update in Nomad). Retries once on a
    /// check-and-set conflict, re-reading the job. Returns whether anything was registered.
    async fn update_role_tags(&self, active: &str) -> Result<bool, String> {
        let service = &self.settings.service;
        for attempt in 0..2 {
            let (job, _) = self
                .nomad
                .job(&self.settings.job, &QueryOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let Some(job) = job else {
                return Err(format!("job {} does not exist", self.settings.job));
            };
            let obs = Observed {
                service: service.clone(),
                job_id: self.settings.job.clone(),
                colours: self.settings.colours.clone(),
                nomad: Ok(NomadView {
                    job: Some(job.clone()),
                    allocations: Vec::new(),
                }),
                instances: Ok(Vec::new()),
                route: Ok(None),
                proxies: Vec::new(),
                last_switch: None,
            };
            let mut updated = job.clone();
            for i in 0..2 {
                let Some(group) = obs.group_of(i) else {
                    continue;
                };
                let Some(tags) = job.group_service_tags(&group, service) else {
                    continue;
                };
                let is_active = self.settings.colours[i].eq_ignore_ascii_case(active);
                updated
                    .set_group_service_tags(&group, service, &retag(&tags, is_active))
                    .map_err(|e| e.to_string())?;
            }
            if updated == job {
                return Ok(false);
            }
            match self
                .nomad
                .register(&updated, Some(job.job_modify_index()))
                .await
            {
                Ok(_) => {
                    self.say(&format!("role tags updated in job {}", self.settings.job));
                    return Ok(true);
                }
                Err(e) if e.is_cas_conflict() && attempt == 0 => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the job kept changing".to_owned())
    }

    // ---------------------------------------------------------------- status / diagnose

    /// `status`.
    pub async fn status(&self) -> StatusReport {
        report::status_report(&self.observe().await)
    }

    /// `diagnose`.
    pub async fn diagnose(&self) -> DiagnoseReport {
        let obs = self.observe().await;
        let backups = self.state.backups(&self.settings.job);
        report::diagnose(&obs, &backups, &self.settings)
    }
}

fn to_instance(e: &ServiceEntry, colours: &[String; 2]) -> Instance {
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
    }
}

async fn ask_version(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let body = resp.text().await.map_err(|e| e.to_string())?;
    let v = body.trim();
    if v.len() > 128 {
        return Err("the answer is too long to be a version".to_owned());
    }
    Ok(v.to_owned())
}

async fn fetch_proxy_status(
    http: &reqwest::Client,
    base: &str,
    service: &str,
) -> Result<Option<crate::observe::ProxyService>, String> {
    let resp = http
        .get(format!("{base}/status"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let doc: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    crate::observe::parse_proxy_status(&doc, service)
}
