//! `switch`: the planner ([`plan_switch`] with its pre-flight), the executor
//! ([`Controller::switch`]: route key flip, wait for every proxy, role tags) and the rendering
//! of its outcome. `rollback` plans differently but executes the same way.

use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_hashi::QueryOptions;
use switchyard_model::flip::{self, FlipError, FlipRequest, Flipped};
use switchyard_model::{ACTIVE_TAG, STANDBY_TAG};

use crate::history::{History, HistoryEntry};
use crate::observe::{NomadView, Observed};
use crate::refusal::{Refusal, check_route};
use crate::version_check::{VersionCheck, nomad_proof};
use crate::{Controller, ControllerError};

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
    /// Why nothing was changed, when the target colour was already active.
    pub unchanged: Option<String>,
}

/// What a `switch` or `rollback` planner decided.
#[derive(Clone, Debug)]
pub enum Planned {
    /// Move traffic.
    Switch(SwitchPlan),
    /// The target colour is already active: succeed without changing anything.
    Unchanged(Unchanged),
}

/// A switch or rollback that has nothing to do.
#[derive(Clone, Debug, Serialize)]
pub struct Unchanged {
    /// Service.
    pub service: String,
    /// The colour active now (the target).
    pub active: String,
    /// The route key's generation (0 when absent).
    pub generation: u64,
    /// Why, as a sentence.
    pub reason: String,
}

/// What `switch` (or `rollback`) will do.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchPlan {
    /// Service.
    pub service: String,
    /// Colour active now.
    pub from: String,
    /// Colour to make active.
    pub to: String,
    /// Version `from` runs.
    pub from_version: Option<String>,
    /// Version `to` runs.
    pub to_version: Option<String>,
    /// `?cas=` for the route key write: its current `ModifyIndex`, 0 when it does not exist.
    pub cas: u64,
    /// The generation to write.
    pub generation: u64,
    /// Whether the pre-flight was skipped.
    pub forced: bool,
    /// What the pre-flight would have refused, when forced.
    pub warnings: Vec<String>,
}

/// Plans `switch`: pre-flight (the standby has passing instances, at least as many as the
/// active; every standby instance proves its `version=` tag by the job's version check; every
/// proxy registered in Consul passes), then the route key write.
/// `force` turns pre-flight refusals into warnings. `to` names the colour to make active
/// (default: the standby); when it is already active the plan is [`Planned::Unchanged`].
pub fn plan_switch(obs: &Observed, force: bool, to: Option<&str>) -> Result<Planned, Refusal> {
    let target = match to {
        Some(name) => Some(
            obs.colour_index(name)
                .ok_or_else(|| Refusal::UnknownColour {
                    colour: name.to_owned(),
                    colours: obs.colours.clone(),
                })?,
        ),
        None => None,
    };
    let mut warnings = Vec::new();
    match check_route(obs) {
        Ok(()) => {}
        Err(r @ Refusal::BadRouteKey { .. }) if force => warnings.push(r.to_string()),
        Err(r) => return Err(r),
    }
    let proxy_generation = obs
        .proxies
        .iter()
        .filter_map(|p| p.status.as_ref().ok().and_then(Option::as_ref))
        .map(|s| s.generation)
        .max()
        .unwrap_or(0);
    let (cas, generation) = match &obs.route {
        Ok(Some(k)) => match &k.value {
            Ok(v) => (k.modify_index, v.generation + 1),
            Err(_) => (k.modify_index, proxy_generation + 1),
        },
        _ => (0, proxy_generation + 1),
    };
    if let Some(t) = target
        && let Some((active, by)) = obs.active()
        && active == t
    {
        return Ok(Planned::Unchanged(Unchanged {
            service: obs.service.clone(),
            active: obs.colours[t].clone(),
            generation: obs.route_value().map_or(0, |v| v.generation),
            reason: format!(
                "{} already serves {} (decided by {}); nothing changed",
                obs.service,
                obs.colours[t],
                by.as_str()
            ),
        }));
    }
    // The switch ends by updating the job's role tags: without Nomad it would fail after
    // moving traffic, so it does not start.
    if let Err(e) = &obs.nomad {
        return Err(Refusal::Unobservable {
            what: "Nomad",
            reason: e.clone(),
        });
    }
    if let Err(e) = &obs.instances {
        let r = Refusal::Unobservable {
            what: "Consul",
            reason: e.clone(),
        };
        if !force {
            return Err(r);
        }
        warnings.push(r.to_string());
    }
    let (active, _) = obs.active().ok_or_else(|| Refusal::NoActiveColour {
        service: obs.service.clone(),
    })?;
    let standby = 1 - active;
    for r in preflight(obs, active, standby) {
        if !force {
            return Err(r);
        }
        warnings.push(r.to_string());
    }
    Ok(Planned::Switch(SwitchPlan {
        service: obs.service.clone(),
        from: obs.colours[active].clone(),
        to: obs.colours[standby].clone(),
        from_version: obs.version_of(active),
        to_version: obs.version_of(standby),
        cas,
        generation,
        forced: force,
        warnings,
    }))
}

/// The pre-flight refusals, in order of importance.
fn preflight(obs: &Observed, active: usize, standby: usize) -> Vec<Refusal> {
    let mut out = Vec::new();
    let (sp, ap) = (obs.passing_count(standby), obs.passing_count(active));
    if sp == 0 {
        out.push(Refusal::StandbyUnhealthy {
            colour: obs.colours[standby].clone(),
        });
    } else if sp < ap {
        out.push(Refusal::FewerInstances {
            standby: obs.colours[standby].clone(),
            standby_passing: sp,
            active: obs.colours[active].clone(),
            active_passing: ap,
        });
    }
    let check = match obs.version_check() {
        Ok(c) => c,
        Err(e) => {
            out.push(Refusal::BadSetting(e));
            return out;
        }
    };
    let registered = obs
        .group_of(standby)
        .and_then(|g| Some((obs.job()?.group_meta(&g, "version")?.to_owned(), g)));
    if check == VersionCheck::None {
        let proof = match (&registered, &obs.nomad) {
            (Some((version, group)), Ok(nomad)) => obs
                .job()
                .ok_or_else(|| format!("job {} does not exist", obs.job_id))
                .and_then(|job| nomad_proof(job, &nomad.allocations, group, version)),
            _ => Err(format!(
                "job {} has no meta.version for the standby colour {}",
                obs.job_id, obs.colours[standby]
            )),
        };
        if let Err(e) = proof {
            out.push(Refusal::Unproven(e));
        }
    }
    for p in &obs.proxies {
        if let Some(r) = p.not_passing() {
            out.push(Refusal::ProxyNotPassing {
                id: r.id.clone(),
                url: p.url.clone(),
                node: r.node.clone(),
                health: r.health.to_string(),
            });
        }
    }
    for inst in obs.instances_of(standby) {
        let tagged = inst.version_tag().unwrap_or("").to_owned();
        if check == VersionCheck::None {
            // Nomad's proof: the tag is rendered from the registered group's meta.version.
            match &registered {
                Some((v, _)) if *v == tagged => continue,
                Some((v, g)) => out.push(Refusal::VersionMismatch {
                    address: inst.address.clone(),
                    tagged: tagged.clone(),
                    reported: format!("the job registers version {v} for group {g}"),
                }),
                None => {}
            }
            continue;
        }
        let asked = check.describe();
        let reported = match &inst.reported_version {
            Some(Ok(v)) if *v == tagged && !tagged.is_empty() => continue,
            Some(Ok(v)) => format!("answers {v:?} on {asked}"),
            Some(Err(e)) => format!("could not be asked its version by {asked} ({e})"),
            None => "was not asked its version".to_owned(),
        };
        out.push(Refusal::VersionMismatch {
            address: inst.address.clone(),
            tagged: if tagged.is_empty() {
                "(none)".to_owned()
            } else {
                tagged
            },
            reported,
        });
    }
    out.extend(nomad_preflight(obs, standby));
    out
}

/// Refusals from Nomad's side: a deployment of the job that has not ended (its allocations are
/// still being replaced or judged), and standby allocations that run another job version than
/// the one registered (the register has not reached them yet).
fn nomad_preflight(obs: &Observed, standby: usize) -> Vec<Refusal> {
    let mut out = Vec::new();
    let Ok(NomadView {
        job: Some(job),
        allocations,
        deployment,
    }) = &obs.nomad
    else {
        return out;
    };
    if let Some(d) = deployment.as_ref().filter(|d| !d.is_terminal()) {
        out.push(Refusal::DeploymentRunning {
            job: obs.job_id.clone(),
            deployment: d.id.chars().take(8).collect(),
            job_version: d.job_version,
            status: d.status.clone(),
        });
    }
    let Some(group) = obs.group_of(standby) else {
        return out;
    };
    let registered = job.version();
    let mut stale: Vec<u64> = allocations
        .iter()
        .filter(|a| {
            a.task_group == group
                && a.desired_status == "run"
                && matches!(a.client_status.as_str(), "running" | "pending")
                && a.job_version != registered
        })
        .map(|a| a.job_version)
        .collect();
    if !stale.is_empty() {
        let count = stale.len();
        stale.sort_unstable();
        stale.dedup();
        out.push(Refusal::StaleAllocations {
            group,
            count,
            versions: stale
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            registered,
        });
    }
    out
}

impl Controller {
    /// `switch [--to colour]`: pre-flight, route key flip (check-and-set), wait for every
    /// proxy, then update the job's role tags. A target that is already active changes nothing.
    pub async fn switch(
        &self,
        force: bool,
        to: Option<&str>,
    ) -> Result<SwitchOutcome, ControllerError> {
        let obs = self.observe().await;
        let planned = plan_switch(&obs, force, to)?;
        if let Planned::Switch(p) = &planned
            && to.is_none()
        {
            self.say(&format!(
                "switching {} to its standby colour {} (was {})",
                p.service, p.to, p.from
            ));
        }
        self.execute_switch(planned, "switch").await
    }

    /// Carries out a switch or rollback plan; `command` names it in the history.
    pub(crate) async fn execute_switch(
        &self,
        planned: Planned,
        command: &str,
    ) -> Result<SwitchOutcome, ControllerError> {
        let plan = match planned {
            Planned::Switch(p) => p,
            Planned::Unchanged(u) => return Ok(unchanged_outcome(u)),
        };
        for w in &plan.warnings {
            self.say(&format!("warning (forced): {w}"));
        }
        let key = &self.settings.route_key;
        let started = Instant::now();
        let request = FlipRequest {
            key,
            colours: &self.settings.colours,
            from: &plan.from,
            to: &plan.to,
            based_on: Some(plan.cas),
            generation_floor: plan.generation.saturating_sub(1),
            overwrite_unusable: plan.forced,
            by: &self.settings.operator,
        };
        let value = match flip::flip(&self.consul, &request).await {
            Ok(Flipped::Written(v)) => v,
            Ok(Flipped::AlreadyActive(v)) => {
                // Another switch to the same colour won the race: the outcome is the one asked.
                return Ok(unchanged_outcome(Unchanged {
                    service: plan.service.clone(),
                    reason: format!(
                        "{key} already names {} active (generation {}); nothing changed",
                        v.active, v.generation
                    ),
                    active: v.active,
                    generation: v.generation,
                }));
            }
            Err(e @ FlipError::Unconfirmed { .. }) => {
                return Err(ControllerError::Failed(format!(
                    "{e}; run `switchyard status --service {}` to see where traffic goes",
                    plan.service
                )));
            }
            Err(e) => return Err(ControllerError::Conflict(e.to_string())),
        };
        // The generation actually written (the same as planned unless an unusable key was
        // overwritten).
        let mut plan = plan;
        plan.generation = value.generation;
        self.say(&format!(
            "route key {key}: {} -> {} (generation {})",
            plan.from, plan.to, plan.generation
        ));
        let mut entry = HistoryEntry {
            command: command.to_owned(),
            who: self.settings.operator.clone(),
            at: value.updated_at.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            from_version: plan.from_version.clone(),
            to_version: plan.to_version.clone(),
            generation: plan.generation,
            revert_to_job_version: None,
            outcome: "route key written".to_owned(),
        };
        self.record(entry.clone()).await;
        let result = self.finish_switch(plan, started).await;
        entry.outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        self.settle(&entry).await;
        result
    }

    /// After the flip: wait for every proxy, then the role tags.
    async fn finish_switch(
        &self,
        plan: SwitchPlan,
        started: Instant,
    ) -> Result<SwitchOutcome, ControllerError> {
        let (confirmed, skipped) = self.wait_proxies(&plan, started).await?;
        let cutover_ms = started.elapsed().as_millis();
        self.say(&format!(
            "{} proxy(ies) serve {} (generation {}) {cutover_ms} ms after the route key write{}",
            confirmed.len(),
            plan.to,
            plan.generation,
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; not waited for: {}", skipped.join(", "))
            }
        ));
        let tags_updated = self.update_role_tags(&plan.to).await.map_err(|e| {
            let (RoleTags::Refused(why) | RoleTags::Failed(why)) = &e;
            let message = format!(
                "traffic is switched to {} but the job's role tags were not updated: {why}; run `switchyard diagnose --service {}`",
                plan.to, plan.service
            );
            match e {
                RoleTags::Refused(_) => ControllerError::PlanRefused(message),
                RoleTags::Failed(_) => ControllerError::Failed(message),
            }
        })?;
        if tags_updated {
            self.wait_role_tags_rolled_out().await;
        }
        Ok(SwitchOutcome {
            plan,
            cutover_ms,
            proxies_confirmed: confirmed,
            proxies_skipped: skipped,
            tags_updated,
            unchanged: None,
        })
    }

    /// Waits (at most [`Settings::deadline`](crate::Settings::deadline)) for the Nomad
    /// deployment of the role-tag change to end, so the next command's pre-flight does not find
    /// it running. Traffic has already moved: a deployment that does not end is only reported.
    async fn wait_role_tags_rolled_out(&self) {
        let deadline = Instant::now() + self.settings.deadline;
        loop {
            let deployment = self
                .nomad
                .job_deployment(&self.settings.job, &QueryOptions::default())
                .await;
            match deployment {
                Ok((Some(d), _)) if !d.is_terminal() => {
                    if Instant::now() >= deadline {
                        self.say(&format!(
                            "warning: Nomad deployment {} of the role tags is still {}",
                            d.id, d.status
                        ));
                        return;
                    }
                }
                Ok(_) => return,
                Err(e) => {
                    self.say(&format!(
                        "warning: cannot read the Nomad deployment of the role tags: {e}"
                    ));
                    return;
                }
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
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
                    // Forced past the pre-flight: a registered proxy that fails its checks and
                    // does not answer is not waited for (it serves nobody).
                    Err(_) if plan.forced && p.not_passing().is_some() => skipped.push(p.url),
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
    async fn update_role_tags(&self, active: &str) -> Result<bool, RoleTags> {
        let service = &self.settings.service;
        for attempt in 0..2 {
            let (job, _) = self
                .nomad
                .job(&self.settings.job, &QueryOptions::default())
                .await
                .map_err(|e| RoleTags::Failed(e.to_string()))?;
            let Some(job) = job else {
                return Err(RoleTags::Failed(format!(
                    "job {} does not exist",
                    self.settings.job
                )));
            };
            let obs = Observed {
                service: service.clone(),
                job_id: self.settings.job.clone(),
                colours: self.settings.colours.clone(),
                route_key: self.settings.route_key.clone(),
                nomad: Ok(NomadView {
                    job: Some(job.clone()),
                    allocations: Vec::new(),
                    deployment: None,
                }),
                instances: Ok(Vec::new()),
                route: Ok(None),
                proxies: Vec::new(),
                history: Ok(History::default()),
            };
            let mut updated = job.clone();
            let active_group = (0..2)
                .find(|i| self.settings.colours[*i].eq_ignore_ascii_case(active))
                .and_then(|i| obs.group_of(i))
                .unwrap_or_default();
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
                    .map_err(|e| RoleTags::Failed(e.to_string()))?;
            }
            if updated == job {
                return Ok(false);
            }
            // Nomad's plan first: the register must leave the (new) active group's
            // allocations running; its JobModifyIndex is the index the register enforces.
            let planned = match self.plan_guarded(&updated, &active_group).await {
                Ok(p) => p,
                Err(ControllerError::PlanRefused(why)) => return Err(RoleTags::Refused(why)),
                Err(e) => return Err(RoleTags::Failed(e.to_string())),
            };
            if planned.job_modify_index != job.job_modify_index() && attempt == 0 {
                continue;
            }
            match self
                .nomad
                .register(&updated, Some(planned.job_modify_index))
                .await
            {
                Ok(_) => {
                    self.say(&format!("role tags updated in job {}", self.settings.job));
                    return Ok(true);
                }
                Err(e) if e.is_cas_conflict() && attempt == 0 => continue,
                Err(e) => return Err(RoleTags::Failed(e.to_string())),
            }
        }
        Err(RoleTags::Failed("the job kept changing".to_owned()))
    }
}

/// Why the role tags were not updated after a switch.
#[derive(Debug)]
enum RoleTags {
    /// Nomad's plan would have touched the active group's allocations.
    Refused(String),
    /// Any other failure.
    Failed(String),
}

/// The role tags a group's service should carry when colour `i` is (or is not) active: the
/// existing tags with every role tag replaced in place, or the role appended when none exists.
pub fn retag(tags: &[String], active: bool) -> Vec<String> {
    let role = if active { ACTIVE_TAG } else { STANDBY_TAG };
    let is_role =
        |t: &str| t.eq_ignore_ascii_case(ACTIVE_TAG) || t.eq_ignore_ascii_case(STANDBY_TAG);
    let mut out: Vec<String> = Vec::with_capacity(tags.len() + 1);
    let mut placed = false;
    for t in tags {
        if is_role(t) {
            if !placed {
                out.push(role.to_owned());
                placed = true;
            }
        } else {
            out.push(t.clone());
        }
    }
    if !placed {
        out.push(role.to_owned());
    }
    out
}

fn unchanged_outcome(u: Unchanged) -> SwitchOutcome {
    SwitchOutcome {
        plan: SwitchPlan {
            service: u.service,
            from: u.active.clone(),
            to: u.active,
            from_version: None,
            to_version: None,
            cas: 0,
            generation: u.generation,
            forced: false,
            warnings: Vec::new(),
        },
        cutover_ms: 0,
        proxies_confirmed: Vec::new(),
        proxies_skipped: Vec::new(),
        tags_updated: false,
        unchanged: Some(u.reason),
    }
}

/// The one-line text rendering of a switch's (or rollback's) outcome.
pub fn render_switch(o: &SwitchOutcome) -> String {
    if let Some(reason) = &o.unchanged {
        return reason.clone();
    }
    format!(
        "{} now serves {} (was {}), generation {}; {} proxy(ies) followed in {} ms{}{}",
        o.plan.service,
        o.plan.to,
        o.plan.from,
        o.plan.generation,
        o.proxies_confirmed.len(),
        o.cutover_ms,
        if o.proxies_skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} not waited for)", o.proxies_skipped.len())
        },
        if o.tags_updated {
            "; role tags updated"
        } else {
            ""
        }
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::*;
    use switchyard_hashi::nomad::{AllocationListStub, Deployment};

    #[test]
    fn switch_plan_contents() {
        let mut obs = observed();
        let p = switching(plan_switch(&obs, false, None));
        assert_eq!((p.from.as_str(), p.to.as_str()), ("blue", "green"));
        assert_eq!((p.cas, p.generation), (0, 1));
        assert_eq!(p.to_version.as_deref(), Some("v2"));
        assert!(p.warnings.is_empty());
        with_route(&mut obs, "blue", 6);
        let p = switching(plan_switch(&obs, false, None));
        assert_eq!((p.cas, p.generation), (77, 7));
        // The route key wins over tags: green active per key, switch goes back to blue.
        with_route(&mut obs, "green", 7);
        let p = switching(plan_switch(&obs, false, None));
        assert_eq!((p.from.as_str(), p.to.as_str()), ("green", "blue"));
    }

    /// `switch --to`: a colour already active is a success that changes nothing (even with
    /// Nomad unreadable, since nothing will be written); an unknown colour is bad input.
    #[test]
    fn switch_to_is_declarative() {
        let mut obs = observed();
        with_route(&mut obs, "blue", 6);
        let p = switching(plan_switch(&obs, false, Some("green")));
        assert_eq!(
            (p.from.as_str(), p.to.as_str(), p.generation),
            ("blue", "green", 7)
        );
        obs.nomad = Err("connection refused".into());
        match plan_switch(&obs, false, Some("Blue")).unwrap() {
            Planned::Unchanged(u) => {
                assert_eq!((u.active.as_str(), u.generation), ("blue", 6));
                assert!(u.reason.contains("already serves blue"), "{}", u.reason);
            }
            other => panic!("expected no change, got {other:?}"),
        }
        let r = plan_switch(&obs, false, Some("purple")).unwrap_err();
        assert!(matches!(r, Refusal::UnknownColour { .. }), "{r}");
        assert!(r.is_bad_input());
        let outcome = unchanged_outcome(Unchanged {
            service: "web".into(),
            active: "blue".into(),
            generation: 6,
            reason: "web already serves blue (decided by route-key); nothing changed".into(),
        });
        assert_eq!(render_switch(&outcome), outcome.unchanged.clone().unwrap());
    }

    /// A registration left behind by a failed node (its `serfHealth` critical) neither blocks
    /// the pre-flight nor counts, and `status` shows it as `node failed`.
    #[test]
    fn instances_on_failed_nodes_are_ignored_and_shown() {
        let mut obs = observed();
        let mut ghost = inst(1, 9, "v0", "standby", false);
        ghost.reported_version = Some(Err("connection refused".into()));
        ghost.node_failed = true;
        if let Ok(list) = &mut obs.instances {
            list.push(ghost.clone());
        }
        assert_eq!(obs.instances_of(1).len(), 2);
        assert_eq!(obs.registered_of(1).len(), 3);
        assert_eq!(obs.version_of(1).as_deref(), Some("v2"));
        let p = switching(plan_switch(&obs, false, None));
        assert_eq!(p.to, "green");
        let report = crate::status::status_report(&obs);
        let shown = report.colours[1]
            .instances
            .iter()
            .find(|i| i.address == ghost.address)
            .unwrap();
        assert_eq!(shown.health, "node failed");
        // The same instance on a live node is a refusal.
        if let Ok(list) = &mut obs.instances {
            list[4].node_failed = false;
        }
        assert!(matches!(
            plan_switch(&obs, false, None).unwrap_err(),
            Refusal::VersionMismatch { .. }
        ));
    }

    #[test]
    fn switch_refusals_and_force() {
        // Standby unhealthy.
        let mut obs = observed();
        obs.instances = Ok(vec![
            inst(0, 1, "v1", "active", true),
            inst(1, 1, "v2", "standby", false),
        ]);
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert_eq!(
            r,
            Refusal::StandbyUnhealthy {
                colour: "green".into()
            }
        );
        let p = switching(plan_switch(&obs, true, None));
        assert!(p.forced);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);

        // Fewer instances.
        let mut obs = observed();
        obs.instances = Ok(vec![
            inst(0, 1, "v1", "active", true),
            inst(0, 2, "v1", "active", true),
            inst(1, 1, "v2", "standby", true),
            inst(1, 2, "v2", "standby", false),
        ]);
        assert!(matches!(
            plan_switch(&obs, false, None).unwrap_err(),
            Refusal::FewerInstances {
                standby_passing: 1,
                active_passing: 2,
                ..
            }
        ));

        // Version mismatch, and an instance that could not be asked.
        let mut obs = observed();
        let mut bad = inst(1, 2, "v2", "standby", true);
        bad.reported_version = Some(Ok("v9".into()));
        obs.instances = Ok(vec![
            inst(0, 1, "v1", "active", true),
            inst(1, 1, "v2", "standby", true),
            bad,
        ]);
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert!(
            matches!(&r, Refusal::VersionMismatch { tagged, .. } if tagged == "v2"),
            "{r}"
        );
        assert!(r.to_string().contains("\"v9\""));
        let mut obs = observed();
        if let Ok(list) = &mut obs.instances {
            list[2].reported_version = Some(Err("connection refused".into()));
        }
        assert!(matches!(
            plan_switch(&obs, false, None).unwrap_err(),
            Refusal::VersionMismatch { .. }
        ));

        // Consul unreadable.
        let mut obs = observed();
        obs.instances = Err("timeout".into());
        assert!(matches!(
            plan_switch(&obs, false, None).unwrap_err(),
            Refusal::Unobservable { what: "Consul", .. }
        ));

        // Nomad unreadable: the role tags could not follow, so not even --force starts.
        let mut obs = observed();
        obs.nomad = Err("connection refused".into());
        assert!(matches!(
            plan_switch(&obs, true, None).unwrap_err(),
            Refusal::Unobservable { what: "Nomad", .. }
        ));
    }

    /// A proxy registered in Consul that fails its checks refuses the switch, by name; `--force`
    /// turns it into a warning. A proxy given only by URL has no registration to judge.
    #[test]
    fn a_registered_proxy_not_passing_refuses_the_switch() {
        use crate::observe::ProxyRegistration;
        let mut obs = observed();
        let mut p = serving("blue");
        p.registration = Some(ProxyRegistration {
            id: "switchyard-proxy-10.0.0.9-8081".into(),
            node: "edge-2".into(),
            health: switchyard_hashi::consul::CheckStatus::Critical,
        });
        obs.proxies = vec![serving("blue"), p];
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert!(matches!(r, Refusal::ProxyNotPassing { .. }), "{r}");
        let text = r.to_string();
        assert!(text.contains("switchyard-proxy-10.0.0.9-8081"), "{text}");
        assert!(
            text.contains("edge-2") && text.contains("critical"),
            "{text}"
        );
        let p = switching(plan_switch(&obs, true, None));
        assert_eq!(p.warnings, vec![text]);
        if let Some(r) = &mut obs.proxies[1].registration {
            r.health = switchyard_hashi::consul::CheckStatus::Passing;
        }
        assert!(
            switching(plan_switch(&obs, false, None))
                .warnings
                .is_empty()
        );
    }

    /// The job's meta picks the version check: `none` takes Nomad's record (group meta and the
    /// allocations' job version) instead of what the instances answer; a bad value is refused.
    #[test]
    fn version_check_none_uses_nomads_record() {
        let alloc = |group: &str, version: u64| -> switchyard_hashi::nomad::AllocationListStub {
            serde_json::from_value(serde_json::json!({"ID": format!("{group}-{version}"),
                "TaskGroup": group, "DesiredStatus": "run", "ClientStatus": "running",
                "JobVersion": version}))
            .unwrap()
        };
        let mut obs = observed();
        let mut job = job();
        job.0["Meta"]["switchyard_version_check"] = "none".into();
        // The instances answer nonsense: with `none` nobody is asked, so it does not matter.
        if let Ok(list) = &mut obs.instances {
            for i in list.iter_mut() {
                i.reported_version = None;
            }
        }
        obs.nomad = Ok(NomadView {
            job: Some(job.clone()),
            allocations: vec![alloc("green", 4), alloc("green", 4), alloc("blue", 3)],
            deployment: None,
        });
        assert_eq!(switching(plan_switch(&obs, false, None)).to, "green");
        // An allocation still on an older job version: not proven.
        obs.nomad = Ok(NomadView {
            job: Some(job.clone()),
            allocations: vec![alloc("green", 4), alloc("green", 3)],
            deployment: None,
        });
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert!(
            matches!(&r, Refusal::Unproven(why) if why.contains("job version 3")),
            "{r}"
        );
        // An instance whose tag is not the registered version.
        obs.nomad = Ok(NomadView {
            job: Some(job.clone()),
            allocations: vec![alloc("green", 4)],
            deployment: None,
        });
        if let Ok(list) = &mut obs.instances {
            list[3].tags[2] = "version=v1".into();
        }
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert!(r.to_string().contains("registers version v2"), "{r}");
        // A value the controller does not know.
        job.0["Meta"]["switchyard_version_check"] = "json:version".into();
        obs.nomad = Ok(NomadView {
            job: Some(job),
            allocations: vec![],
            deployment: None,
        });
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert!(matches!(r, Refusal::BadSetting(_)), "{r}");
    }

    #[test]
    fn the_outcome_says_how_many_proxies_followed_and_how_fast() {
        let mut o = unchanged_outcome(Unchanged {
            service: "web".into(),
            active: "green".into(),
            generation: 3,
            reason: String::new(),
        });
        o.unchanged = None;
        o.plan.from = "blue".into();
        o.cutover_ms = 42;
        o.proxies_confirmed = vec!["http://a".into(), "http://b".into()];
        o.proxies_skipped = vec!["http://c".into()];
        assert_eq!(
            render_switch(&o),
            "web now serves green (was blue), generation 3; 2 proxy(ies) followed in 42 ms (1 not waited for)"
        );
    }

    fn alloc(group: &str, job_version: u64, client_status: &str) -> AllocationListStub {
        AllocationListStub {
            id: format!("{group}-{job_version}-{client_status}"),
            task_group: group.into(),
            job_version,
            desired_status: "run".into(),
            client_status: client_status.into(),
            ..AllocationListStub::default()
        }
    }

    fn deployment(status: &str) -> Deployment {
        Deployment {
            id: "0123456789abcdef".into(),
            job_id: "web".into(),
            job_version: 4,
            status: status.into(),
            ..Deployment::default()
        }
    }

    /// The switch waits for Nomad: a deployment that has not ended, or standby allocations
    /// still on an older job version than the registered one (4), refuse it; --force warns.
    #[test]
    fn switch_refuses_while_nomad_is_still_rolling_out() {
        let with_nomad = |allocations: Vec<AllocationListStub>, d: Option<Deployment>| {
            let mut obs = observed();
            if let Ok(view) = &mut obs.nomad {
                view.allocations = allocations;
                view.deployment = d;
            }
            obs
        };
        for status in ["successful", "failed", "cancelled"] {
            let obs = with_nomad(vec![alloc("green", 4, "running")], Some(deployment(status)));
            switching(plan_switch(&obs, false, None));
        }
        for status in ["running", "paused", "pending"] {
            let obs = with_nomad(vec![], Some(deployment(status)));
            let r = plan_switch(&obs, false, None).unwrap_err();
            assert_eq!(
                r,
                Refusal::DeploymentRunning {
                    job: "web".into(),
                    deployment: "01234567".into(),
                    job_version: 4,
                    status: status.into(),
                }
            );
            assert!(r.to_string().contains("still"), "{r}");
            let p = switching(plan_switch(&obs, true, None));
            assert_eq!(p.warnings, vec![r.to_string()]);
        }
        // Standby allocations on version 3 while 4 is registered; stopped ones and the active
        // group's do not count.
        let obs = with_nomad(
            vec![
                alloc("green", 3, "running"),
                alloc("green", 3, "pending"),
                alloc("green", 2, "complete"),
                alloc("blue", 1, "running"),
                alloc("green", 4, "running"),
            ],
            None,
        );
        let r = plan_switch(&obs, false, None).unwrap_err();
        assert_eq!(
            r,
            Refusal::StaleAllocations {
                group: "green".into(),
                count: 2,
                versions: "3".into(),
                registered: 4,
            }
        );
        let obs = with_nomad(
            vec![alloc("green", 4, "running"), alloc("blue", 1, "running")],
            None,
        );
        switching(plan_switch(&obs, false, None));
    }

    #[test]
    fn retag_replaces_roles_in_place() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            retag(&t(&["green", "standby", "version=v2"]), true),
            t(&["green", "active", "version=v2"])
        );
        assert_eq!(
            retag(&t(&["blue", "ACTIVE", "active", "version=v1"]), false),
            t(&["blue", "standby", "version=v1"])
        );
        assert_eq!(retag(&t(&["blue"]), false), t(&["blue", "standby"]));
    }
}
