//! Scheduling: register/revert/stop, per-group reconciliation and deployments.
//!
//! The dev stack schedules synchronously on its single node. For each group
//! the running allocations are compared with the new job version (`hashi/tests/fixtures/README.md` §N3):
//! - already on this job (same `JobModifyIndex`): left alone;
//! - destructive change (task config/env/driver/resources, combined meta,
//!   network): the allocation is replaced, with a new ID and new ports, at
//!   most `max_parallel` at a time (the next ones when the deployment's
//!   health watcher finds those placed healthy);
//! - anything else, the groups a new version does not touch included: an
//!   in-place update, as Nomad's scheduler does it: the allocation keeps its
//!   ID, ports and processes, moves to the new version, joins the new
//!   deployment (its health is judged again) and its runner re-syncs its
//!   services;
//! - `count` adds or removes allocations by index;
//! - a group whose `update` block sets `canary` gets that many canaries
//!   next to the allocations a destructive change would replace; they stay
//!   side by side until the deployment is promoted (by hand or
//!   `auto_promote`), then the old ones are replaced.
//!
//! Settings the dev stack does not model (templates, constraints, drivers
//! other than `raw_exec`/`docker`, ...) are refused with a 400 naming them.
//!
//! Every reconciliation that places or updates allocations of a service job
//! creates a deployment; a watcher task decides allocation health from Consul
//! checks (`min_healthy_time`, `healthy_deadline`) and finishes it, marking
//! the job version `Stable` on success.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use serde_json::{Value, json};

use super::consul::{Health, service_id, service_owner};
use super::resched;
use super::runner::{self, RunnerCmd};
use super::spec::{GroupSpec, canonicalize, group_names, spec_only};
use super::state::{Alloc, Deployment, DeploymentGroup, Store, TRACKED_VERSIONS, TaskState};
use super::util::{arr_field, str_field, unix_nanos};
use super::{ApiError, Inner};

/// What a register/revert/stop returns to the client.
#[derive(Debug, Clone)]
pub(crate) struct WriteReply {
    pub(crate) eval_id: String,
    pub(crate) eval_create_index: u64,
    pub(crate) job_modify_index: u64,
    pub(crate) index: u64,
}

/// Actions to carry out after the store lock is released.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) start: Vec<String>,
    pub(crate) stop: Vec<String>,
    pub(crate) update: Vec<String>,
    pub(crate) deployment: Option<String>,
}

fn server_error(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
}

pub(crate) fn validate(job: &Value) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    if str_field(job, "ID").is_empty() {
        errs.push("Missing job ID".to_string());
    }
    // Nomad's `Job.Validate`: the job types it knows.
    match str_field(job, "Type") {
        "core" | "service" | "batch" | "system" | "sysbatch" => {}
        "" => errs.push("Missing job type".to_string()),
        other => errs.push(format!("Invalid job type: {other:?}")),
    }
    let groups = group_names(job);
    if groups.is_empty() {
        errs.push("Missing job task groups".to_string());
    }
    let mut seen = BTreeSet::new();
    for g in &groups {
        if !seen.insert(g) {
            errs.push(format!("Job task group {g} redefined"));
        }
        if let Some(policy) = super::resched::Policy::of(job, g) {
            for e in policy.problems() {
                errs.push(format!("Task group {g} validation failed: {e}"));
            }
        }
        if let Some(spec) = GroupSpec::from_job(job, g) {
            if spec.tasks.is_empty() {
                errs.push(format!(
                    "Task group {g} validation failed: Missing tasks for task group"
                ));
            }
            let mut labels = BTreeSet::new();
            for p in &spec.ports {
                if !labels.insert(p.label.clone()) {
                    errs.push(format!(
                        "Task group {g}: port label {:?} defined twice",
                        p.label
                    ));
                }
            }
            for s in &spec.services {
                if !s.port_label.is_empty()
                    && s.port_label.parse::<u16>().is_err()
                    && !labels.contains(&s.port_label)
                {
                    errs.push(format!(
                        "Task group {g}: service {:?} uses undefined port {:?}",
                        s.name, s.port_label
                    ));
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        let n = errs.len();
        let list: Vec<String> = errs.iter().map(|e| format!("\t* {e}")).collect();
        Err(server_error(format!(
            "{n} error{} occurred:\n{}\n",
            if n == 1 { "" } else { "s" },
            list.join("\n")
        )))
    }
}

/// Drivers the dev stack knows: `raw_exec` runs local processes; `docker`
/// jobs are accepted (the same job file runs on a cluster) and their
/// allocations fail with a driver error, as on a client without Docker.
const DRIVERS: &[&str] = &["raw_exec", "docker"];

/// Whether a field of a canonical job carries a setting (not null, not empty).
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Settings the dev stack does not model, named, so a job is refused rather
/// than run without them (a real cluster would honour them).
fn unmodelled(job: &Value) -> Vec<String> {
    let mut out = Vec::new();
    // Only service jobs: the process driver restarts a task whatever its exit
    // status, so a batch job would never complete, and there is one node for
    // system jobs to cover.
    let kind = str_field(job, "Type");
    if kind != "service" {
        out.push(format!(
            "job: type {kind:?} (the dev stack runs service jobs only)"
        ));
    }
    let check = |out: &mut Vec<String>, v: &Value, fields: &[(&str, &str)], at: &str| {
        for (field, block) in fields {
            if is_set(v.get(*field)) {
                out.push(format!("{at}: {block}"));
            }
        }
    };
    let placement = [
        ("Constraints", "constraint"),
        ("Affinities", "affinity"),
        ("Spreads", "spread"),
    ];
    check(&mut out, job, &placement, "job");
    check(
        &mut out,
        job,
        &[
            ("Periodic", "periodic"),
            ("ParameterizedJob", "parameterized"),
            ("Multiregion", "multiregion"),
        ],
        "job",
    );
    for g in arr_field(job, "TaskGroups") {
        let gname = format!("group {:?}", str_field(g, "Name"));
        check(&mut out, g, &placement, &gname);
        check(&mut out, g, &[("Volumes", "volume")], &gname);
        for t in arr_field(g, "Tasks") {
            let tname = format!("{gname} task {:?}", str_field(t, "Name"));
            check(&mut out, t, &placement, &tname);
            check(
                &mut out,
                t,
                &[
                    ("Templates", "template"),
                    ("Artifacts", "artifact"),
                    ("Vault", "vault"),
                    ("VolumeMounts", "volume_mount"),
                    ("Lifecycle", "lifecycle"),
                ],
                &tname,
            );
            let driver = str_field(t, "Driver");
            if !DRIVERS.contains(&driver) {
                out.push(format!(
                    "{tname}: driver {driver:?} (the dev stack runs raw_exec and accepts docker)"
                ));
            }
        }
    }
    out
}

/// Refuses (400, naming them) a job with settings the dev stack does not model.
pub(crate) fn check_modelled(job: &Value) -> Result<(), ApiError> {
    let missing = unmodelled(job);
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "job uses settings the dev Nomad does not model: {}",
        missing.join("; ")
    )))
}

/// Registers (creates or updates) a job; `enforce` is the CAS
/// `JobModifyIndex` when `EnforceIndex` was set.
pub(crate) fn register(
    inner: &Arc<Inner>,
    mut job: Value,
    enforce: Option<u64>,
    triggered_by: &str,
) -> Result<WriteReply, ApiError> {
    if !job.is_object() {
        return Err(ApiError::bad_request("Job must be specified"));
    }
    canonicalize(&mut job);
    validate(&job)?;
    check_modelled(&job)?;
    let id = str_field(&job, "ID").to_string();
    let (reply, plan) = inner.mutate(|s| -> Result<(WriteReply, Plan), ApiError> {
        let current = s.current_job(&id).cloned();
        if let Some(n) = enforce {
            let prefix = format!("Enforcing job modify index {n}");
            match (&current, n) {
                (Some(_), 0) => return Err(server_error(format!("{prefix}: job already exists"))),
                (None, n) if n > 0 => {
                    return Err(server_error(format!("{prefix}: job does not exist")));
                }
                (Some(cur), n) => {
                    let m = cur
                        .get("JobModifyIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if m != n {
                        return Err(server_error(format!(
                            "{prefix}: job exists with conflicting job modify index: {m}"
                        )));
                    }
                }
                _ => {}
            }
        }
        let job_modify_index = store_version(s, &id, &mut job, current.as_ref());
        let stored = s.current_job(&id).cloned().unwrap_or(Value::Null);
        let (eval_id, eval_index) = s.add_eval(&stored, triggered_by, "");
        let plan = reconcile(inner, s, &id, &eval_id);
        if let (Some(dep), Some(e)) = (&plan.deployment, s.evals.get_mut(&eval_id)) {
            e.deployment_id = dep.clone();
        }
        Ok((
            WriteReply {
                eval_id,
                eval_create_index: eval_index,
                job_modify_index,
                index: s.index,
            },
            plan,
        ))
    })?;
    apply(inner, plan);
    Ok(reply)
}

/// Stores `job` as the next version of `id` when its spec differs from
/// `current` (an unchanged spec creates no version); returns the reply's
/// `JobModifyIndex`.
pub(crate) fn store_version(
    s: &mut Store,
    id: &str,
    job: &mut Value,
    current: Option<&Value>,
) -> u64 {
    let changed = current.is_none_or(|cur| spec_only(cur) != spec_only(job));
    if changed {
        let idx = s.touch_jobs();
        let version = current
            .and_then(|c| c.get("Version").and_then(Value::as_u64))
            .map_or(0, |v| v + 1);
        let create = current
            .and_then(|c| c.get("CreateIndex").and_then(Value::as_u64))
            .unwrap_or(idx);
        if let Some(o) = job.as_object_mut() {
            o.insert("Version".into(), json!(version));
            o.insert("CreateIndex".into(), json!(create));
            o.insert("ModifyIndex".into(), json!(idx));
            o.insert("JobModifyIndex".into(), json!(idx));
            o.insert("SubmitTime".into(), json!(unix_nanos(SystemTime::now())));
            o.insert("Stable".into(), json!(false));
            o.insert("Status".into(), json!("pending"));
            o.insert("StatusDescription".into(), json!(""));
        }
        let entry = s
            .jobs
            .entry(id.to_owned())
            .or_insert_with(|| super::state::JobEntry {
                versions: Vec::new(),
            });
        entry.versions.push(job.clone());
        let excess = entry.versions.len().saturating_sub(TRACKED_VERSIONS);
        entry.versions.drain(..excess);
        idx
    } else {
        current
            .and_then(|c| c.get("ModifyIndex").and_then(Value::as_u64))
            .unwrap_or(0)
    }
}

/// `POST /v1/job/:id/revert`: registers a copy of an old version as a new one.
pub(crate) fn revert(
    inner: &Arc<Inner>,
    job_id: &str,
    version: u64,
    enforce_prior: Option<u64>,
) -> Result<WriteReply, ApiError> {
    let (old, enforce) = inner.read(|s| -> Result<(Value, Option<u64>), ApiError> {
        let entry = s
            .jobs
            .get(job_id)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "job not found"))?;
        let cur = entry.current().cloned().unwrap_or(Value::Null);
        let cur_version = cur.get("Version").and_then(Value::as_u64).unwrap_or(0);
        if let Some(p) = enforce_prior
            && p != cur_version
        {
            return Err(server_error(format!(
                "Current job has version {cur_version}; enforcing version {p}"
            )));
        }
        if version == cur_version {
            return Err(server_error("can't revert to current version"));
        }
        let old = entry
            .versions
            .iter()
            .find(|v| v.get("Version").and_then(Value::as_u64) == Some(version))
            .cloned()
            .ok_or_else(|| {
                server_error(format!(
                    "job {job_id:?} in namespace {:?} at version {version} not found",
                    str_field(&cur, "Namespace")
                ))
            })?;
        let enforce = enforce_prior.map(|_| {
            cur.get("JobModifyIndex")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        });
        Ok((old, enforce))
    })?;
    register(inner, spec_only(&old), enforce, "job-register")
}

/// `DELETE /v1/job/:id`: stops the job (a new version with `Stop`), or
/// removes it entirely with `purge`.
pub(crate) fn stop_job(
    inner: &Arc<Inner>,
    job_id: &str,
    purge: bool,
) -> Result<WriteReply, ApiError> {
    let current = inner
        .read(|s| s.current_job(job_id).cloned())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "job not found"))?;
    if !purge {
        let mut job = spec_only(&current);
        if let Some(o) = job.as_object_mut() {
            o.insert("Stop".into(), json!(true));
        }
        return register(inner, job, None, "job-deregister");
    }
    let (reply, plan) = inner.mutate(|s| {
        let idx = s.touch_jobs();
        s.jobs.remove(job_id);
        let mut stopped = current.clone();
        if let Some(o) = stopped.as_object_mut() {
            o.insert("Stop".into(), json!(true));
            o.insert("JobModifyIndex".into(), json!(idx));
        }
        let (eval_id, eval_index) = s.add_eval(&stopped, "job-deregister", "");
        let mut plan = Plan::default();
        stop_all(s, job_id, &mut plan);
        (
            WriteReply {
                eval_id,
                eval_create_index: eval_index,
                job_modify_index: idx,
                index: s.index,
            },
            plan,
        )
    });
    apply(inner, plan);
    Ok(reply)
}

fn stop_all(s: &mut Store, job_id: &str, plan: &mut Plan) {
    let live: Vec<String> = s
        .allocs
        .values()
        .filter(|a| a.job_id == job_id && a.is_live())
        .map(|a| a.id.clone())
        .collect();
    for id in live {
        mark_stop(s, &id, "alloc not needed due to job update");
        plan.stop.push(id);
    }
    cancel_deployments(s, job_id, "Cancelled because job is stopped");
}

fn mark_stop(s: &mut Store, alloc_id: &str, why: &str) {
    let i = s.touch_allocs();
    if let Some(a) = s.allocs.get_mut(alloc_id) {
        a.desired_status = "stop".into();
        a.desired_description = why.into();
        a.modify_index = i;
        a.modify_time = SystemTime::now();
    }
}

fn cancel_deployments(s: &mut Store, job_id: &str, why: &str) {
    let ids: Vec<String> = s
        .deployments
        .values()
        .filter(|d| d.job_id == job_id && d.is_active())
        .map(|d| d.id.clone())
        .collect();
    for id in ids {
        let i = s.touch_deploys();
        if let Some(d) = s.deployments.get_mut(&id) {
            d.status = "cancelled".into();
            d.status_description = why.into();
            d.modify_index = i;
            d.modify_time = SystemTime::now();
        }
    }
}

/// Picks a free port on `bind_ip` within the configured range.
fn pick_port(inner: &Inner, used: &BTreeSet<u16>) -> Option<u16> {
    let (lo, hi) = (*inner.cfg.port_range.start(), *inner.cfg.port_range.end());
    if lo > hi {
        return None;
    }
    for _ in 0..512 {
        let p = fastrand::u16(lo..=hi);
        if used.contains(&p) {
            continue;
        }
        if std::net::TcpListener::bind((inner.cfg.bind_ip, p)).is_ok() {
            return Some(p);
        }
    }
    None
}

fn place(
    inner: &Inner,
    s: &mut Store,
    job: &Arc<Value>,
    spec: &GroupSpec,
    index: u32,
    eval_id: &str,
    previous: &str,
) -> String {
    let mut used: BTreeSet<u16> = s
        .allocs
        .values()
        .filter(|a| !a.is_terminal())
        .flat_map(|a| a.ports.values().copied())
        .collect();
    let mut ports = BTreeMap::new();
    let mut port_to = BTreeMap::new();
    for p in &spec.ports {
        let value = match p.static_value {
            Some(v) => v,
            None => pick_port(inner, &used).unwrap_or(0),
        };
        used.insert(value);
        ports.insert(p.label.clone(), value);
        port_to.insert(p.label.clone(), p.to);
    }
    let i = s.touch_allocs();
    let id = uuid::Uuid::new_v4().to_string();
    let now = SystemTime::now();
    let job_id = str_field(job, "ID").to_string();
    let task_states = spec
        .tasks
        .iter()
        .map(|t| (t.name.clone(), TaskState::new()))
        .collect();
    s.allocs.insert(
        id.clone(),
        Alloc {
            id: id.clone(),
            eval_id: eval_id.to_string(),
            name: format!("{job_id}.{}[{index}]", spec.name),
            namespace: str_field(job, "Namespace").to_string(),
            job_id,
            group: spec.name.clone(),
            index,
            job_version: job.get("Version").and_then(Value::as_u64).unwrap_or(0),
            job: job.clone(),
            desired_status: "run".into(),
            desired_description: String::new(),
            client_status: "pending".into(),
            client_description: "No tasks have started".into(),
            task_states,
            deployment_id: None,
            canary: false,
            healthy: None,
            health_time: None,
            health_modify_index: i,
            health_epoch: Instant::now(),
            ports,
            port_to,
            create_index: i,
            modify_index: i,
            create_time: now,
            modify_time: now,
            previous_alloc: previous.to_string(),
            next_alloc: String::new(),
            reschedule_events: Vec::new(),
            followup_eval_id: String::new(),
        },
    );
    if let Some(prev) = s.allocs.get_mut(previous) {
        prev.next_alloc = id.clone();
    }
    id
}

/// The running deployment of `job_id` at `version`, if any: a promotion
/// reconciles again within it instead of starting a new one.
fn running_deployment(s: &Store, job_id: &str, version: u64) -> Option<String> {
    s.deployments
        .values()
        .filter(|d| d.job_id == job_id && d.job_version == version && d.is_active())
        .max_by_key(|d| d.create_index)
        .map(|d| d.id.clone())
}

/// What reconciliation did to one group, for its deployment state.
struct GroupChange {
    group: String,
    /// Allocations placed or updated (their health is evaluated afresh).
    changed: Vec<String>,
    /// Canaries placed so far in this deployment.
    canaries: Vec<String>,
    desired_canaries: u64,
}

/// The job version being reconciled and what it is compared with.
struct Target {
    job: Arc<Value>,
    version: u64,
    job_modify_index: u64,
    eval_id: String,
    /// The running deployment of this version, if one exists already.
    deployment: Option<String>,
}

fn job_modify_index(job: &Value) -> u64 {
    job.get("JobModifyIndex")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Brings the allocations of `job_id` in line with its current version, as
/// Nomad's reconciler does, group by group:
/// - an allocation whose job is the current one (same `JobModifyIndex`) is
///   left alone;
/// - one whose group changed destructively is replaced (new ID, new ports),
///   at most `max_parallel` at a time: the next ones once those placed in
///   the deployment are healthy;
/// - every other allocation of an older job version, changed group or not,
///   is updated in place (same ID, ports and processes; new job version,
///   evaluation and deployment, health judged afresh);
/// - `count` adds or removes allocations by index.
///
/// A group whose `update` block asks for canaries and whose allocations
/// need a destructive update first gets `canary` new allocations next to
/// the old ones, which keep running; only once the deployment is promoted
/// (`POST /v1/deployment/promote/:id`, or `auto_promote` once the canaries
/// are healthy) are the canaries counted as the group's allocations and the
/// old ones replaced.
pub(crate) fn reconcile(inner: &Inner, s: &mut Store, job_id: &str, eval_id: &str) -> Plan {
    let mut plan = Plan::default();
    let job = match s.current_job(job_id) {
        Some(job) if !job.get("Stop").and_then(Value::as_bool).unwrap_or(false) => job.clone(),
        _ => {
            stop_all(s, job_id, &mut plan);
            return plan;
        }
    };
    let version = job.get("Version").and_then(Value::as_u64).unwrap_or(0);
    let target = Target {
        job_modify_index: job_modify_index(&job),
        deployment: running_deployment(s, job_id, version),
        job: Arc::new(job),
        version,
        eval_id: eval_id.to_string(),
    };
    let groups = group_names(&target.job);
    let live: Vec<(String, String, u32)> = s
        .allocs
        .values()
        .filter(|a| a.job_id == job_id && a.is_live())
        .map(|a| (a.id.clone(), a.group.clone(), a.index))
        .collect();
    for (id, g, _) in &live {
        if !groups.contains(g) {
            mark_stop(s, id, "alloc not needed as task group was removed");
            plan.stop.push(id.clone());
        }
    }
    let tracked: Vec<GroupChange> = groups
        .iter()
        .filter_map(|g| reconcile_group(inner, s, &target, g, &live, &mut plan))
        .collect();
    record_deployment(s, &target, job_id, &tracked, &mut plan);
    plan
}

/// Reconciles one group; returns what its deployment must track, if anything.
fn reconcile_group(
    inner: &Inner,
    s: &mut Store,
    t: &Target,
    g: &str,
    live: &[(String, String, u32)],
    plan: &mut Plan,
) -> Option<GroupChange> {
    let spec = GroupSpec::from_job(&t.job, g)?;
    let desired_canaries = if str_field(&t.job, "Type") == "service" {
        spec.update.as_ref().map_or(0, |u| u.canary)
    } else {
        0
    };
    let promoted = t
        .deployment
        .as_ref()
        .and_then(|d| s.deployments.get(d))
        .and_then(|d| d.groups.get(g))
        .is_some_and(|d| d.promoted);
    let (mut canaries, regular) = split_canaries(s, t, g, live, plan);
    let by_index = name_slots(s, promoted, &canaries, &regular, plan);
    let canarying = desired_canaries > 0 && !promoted;
    let mut slots = update_slots(inner, s, t, &spec, &by_index, canarying, plan);
    let waits_for_canaries = canarying && !slots.held.is_empty();
    if waits_for_canaries {
        place_canaries(
            inner,
            s,
            t,
            &spec,
            desired_canaries,
            &slots.held,
            &mut canaries,
            &mut slots.changed,
            plan,
        );
    }
    for idx in 0..spec.count {
        if !by_index.contains_key(&idx) {
            let new_id = place(inner, s, &t.job, &spec, idx, &t.eval_id, "");
            plan.start.push(new_id.clone());
            slots.changed.push(new_id);
        }
    }
    let in_canary_phase = waits_for_canaries || (!canaries.is_empty() && !promoted);
    if slots.changed.is_empty() && !slots.scaled_down && !in_canary_phase {
        return None;
    }
    Some(GroupChange {
        group: g.to_string(),
        changed: slots.changed,
        canaries: canaries.into_iter().map(|(_, id)| id).collect(),
        desired_canaries: if in_canary_phase || promoted {
            desired_canaries
        } else {
            0
        },
    })
}

/// The live allocations of group `g`, split into the canaries of the
/// running deployment and the regular ones; canaries of an older
/// deployment are stopped.
#[allow(clippy::type_complexity)]
fn split_canaries(
    s: &mut Store,
    t: &Target,
    g: &str,
    live: &[(String, String, u32)],
    plan: &mut Plan,
) -> (Vec<(u32, String)>, Vec<(u32, String)>) {
    let mut canaries = Vec::new();
    let mut regular = Vec::new();
    let mut mine: Vec<&(String, String, u32)> = live.iter().filter(|(_, ag, _)| ag == g).collect();
    // Where two allocations share a name, the one at this version stays.
    mine.sort_by_key(|(id, _, _)| s.allocs.get(id).is_none_or(|a| a.job_version != t.version));
    for (id, _, idx) in mine {
        let Some(a) = s.allocs.get(id) else { continue };
        if !a.canary {
            regular.push((*idx, id.clone()));
        } else if t.deployment.is_some() && a.deployment_id == t.deployment {
            canaries.push((*idx, id.clone()));
        } else {
            mark_stop(s, id, "alloc not needed due to job update");
            plan.stop.push(id.clone());
        }
    }
    (canaries, regular)
}

/// One allocation per name index: promoted canaries take the place of the
/// allocations they stand for, which are stopped, as are duplicates.
fn name_slots(
    s: &mut Store,
    promoted: bool,
    canaries: &[(u32, String)],
    regular: &[(u32, String)],
    plan: &mut Plan,
) -> BTreeMap<u32, String> {
    let mut by_index: BTreeMap<u32, String> = BTreeMap::new();
    if promoted {
        for (idx, id) in canaries {
            by_index.insert(*idx, id.clone());
        }
    }
    for (idx, id) in regular {
        if by_index.contains_key(idx) {
            mark_stop(s, id, "alloc not needed due to job update");
            plan.stop.push(id.clone());
        } else {
            by_index.insert(*idx, id.clone());
        }
    }
    by_index
}

/// What [`update_slots`] did to a group's existing allocations.
#[derive(Default)]
struct SlotUpdates {
    /// Placed or updated in place: tracked by the deployment.
    changed: Vec<String>,
    /// Some allocations were stopped because `count` went down.
    scaled_down: bool,
    /// Name indexes whose destructive update waits (for canaries, or for
    /// the `max_parallel` budget).
    held: Vec<u32>,
}

/// How many destructive updates the group may start now (Nomad's
/// `computeUnderProvisionedBy`): `max_parallel`, less the allocations of
/// the running deployment whose health is not decided yet; none while one
/// of them is unhealthy.
fn destructive_budget(s: &Store, t: &Target, spec: &GroupSpec) -> usize {
    let Some(update) = spec.update.as_ref().filter(|u| u.max_parallel > 0) else {
        return usize::MAX;
    };
    let mut budget = usize::try_from(update.max_parallel).unwrap_or(usize::MAX);
    let Some(dep) = &t.deployment else {
        return budget;
    };
    for a in s
        .allocs
        .values()
        .filter(|a| a.group == spec.name && a.is_live() && a.deployment_id.as_ref() == Some(dep))
    {
        match a.healthy {
            Some(false) => return 0,
            None => budget = budget.saturating_sub(1),
            Some(true) => {}
        }
    }
    budget
}

/// Stops allocations beyond `count`, replaces those whose group changed
/// destructively (failed ones too) within the `max_parallel` budget, and
/// moves every other allocation of an older job to this one in place.
fn update_slots(
    inner: &Inner,
    s: &mut Store,
    t: &Target,
    spec: &GroupSpec,
    by_index: &BTreeMap<u32, String>,
    canarying: bool,
    plan: &mut Plan,
) -> SlotUpdates {
    let g = spec.name.as_str();
    let dfp = GroupSpec::destructive_fingerprint(&t.job, g);
    let missing = (0..spec.count)
        .filter(|i| !by_index.contains_key(i))
        .count();
    let mut budget = destructive_budget(s, t, spec).saturating_sub(missing);
    let mut out = SlotUpdates::default();
    for (idx, id) in by_index {
        if *idx >= spec.count {
            mark_stop(s, id, "alloc not needed due to job update");
            plan.stop.push(id.clone());
            out.scaled_down = true;
            continue;
        }
        let Some(a) = s.allocs.get(id) else { continue };
        if a.client_status == "failed" && job_modify_index(&a.job) == t.job_modify_index {
            reschedule_if_due(inner, s, t, spec, *idx, id, plan);
            continue;
        }
        if a.canary || job_modify_index(&a.job) == t.job_modify_index {
            // Already runs this job (a promoted canary, or an earlier pass).
            continue;
        }
        let failed = a.client_status == "failed";
        if failed || GroupSpec::destructive_fingerprint(&a.job, g) != dfp {
            if !failed {
                // Left running until the canaries are promoted, or until
                // the allocations placed so far are healthy.
                if canarying || budget == 0 {
                    out.held.push(*idx);
                    continue;
                }
                budget -= 1;
            }
            mark_stop(s, id, "alloc is being updated due to job update");
            plan.stop.push(id.clone());
            let new_id = place(inner, s, &t.job, spec, *idx, &t.eval_id, id);
            plan.start.push(new_id.clone());
            out.changed.push(new_id);
        } else {
            update_in_place(s, t, id);
            plan.update.push(id.clone());
            out.changed.push(id.clone());
        }
    }
    out
}

/// When the failed allocation `id` may be replaced under its group's
/// reschedule policy, or `None` if never: not a service job, no attempts
/// left, or part of a deployment that is still active (Nomad leaves those
/// to the deployment, which fails or reverts).
fn reschedule_time(s: &Store, id: &str) -> Option<SystemTime> {
    let a = s.allocs.get(id)?;
    if !a.is_live() || a.client_status != "failed" || !a.next_alloc.is_empty() {
        return None;
    }
    if let Some(d) = a.deployment_id.as_ref().and_then(|d| s.deployments.get(d))
        && d.is_active()
    {
        return None;
    }
    let policy = resched::Policy::of(&a.job, &a.group)?;
    resched::next_time(&policy, &a.reschedule_events, a.last_event_time())
}

/// Replaces the failed allocation `id` (same name index, `PreviousAllocation`
/// set, the reschedule events carried) once its reschedule time has come.
fn reschedule_if_due(
    inner: &Inner,
    s: &mut Store,
    t: &Target,
    spec: &GroupSpec,
    idx: u32,
    id: &str,
    plan: &mut Plan,
) {
    let now = SystemTime::now();
    let Some(at) = reschedule_time(s, id) else {
        return;
    };
    // Nomad may place up to a second early (`rescheduleWindowSize`) but its
    // follow-up evaluation waits for the time itself; here the timer does.
    if at > now {
        return;
    }
    let Some(a) = s.allocs.get(id) else { return };
    let Some(policy) = resched::Policy::of(&a.job, &a.group) else {
        return;
    };
    let failed_at = a.last_event_time();
    let event = resched::Event {
        time: now,
        prev_alloc_id: id.to_string(),
        prev_node_id: inner.node.id.clone(),
        delay: resched::next_delay(&policy, &a.reschedule_events, failed_at),
    };
    let events = resched::carried_events(&policy, &a.reschedule_events, now, event);
    mark_stop(s, id, "alloc was rescheduled because it failed");
    plan.stop.push(id.to_string());
    let new_id = place(inner, s, &t.job, spec, idx, &t.eval_id, id);
    if let Some(n) = s.allocs.get_mut(&new_id) {
        n.reschedule_events = events;
    }
    plan.start.push(new_id);
}

/// Called when allocation `id` failed. As in Nomad, an `alloc-failure`
/// evaluation finds it must wait: it creates a follow-up evaluation
/// (`pending`, `WaitUntil` the reschedule time) and marks the allocation
/// with it (`FollowupEvalID`); at that time the follow-up evaluation runs,
/// places the replacement and completes. A reschedule already due runs in
/// the `alloc-failure` evaluation itself. While the allocation's deployment
/// is still active it waits for the deployment to end. Returns at once when
/// no reschedule is due.
pub(crate) fn reschedule_later(inner: &Arc<Inner>, id: &str) {
    if inner.read(|s| reschedule_time(s, id)).is_none() && !in_active_deployment(inner, id) {
        return;
    }
    let inner = inner.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let mut shutdown = inner.shutdown_rx();
        loop {
            let wait = match inner.read(|s| reschedule_time(s, &id)) {
                Some(at) => {
                    inner.mutate(|s| create_followup(s, &id, at));
                    at.duration_since(SystemTime::now()).unwrap_or_default()
                }
                None if in_active_deployment(&inner, &id) => Duration::from_millis(500),
                None => {
                    // Replaced by another evaluation, or no longer to be
                    // replaced: the follow-up evaluation has nothing to do.
                    inner.mutate(|s| {
                        if let Some(f) = s.allocs.get(&id).map(|a| a.followup_eval_id.clone()) {
                            s.complete_eval(&f);
                        }
                    });
                    return;
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let plan = inner.mutate(|s| {
                let a = s.allocs.get(&id)?;
                let (job_id, followup) = (a.job_id.clone(), a.followup_eval_id.clone());
                if reschedule_time(s, &id).is_none_or(|at| at > SystemTime::now()) {
                    return None;
                }
                let job = s.current_job(&job_id).cloned()?;
                let eval_id = if s
                    .evals
                    .get(&followup)
                    .is_some_and(|e| e.status == "pending")
                {
                    followup
                } else {
                    s.add_eval(&job, "alloc-failure", "").0
                };
                let plan = reconcile(&inner, s, &job_id, &eval_id);
                s.complete_eval(&eval_id);
                Some(plan)
            });
            if let Some(plan) = plan {
                apply(&inner, plan);
            }
        }
    });
}

/// The `alloc-failure` evaluation that finds allocation `id` to be
/// rescheduled at `at`, still ahead: it creates the follow-up evaluation and
/// records it in the allocation. Nothing when the time has come (the
/// reschedule runs at once) or the allocation has its follow-up already.
fn create_followup(s: &mut Store, id: &str, at: SystemTime) {
    let Some(a) = s.allocs.get(id) else { return };
    if at <= SystemTime::now() || !a.followup_eval_id.is_empty() {
        return;
    }
    let Some(job) = s.current_job(&a.job_id).cloned() else {
        return;
    };
    let (failure_eval, _) = s.add_eval(&job, "alloc-failure", "");
    let followup = s.add_followup_eval(&job, &failure_eval, at);
    let i = s.touch_allocs();
    if let Some(a) = s.allocs.get_mut(id) {
        a.followup_eval_id = followup;
        a.modify_index = i;
        a.modify_time = SystemTime::now();
    }
}

/// Whether the failed allocation `id` still waits for its active deployment.
fn in_active_deployment(inner: &Inner, id: &str) -> bool {
    inner.read(|s| {
        s.allocs.get(id).is_some_and(|a| {
            a.is_live()
                && a.next_alloc.is_empty()
                && a.deployment_id
                    .as_ref()
                    .and_then(|d| s.deployments.get(d))
                    .is_some_and(Deployment::is_active)
        })
    })
}

/// Nomad's in-place update: the allocation keeps its ID, ports and tasks and
/// moves to the new job version and evaluation; its health is judged again
/// (its runner re-syncs its services).
fn update_in_place(s: &mut Store, t: &Target, id: &str) {
    let i = s.touch_allocs();
    if let Some(a) = s.allocs.get_mut(id) {
        a.job = t.job.clone();
        a.job_version = t.version;
        a.eval_id = t.eval_id.clone();
        a.modify_index = i;
        a.modify_time = SystemTime::now();
        a.healthy = None;
        a.health_time = None;
        a.health_epoch = Instant::now();
    }
}

/// Places canaries, named after the allocations they will replace, until
/// the group has `wanted` of them.
#[allow(clippy::too_many_arguments)]
fn place_canaries(
    inner: &Inner,
    s: &mut Store,
    t: &Target,
    spec: &GroupSpec,
    wanted: u64,
    awaiting: &[u32],
    canaries: &mut Vec<(u32, String)>,
    changed: &mut Vec<String>,
    plan: &mut Plan,
) {
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
    let mut names = awaiting.iter().cycle();
    while canaries.len() < wanted {
        let Some(idx) = names.next().copied() else {
            break;
        };
        let new_id = place(inner, s, &t.job, spec, idx, &t.eval_id, "");
        if let Some(a) = s.allocs.get_mut(&new_id) {
            a.canary = true;
        }
        plan.start.push(new_id.clone());
        changed.push(new_id.clone());
        canaries.push((idx, new_id));
    }
}

/// Adds the tracked groups to the running deployment of this version, or
/// creates one (cancelling older ones) for a service job.
fn record_deployment(
    s: &mut Store,
    t: &Target,
    job_id: &str,
    tracked: &[GroupChange],
    plan: &mut Plan,
) {
    if str_field(&t.job, "Type") != "service" || tracked.is_empty() {
        return;
    }
    if let Some(dep_id) = &t.deployment {
        extend_deployment(s, &t.job, dep_id, tracked);
        return;
    }
    cancel_deployments(s, job_id, "Cancelled due to newer version of job");
    let i = s.touch_deploys();
    let dep_id = uuid::Uuid::new_v4().to_string();
    let now = SystemTime::now();
    let mut deployment = Deployment {
        id: dep_id.clone(),
        namespace: str_field(&t.job, "Namespace").to_string(),
        job_id: job_id.to_string(),
        job_version: t.version,
        job_modify_index: t.job_modify_index,
        job_create_index: t
            .job
            .get("CreateIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        groups: BTreeMap::new(),
        allocs: Vec::new(),
        status: "running".into(),
        status_description: String::new(),
        create_index: i,
        modify_index: i,
        create_time: now,
        modify_time: now,
        priority: t.job.get("Priority").and_then(Value::as_i64).unwrap_or(50),
    };
    add_to_deployment(s, &t.job, &mut deployment, tracked);
    deployment.status_description = deployment.running_description().to_string();
    s.deployments.insert(dep_id.clone(), deployment);
    plan.deployment = Some(dep_id);
}

/// Adds what reconciliation placed or updated to a deployment's groups and
/// resets those allocations' health.
fn add_to_deployment(s: &mut Store, job: &Value, d: &mut Deployment, tracked: &[GroupChange]) {
    let now = SystemTime::now();
    for t in tracked {
        let spec = GroupSpec::from_job(job, &t.group);
        let update = spec.as_ref().and_then(|s| s.update.clone());
        let progress = update
            .as_ref()
            .map_or(Duration::from_secs(600), |u| u.progress_deadline);
        let dg = d
            .groups
            .entry(t.group.clone())
            .or_insert_with(|| DeploymentGroup {
                auto_revert: update.as_ref().is_some_and(|u| u.auto_revert),
                auto_promote: update.as_ref().is_some_and(|u| u.auto_promote),
                promoted: false,
                desired_canaries: 0,
                placed_canaries: Vec::new(),
                desired_total: spec.as_ref().map_or(0, |s| u64::from(s.count)),
                placed_allocs: 0,
                healthy_allocs: 0,
                unhealthy_allocs: 0,
                progress_deadline_ns: u64::try_from(progress.as_nanos()).unwrap_or(u64::MAX),
                require_progress_by: (!progress.is_zero()).then(|| now + progress),
            });
        dg.desired_canaries = dg.desired_canaries.max(t.desired_canaries);
        for c in &t.canaries {
            if !dg.placed_canaries.contains(c) {
                dg.placed_canaries.push(c.clone());
            }
        }
        dg.placed_allocs += t.changed.len() as u64;
        for id in &t.changed {
            if !d.allocs.contains(id) {
                d.allocs.push(id.clone());
            }
            if let Some(a) = s.allocs.get_mut(id) {
                a.deployment_id = Some(d.id.clone());
                a.healthy = None;
                a.health_epoch = Instant::now();
            }
        }
    }
}

/// Adds a promotion's placements to the running deployment `dep_id`.
fn extend_deployment(s: &mut Store, job: &Value, dep_id: &str, tracked: &[GroupChange]) {
    let Some(mut d) = s.deployments.remove(dep_id) else {
        return;
    };
    add_to_deployment(s, job, &mut d, tracked);
    let i = s.touch_deploys();
    d.modify_index = i;
    d.modify_time = SystemTime::now();
    s.deployments.insert(dep_id.to_string(), d);
}

/// Carries out a plan: starts runners, sends stop/update commands, and
/// starts the deployment watcher.
pub(crate) fn apply(inner: &Arc<Inner>, plan: Plan) {
    {
        let mut runners = inner.lock_runners();
        for id in &plan.stop {
            let sent = runners
                .get(id)
                .is_some_and(|h| h.tx.send(RunnerCmd::Stop).is_ok());
            if !sent {
                runner::update_alloc(inner, id, |a| {
                    if !a.is_terminal() {
                        a.client_status = "complete".into();
                    }
                });
            }
        }
        for id in &plan.update {
            if let Some(h) = runners.get(id) {
                let _ = h.tx.send(RunnerCmd::Update);
            }
        }
        if !inner.is_shutting_down() {
            for id in &plan.start {
                runners.insert(id.clone(), runner::start(inner.clone(), id.clone()));
            }
        }
    }
    if let Some(dep) = plan.deployment
        && !inner.is_shutting_down()
    {
        tokio::spawn(watch_deployment(inner.clone(), dep));
    }
}

/// Re-places the allocations of every job that should be running (at start-up).
pub(crate) fn restore(inner: &Arc<Inner>) {
    let ids: Vec<String> = inner.read(|s| s.jobs.keys().cloned().collect());
    for id in ids {
        let plan = inner.mutate(|s| {
            let Some(job) = s.current_job(&id).cloned() else {
                return Plan::default();
            };
            let (eval_id, _) = s.add_eval(&job, "node-update", "");
            reconcile(inner, s, &id, &eval_id)
        });
        apply(inner, plan);
    }
}

/// One tracked allocation as the watcher sees it.
struct Probe {
    id: String,
    failed: bool,
    stopped: bool,
    running: bool,
    decided: bool,
    service_ids: Vec<String>,
    health_check: String,
    min_healthy: Duration,
    deadline: Duration,
    epoch: Instant,
}

impl Probe {
    fn of(a: &Alloc) -> Probe {
        let spec = GroupSpec::from_job(&a.job, &a.group);
        let update = spec.as_ref().and_then(|s| s.update.clone());
        let service_ids = spec
            .as_ref()
            .map(|sp| {
                sp.services
                    .iter()
                    .filter(|svc| svc.provider != "nomad")
                    .map(|svc| service_id(&a.id, &service_owner(&sp.name, svc), svc))
                    .collect()
            })
            .unwrap_or_default();
        Probe {
            id: a.id.clone(),
            failed: a.client_status == "failed",
            stopped: !a.is_live(),
            running: a.client_status == "running",
            decided: a.healthy.is_some(),
            service_ids,
            health_check: update
                .as_ref()
                .map_or("checks".to_string(), |u| u.health_check.clone()),
            min_healthy: update
                .as_ref()
                .map_or(Duration::from_secs(10), |u| u.min_healthy_time),
            deadline: update
                .as_ref()
                .map_or(Duration::from_secs(300), |u| u.healthy_deadline),
            epoch: a.health_epoch,
        }
    }
}

/// The allocations of an active deployment, or `None` once it has ended.
fn probes(inner: &Inner, dep_id: &str) -> Option<Vec<Probe>> {
    inner.read(|s| {
        let d = s.deployments.get(dep_id).filter(|d| d.is_active())?;
        Some(
            d.allocs
                .iter()
                .filter_map(|id| s.allocs.get(id))
                .map(Probe::of)
                .collect(),
        )
    })
}

/// Whether every Consul check of the probe's services passes.
async fn checks_pass(inner: &Inner, p: &Probe) -> bool {
    if p.health_check != "checks" {
        return true;
    }
    for sid in &p.service_ids {
        match inner.consul.health(sid).await {
            Ok(Health::Passing) => {}
            Ok(_) => return false,
            Err(err) => {
                tracing::debug!(service_id = %sid, error = %err, "health read failed");
                return false;
            }
        }
    }
    true
}

/// Health decisions for the undecided allocations: unhealthy when failed,
/// stopped or past `healthy_deadline`; healthy once running with passing
/// checks for `min_healthy_time`.
async fn judge(
    inner: &Inner,
    probes: &[Probe],
    healthy_since: &mut HashMap<String, Instant>,
) -> Vec<(String, bool)> {
    let mut decisions = Vec::new();
    for p in probes.iter().filter(|p| !p.decided) {
        let now = Instant::now();
        if p.failed || p.stopped || now.duration_since(p.epoch) > p.deadline {
            decisions.push((p.id.clone(), false));
            continue;
        }
        if !p.running || p.health_check == "manual" {
            healthy_since.remove(&p.id);
            continue;
        }
        if checks_pass(inner, p).await {
            let since = *healthy_since.entry(p.id.clone()).or_insert(now);
            if now.duration_since(since) >= p.min_healthy {
                decisions.push((p.id.clone(), true));
            }
        } else {
            healthy_since.remove(&p.id);
        }
    }
    decisions
}

/// What follows health decisions, as Nomad's deployment watcher does it: an
/// auto-revert of a failed deployment, the promotion of `auto_promote`
/// canaries, and a new evaluation that continues a rolling update once
/// allocations turned healthy.
fn after_health(inner: &Arc<Inner>, dep_id: &str, decisions: &[(String, bool)]) {
    let revert_to = inner.mutate(|s| apply_health(s, dep_id, decisions));
    if let Some(job) = revert_to
        && let Err(err) = register(inner, job, None, "rollback")
    {
        tracing::error!(deployment = %dep_id, error = %err.msg, "auto-revert failed");
    }
    let auto = inner.read(|s| auto_promotable(s, dep_id));
    if !auto.is_empty() {
        match inner.mutate(|s| promote(inner, s, dep_id, false, &auto)) {
            Ok((_, plan)) => apply(inner, plan),
            Err(err) => {
                tracing::warn!(deployment = %dep_id, error = %err.msg, "auto-promotion failed");
            }
        }
    }
    if decisions.iter().any(|(_, healthy)| *healthy) {
        let plan = inner.mutate(|s| {
            let d = s
                .deployments
                .get(dep_id)
                .filter(|d| d.status == "running")?;
            let job_id = d.job_id.clone();
            let job = s.current_job(&job_id).cloned()?;
            let (eval_id, _) = s.add_eval(&job, "deployment-watcher", dep_id);
            Some(reconcile(inner, s, &job_id, &eval_id))
        });
        if let Some(plan) = plan {
            apply(inner, plan);
        }
    }
}

/// Watches one deployment until it is successful, failed or cancelled.
async fn watch_deployment(inner: Arc<Inner>, dep_id: String) {
    let mut healthy_since: HashMap<String, Instant> = HashMap::new();
    let mut shutdown = inner.shutdown_rx();
    while let Some(probes) = probes(&inner, &dep_id) {
        let decisions = judge(&inner, &probes, &mut healthy_since).await;
        after_health(&inner, &dep_id, &decisions);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Records health decisions and finishes the deployment when possible.
/// Returns a job to re-register when the failure triggers an auto-revert.
fn apply_health(s: &mut Store, dep_id: &str, decisions: &[(String, bool)]) -> Option<Value> {
    let now = SystemTime::now();
    for (id, healthy) in decisions {
        let i = s.touch_allocs();
        if let Some(a) = s.allocs.get_mut(id) {
            a.healthy = Some(*healthy);
            a.health_time = Some(now);
            a.health_modify_index = i;
            a.modify_index = i;
        }
    }
    let d = s.deployments.get(dep_id)?;
    if !d.is_active() {
        return None;
    }
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut all_healthy = true;
    for id in &d.allocs {
        let Some(a) = s.allocs.get(id) else { continue };
        let c = counts.entry(a.group.clone()).or_default();
        match a.healthy {
            Some(true) => c.0 += 1,
            Some(false) => c.1 += 1,
            None => all_healthy = false,
        }
    }
    let any_unhealthy = counts.values().any(|c| c.1 > 0);
    // Nomad's rule: every group has as many healthy allocations as it wants
    // (a rolling update places the later ones once the first are healthy).
    let all_placed = d.groups.iter().all(|(g, dg)| {
        counts.get(g).map_or(0, |c| c.0) >= dg.desired_total.max(dg.desired_canaries)
    });
    let past_deadline = d
        .groups
        .values()
        .any(|g| g.require_progress_by.is_some_and(|t| now > t));
    let changed_counts = d.groups.iter().any(|(g, dg)| {
        let c = counts.get(g).copied().unwrap_or_default();
        (dg.healthy_allocs, dg.unhealthy_allocs) != c
    });
    let (status, desc) = if any_unhealthy {
        ("failed", "Failed due to unhealthy allocations".to_string())
    } else if all_healthy && all_placed && !d.requires_promotion() {
        (
            "successful",
            "Deployment completed successfully".to_string(),
        )
    } else if past_deadline && !d.requires_promotion() {
        ("failed", "Failed due to progress deadline".to_string())
    } else {
        ("running", String::new())
    };
    if status == "running" && !changed_counts {
        return None;
    }
    let auto_revert = d.groups.values().any(|g| g.auto_revert);
    let (job_id, version) = (d.job_id.clone(), d.job_version);
    let mut revert: Option<Value> = None;
    let mut desc = desc;
    if status == "failed" && auto_revert {
        revert = rollback_target(s, &job_id, version);
        if let Some(v) = revert
            .as_ref()
            .and_then(|j| j.get("Version"))
            .and_then(Value::as_u64)
        {
            desc.push_str(&format!(" - rolling back to job version {v}"));
        }
    }
    let i = s.touch_deploys();
    if let Some(d) = s.deployments.get_mut(dep_id) {
        for (g, dg) in d.groups.iter_mut() {
            let c = counts.get(g).copied().unwrap_or_default();
            dg.healthy_allocs = c.0;
            dg.unhealthy_allocs = c.1;
        }
        if status != "running" {
            d.status = status.into();
            d.status_description = desc;
        }
        d.modify_index = i;
        d.modify_time = now;
    }
    if status == "successful" {
        mark_stable(s, &job_id, version);
    }
    revert.map(|j| spec_only(&j))
}

/// The most recent stable version other than `failed_version` whose spec differs.
fn rollback_target(s: &Store, job_id: &str, failed_version: u64) -> Option<Value> {
    let entry = s.jobs.get(job_id)?;
    let failed = entry
        .versions
        .iter()
        .find(|v| v.get("Version").and_then(Value::as_u64) == Some(failed_version))?;
    entry
        .versions
        .iter()
        .rev()
        .filter(|v| v.get("Version").and_then(Value::as_u64) != Some(failed_version))
        .find(|v| v.get("Stable").and_then(Value::as_bool).unwrap_or(false))
        .filter(|v| spec_only(v) != spec_only(failed))
        .cloned()
}

fn mark_stable(s: &mut Store, job_id: &str, version: u64) {
    let i = s.touch_jobs();
    if let Some(entry) = s.jobs.get_mut(job_id) {
        for v in entry.versions.iter_mut() {
            if v.get("Version").and_then(Value::as_u64) == Some(version)
                && let Some(o) = v.as_object_mut()
            {
                o.insert("Stable".into(), json!(true));
                o.insert("ModifyIndex".into(), json!(i));
            }
        }
    }
}

/// `POST /v1/deployment/fail/:id`.
pub(crate) fn fail_deployment(inner: &Arc<Inner>, dep_id: &str) -> Result<Value, ApiError> {
    let (reply, revert) = inner.mutate(|s| -> Result<(Value, Option<Value>), ApiError> {
        let d = s
            .deployments
            .get(dep_id)
            .ok_or_else(|| server_error(format!("deployment not found: {dep_id}")))?;
        if !d.is_active() {
            return Err(server_error("can't fail terminal deployment"));
        }
        let (job_id, version, auto_revert) = (
            d.job_id.clone(),
            d.job_version,
            d.groups.values().any(|g| g.auto_revert),
        );
        let revert = if auto_revert {
            rollback_target(s, &job_id, version)
        } else {
            None
        };
        let reverted = revert
            .as_ref()
            .and_then(|j| j.get("Version"))
            .and_then(Value::as_u64);
        let mut desc = "Deployment marked as failed".to_string();
        if let Some(v) = reverted {
            desc.push_str(&format!(" - rolling back to job version {v}"));
        }
        let i = s.touch_deploys();
        if let Some(d) = s.deployments.get_mut(dep_id) {
            d.status = "failed".into();
            d.status_description = desc;
            d.modify_index = i;
            d.modify_time = SystemTime::now();
        }
        let job = s.current_job(&job_id).cloned().unwrap_or(Value::Null);
        let (eval_id, eval_index) = s.add_eval(&job, "deployment-watcher", dep_id);
        Ok((
            json!({
                "EvalID": eval_id,
                "EvalCreateIndex": eval_index,
                "DeploymentModifyIndex": i,
                "RevertedJobVersion": reverted,
                "Index": s.index,
            }),
            revert,
        ))
    })?;
    if let Some(job) = revert {
        register(inner, spec_only(&job), None, "rollback")?;
    }
    Ok(reply)
}

/// `POST /v1/deployment/promote/:id`: marks the canaries of every group
/// (`All`) or of the named groups healthy-and-promoted, then reconciles so
/// the canaries stand in for the old allocations, which are replaced.
/// Refuses as Nomad does: a terminal deployment, an unhealthy canary, or
/// nothing to promote.
pub(crate) fn promote_deployment(
    inner: &Arc<Inner>,
    dep_id: &str,
    all: bool,
    groups: &[String],
) -> Result<Value, ApiError> {
    if !all && groups.is_empty() {
        return Err(ApiError::bad_request("must specify All or Groups"));
    }
    let (reply, plan) = inner.mutate(|s| promote(inner, s, dep_id, all, groups))?;
    apply(inner, plan);
    Ok(reply)
}

fn promote(
    inner: &Inner,
    s: &mut Store,
    dep_id: &str,
    all: bool,
    groups: &[String],
) -> Result<(Value, Plan), ApiError> {
    let d = s
        .deployments
        .get(dep_id)
        .ok_or_else(|| server_error(format!("deployment not found: {dep_id}")))?;
    if !d.is_active() {
        return Err(server_error("can't promote terminal deployment"));
    }
    for g in groups {
        if !d.groups.contains_key(g) {
            return Err(server_error(format!("deployment has no task group {g:?}")));
        }
    }
    let in_scope = |g: &str| all || groups.iter().any(|x| x == g);
    let mut errs = Vec::new();
    let mut promotable = Vec::new();
    for (g, dg) in d.groups.iter().filter(|(g, _)| in_scope(g)) {
        for id in &dg.placed_canaries {
            let Some(a) = s.allocs.get(id) else { continue };
            if a.is_terminal() || !a.is_live() || a.healthy != Some(true) {
                errs.push(format!(
                    "Canary allocation {id:?} for group {g:?} is not healthy"
                ));
            } else {
                promotable.push(id.clone());
            }
        }
    }
    if !errs.is_empty() {
        let n = errs.len();
        let list: Vec<String> = errs.iter().map(|e| format!("\t* {e}")).collect();
        return Err(server_error(format!(
            "{n} error{} occurred:\n{}\n\n",
            if n == 1 { "" } else { "s" },
            list.join("\n")
        )));
    }
    if promotable.is_empty() {
        return Err(server_error("no canaries to promote"));
    }
    let job_id = d.job_id.clone();
    let i = s.touch_deploys();
    if let Some(d) = s.deployments.get_mut(dep_id) {
        for (g, dg) in d.groups.iter_mut() {
            if in_scope(g) {
                dg.promoted = true;
            }
        }
        if d.status == "running" {
            d.status_description = d.running_description().to_string();
        }
        d.modify_index = i;
        d.modify_time = SystemTime::now();
    }
    let ai = s.touch_allocs();
    for id in &promotable {
        if let Some(a) = s.allocs.get_mut(id) {
            a.canary = false;
            a.health_modify_index = ai;
            a.modify_index = ai;
        }
    }
    let job = s.current_job(&job_id).cloned().unwrap_or(Value::Null);
    let (eval_id, eval_index) = s.add_eval(&job, "deployment-watcher", dep_id);
    let mut plan = reconcile(inner, s, &job_id, &eval_id);
    // Promoted canaries re-register their services with the regular tags.
    plan.update.extend(promotable);
    Ok((
        json!({
            "EvalID": eval_id,
            "EvalCreateIndex": eval_index,
            "DeploymentModifyIndex": i,
            "Index": s.index,
        }),
        plan,
    ))
}

/// Groups of a running deployment whose `auto_promote` canaries are all
/// placed and healthy.
fn auto_promotable(s: &Store, dep_id: &str) -> Vec<String> {
    let Some(d) = s.deployments.get(dep_id).filter(|d| d.status == "running") else {
        return Vec::new();
    };
    d.groups
        .iter()
        .filter(|(_, g)| g.auto_promote && !g.promoted && g.desired_canaries > 0)
        .filter(|(_, g)| {
            g.placed_canaries.len() as u64 >= g.desired_canaries
                && g.placed_canaries
                    .iter()
                    .all(|id| s.allocs.get(id).is_some_and(|a| a.healthy == Some(true)))
        })
        .map(|(name, _)| name.clone())
        .collect()
}
