//! The Nomad-compatible HTTP routes.
//!
//! Reads are blocking queries (`hashi/tests/fixtures/README.md` §N1): `?index=N` waits until the
//! endpoint's index exceeds N or `?wait` (Go duration, default and cap 300 s)
//! runs out, and every read carries `X-Nomad-Index`, `X-Nomad-KnownLeader`
//! and `X-Nomad-LastContact`. Writes carry `X-Nomad-Index` too. Errors are
//! text/plain with Nomad's status codes: 400 for malformed requests, 404 for
//! unknown objects, 500 for everything the server rejects (including CAS
//! conflicts, which clients match by message prefix).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sched;
use super::state::{Store, render_alloc, render_deployment, render_eval};
use super::util::parse_go_duration;
use super::{ApiError, Inner};

type Shared = Arc<Inner>;
type Params = Query<HashMap<String, String>>;

/// Longest a blocking query may wait (Nomad's `MaxBlockingRPCQueryTime`).
const MAX_WAIT: Duration = Duration::from_secs(300);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.msg).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(index) = self.index {
            insert_meta(h, index);
        }
        resp
    }
}

/// The query metadata headers of every read (and of writes' index).
fn insert_meta(h: &mut http::HeaderMap, index: u64) {
    if let Ok(v) = HeaderValue::from_str(&index.max(1).to_string()) {
        h.insert("x-nomad-index", v);
    }
    h.insert("x-nomad-knownleader", HeaderValue::from_static("true"));
    h.insert("x-nomad-lastcontact", HeaderValue::from_static("0"));
}

pub(crate) fn router(inner: Shared) -> Router {
    Router::new()
        .route(
            "/v1/jobs",
            get(jobs_list).post(job_register).put(job_register),
        )
        .route("/v1/jobs/parse", post(jobs_parse).put(jobs_parse))
        .route(
            "/v1/job/{id}",
            get(job_get)
                .post(job_update)
                .put(job_update)
                .delete(job_stop),
        )
        .route("/v1/job/{id}/versions", get(job_versions))
        .route("/v1/job/{id}/revert", post(job_revert).put(job_revert))
        .route("/v1/job/{id}/plan", post(job_plan).put(job_plan))
        .route("/v1/job/{id}/allocations", get(job_allocations))
        .route("/v1/job/{id}/deployment", get(job_deployment))
        .route("/v1/job/{id}/deployments", get(job_deployments))
        .route("/v1/job/{id}/evaluations", get(job_evaluations))
        .route("/v1/job/{id}/summary", get(job_summary))
        .route("/v1/deployments", get(deployments_list))
        .route("/v1/deployment/{id}", get(deployment_get))
        .route(
            "/v1/deployment/allocations/{id}",
            get(deployment_allocations),
        )
        .route(
            "/v1/deployment/promote/{id}",
            post(deployment_promote).put(deployment_promote),
        )
        .route(
            "/v1/deployment/fail/{id}",
            post(deployment_fail).put(deployment_fail),
        )
        .route("/v1/allocations", get(allocations_list))
        .route("/v1/allocation/{id}", get(allocation_get))
        .route("/v1/evaluations", get(evaluations_list))
        .route("/v1/evaluation/{id}", get(evaluation_get))
        .route(
            "/v1/evaluation/{id}/allocations",
            get(evaluation_allocations),
        )
        .route("/v1/acl/token/self", get(acl_token_self))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Invalid URL") })
        .with_state(inner)
}

async fn acl_token_self(State(inner): State<Shared>, req: axum::extract::Request) -> Response {
    match super::acl::token_self(inner.cfg.acl.as_deref(), &req) {
        Ok((index, token)) => json_response(StatusCode::OK, index, &token),
        Err(e) => e.into_response(),
    }
}

fn json_response(status: StatusCode, index: u64, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert_meta(h, index);
    resp
}

/// Runs `f` as a Nomad blocking query.
async fn blocking<F>(inner: &Shared, q: &HashMap<String, String>, f: F) -> Response
where
    F: Fn(&Store) -> Result<(u64, Value), ApiError>,
{
    if let Some(stale) = q.get("stale")
        && !matches!(stale.as_str(), "" | "true" | "false")
    {
        return ApiError::bad_request(format!("Failed to parse value of stale: {stale}"))
            .into_response();
    }
    let min_index = match q.get("index").map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(i)) => i,
        Some(Err(_)) => return ApiError::bad_request("Invalid index").into_response(),
    };
    let wait = match q.get("wait").map(|w| parse_go_duration(w)) {
        None => MAX_WAIT,
        Some(Some(w)) => w.min(MAX_WAIT),
        Some(None) => return ApiError::bad_request("Invalid wait time").into_response(),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = inner.index_rx();
    let mut shutdown = inner.shutdown_rx();
    loop {
        changes.borrow_and_update();
        // A not-found answer with a table index blocks like a found one:
        // a client waits for the object to appear.
        let (index, answer) = match inner.read(&f) {
            Ok((index, body)) => (index, Ok(body)),
            Err(e) => match e.index {
                Some(index) => (index, Err(e)),
                None => return e.into_response(),
            },
        };
        let respond = |answer: Result<Value, ApiError>| match answer {
            Ok(body) => json_response(StatusCode::OK, index, &body),
            Err(e) => e.into_response(),
        };
        if min_index == 0
            || index > min_index
            || tokio::time::Instant::now() >= deadline
            || *shutdown.borrow()
        {
            return respond(answer);
        }
        tokio::select! {
            r = changes.changed() => { if r.is_err() { return respond(answer); } }
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
}

fn decode<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decoding failed: {e}")))
}

/// A 404 of a blocking read, carrying the index of the table searched.
fn not_found(what: &str, index: u64) -> ApiError {
    ApiError {
        index: Some(index),
        ..ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

fn write_reply(r: &sched::WriteReply) -> Response {
    json_response(
        StatusCode::OK,
        r.index,
        &json!({
            "EvalID": r.eval_id,
            "EvalCreateIndex": r.eval_create_index,
            "JobModifyIndex": r.job_modify_index,
            "Warnings": "",
            "Index": r.index,
            "LastContact": 0,
            "KnownLeader": true,
        }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterBody {
    #[serde(default)]
    job: Option<Value>,
    #[serde(default)]
    enforce_index: bool,
    #[serde(default)]
    job_modify_index: u64,
}

async fn do_register(
    inner: &Shared,
    path_id: Option<&str>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let req: RegisterBody = decode(body)?;
    let job = match req.job {
        Some(j @ Value::Object(_)) => j,
        _ => return Err(ApiError::bad_request("Job must be specified")),
    };
    let id = job.get("ID").and_then(Value::as_str).unwrap_or("");
    if id.is_empty() {
        return Err(ApiError::bad_request("Job ID hasn't been provided"));
    }
    if let Some(p) = path_id
        && p != id
    {
        return Err(ApiError::bad_request("Job ID does not match name"));
    }
    let enforce = req.enforce_index.then_some(req.job_modify_index);
    let reply = sched::register(inner, job, enforce, "job-register")?;
    Ok(write_reply(&reply))
}

async fn job_register(State(inner): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    do_register(&inner, None, &body).await
}

async fn job_update(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    do_register(&inner, Some(&id), &body).await
}

async fn jobs_list(State(inner): State<Shared>, q: Params) -> Response {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    blocking(&inner, &q, |s| {
        let list: Vec<Value> = s
            .jobs
            .iter()
            .filter(|(id, _)| id.starts_with(&prefix))
            .filter_map(|(_, e)| e.current())
            .map(|j| s.render_job_stub(j))
            .collect();
        Ok((s.jobs_index.max(s.allocs_index), Value::Array(list)))
    })
    .await
}

async fn job_get(State(inner): State<Shared>, Path(id): Path<String>, q: Params) -> Response {
    blocking(&inner, &q, |s| {
        let job = s
            .current_job(&id)
            .ok_or_else(|| not_found("job", s.jobs_index))?;
        let idx = job.get("ModifyIndex").and_then(Value::as_u64).unwrap_or(0);
        Ok((idx, s.render_job(job)))
    })
    .await
}

async fn job_versions(State(inner): State<Shared>, Path(id): Path<String>, q: Params) -> Response {
    blocking(&inner, &q, |s| {
        let entry = s.jobs.get(&id).ok_or_else(|| not_found("job", s.jobs_index))?;
        let idx = entry
            .versions
            .iter()
            .filter_map(|v| v.get("ModifyIndex").and_then(Value::as_u64))
            .max()
            .unwrap_or(0);
        let versions: Vec<Value> = entry
            .versions
            .iter()
            .rev()
            .map(|v| {
                let status = s.job_status(v);
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.insert("Status".into(), json!(status));
                }
                v
            })
            .collect();
        Ok((
            idx,
            json!({"Versions": versions, "Diffs": null, "Index": idx, "LastContact": 0, "KnownLeader": true}),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PlanBody {
    #[serde(default)]
    job: Option<Value>,
    #[serde(default)]
    diff: bool,
}

/// `POST /v1/job/:id/plan`.
async fn job_plan(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PlanBody = decode(&body)?;
    let job = match req.job {
        Some(j @ Value::Object(_)) => j,
        _ => return Err(ApiError::bad_request("Job must be specified")),
    };
    match job.get("ID").and_then(Value::as_str) {
        None | Some("") => return Err(ApiError::bad_request("Job must have a valid ID")),
        Some(job_id) if job_id != id => {
            return Err(ApiError::bad_request("Job ID does not match"));
        }
        Some(_) => {}
    }
    let reply = super::plan::plan(&inner, job, req.diff)?;
    let idx = reply.get("Index").and_then(Value::as_u64).unwrap_or(0);
    Ok(json_response(StatusCode::OK, idx, &reply))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RevertBody {
    #[serde(rename = "JobID", default)]
    job_id: String,
    #[serde(default)]
    job_version: u64,
    #[serde(default)]
    enforce_prior_version: Option<u64>,
}

async fn job_revert(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: RevertBody = decode(&body)?;
    if req.job_id != id {
        return Err(ApiError::bad_request("Job ID does not match"));
    }
    let reply = sched::revert(&inner, &id, req.job_version, req.enforce_prior_version)?;
    Ok(write_reply(&reply))
}

async fn job_stop(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    // Go's strconv.ParseBool forms (clients send `True`, `1`, ...).
    let purge = match q.get("purge").map(String::as_str) {
        None | Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
        Some("" | "true" | "1" | "t" | "T" | "TRUE" | "True") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Failed to parse value of \"purge\" ({other}) as a bool"
            )));
        }
    };
    let reply = sched::stop_job(&inner, &id, purge)?;
    Ok(json_response(
        StatusCode::OK,
        reply.index,
        &json!({
            "EvalID": reply.eval_id,
            "EvalCreateIndex": reply.eval_create_index,
            "JobModifyIndex": reply.job_modify_index,
            "Index": reply.index,
            "LastContact": 0,
            "KnownLeader": true,
        }),
    ))
}

async fn job_allocations(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let node = inner.node.clone();
    blocking(&inner, &q, |s| {
        let mut list: Vec<&super::state::Alloc> =
            s.allocs.values().filter(|a| a.job_id == id).collect();
        list.sort_by_key(|a| std::cmp::Reverse(a.create_index));
        let out: Vec<Value> = list.iter().map(|a| render_alloc(a, &node, false)).collect();
        Ok((s.allocs_index, Value::Array(out)))
    })
    .await
}

fn job_deployments_sorted<'a>(s: &'a Store, id: &str) -> Vec<&'a super::state::Deployment> {
    let mut list: Vec<_> = s.deployments.values().filter(|d| d.job_id == id).collect();
    list.sort_by_key(|d| std::cmp::Reverse(d.create_index));
    list
}

async fn job_deployment(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    blocking(&inner, &q, |s| {
        let latest = job_deployments_sorted(s, &id)
            .first()
            .map(|d| render_deployment(d));
        Ok((s.deploys_index, latest.unwrap_or(Value::Null)))
    })
    .await
}

async fn job_deployments(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    blocking(&inner, &q, |s| {
        let list: Vec<Value> = job_deployments_sorted(s, &id)
            .into_iter()
            .map(render_deployment)
            .collect();
        Ok((s.deploys_index, Value::Array(list)))
    })
    .await
}

async fn job_evaluations(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    blocking(&inner, &q, |s| {
        let mut list: Vec<_> = s.evals.values().filter(|e| e.job_id == id).collect();
        list.sort_by_key(|e| std::cmp::Reverse(e.create_index));
        Ok((
            s.evals_index,
            Value::Array(list.into_iter().map(render_eval).collect()),
        ))
    })
    .await
}

async fn job_summary(State(inner): State<Shared>, Path(id): Path<String>, q: Params) -> Response {
    blocking(&inner, &q, |s| {
        let job = s
            .current_job(&id)
            .ok_or_else(|| not_found("job", s.jobs_index))?;
        let summary = s.render_summary(job);
        let idx = summary
            .get("ModifyIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok((idx, summary))
    })
    .await
}

async fn deployments_list(State(inner): State<Shared>, q: Params) -> Response {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    blocking(&inner, &q, |s| {
        let mut list: Vec<_> = s
            .deployments
            .values()
            .filter(|d| d.id.starts_with(&prefix))
            .collect();
        list.sort_by_key(|d| std::cmp::Reverse(d.create_index));
        Ok((
            s.deploys_index,
            Value::Array(list.into_iter().map(render_deployment).collect()),
        ))
    })
    .await
}

async fn deployment_get(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    blocking(&inner, &q, |s| {
        let d = s
            .deployments
            .get(&id)
            .ok_or_else(|| not_found("deployment", s.deploys_index))?;
        Ok((d.modify_index, render_deployment(d)))
    })
    .await
}

async fn deployment_allocations(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let node = inner.node.clone();
    blocking(&inner, &q, |s| {
        let out: Vec<Value> = s
            .allocs
            .values()
            .filter(|a| a.deployment_id.as_deref() == Some(id.as_str()))
            .map(|a| render_alloc(a, &node, false))
            .collect();
        Ok((s.allocs_index, Value::Array(out)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PromoteBody {
    #[serde(rename = "DeploymentID", default)]
    deployment_id: String,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

async fn deployment_promote(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PromoteBody = decode(&body)?;
    if req.deployment_id != id {
        return Err(ApiError::bad_request("Deployment ID does not match"));
    }
    let reply =
        sched::promote_deployment(&inner, &id, req.all, req.groups.as_deref().unwrap_or(&[]))?;
    let idx = reply.get("Index").and_then(Value::as_u64).unwrap_or(0);
    Ok(json_response(StatusCode::OK, idx, &reply))
}

async fn deployment_fail(
    State(inner): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reply = sched::fail_deployment(&inner, &id)?;
    let idx = reply.get("Index").and_then(Value::as_u64).unwrap_or(0);
    Ok(json_response(StatusCode::OK, idx, &reply))
}

async fn allocations_list(State(inner): State<Shared>, q: Params) -> Response {
    let node = inner.node.clone();
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    blocking(&inner, &q, |s| {
        let out: Vec<Value> = s
            .allocs
            .values()
            .filter(|a| a.id.starts_with(&prefix))
            .map(|a| render_alloc(a, &node, false))
            .collect();
        Ok((s.allocs_index, Value::Array(out)))
    })
    .await
}

async fn allocation_get(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let node = inner.node.clone();
    blocking(&inner, &q, |s| {
        let a = s
            .allocs
            .get(&id)
            .ok_or_else(|| not_found("alloc", s.allocs_index))?;
        Ok((a.modify_index, render_alloc(a, &node, true)))
    })
    .await
}

async fn evaluations_list(State(inner): State<Shared>, q: Params) -> Response {
    blocking(&inner, &q, |s| {
        let mut list: Vec<_> = s.evals.values().collect();
        list.sort_by_key(|e| std::cmp::Reverse(e.create_index));
        Ok((
            s.evals_index,
            Value::Array(list.into_iter().map(render_eval).collect()),
        ))
    })
    .await
}

async fn evaluation_get(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    blocking(&inner, &q, |s| {
        let e = s
            .evals
            .get(&id)
            .ok_or_else(|| not_found("eval", s.evals_index))?;
        Ok((e.create_index, render_eval(e)))
    })
    .await
}

/// `GET /v1/evaluation/:id/allocations`: the allocations an evaluation
/// placed or updated (an unknown evaluation lists none, as in Nomad).
async fn evaluation_allocations(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let node = inner.node.clone();
    blocking(&inner, &q, |s| {
        let out: Vec<Value> = s
            .allocs
            .values()
            .filter(|a| a.eval_id == id)
            .map(|a| render_alloc(a, &node, false))
            .collect();
        Ok((s.allocs_index, Value::Array(out)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParseBody {
    #[serde(rename = "JobHCL", default)]
    job_hcl: String,
    #[serde(default)]
    canonicalize: bool,
    #[serde(default)]
    variables: Option<String>,
}

async fn jobs_parse(State(inner): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: ParseBody = decode(&body)?;
    if req.job_hcl.trim().is_empty() {
        return Err(ApiError::bad_request("Job spec is empty"));
    }
    let mut job = super::hcl::parse_job(&req.job_hcl, req.variables.as_deref())
        .map_err(|e| ApiError::bad_request(format!("Failed to parse job: {e}")))?;
    if req.canonicalize {
        super::spec::canonicalize(&mut job);
    }
    let idx = inner.read(|s| s.index);
    Ok(json_response(StatusCode::OK, idx, &job))
}

async fn status_leader(State(inner): State<Shared>) -> Response {
    let idx = inner.read(|s| s.index);
    json_response(
        StatusCode::OK,
        idx,
        &json!(format!("{}:4647", inner.cfg.bind_ip)),
    )
}

async fn status_peers(State(inner): State<Shared>) -> Response {
    let idx = inner.read(|s| s.index);
    json_response(
        StatusCode::OK,
        idx,
        &json!([format!("{}:4647", inner.cfg.bind_ip)]),
    )
}
