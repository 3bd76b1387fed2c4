//! The dev Nomad's state store: jobs and their versions, allocations,
//! deployments and evaluations, under one Raft-like index.
//!
//! Every change bumps the single index and the "table" index of what changed,
//! mirroring how Nomad reports `X-Nomad-Index` per table (`hashi/tests/fixtures/README.md` §N1), so
//! blocking queries here wake on the same kind of changes as on a real
//! server. Rendering to the API's JSON lives next to the records so field
//! names are in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::util::{rfc3339, str_field, unix_nanos};

/// Versions kept per job (Nomad's `job_tracked_versions` default).
pub(crate) const TRACKED_VERSIONS: usize = 6;

/// All versions of one job, oldest first; the last one is the current job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobEntry {
    pub(crate) versions: Vec<Value>,
}

impl JobEntry {
    pub(crate) fn current(&self) -> Option<&Value> {
        self.versions.last()
    }
}

/// One task event (`TaskStates[t].Events[]`).
#[derive(Debug, Clone)]
pub(crate) struct TaskEvent {
    pub(crate) kind: String,
    pub(crate) time: SystemTime,
    pub(crate) message: String,
    pub(crate) exit_code: i64,
    pub(crate) signal: i64,
    pub(crate) fails_task: bool,
    pub(crate) driver_error: String,
}

/// State of one task of an allocation.
#[derive(Debug, Clone)]
pub(crate) struct TaskState {
    pub(crate) state: String,
    pub(crate) failed: bool,
    pub(crate) restarts: u64,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) last_restart: Option<SystemTime>,
    pub(crate) events: Vec<TaskEvent>,
}

impl TaskState {
    pub(crate) fn new() -> Self {
        Self {
            state: "pending".into(),
            failed: false,
            restarts: 0,
            started_at: None,
            finished_at: None,
            last_restart: None,
            events: vec![TaskEvent::new("Received", "Task received by client")],
        }
    }
}

impl TaskEvent {
    pub(crate) fn new(kind: &str, message: &str) -> Self {
        Self {
            kind: kind.into(),
            time: SystemTime::now(),
            message: message.into(),
            exit_code: 0,
            signal: 0,
            fails_task: false,
            driver_error: String::new(),
        }
    }
}

/// One allocation (an instance of a task group).
#[derive(Debug, Clone)]
pub(crate) struct Alloc {
    pub(crate) id: String,
    pub(crate) eval_id: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) job_id: String,
    pub(crate) group: String,
    pub(crate) index: u32,
    pub(crate) job_version: u64,
    /// The job (at `job_version`) this allocation runs.
    pub(crate) job: Arc<Value>,
    pub(crate) desired_status: String,
    pub(crate) desired_description: String,
    pub(crate) client_status: String,
    pub(crate) client_description: String,
    pub(crate) task_states: BTreeMap<String, TaskState>,
    pub(crate) deployment_id: Option<String>,
    /// A canary of its deployment (cleared when the deployment is promoted).
    pub(crate) canary: bool,
    pub(crate) healthy: Option<bool>,
    pub(crate) health_time: Option<SystemTime>,
    pub(crate) health_modify_index: u64,
    /// When health evaluation (re)started: placement or in-place update.
    pub(crate) health_epoch: Instant,
    /// Label → host port.
    pub(crate) ports: BTreeMap<String, u16>,
    /// Label → `to` (0 when unset).
    pub(crate) port_to: BTreeMap<String, u16>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) create_time: SystemTime,
    pub(crate) modify_time: SystemTime,
    pub(crate) previous_alloc: String,
    pub(crate) next_alloc: String,
    /// `RescheduleTracker.Events`: the reschedules that led to this allocation.
    pub(crate) reschedule_events: Vec<super::resched::Event>,
    /// `FollowupEvalID`: the pending evaluation that will replace this
    /// failed allocation once its reschedule delay has passed.
    pub(crate) followup_eval_id: String,
}

impl Alloc {
    pub(crate) fn is_live(&self) -> bool {
        self.desired_status == "run"
    }
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.client_status.as_str(), "complete" | "failed" | "lost")
    }
    /// When the allocation last changed on the client (Nomad's
    /// `LastEventTime`: the latest `FinishedAt` of its tasks).
    pub(crate) fn last_event_time(&self) -> SystemTime {
        self.task_states
            .values()
            .filter_map(|t| t.finished_at)
            .max()
            .unwrap_or(self.modify_time)
    }
}

/// Per-group deployment state.
#[derive(Debug, Clone)]
pub(crate) struct DeploymentGroup {
    pub(crate) auto_revert: bool,
    pub(crate) auto_promote: bool,
    pub(crate) promoted: bool,
    pub(crate) desired_canaries: u64,
    pub(crate) placed_canaries: Vec<String>,
    pub(crate) desired_total: u64,
    pub(crate) placed_allocs: u64,
    pub(crate) healthy_allocs: u64,
    pub(crate) unhealthy_allocs: u64,
    pub(crate) progress_deadline_ns: u64,
    pub(crate) require_progress_by: Option<SystemTime>,
}

/// A deployment: the rollout of one job version.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) job_id: String,
    pub(crate) job_version: u64,
    pub(crate) job_modify_index: u64,
    pub(crate) job_create_index: u64,
    pub(crate) groups: BTreeMap<String, DeploymentGroup>,
    /// Allocations whose health decides this deployment.
    pub(crate) allocs: Vec<String>,
    pub(crate) status: String,
    pub(crate) status_description: String,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) create_time: SystemTime,
    pub(crate) modify_time: SystemTime,
    pub(crate) priority: i64,
}

/// Nomad's `DeploymentStatusDescriptionRunning`.
pub(crate) const DESC_RUNNING: &str = "Deployment is running";
/// Nomad's `DeploymentStatusDescriptionRunningNeedsPromotion`.
pub(crate) const DESC_NEEDS_PROMOTION: &str = "Deployment is running but requires manual promotion";
/// Nomad's `DeploymentStatusDescriptionRunningAutoPromotion`.
pub(crate) const DESC_AUTO_PROMOTION: &str = "Deployment is running pending automatic promotion";

impl Deployment {
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "running" | "paused" | "pending")
    }

    /// Whether a group still waits for its canaries to be promoted
    /// (Nomad's `RequiresPromotion`).
    pub(crate) fn requires_promotion(&self) -> bool {
        self.groups
            .values()
            .any(|g| g.desired_canaries > 0 && !g.promoted)
    }

    /// The running description Nomad shows: waiting for a manual or an
    /// automatic promotion, or just running.
    pub(crate) fn running_description(&self) -> &'static str {
        let waiting: Vec<&DeploymentGroup> = self
            .groups
            .values()
            .filter(|g| g.desired_canaries > 0 && !g.promoted)
            .collect();
        if waiting.is_empty() {
            DESC_RUNNING
        } else if waiting.iter().all(|g| g.auto_promote) {
            DESC_AUTO_PROMOTION
        } else {
            DESC_NEEDS_PROMOTION
        }
    }
}

/// An evaluation record. The dev stack schedules synchronously, so an
/// evaluation is created `complete`, except a follow-up evaluation for a
/// delayed reschedule: `pending` until its `WaitUntil`, then run.
#[derive(Debug, Clone)]
pub(crate) struct Eval {
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) job_id: String,
    pub(crate) job_modify_index: u64,
    pub(crate) triggered_by: String,
    pub(crate) deployment_id: String,
    pub(crate) priority: i64,
    pub(crate) job_type: String,
    pub(crate) groups: Vec<String>,
    pub(crate) status: String,
    pub(crate) status_description: String,
    pub(crate) wait_until: Option<SystemTime>,
    pub(crate) previous_eval: String,
    pub(crate) next_eval: String,
    pub(crate) create_index: u64,
    pub(crate) create_time: SystemTime,
    pub(crate) modify_index: u64,
    pub(crate) modify_time: SystemTime,
}

/// What survives a restart (digest: jobs, versions and the index).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub(crate) index: u64,
    pub(crate) node_id: String,
    pub(crate) jobs: BTreeMap<String, JobEntry>,
}

/// The whole store, behind one mutex in `Inner`. Cloned for dry runs
/// (`/v1/job/:id/plan`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Store {
    pub(crate) index: u64,
    pub(crate) jobs_index: u64,
    pub(crate) allocs_index: u64,
    pub(crate) deploys_index: u64,
    pub(crate) evals_index: u64,
    pub(crate) jobs: BTreeMap<String, JobEntry>,
    pub(crate) allocs: BTreeMap<String, Alloc>,
    pub(crate) deployments: BTreeMap<String, Deployment>,
    pub(crate) evals: BTreeMap<String, Eval>,
    /// Set when jobs changed and must be written to disk.
    pub(crate) jobs_dirty: bool,
}

/// Node identity rendered into allocations.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub(crate) id: String,
    pub(crate) name: String,
}

impl Store {
    /// Advances the index and returns it.
    pub(crate) fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }
    pub(crate) fn touch_jobs(&mut self) -> u64 {
        let i = self.bump();
        self.jobs_index = i;
        self.jobs_dirty = true;
        i
    }
    pub(crate) fn touch_allocs(&mut self) -> u64 {
        let i = self.bump();
        self.allocs_index = i;
        i
    }
    pub(crate) fn touch_deploys(&mut self) -> u64 {
        let i = self.bump();
        self.deploys_index = i;
        i
    }

    pub(crate) fn current_job(&self, id: &str) -> Option<&Value> {
        self.jobs.get(id).and_then(JobEntry::current)
    }

    /// Creates a completed evaluation and returns (id, create index).
    pub(crate) fn add_eval(
        &mut self,
        job: &Value,
        triggered_by: &str,
        deployment_id: &str,
    ) -> (String, u64) {
        self.insert_eval(job, triggered_by, deployment_id, None)
    }

    /// Nomad's follow-up evaluation for a delayed reschedule (the
    /// reconciler's `createLaterEvals`): `pending` until `wait_until`,
    /// triggered by `alloc-reschedule`, its `PreviousEval` the evaluation
    /// that found the failed allocation (whose `NextEval` it becomes).
    pub(crate) fn add_followup_eval(
        &mut self,
        job: &Value,
        previous_eval: &str,
        wait_until: SystemTime,
    ) -> String {
        let (id, _) = self.insert_eval(job, "alloc-reschedule", "", Some(wait_until));
        if let Some(e) = self.evals.get_mut(&id) {
            e.previous_eval = previous_eval.to_string();
        }
        if let Some(prev) = self.evals.get_mut(previous_eval) {
            prev.next_eval = id.clone();
        }
        id
    }

    /// Marks a pending evaluation as run (`complete`); no-op otherwise.
    pub(crate) fn complete_eval(&mut self, id: &str) {
        if self.evals.get(id).is_none_or(|e| e.status != "pending") {
            return;
        }
        let i = self.bump();
        self.evals_index = i;
        if let Some(e) = self.evals.get_mut(id) {
            e.status = "complete".into();
            e.status_description = String::new();
            e.modify_index = i;
            e.modify_time = SystemTime::now();
        }
    }

    fn insert_eval(
        &mut self,
        job: &Value,
        triggered_by: &str,
        deployment_id: &str,
        wait_until: Option<SystemTime>,
    ) -> (String, u64) {
        let i = self.bump();
        self.evals_index = i;
        let id = uuid::Uuid::new_v4().to_string();
        let groups = super::spec::group_names(job);
        let (status, status_description) = match wait_until {
            Some(_) => ("pending", "created for delayed rescheduling"),
            None => ("complete", ""),
        };
        let now = SystemTime::now();
        self.evals.insert(
            id.clone(),
            Eval {
                id: id.clone(),
                namespace: str_field(job, "Namespace").to_string(),
                job_id: str_field(job, "ID").to_string(),
                job_modify_index: job
                    .get("JobModifyIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                triggered_by: triggered_by.to_string(),
                deployment_id: deployment_id.to_string(),
                priority: job.get("Priority").and_then(Value::as_i64).unwrap_or(50),
                job_type: str_field(job, "Type").to_string(),
                groups,
                status: status.into(),
                status_description: status_description.into(),
                wait_until,
                previous_eval: String::new(),
                next_eval: String::new(),
                create_index: i,
                create_time: now,
                modify_index: i,
                modify_time: now,
            },
        );
        (id, i)
    }

    /// Job status derived from its allocations (Nomad: pending/running/dead).
    pub(crate) fn job_status(&self, job: &Value) -> &'static str {
        let id = str_field(job, "ID");
        let stopped = job.get("Stop").and_then(Value::as_bool).unwrap_or(false);
        let mut any_live = false;
        let mut any_nonterminal = false;
        for a in self.allocs.values().filter(|a| a.job_id == id) {
            any_live |= a.is_live();
            any_nonterminal |= !a.is_terminal();
        }
        if stopped {
            if any_nonterminal { "running" } else { "dead" }
        } else if any_live {
            "running"
        } else {
            "pending"
        }
    }

    /// The current job as `GET /v1/job/:id` returns it.
    pub(crate) fn render_job(&self, job: &Value) -> Value {
        let mut j = job.clone();
        if let Some(o) = j.as_object_mut() {
            o.insert("Status".into(), json!(self.job_status(job)));
        }
        j
    }

    /// `GET /v1/job/:id/summary`.
    pub(crate) fn render_summary(&self, job: &Value) -> Value {
        let id = str_field(job, "ID");
        let mut summary = serde_json::Map::new();
        for g in super::spec::group_names(job) {
            let mut c = BTreeMap::from([
                ("Queued", 0u64),
                ("Complete", 0),
                ("Failed", 0),
                ("Running", 0),
                ("Starting", 0),
                ("Lost", 0),
                ("Unknown", 0),
            ]);
            for a in self
                .allocs
                .values()
                .filter(|a| a.job_id == id && a.group == g)
            {
                let key = match a.client_status.as_str() {
                    "pending" => "Starting",
                    "running" => "Running",
                    "complete" => "Complete",
                    "failed" => "Failed",
                    "lost" => "Lost",
                    _ => "Unknown",
                };
                if let Some(n) = c.get_mut(key) {
                    *n += 1;
                }
            }
            summary.insert(g, json!(c));
        }
        json!({
            "JobID": id,
            "Namespace": str_field(job, "Namespace"),
            "Summary": summary,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": job.get("CreateIndex").cloned().unwrap_or(json!(0)),
            "ModifyIndex": self.allocs_index.max(job.get("ModifyIndex").and_then(Value::as_u64).unwrap_or(0)),
        })
    }

    /// One entry of `GET /v1/jobs`.
    pub(crate) fn render_job_stub(&self, job: &Value) -> Value {
        json!({
            "ID": job.get("ID"),
            "ParentID": job.get("ParentID"),
            "Name": job.get("Name"),
            "Namespace": job.get("Namespace"),
            "Datacenters": job.get("Datacenters"),
            "NodePool": job.get("NodePool"),
            "Multiregion": null,
            "Type": job.get("Type"),
            "Priority": job.get("Priority"),
            "Periodic": false,
            "ParameterizedJob": false,
            "Stop": job.get("Stop"),
            "Status": self.job_status(job),
            "StatusDescription": job.get("StatusDescription"),
            "JobSummary": self.render_summary(job),
            "CreateIndex": job.get("CreateIndex"),
            "ModifyIndex": job.get("ModifyIndex"),
            "JobModifyIndex": job.get("JobModifyIndex"),
            "SubmitTime": job.get("SubmitTime"),
        })
    }
}

fn opt_time(t: Option<SystemTime>) -> Value {
    t.map(|t| json!(rfc3339(t))).unwrap_or(Value::Null)
}

fn event_json(e: &TaskEvent) -> Value {
    json!({
        "Type": e.kind,
        "Time": unix_nanos(e.time),
        "FailsTask": e.fails_task,
        "RestartReason": "",
        "SetupError": "",
        "DriverError": e.driver_error,
        "ExitCode": e.exit_code,
        "Signal": e.signal,
        "Message": e.message,
        "DisplayMessage": e.message,
        "Details": {},
        "KillTimeout": 0,
        "KillError": "",
        "KillReason": "",
        "StartDelay": 0,
        "DownloadError": "",
        "ValidationError": "",
        "DiskLimit": 0,
        "FailedSibling": "",
        "VaultError": "",
        "TaskSignalReason": "",
        "TaskSignal": "",
        "DriverMessage": "",
        "GenericSource": "",
    })
}

/// Renders an allocation; `with_job` adds the embedded `Job` (single-alloc GET).
pub(crate) fn render_alloc(a: &Alloc, node: &NodeInfo, with_job: bool) -> Value {
    let task_states: serde_json::Map<String, Value> = a
        .task_states
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                json!({
                    "State": t.state,
                    "Failed": t.failed,
                    "Restarts": t.restarts,
                    "LastRestart": opt_time(t.last_restart),
                    "StartedAt": opt_time(t.started_at),
                    "FinishedAt": opt_time(t.finished_at),
                    "Events": t.events.iter().map(event_json).collect::<Vec<_>>(),
                    "TaskHandle": null,
                }),
            )
        })
        .collect();
    let ports: Vec<Value> = a
        .ports
        .iter()
        .map(|(label, value)| {
            json!({"Label": label, "Value": value, "To": a.port_to.get(label).copied().unwrap_or(0), "HostIP": ""})
        })
        .collect();
    let deployment_status = if a.deployment_id.is_some() {
        json!({
            "Healthy": a.healthy,
            "Timestamp": opt_time(a.health_time).as_str().map(str::to_string).unwrap_or_else(|| rfc3339(std::time::UNIX_EPOCH)),
            "Canary": a.canary,
            "ModifyIndex": a.health_modify_index,
        })
    } else {
        Value::Null
    };
    let mut v = json!({
        "ID": a.id,
        "EvalID": a.eval_id,
        "Name": a.name,
        "Namespace": a.namespace,
        "NodeID": node.id,
        "NodeName": node.name,
        "JobID": a.job_id,
        "JobType": str_field(&a.job, "Type"),
        "JobVersion": a.job_version,
        "TaskGroup": a.group,
        "DesiredStatus": a.desired_status,
        "DesiredDescription": a.desired_description,
        "DesiredTransition": {"Migrate": null, "Reschedule": null, "ForceReschedule": null},
        "ClientStatus": a.client_status,
        "ClientDescription": a.client_description,
        "TaskStates": task_states,
        "DeploymentID": a.deployment_id.clone().unwrap_or_default(),
        "DeploymentStatus": deployment_status,
        "AllocatedResources": {"Shared": {"Ports": ports, "Networks": null, "DiskMB": 0}, "Tasks": {}},
        "FollowupEvalID": a.followup_eval_id,
        "PreviousAllocation": a.previous_alloc,
        "NextAllocation": a.next_alloc,
        "RescheduleTracker": super::resched::render_tracker(&a.reschedule_events),
        "PreemptedAllocations": null,
        "PreemptedByAllocation": "",
        "CreateIndex": a.create_index,
        "ModifyIndex": a.modify_index,
        "AllocModifyIndex": a.modify_index,
        "CreateTime": unix_nanos(a.create_time),
        "ModifyTime": unix_nanos(a.modify_time),
    });
    if with_job && let Some(o) = v.as_object_mut() {
        o.insert("Job".into(), (*a.job).clone());
    }
    v
}

/// Renders a deployment.
pub(crate) fn render_deployment(d: &Deployment) -> Value {
    let groups: serde_json::Map<String, Value> = d
        .groups
        .iter()
        .map(|(name, g)| {
            (
                name.clone(),
                json!({
                    "AutoRevert": g.auto_revert,
                    "AutoPromote": g.auto_promote,
                    "Promoted": g.promoted,
                    "PlacedCanaries": if g.placed_canaries.is_empty() { Value::Null } else { json!(g.placed_canaries) },
                    "DesiredCanaries": g.desired_canaries,
                    "DesiredTotal": g.desired_total,
                    "PlacedAllocs": g.placed_allocs,
                    "HealthyAllocs": g.healthy_allocs,
                    "UnhealthyAllocs": g.unhealthy_allocs,
                    "ProgressDeadline": g.progress_deadline_ns,
                    "RequireProgressBy": opt_time(g.require_progress_by),
                }),
            )
        })
        .collect();
    json!({
        "ID": d.id,
        "Namespace": d.namespace,
        "JobID": d.job_id,
        "JobVersion": d.job_version,
        "JobModifyIndex": d.job_modify_index,
        "JobSpecModifyIndex": d.job_modify_index,
        "JobCreateIndex": d.job_create_index,
        "IsMultiregion": false,
        "TaskGroups": groups,
        "Status": d.status,
        "StatusDescription": d.status_description,
        "EvalPriority": d.priority,
        "CreateIndex": d.create_index,
        "ModifyIndex": d.modify_index,
        "CreateTime": unix_nanos(d.create_time),
        "ModifyTime": unix_nanos(d.modify_time),
    })
}

/// Renders an evaluation.
pub(crate) fn render_eval(e: &Eval) -> Value {
    // A pending evaluation has not run: no snapshot, nothing queued yet.
    let pending = e.status == "pending";
    let queued: Value = if pending {
        Value::Null
    } else {
        e.groups.iter().map(|g| (g.clone(), json!(0))).collect()
    };
    json!({
        "ID": e.id,
        "Namespace": e.namespace,
        "Priority": e.priority,
        "Type": e.job_type,
        "TriggeredBy": e.triggered_by,
        "JobID": e.job_id,
        "JobModifyIndex": e.job_modify_index,
        "DeploymentID": e.deployment_id,
        "NodeID": "",
        "NodeModifyIndex": 0,
        "Status": e.status,
        "StatusDescription": e.status_description,
        "Wait": 0,
        "WaitUntil": opt_time(e.wait_until),
        "NextEval": e.next_eval,
        "PreviousEval": e.previous_eval,
        "BlockedEval": "",
        "FailedTGAllocs": null,
        "ClassEligibility": null,
        "EscapedComputedClass": false,
        "AnnotatePlan": false,
        "QueuedAllocations": queued,
        "SnapshotIndex": if pending { 0 } else { e.modify_index },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
        "CreateTime": unix_nanos(e.create_time),
        "ModifyTime": unix_nanos(e.modify_time),
    })
}
