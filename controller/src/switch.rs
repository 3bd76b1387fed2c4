//! `switch`: the planner ([`plan_switch`] with its pre-flight), the executor
//! ([`Controller::switch`]: route key flip, wait for every proxy, role tags) and the rendering
//! of its outcome. `rollback` plans differently but executes the same way.

use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_hashi::QueryOptions;
use switchyard_model::flip::{self, FlipError, FlipRequest, Flipped};
use switchyard_model::{ACTIVE_TAG, STANDBY_TAG};

use crate::observe::{NomadView, Observed};
use crate::refusal::{Refusal, check_route};
use crate::state::SwitchRecord;
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

/// Plans `switch`: pre-flight (standby passing count > 0 and at least the active's; every
/// standby instance's `/version` equals its `version=` tag), then the route key write.
/// `force` turns pre-flight refusals into warnings.
pub fn plan_switch(obs: &Observed, force: bool) -> Result<SwitchPlan, Refusal> {
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
    Ok(SwitchPlan {
        service: obs.service.clone(),
        from: obs.colours[active].clone(),
        to: obs.colours[standby].clone(),
        from_version: obs.version_of(active),
        to_version: obs.version_of(standby),
        cas,
        generation,
        forced: force,
        warnings,
    })
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
    for inst in obs.instances_of(standby) {
        let tagged = inst.version_tag().unwrap_or("").to_owned();
        let reported = match &inst.reported_version {
            Some(Ok(v)) if *v == tagged && !tagged.is_empty() => continue,
            Some(Ok(v)) => format!("answers {v:?} on /version"),
            Some(Err(e)) => format!("could not be asked its version ({e})"),
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
    out
}

impl Controller {
    /// `switch`: pre-flight, route key write (check-and-set), wait for every proxy, then
    /// update the job's role tags.
    pub async fn switch(&self, force: bool) -> Result<SwitchOutcome, ControllerError> {
        let obs = self.observe().await;
        let plan = plan_switch(&obs, force)?;
        self.execute_switch(plan).await
    }

    pub(crate) async fn execute_switch(
        &self,
        plan: SwitchPlan,
    ) -> Result<SwitchOutcome, ControllerError> {
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
                return Err(ControllerError::Conflict(format!(
                    "{key} already names {} active (generation {}); nothing was changed by this call",
                    v.active, v.generation
                )));
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
                }),
                instances: Ok(Vec::new()),
                route: Ok(None),
                proxies: Vec::new(),
                last_switch: None,
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

/// The one-line text rendering of a switch's (or rollback's) outcome.
pub fn render_switch(o: &SwitchOutcome) -> String {
    format!(
        "{} now serves {} (was {}), generation {}; every proxy followed in {} ms{}",
        o.plan.service,
        o.plan.to,
        o.plan.from,
        o.plan.generation,
        o.cutover_ms,
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

    #[test]
    fn switch_plan_contents() {
        let mut obs = observed();
        let p = plan_switch(&obs, false).unwrap();
        assert_eq!((p.from.as_str(), p.to.as_str()), ("blue", "green"));
        assert_eq!((p.cas, p.generation), (0, 1));
        assert_eq!(p.to_version.as_deref(), Some("v2"));
        assert!(p.warnings.is_empty());
        with_route(&mut obs, "blue", 6);
        let p = plan_switch(&obs, false).unwrap();
        assert_eq!((p.cas, p.generation), (77, 7));
        // The route key wins over tags: green active per key, switch goes back to blue.
        with_route(&mut obs, "green", 7);
        let p = plan_switch(&obs, false).unwrap();
        assert_eq!((p.from.as_str(), p.to.as_str()), ("green", "blue"));
    }

    #[test]
    fn switch_refusals_and_force() {
        // Standby unhealthy.
        let mut obs = observed();
        obs.instances = Ok(vec![
            inst(0, 1, "v1", "active", true),
            inst(1, 1, "v2", "standby", false),
        ]);
        let r = plan_switch(&obs, false).unwrap_err();
        assert_eq!(
            r,
            Refusal::StandbyUnhealthy {
                colour: "green".into()
            }
        );
        let p = plan_switch(&obs, true).unwrap();
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
            plan_switch(&obs, false).unwrap_err(),
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
        let r = plan_switch(&obs, false).unwrap_err();
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
            plan_switch(&obs, false).unwrap_err(),
            Refusal::VersionMismatch { .. }
        ));

        // Consul unreadable.
        let mut obs = observed();
        obs.instances = Err("timeout".into());
        assert!(matches!(
            plan_switch(&obs, false).unwrap_err(),
            Refusal::Unobservable { what: "Consul", .. }
        ));

        // Nomad unreadable: the role tags could not follow, so not even --force starts.
        let mut obs = observed();
        obs.nomad = Err("connection refused".into());
        assert!(matches!(
            plan_switch(&obs, true).unwrap_err(),
            Refusal::Unobservable { what: "Nomad", .. }
        ));
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
