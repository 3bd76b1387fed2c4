//! Nomad's view of a deploy: the standby allocations' `DeploymentStatus.Healthy` (which honours
//! `min_healthy_time`), the deployment's status, canary promotion and Nomad's own auto-revert.
//!
//! Consul's checks say an instance answers; Nomad's deployment says the allocation stayed
//! healthy for `min_healthy_time` and whether the rollout as a whole succeeded, failed or waits
//! for a promotion. A deploy waits for both.
//!
//! A standby group whose `update` block sets `canary` (Nomad's blue/green recipe uses
//! `canary = count`) gets its new allocations as canaries next to the old ones; they replace the
//! old ones only once the deployment is promoted. [`promotion_for`] decides at planning time who
//! promotes: the deploy itself ([`Promotion::Manual`]: once every canary is healthy it calls
//! `POST /v1/deployment/promote/:id` for the standby group), Nomad ([`Promotion::Auto`],
//! `auto_promote`), or nobody, which is refused before anything is written rather than waited
//! out until the deadline.

use serde::Serialize;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::nomad::{AllocationListStub, Deployment, Job};

use std::time::Instant;

use crate::Controller;
use crate::deploy::DeployPlan;
use crate::refusal::Refusal;

/// Who promotes the standby group's canaries, if it has any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// No canaries: the new allocations replace the old ones directly.
    #[default]
    None,
    /// Canaries without `auto_promote`: the deploy promotes them once they are all healthy.
    Manual,
    /// Canaries with `auto_promote`: Nomad promotes them once they are all healthy.
    Auto,
}

/// Decides how the standby group's canaries (if any) get promoted, or refuses a group whose
/// canaries nobody would promote: with `health_check = "manual"` Nomad never marks them
/// healthy by itself, so neither the deploy nor `auto_promote` could ever promote them.
pub fn promotion_for(job: &Job, group: &str) -> Result<Promotion, Refusal> {
    let Some(update) = job.group_update(group) else {
        return Ok(Promotion::None);
    };
    if update.canary == 0 {
        return Ok(Promotion::None);
    }
    if update.health_check == "manual" {
        return Err(Refusal::UnpromotableCanaries {
            group: group.to_owned(),
            reason: format!(
                "its update block sets canary = {} with health_check = \"manual\", so Nomad never marks the canaries healthy and nobody could promote them; use health_check = \"checks\" or remove canary",
                update.canary
            ),
        });
    }
    Ok(if update.auto_promote {
        Promotion::Auto
    } else {
        Promotion::Manual
    })
}

/// What the deployment of one job version says about one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupProgress {
    /// Whether the deployment tracks the group (it has an update strategy); when it does not,
    /// there is no `DeploymentStatus` to wait for.
    pub tracked: bool,
    /// Allocations of the group at this version that Nomad calls healthy (canaries included).
    pub healthy: usize,
    /// Canaries wanted and healthy; `None` when the group has none or they were promoted.
    pub canaries: Option<(u64, usize)>,
    /// Every wanted canary is placed and healthy and the group is not promoted yet.
    pub ready_to_promote: bool,
    /// The deployment failed: its description.
    pub failed: Option<String>,
    /// The version Nomad's `auto_revert` rolled back to, when it did.
    pub auto_reverted_to: Option<u64>,
}

/// The version in a failed deployment's description `... - rolling back to job version N`.
pub fn rolled_back_to(description: &str) -> Option<u64> {
    let (_, tail) = description.rsplit_once("rolling back to job version ")?;
    tail.trim().parse().ok()
}

/// Reads a group's progress from the deployment of `version` and the job's allocations.
pub fn group_progress(
    deployment: Option<&Deployment>,
    allocs: &[AllocationListStub],
    group: &str,
    version: u64,
) -> GroupProgress {
    let Some(d) = deployment.filter(|d| d.job_version == version) else {
        return GroupProgress::default();
    };
    let mut p = GroupProgress::default();
    if d.status == "failed" {
        p.auto_reverted_to = rolled_back_to(&d.status_description);
        p.failed = Some(d.status_description.clone());
    }
    let Some(state) = d.task_groups.get(group) else {
        return p;
    };
    p.tracked = true;
    let mine = allocs.iter().filter(|a| {
        a.task_group == group
            && a.desired_status == "run"
            && a.job_version == version
            && a.client_status == "running"
    });
    p.healthy = mine.filter(|a| a.healthy() == Some(true)).count();
    if state.desired_canaries > 0 && !state.promoted {
        let healthy_canaries = state
            .placed_canaries
            .iter()
            .filter(|id| {
                allocs
                    .iter()
                    .any(|a| &a.id == *id && a.desired_status == "run" && a.healthy() == Some(true))
            })
            .count();
        p.canaries = Some((state.desired_canaries, healthy_canaries));
        p.ready_to_promote = d.status == "running"
            && state.placed_canaries.len() as u64 >= state.desired_canaries
            && healthy_canaries as u64 >= state.desired_canaries;
    }
    p
}

impl Controller {
    /// One look at Nomad's deployment of `version` for the standby `group`: promotes its
    /// canaries when the deploy is the one to do it and they are all healthy. Returns the
    /// progress and a phrase for the progress line.
    pub(crate) async fn nomad_progress(
        &self,
        job_id: &str,
        group: &str,
        version: u64,
        promotion: Promotion,
        allocs: &[AllocationListStub],
    ) -> (GroupProgress, String) {
        let deployment = match self
            .nomad
            .job_deployment(job_id, &QueryOptions::default())
            .await
        {
            Ok((d, _)) => d,
            Err(e) => {
                return (
                    GroupProgress::default(),
                    format!("; deployment unread ({e})"),
                );
            }
        };
        let p = group_progress(deployment.as_ref(), allocs, group, version);
        let mut note = String::new();
        if p.tracked {
            note.push_str(&format!("; {} healthy in Nomad", p.healthy));
        }
        if let Some((want, healthy)) = p.canaries {
            note.push_str(&format!(", canaries {healthy}/{want} healthy"));
            match (promotion, p.ready_to_promote, deployment.as_ref()) {
                (Promotion::Manual, true, Some(d)) => {
                    let groups = [group.to_owned()];
                    match self
                        .nomad
                        .deployment_promote(&d.id, Some(&groups[..]))
                        .await
                    {
                        Ok(_) => {
                            self.say(&format!(
                                "promoted the canaries of group {group} (deployment {})",
                                d.id
                            ));
                            note.push_str(", promoted");
                        }
                        Err(e) => note.push_str(&format!(", promotion refused ({e})")),
                    }
                }
                (Promotion::Auto, true, _) => note.push_str(", Nomad auto-promotes"),
                _ => note.push_str(", awaiting promotion"),
            }
        }
        (p, note)
    }
}

impl Controller {
    /// After a failed deploy: when Nomad's `auto_revert` already rolled the job back (the failed
    /// deployment of `failed_version` says `rolling back to job version N`), waits for the
    /// standby to run its old version again and returns the sentence for the error message;
    /// `None` when Nomad did not revert, so the deploy reverts the job itself.
    pub(crate) async fn nomad_auto_revert(
        &self,
        plan: &DeployPlan,
        failed_version: u64,
    ) -> Option<String> {
        let deployments = self.nomad.job_deployments(&plan.job_id).await.ok()?;
        let to = deployments
            .iter()
            .filter(|d| d.job_version == failed_version && d.status == "failed")
            .find_map(|d| rolled_back_to(&d.status_description))?;
        let current = match self.nomad.job(&plan.job_id, &QueryOptions::default()).await {
            Ok((Some(job), _)) => job.version(),
            _ => failed_version + 1,
        };
        self.say(&format!(
            "Nomad's auto_revert rolled job {} back to version {to} (registered as job version {current})",
            plan.job_id
        ));
        let head = format!(
            "Nomad's auto_revert rolled job {} back to version {to} (now job version {current})",
            plan.job_id
        );
        let Some(old) = plan.from_version.clone() else {
            return Some(head);
        };
        let wait = DeployPlan {
            prior_job_version: current.saturating_sub(1),
            ..plan.clone()
        };
        let deadline = Instant::now() + self.settings.deadline;
        Some(
            match self.wait_standby(&wait, &old, deadline, false).await {
                Ok(()) => format!("{head}; {} runs {old} again", plan.colour),
                Err(e) => format!("{head}, but {} has not recovered: {e}", plan.colour),
            },
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::job;
    use serde_json::json;
    use switchyard_hashi::nomad::{AllocDeploymentStatus, DeploymentState};

    fn with_update(update: serde_json::Value) -> Job {
        let mut j = job();
        j.0["TaskGroups"][1]["Update"] = update;
        j
    }

    #[test]
    fn canaries_are_promoted_by_the_deploy_unless_nomad_does() {
        assert_eq!(promotion_for(&job(), "green"), Ok(Promotion::None));
        let plain = with_update(json!({"Canary": 0, "MaxParallel": 2}));
        assert_eq!(promotion_for(&plain, "green"), Ok(Promotion::None));
        let manual = with_update(json!({"Canary": 2, "HealthCheck": "checks"}));
        assert_eq!(promotion_for(&manual, "green"), Ok(Promotion::Manual));
        let auto = with_update(json!({"Canary": 2, "AutoPromote": true}));
        assert_eq!(promotion_for(&auto, "green"), Ok(Promotion::Auto));
        // The job-level update applies when the group has none.
        let mut job_level = job();
        job_level.0["Update"] = json!({"Canary": 1});
        assert_eq!(promotion_for(&job_level, "green"), Ok(Promotion::Manual));
    }

    #[test]
    fn canaries_nobody_can_promote_are_refused() {
        let j = with_update(json!({"Canary": 2, "HealthCheck": "manual"}));
        let r = promotion_for(&j, "green").unwrap_err();
        assert!(matches!(r, Refusal::UnpromotableCanaries { .. }));
        let text = r.to_string();
        assert!(text.contains("green") && text.contains("manual"), "{text}");
    }

    fn alloc(
        id: &str,
        group: &str,
        version: u64,
        healthy: Option<bool>,
        canary: bool,
    ) -> AllocationListStub {
        AllocationListStub {
            id: id.into(),
            task_group: group.into(),
            job_version: version,
            desired_status: "run".into(),
            client_status: "running".into(),
            deployment_status: Some(AllocDeploymentStatus {
                healthy,
                canary,
                ..AllocDeploymentStatus::default()
            }),
            ..AllocationListStub::default()
        }
    }

    fn deployment(version: u64, status: &str, desc: &str, state: DeploymentState) -> Deployment {
        Deployment {
            id: "d1".into(),
            job_version: version,
            status: status.into(),
            status_description: desc.into(),
            task_groups: [("green".to_owned(), state)].into_iter().collect(),
            ..Deployment::default()
        }
    }

    #[test]
    fn progress_waits_for_every_canary_then_for_promotion() {
        let state = DeploymentState {
            desired_canaries: 2,
            placed_canaries: vec!["c1".into(), "c2".into()],
            ..DeploymentState::default()
        };
        let d = deployment(
            5,
            "running",
            "Deployment is running but requires manual promotion",
            state.clone(),
        );
        let one = [
            alloc("c1", "green", 5, Some(true), true),
            alloc("c2", "green", 5, None, true),
        ];
        let p = group_progress(Some(&d), &one, "green", 5);
        assert!(p.tracked);
        assert_eq!(p.canaries, Some((2, 1)));
        assert!(!p.ready_to_promote);
        assert_eq!(p.healthy, 1);
        let both = [
            alloc("c1", "green", 5, Some(true), true),
            alloc("c2", "green", 5, Some(true), true),
        ];
        let p = group_progress(Some(&d), &both, "green", 5);
        assert!(p.ready_to_promote);
        assert_eq!(p.healthy, 2);
        // Once promoted there is nothing left to promote.
        let promoted = deployment(
            5,
            "running",
            "Deployment is running",
            DeploymentState {
                promoted: true,
                ..state
            },
        );
        let p = group_progress(Some(&promoted), &both, "green", 5);
        assert_eq!((p.canaries, p.ready_to_promote), (None, false));
        // A deployment of another version says nothing about this one.
        let p = group_progress(Some(&promoted), &both, "green", 6);
        assert_eq!(p, GroupProgress::default());
    }

    #[test]
    fn an_auto_revert_is_recognised() {
        let d = deployment(
            5,
            "failed",
            "Failed due to unhealthy allocations - rolling back to job version 4",
            DeploymentState::default(),
        );
        let p = group_progress(Some(&d), &[], "green", 5);
        assert_eq!(p.auto_reverted_to, Some(4));
        assert!(p.failed.is_some());
        let d = deployment(
            5,
            "failed",
            "Failed due to unhealthy allocations",
            DeploymentState::default(),
        );
        assert_eq!(
            group_progress(Some(&d), &[], "green", 5).auto_reverted_to,
            None
        );
        assert_eq!(
            rolled_back_to("Deployment marked as failed - rolling back to job version 12"),
            Some(12)
        );
    }
}
