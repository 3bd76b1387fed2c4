//! Nomad's JSON shapes (the `api` package's field names), tolerant of missing fields and `null`
//! lists and maps. Durations are integer nanoseconds and most times UnixNano integers, as on the
//! wire; `Timestamp` / `RequireProgressBy` are RFC 3339 strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::serde_util::null_default;

/// One entry of `GET /v1/jobs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct JobListStub {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ParentID")]
    pub parent_id: String,
    pub name: String,
    pub namespace: String,
    #[serde(deserialize_with = "null_default")]
    pub datacenters: Vec<String>,
    /// `service`, `batch`, `system`, `sysbatch`.
    #[serde(rename = "Type")]
    pub job_type: String,
    pub priority: i64,
    pub periodic: bool,
    pub parameterized_job: bool,
    pub stop: bool,
    /// `pending`, `running` or `dead`.
    pub status: String,
    pub status_description: String,
    /// Per-group allocation counts; kept as JSON.
    pub job_summary: Option<serde_json::Value>,
    pub create_index: u64,
    pub modify_index: u64,
    pub job_modify_index: u64,
    /// UnixNano.
    pub submit_time: i64,
}

/// The answer to a job register, update or revert.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct JobRegisterResponse {
    /// The evaluation the write created (empty for jobs that create none, e.g. periodic ones).
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    pub eval_create_index: u64,
    /// The job's `JobModifyIndex` after the write: the value for the next `EnforceIndex`.
    pub job_modify_index: u64,
    /// Non-fatal warnings, newline-separated.
    pub warnings: String,
    /// The Raft index of the write (from the body, or the `X-Nomad-Index` header when the body
    /// has none).
    pub index: u64,
    /// Milliseconds, as in the body.
    pub last_contact: u64,
    pub known_leader: bool,
}

/// One entry of `GET /v1/job/:id/allocations` and `GET /v1/allocations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AllocationListStub {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    /// `job.group[index]`.
    pub name: String,
    pub namespace: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_name: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_type: String,
    pub job_version: u64,
    pub task_group: String,
    /// `run`, `stop` or `evict`.
    pub desired_status: String,
    pub desired_description: String,
    /// `pending`, `running`, `complete`, `failed`, `lost` or `unknown`.
    pub client_status: String,
    pub client_description: String,
    /// Set once the allocation is part of a deployment; `None` before that and after an in-place
    /// update (health is evaluated again).
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// Per-task state (`State`, `Failed`, `StartedAt`, `Events`, ...), kept as JSON.
    #[serde(deserialize_with = "null_default")]
    pub task_states: BTreeMap<String, serde_json::Value>,
    /// Only with `?resources=true`; kept as JSON (`Shared.Ports[]` has the dynamic ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_resources: Option<serde_json::Value>,
    #[serde(rename = "FollowupEvalID")]
    pub followup_eval_id: String,
    pub previous_allocation: String,
    pub next_allocation: String,
    pub create_index: u64,
    pub modify_index: u64,
    /// UnixNano.
    pub create_time: i64,
    /// UnixNano.
    pub modify_time: i64,
}

impl AllocationListStub {
    /// Whether the allocation is a canary of its deployment.
    pub fn is_canary(&self) -> bool {
        self.deployment_status.as_ref().is_some_and(|d| d.canary)
    }

    /// The deployment's health verdict: `None` while undecided.
    pub fn healthy(&self) -> Option<bool> {
        self.deployment_status.as_ref().and_then(|d| d.healthy)
    }
}

/// An allocation's standing in its deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AllocDeploymentStatus {
    /// `None` until decided; `true` once healthy for `min_healthy_time`; `false` on failure or
    /// when `healthy_deadline` passes.
    pub healthy: Option<bool>,
    /// Whether the allocation is a canary (cleared on promotion).
    pub canary: bool,
    /// RFC 3339.
    pub timestamp: String,
    pub modify_index: u64,
}

/// A group's update strategy (`api.UpdateStrategy`; durations in nanoseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UpdateStrategy {
    pub stagger: u64,
    pub max_parallel: u64,
    /// `checks`, `task_states` or `manual`.
    pub health_check: String,
    pub min_healthy_time: u64,
    pub healthy_deadline: u64,
    pub progress_deadline: u64,
    pub auto_revert: bool,
    pub auto_promote: bool,
    /// Canaries placed next to the old allocations before a destructive update proceeds; the
    /// deployment then waits for a promotion (or `auto_promote`).
    pub canary: u64,
}

/// A deployment (`GET /v1/job/:id/deployment`, `/deployments`, `/v1/deployment/:id`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Deployment {
    #[serde(rename = "ID")]
    pub id: String,
    pub namespace: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_version: u64,
    pub job_modify_index: u64,
    pub job_spec_modify_index: u64,
    pub job_create_index: u64,
    pub is_multiregion: bool,
    #[serde(deserialize_with = "null_default")]
    pub task_groups: BTreeMap<String, DeploymentState>,
    /// `running`, `paused`, `failed`, `successful`, `cancelled`, `pending`, `blocked`,
    /// `unblocking`, `initializing`.
    pub status: String,
    /// E.g. `Deployment is running but requires manual promotion`.
    pub status_description: String,
    pub eval_priority: i64,
    pub create_index: u64,
    pub modify_index: u64,
    /// UnixNano.
    pub create_time: i64,
    /// UnixNano.
    pub modify_time: i64,
}

impl Deployment {
    /// Whether the deployment has ended (`successful`, `failed` or `cancelled`): it can no longer
    /// be promoted or failed.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "successful" | "failed" | "cancelled")
    }
}

/// One task group's progress within a deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeploymentState {
    /// IDs of the canary allocations placed so far.
    #[serde(deserialize_with = "null_default")]
    pub placed_canaries: Vec<String>,
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub promoted: bool,
    pub desired_canaries: u64,
    pub desired_total: u64,
    pub placed_allocs: u64,
    pub healthy_allocs: u64,
    pub unhealthy_allocs: u64,
    /// Nanoseconds.
    pub progress_deadline: u64,
    /// RFC 3339; empty when not set.
    pub require_progress_by: String,
}

/// The answer to `POST /v1/job/:id/plan` (`api.JobPlanResponse`): what registering the job would
/// do, computed by the scheduler without changing anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct JobPlanResponse {
    /// The job's current `JobModifyIndex` (0 for a new job): the `EnforceIndex` that makes the
    /// register apply exactly the change that was planned.
    pub job_modify_index: u64,
    /// Per-group counts of what the scheduler would do.
    pub annotations: Option<PlanAnnotations>,
    /// The structured difference between the current and the submitted job (with `Diff: true`).
    pub diff: Option<JobDiff>,
    /// Groups that could not be placed, per group; kept as JSON (`api.AllocationMetric`).
    #[serde(rename = "FailedTGAllocs", deserialize_with = "null_default")]
    pub failed_tg_allocs: BTreeMap<String, serde_json::Value>,
    /// Non-fatal warnings, newline-separated.
    pub warnings: String,
}

/// `api.PlanAnnotations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PlanAnnotations {
    /// What the scheduler would do to each task group.
    #[serde(rename = "DesiredTGUpdates", deserialize_with = "null_default")]
    pub desired_tg_updates: BTreeMap<String, DesiredUpdates>,
}

/// `api.DesiredUpdates`: allocation counts of one task group in a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DesiredUpdates {
    /// Left as they are.
    pub ignore: u64,
    /// New allocations.
    pub place: u64,
    /// Moved off draining nodes.
    pub migrate: u64,
    /// Stopped.
    pub stop: u64,
    /// Updated without a restart.
    pub in_place_update: u64,
    /// Replaced by new allocations.
    pub destructive_update: u64,
    /// Canaries placed.
    pub canary: u64,
    /// Other allocations evicted.
    pub preemptions: u64,
}

/// `api.JobDiff`. `Type` is `Added`, `Deleted`, `Edited` or `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct JobDiff {
    #[serde(rename = "Type")]
    pub diff_type: String,
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub fields: Vec<FieldDiff>,
    #[serde(deserialize_with = "null_default")]
    pub objects: Vec<ObjectDiff>,
    #[serde(deserialize_with = "null_default")]
    pub task_groups: Vec<TaskGroupDiff>,
}

/// `api.TaskGroupDiff`; `Updates` counts allocations by kind (`create`, `destroy`, `in-place
/// update`, `create/destroy update`, `ignore`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TaskGroupDiff {
    #[serde(rename = "Type")]
    pub diff_type: String,
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub fields: Vec<FieldDiff>,
    #[serde(deserialize_with = "null_default")]
    pub objects: Vec<ObjectDiff>,
    #[serde(deserialize_with = "null_default")]
    pub tasks: Vec<TaskDiff>,
    #[serde(deserialize_with = "null_default")]
    pub updates: BTreeMap<String, u64>,
}

/// `api.TaskDiff`; `Annotations` say what the change forces (`forces create/destroy update`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TaskDiff {
    #[serde(rename = "Type")]
    pub diff_type: String,
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub fields: Vec<FieldDiff>,
    #[serde(deserialize_with = "null_default")]
    pub objects: Vec<ObjectDiff>,
    #[serde(deserialize_with = "null_default")]
    pub annotations: Vec<String>,
}

/// `api.ObjectDiff`: a nested block (`Config`, `Env`, `Service`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ObjectDiff {
    #[serde(rename = "Type")]
    pub diff_type: String,
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub fields: Vec<FieldDiff>,
    #[serde(deserialize_with = "null_default")]
    pub objects: Vec<ObjectDiff>,
}

/// `api.FieldDiff`: one primitive field, old and new as strings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct FieldDiff {
    #[serde(rename = "Type")]
    pub diff_type: String,
    pub name: String,
    pub old: String,
    pub new: String,
    #[serde(deserialize_with = "null_default")]
    pub annotations: Vec<String>,
}
