//! [`Refusal`]: why a planner would not act, and the checks several planners share
//! ([`validate_version`], the route key check).
//!
//! Planners are pure functions from [`Observed`] state to a plan or a refusal; keeping every
//! decision away from I/O is what lets them be tested on hand-built states.

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
    /// A `deploy` setting (`--meta`, `--env`, `--image`) cannot be applied to the standby group.
    #[error("{0}")]
    BadSetting(String),
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
    /// The standby group's canaries could never be promoted (see
    /// [`crate::nomad_health::promotion_for`]).
    #[error("refusing to deploy to group {group}: {reason}")]
    UnpromotableCanaries {
        /// Group.
        group: String,
        /// Why nobody could promote them.
        reason: String,
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
    /// With the version check `none`: Nomad's record does not prove that the standby runs
    /// its version.
    #[error("refusing to switch: {0} (--force overrides)")]
    Unproven(String),
    /// A proxy registered in Consul is not passing its checks: it might not follow the switch.
    #[error(
        "refusing to switch: proxy {id} ({url}) on node {node} is {health} in Consul (--force overrides)"
    )]
    ProxyNotPassing {
        /// Its Consul service ID.
        id: String,
        /// Its admin URL.
        url: String,
        /// Its node.
        node: String,
        /// Its worst check status.
        health: String,
    },
    /// A Nomad deployment of the job has not ended.
    #[error(
        "refusing to switch: Nomad deployment {deployment} of job {job} (job version {job_version}) is still {status}; wait for it to end (--force overrides)"
    )]
    DeploymentRunning {
        /// Job.
        job: String,
        /// The deployment's ID (first 8 characters, as Nomad's CLI shows it).
        deployment: String,
        /// The job version it rolls out.
        job_version: u64,
        /// Its status (`running`, `paused`, `pending`, ...).
        status: String,
    },
    /// Standby allocations run another job version than the one registered.
    #[error(
        "refusing to switch: {count} allocation(s) of the standby group {group} run job version {versions}, but version {registered} is registered (--force overrides)"
    )]
    StaleAllocations {
        /// Standby group.
        group: String,
        /// How many allocations.
        count: usize,
        /// The job versions they run.
        versions: String,
        /// The registered job version.
        registered: u64,
    },
    /// Rollback without a recorded switch.
    #[error(
        "no switch of {service} is recorded in {key}; use `switchyard switch --service {service}` to change colours"
    )]
    NoPreviousSwitch {
        /// Service.
        service: String,
        /// The history key.
        key: String,
    },
    /// `switch --to` names neither colour.
    #[error("unknown colour {colour:?}: the service's colours are {colours:?}")]
    UnknownColour {
        /// What was asked.
        colour: String,
        /// The two colours.
        colours: [String; 2],
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
            Refusal::BadVersion(_)
                | Refusal::UnknownService { .. }
                | Refusal::UnknownColour { .. }
                | Refusal::BadSetting(_)
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

/// Refuses a route key that cannot be read, does not parse, or names neither colour.
pub(crate) fn check_route(obs: &Observed) -> Result<(), Refusal> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::deploy::plan_deploy;
    use crate::testing::observed;

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
}
