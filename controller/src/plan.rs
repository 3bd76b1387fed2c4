//! Planners: pure functions from [`Observed`] state to a plan or a [`Refusal`].
//!
//! Keeping every decision here, away from I/O, is what lets the refusals (unhealthy standby,
//! fewer instances, a deploy that would touch the active group, unknown service, bad version)
//! be tested on hand-built states. The executors in [`crate::exec`] only carry plans out.

use serde::Serialize;
use switchyard_hashi::nomad::Job;

use crate::observe::{Observed, RouteKey};

/// Why a planner refused. Nothing has been changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The version string is not `^[A-Za-z0-9._-]{1,64}$`.
    #[error("invalid version {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ -")]
    BadVersion(String),
    /// Nomad has no such job.
    #[error("unknown service {service:?}: Nomad has no job {job:?} (pass --job or --service)")]
    UnknownService {
        /// Service.
        service: String,
        /// Job looked up.
        job: String,
    },
    /// A source the plan needs could not be read.
    #[error("cannot read {what}: {reason}")]
    Unobservable {
        /// `Nomad`, `Consul`, `the route key`.
        what: &'static str,
        /// The error.
        reason: String,
    },
    /// The route key exists but is unusable.
    #[error(
        "route key {key} is unusable ({reason}); fix or delete it, or pass --force to overwrite it"
    )]
    BadRouteKey {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The route key does not decide and Consul's instances could not be read.
    #[error(
        "cannot tell which colour of {service} is active: the route key does not name one and Consul's instances could not be read"
    )]
    NoActiveColour {
        /// Service.
        service: String,
    },
    /// The job has no task group for the standby colour.
    #[error("job {job} has no task group for the standby colour {colour}")]
    NoStandbyGroup {
        /// Job.
        job: String,
        /// Standby colour.
        colour: String,
    },
    /// The change would modify the active colour's group (or both colours share one group).
    #[error("refusing to deploy: the change would touch the active group {group} of job {job}")]
    TouchesActive {
        /// Job.
        job: String,
        /// Active group.
        group: String,
    },
    /// The standby group already has this version.
    #[error(
        "the standby colour {colour} (group {group}) already has version {version}; run `switchyard switch` to serve it"
    )]
    AlreadyDeployed {
        /// Standby colour.
        colour: String,
        /// Group.
        group: String,
        /// Version.
        version: String,
    },
    /// The standby group runs no instance.
    #[error("the standby group {group} has count 0; scale it up before deploying")]
    EmptyGroup {
        /// Group.
        group: String,
    },
    /// No standby instance passes its checks.
    #[error(
        "refusing to switch: the standby colour {colour} has no passing instance (--force overrides)"
    )]
    StandbyUnhealthy {
        /// Standby colour.
        colour: String,
    },
    /// Fewer standby instances pass than active ones.
    #[error(
        "refusing to switch: standby {standby} has {standby_passing} passing instance(s), active {active} has {active_passing} (--force overrides)"
    )]
    FewerInstances {
        /// Standby colour.
        standby: String,
        /// Its passing count.
        standby_passing: usize,
        /// Active colour.
        active: String,
        /// Its passing count.
        active_passing: usize,
    },
    /// A standby instance answers a different version than its tag claims, or did not answer.
    #[error(
        "refusing to switch: standby instance {address} is tagged version={tagged} but {reported} (--force overrides)"
    )]
    VersionMismatch {
        /// `host:port`.
        address: String,
        /// Its `version=` tag.
        tagged: String,
        /// What `/version` said, as a phrase.
        reported: String,
    },
    /// Rollback without a recorded switch.
    #[error(
        "no switch of {service} is recorded in {state_file}; use `switchyard switch --service {service}` to change colours"
    )]
    NoPreviousSwitch {
        /// Service.
        service: String,
        /// Where the record would be.
        state_file: String,
    },
    /// The colour to roll back to is already active.
    #[error("{colour} is already the active colour of {service}; nothing to roll back")]
    AlreadyActive {
        /// Service.
        service: String,
        /// Colour.
        colour: String,
    },
    /// The colour to roll back to no longer runs the version it served before the switch.
    #[error(
        "cannot roll back: {colour} served {expected} before the last switch but now runs {current}; restore it with `{command}` and retry"
    )]
    RollbackTargetChanged {
        /// Colour.
        colour: String,
        /// Version it ran before the switch.
        expected: String,
        /// Version it runs now.
        current: String,
        /// The deploy that would restore it.
        command: String,
    },
}

impl Refusal {
    /// Whether the refusal is about the operator's input (exit code 2) rather than the state of
    /// the system.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Refusal::BadVersion(_) | Refusal::UnknownService { .. }
        )
    }
}

/// Checks a version string: `^[A-Za-z0-9._-]{1,64}$`. It ends up in a tag, a file name and an
/// HTTP answer, so anything else is refused.
pub fn validate_version(v: &str) -> Result<(), Refusal> {
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadVersion(v.to_owned()))
    }
}

/// What `deploy` will do.
#[derive(Clone, Debug, Serialize)]
pub struct DeployPlan {
    /// Job.
    pub job_id: String,
    /// Service.
    pub service: String,
    /// The standby colour being replaced.
    pub colour: String,
    /// Its task group.
    pub group: String,
    /// The active colour (left alone).
    pub active_colour: String,
    /// The active group.
    pub active_group: String,
    /// The standby group's `meta.version` before.
    pub from_version: Option<String>,
    /// The version being deployed.
    pub to_version: String,
    /// The job as read (saved as a backup first).
    #[serde(skip)]
    pub original: Job,
    /// The job to register: only the standby group's `meta.version` differs.
    #[serde(skip)]
    pub job: Job,
    /// `JobModifyIndex` of the job as read: the register's `EnforceIndex`.
    pub enforce_index: u64,
    /// The job's `Version` as read: what a failed deploy reverts to.
    pub prior_job_version: u64,
    /// The standby group's count: how many healthy instances the deploy waits for.
    pub expected_count: u64,
    /// Whether the standby colour may still carry requests from before the last switch, so the
    /// deploy must wait for the proxies to drain it first.
    pub wait_for_drain: bool,
}

/// Plans `deploy <version>`.
pub fn plan_deploy(obs: &Observed, version: &str) -> Result<DeployPlan, Refusal> {
    validate_version(version)?;
    let nomad = obs.nomad.as_ref().map_err(|e| Refusal::Unobservable {
        what: "Nomad",
        reason: e.clone(),
    })?;
    let job = nomad.job.as_ref().ok_or_else(|| Refusal::UnknownService {
        service: obs.service.clone(),
        job: obs.job_id.clone(),
    })?;
    check_route(obs)?;
    let (active, _) = obs.active().ok_or_else(|| Refusal::NoActiveColour {
        service: obs.service.clone(),
    })?;
    let standby = 1 - active;
    let colour = obs.colours[standby].clone();
    let group = obs
        .group_of(standby)
        .ok_or_else(|| Refusal::NoStandbyGroup {
            job: obs.job_id.clone(),
            colour: colour.clone(),
        })?;
    let active_group = obs.group_of(active).unwrap_or_default();
    if active_group == group {
        return Err(Refusal::TouchesActive {
            job: obs.job_id.clone(),
            group,
        });
    }
    let from_version = job.group_meta(&group, "version").map(str::to_owned);
    if from_version.as_deref() == Some(version) {
        return Err(Refusal::AlreadyDeployed {
            colour,
            group,
            version: version.to_owned(),
        });
    }
    let expected_count = job.group_count(&group).unwrap_or(1);
    if expected_count == 0 {
        return Err(Refusal::EmptyGroup { group });
    }
    let mut modified = job.clone();
    modified
        .set_group_meta(&group, "version", version)
        .map_err(|_| Refusal::NoStandbyGroup {
            job: obs.job_id.clone(),
            colour: colour.clone(),
        })?;
    if touches_other_groups(job, &modified, &group) {
        return Err(Refusal::TouchesActive {
            job: obs.job_id.clone(),
            group: active_group,
        });
    }
    let standby_busy = obs.proxies.iter().any(
        |p| matches!(&p.status, Ok(Some(s)) if { let (n, d) = s.load_on(&colour); n > 0 || d }),
    );
    let was_active = obs
        .last_switch
        .as_ref()
        .is_some_and(|r| r.from.eq_ignore_ascii_case(&colour));
    Ok(DeployPlan {
        job_id: obs.job_id.clone(),
        service: obs.service.clone(),
        colour,
        group,
        active_colour: obs.colours[active].clone(),
        active_group,
        from_version,
        to_version: version.to_owned(),
        original: job.clone(),
        enforce_index: job.job_modify_index(),
        prior_job_version: job.version(),
        expected_count,
        wait_for_drain: was_active || standby_busy,
        job: modified,
    })
}

/// Whether anything outside group `group` differs between `a` and `b`.
fn touches_other_groups(a: &Job, b: &Job, group: &str) -> bool {
    let strip = |j: &Job| {
        let mut v = j.0.clone();
        if let Some(groups) = v.get_mut("TaskGroups").and_then(|g| g.as_array_mut()) {
            groups.retain(|g| g.get("Name").and_then(|n| n.as_str()) != Some(group));
        }
        v
    };
    strip(a) != strip(b)
}

fn check_route(obs: &Observed) -> Result<(), Refusal> {
    let key = obs.route_key.clone();
    match &obs.route {
        Err(e) => Err(Refusal::Unobservable {
            what: "the route key",
            reason: e.clone(),
        }),
        Ok(Some(RouteKey { value: Err(e), .. })) => Err(Refusal::BadRouteKey {
            key,
            reason: e.clone(),
        }),
        Ok(Some(RouteKey { value: Ok(v), .. })) if obs.colour_index(&v.active).is_none() => {
            Err(Refusal::BadRouteKey {
                key,
                reason: format!(
                    "it names {:?}, which is not one of {:?}",
                    v.active, obs.colours
                ),
            })
        }
        Ok(_) => Ok(()),
    }
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

/// Plans `rollback`: a switch back to the colour that was active before the last recorded
/// switch, provided it still runs the version it served then.
pub fn plan_rollback(obs: &Observed, job: &str, state_file: &str) -> Result<SwitchPlan, Refusal> {
    let record = obs
        .last_switch
        .as_ref()
        .ok_or_else(|| Refusal::NoPreviousSwitch {
            service: obs.service.clone(),
            state_file: state_file.to_owned(),
        })?;
    check_route(obs)?;
    let (active, _) = obs.active().ok_or_else(|| Refusal::NoActiveColour {
        service: obs.service.clone(),
    })?;
    if obs.colours[active].eq_ignore_ascii_case(&record.from) {
        return Err(Refusal::AlreadyActive {
            service: obs.service.clone(),
            colour: record.from.clone(),
        });
    }
    let standby = 1 - active;
    if let Some(expected) = &record.from_version {
        let current = obs.version_of(standby);
        if current.as_deref() != Some(expected.as_str()) {
            return Err(Refusal::RollbackTargetChanged {
                colour: obs.colours[standby].clone(),
                expected: expected.clone(),
                current: current.unwrap_or_else(|| "no known version".to_owned()),
                command: format!(
                    "switchyard deploy {expected} --service {} --job {job}",
                    obs.service
                ),
            });
        }
    }
    plan_switch(obs, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::observe::{Instance, NomadView, ProxyObservation, ProxyService};
    use crate::state::SwitchRecord;
    use serde_json::json;
    use switchyard_hashi::consul::CheckStatus;
    use switchyard_model::RouteValue;

    fn group(name: &str, version: &str, role: &str) -> serde_json::Value {
        json!({
            "Name": name, "Count": 2, "Meta": {"version": version},
            "Services": [{"Name": "web", "Tags": [name, role, "version=${NOMAD_META_version}"]}],
            "Tasks": [{"Name": "app", "Config": {"args": ["--version", "${NOMAD_META_version}"]}}]
        })
    }

    fn job() -> Job {
        Job(json!({
            "ID": "web", "Version": 4, "JobModifyIndex": 40, "Meta": {"team": "a"},
            "TaskGroups": [group("blue", "v1", "active"), group("green", "v2", "standby")]
        }))
    }

    fn inst(colour: usize, n: u16, version: &str, role: &str, passing: bool) -> Instance {
        let c = ["blue", "green"][colour];
        Instance {
            id: format!("{c}-{n}"),
            address: format!(
                "127.0.0.1:{}",
                20000 + u16::try_from(colour).unwrap() * 100 + n
            ),
            tags: vec![c.into(), role.into(), format!("version={version}")],
            colour: Some(colour),
            health: if passing {
                CheckStatus::Passing
            } else {
                CheckStatus::Critical
            },
            failing_checks: vec![],
            reported_version: Some(Ok(version.into())),
        }
    }

    fn observed() -> Observed {
        Observed {
            service: "web".into(),
            job_id: "web".into(),
            colours: ["blue".into(), "green".into()],
            route_key: "switchyard/routes/web".into(),
            nomad: Ok(NomadView {
                job: Some(job()),
                allocations: vec![],
            }),
            instances: Ok(vec![
                inst(0, 1, "v1", "active", true),
                inst(0, 2, "v1", "active", true),
                inst(1, 1, "v2", "standby", true),
                inst(1, 2, "v2", "standby", true),
            ]),
            route: Ok(None),
            proxies: vec![],
            last_switch: None,
        }
    }

    fn with_route(obs: &mut Observed, active: &str, generation: u64) {
        obs.route = Ok(Some(RouteKey {
            modify_index: 77,
            value: Ok(RouteValue::new(active, generation, "test")),
        }));
    }

    #[test]
    fn version_validation() {
        for ok in ["v3", "1.2.3-rc_1", &"a".repeat(64)] {
            assert!(validate_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", "v 3", "v3/..", "v3;rm", &"a".repeat(65), "vé"] {
            assert_eq!(validate_version(bad), Err(Refusal::BadVersion(bad.into())));
        }
        let r = plan_deploy(&observed(), "bad version").unwrap_err();
        assert!(r.is_bad_input());
    }

    #[test]
    fn deploy_plan_changes_only_the_standby_meta() {
        let obs = observed();
        let p = plan_deploy(&obs, "v3").unwrap();
        assert_eq!((p.colour.as_str(), p.group.as_str()), ("green", "green"));
        assert_eq!(p.active_group, "blue");
        assert_eq!(p.from_version.as_deref(), Some("v2"));
        assert_eq!(p.enforce_index, 40);
        assert_eq!(p.prior_job_version, 4);
        assert_eq!(p.expected_count, 2);
        assert!(!p.wait_for_drain);
        assert_eq!(p.job.group_meta("green", "version"), Some("v3"));
        assert_eq!(p.job.group_meta("blue", "version"), Some("v1"));
        // Everything but green's meta is identical.
        let mut back = p.job.clone();
        back.set_group_meta("green", "version", "v2").unwrap();
        assert_eq!(back, job());
        assert_eq!(p.original, job());
    }

    #[test]
    fn deploy_follows_the_route_key_over_tags() {
        let mut obs = observed();
        with_route(&mut obs, "green", 5);
        let p = plan_deploy(&obs, "v3").unwrap();
        assert_eq!(p.group, "blue");
        assert_eq!(p.job.group_meta("blue", "version"), Some("v3"));
        assert_eq!(p.job.group_meta("green", "version"), Some("v2"));
    }

    #[test]
    fn deploy_waits_for_drain_when_standby_was_active_or_is_busy() {
        let mut obs = observed();
        obs.last_switch = Some(SwitchRecord {
            service: "web".into(),
            from: "green".into(),
            to: "blue".into(),
            from_version: Some("v2".into()),
            to_version: Some("v1".into()),
            generation: 2,
            at: "2026-01-01T00:00:00Z".into(),
        });
        assert!(plan_deploy(&obs, "v3").unwrap().wait_for_drain);
        let mut obs = observed();
        obs.proxies = vec![ProxyObservation {
            url: "http://p".into(),
            status: Ok(Some(ProxyService {
                active_colour: "blue".into(),
                standby_colour: "green".into(),
                standby_in_flight: 3,
                ..ProxyService::default()
            })),
        }];
        assert!(plan_deploy(&obs, "v3").unwrap().wait_for_drain);
    }

    #[test]
    fn deploy_refusals() {
        let mut obs = observed();
        obs.nomad = Ok(NomadView::default());
        let r = plan_deploy(&obs, "v3").unwrap_err();
        assert!(matches!(r, Refusal::UnknownService { .. }), "{r}");
        assert!(r.is_bad_input());

        let mut obs = observed();
        obs.nomad = Err("connection refused".into());
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::Unobservable { what: "Nomad", .. }
        ));

        // No group for the standby colour.
        let mut obs = observed();
        let mut j = job();
        j.0["TaskGroups"] = json!([group("blue", "v1", "active")]);
        obs.nomad = Ok(NomadView {
            job: Some(j),
            allocations: vec![],
        });
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::NoStandbyGroup { .. }
        ));

        // The group named after the active colour is tagged with the standby colour: the
        // standby's group is the active's, so the change would touch the active one.
        let mut obs = observed();
        let mut j = job();
        j.0["TaskGroups"] = json!([{
            "Name": "blue", "Count": 2, "Meta": {"version": "v1"},
            "Services": [{"Name": "web", "Tags": ["green", "active"]}]
        }]);
        obs.nomad = Ok(NomadView {
            job: Some(j),
            allocations: vec![],
        });
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::TouchesActive { .. }
        ));

        assert!(matches!(
            plan_deploy(&observed(), "v2").unwrap_err(),
            Refusal::AlreadyDeployed { .. }
        ));

        let mut obs = observed();
        obs.route = Ok(Some(RouteKey {
            modify_index: 3,
            value: Err("not JSON".into()),
        }));
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::BadRouteKey { .. }
        ));
        let mut obs = observed();
        with_route(&mut obs, "purple", 1);
        assert!(matches!(
            plan_deploy(&obs, "v3").unwrap_err(),
            Refusal::BadRouteKey { .. }
        ));
    }

    fn serving(colour: &str) -> ProxyObservation {
        ProxyObservation {
            url: format!("http://proxy-{colour}"),
            status: Ok(Some(ProxyService {
                active_colour: colour.into(),
                ..ProxyService::default()
            })),
        }
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
        assert_eq!(plan_switch(&obs, false).unwrap().to, "blue");

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

    fn record(from: &str, to: &str, from_version: &str) -> SwitchRecord {
        SwitchRecord {
            service: "web".into(),
            from: from.into(),
            to: to.into(),
            from_version: Some(from_version.into()),
            to_version: None,
            generation: 1,
            at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn rollback_plans() {
        let mut obs = observed();
        assert!(matches!(
            plan_rollback(&obs, "web", "s").unwrap_err(),
            Refusal::NoPreviousSwitch { .. }
        ));
        // After blue -> green: green active per route key, blue standby still on v1.
        with_route(&mut obs, "green", 1);
        obs.last_switch = Some(record("blue", "green", "v1"));
        let p = plan_rollback(&obs, "web", "s").unwrap();
        assert_eq!((p.from.as_str(), p.to.as_str()), ("green", "blue"));
        assert_eq!(p.generation, 2);
        // Blue redeployed meanwhile: refuse and name the deploy that restores it.
        obs.last_switch = Some(record("blue", "green", "v0"));
        let r = plan_rollback(&obs, "web", "s").unwrap_err();
        match &r {
            Refusal::RollbackTargetChanged {
                command, current, ..
            } => {
                assert_eq!(command, "switchyard deploy v0 --service web --job web");
                assert_eq!(current, "v1");
            }
            other => panic!("unexpected {other}"),
        }
        // Already rolled back.
        with_route(&mut obs, "blue", 2);
        assert!(matches!(
            plan_rollback(&obs, "web", "s").unwrap_err(),
            Refusal::AlreadyActive { .. }
        ));
    }
}
