//! `/v1/agent/...`: service and check registration, TTL updates, and the
//! agent's local views (`services`, `checks`, `health/service/...`).
//!
//! Registration bodies arrive from the Go client in CamelCase, from config
//! tooling in snake_case, and Go's decoder matches field names without
//! regard to case. Keys are therefore canonicalised first (case and `_`/`-`
//! insensitive, plus the `Args` alias of `ScriptArgs`) before typed decoding.
//! User-data maps (`Meta`, `Header`) keep their keys untouched.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::duration;
use super::http::{ApiError, Params, json, text};
use super::render;
use super::state::{
    CRITICAL, CheckDef, CheckKind, NewCheck, PASSING, Service, Store, TaggedAddress, TtlError,
    WARNING, Weights,
};

const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "TaggedAddresses",
    "EnableTagOverride",
    "Weights",
    "Check",
    "Checks",
    "Kind",
    "Namespace",
    "Partition",
    "SocketPath",
    "Proxy",
    "Connect",
];

const CHECK_FIELDS: &[&str] = &[
    "ID",
    "CheckID",
    "Name",
    "Notes",
    "Status",
    "ServiceID",
    "ScriptArgs",
    "HTTP",
    "Header",
    "Method",
    "Body",
    "TCP",
    "TTL",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "TLSServerName",
    "TLSSkipVerify",
    "DisableRedirects",
    "GRPC",
    "GRPCUseTLS",
    "DockerContainerID",
    "Shell",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
    "Namespace",
    "Output",
    "H2PING",
    "UDP",
    "AliasNode",
    "AliasService",
    "OSService",
];

fn squash(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Renames the keys of a JSON object to their canonical spelling; unknown
/// keys are dropped, as Go's decoder ignores them.
fn canon_object(
    value: Value,
    fields: &[&'static str],
    aliases: &[(&str, &'static str)],
) -> Map<String, Value> {
    let Value::Object(map) = value else {
        return Map::new();
    };
    let mut out = Map::new();
    for (key, v) in map {
        let squashed = squash(&key);
        let canonical = fields
            .iter()
            .find(|f| squash(f) == squashed)
            .or_else(|| aliases.iter().find(|(a, _)| *a == squashed).map(|(_, f)| f));
        if let Some(name) = canonical {
            out.insert((*name).to_owned(), v);
        }
    }
    out
}

fn canon_check(value: Value) -> Value {
    Value::Object(canon_object(value, CHECK_FIELDS, &[("args", "ScriptArgs")]))
}

fn canon_service(value: Value) -> Value {
    let mut map = canon_object(value, SERVICE_FIELDS, &[]);
    if let Some(check) = map.remove("Check") {
        map.insert("Check".into(), canon_check(check));
    }
    if let Some(Value::Array(checks)) = map.remove("Checks") {
        map.insert(
            "Checks".into(),
            Value::Array(checks.into_iter().map(canon_check).collect()),
        );
    }
    if let Some(Value::Object(tagged)) = map.remove("TaggedAddresses") {
        let tagged: Map<String, Value> = tagged
            .into_iter()
            .map(|(k, v)| (k, Value::Object(canon_object(v, &["Address", "Port"], &[]))))
            .collect();
        map.insert("TaggedAddresses".into(), Value::Object(tagged));
    }
    if let Some(weights) = map.remove("Weights") {
        map.insert(
            "Weights".into(),
            Value::Object(canon_object(weights, &["Passing", "Warning"], &[])),
        );
    }
    Value::Object(map)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTagged {
    #[serde(rename = "Address")]
    address: Option<String>,
    #[serde(rename = "Port")]
    port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWeights {
    #[serde(rename = "Passing")]
    passing: Option<i64>,
    #[serde(rename = "Warning")]
    warning: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawService {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<Vec<String>>,
    #[serde(rename = "Address")]
    address: Option<String>,
    #[serde(rename = "Port")]
    port: Option<i64>,
    #[serde(rename = "Meta")]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "TaggedAddresses")]
    tagged_addresses: Option<BTreeMap<String, RawTagged>>,
    #[serde(rename = "EnableTagOverride")]
    enable_tag_override: Option<bool>,
    #[serde(rename = "Weights")]
    weights: Option<RawWeights>,
    #[serde(rename = "Kind")]
    kind: Option<String>,
    #[serde(rename = "Check")]
    check: Option<RawCheck>,
    #[serde(rename = "Checks")]
    checks: Option<Vec<RawCheck>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCheck {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Notes")]
    notes: Option<String>,
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "ServiceID")]
    service_id: Option<String>,
    #[serde(rename = "ScriptArgs")]
    script_args: Option<Vec<String>>,
    #[serde(rename = "HTTP")]
    http: Option<String>,
    #[serde(rename = "Header")]
    header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename = "Method")]
    method: Option<String>,
    #[serde(rename = "Body")]
    body: Option<String>,
    #[serde(rename = "TCP")]
    tcp: Option<String>,
    #[serde(rename = "GRPC")]
    grpc: Option<String>,
    #[serde(rename = "TTL")]
    ttl: Value,
    #[serde(rename = "Interval")]
    interval: Value,
    #[serde(rename = "Timeout")]
    timeout: Value,
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    deregister_after: Value,
    #[serde(rename = "TLSServerName")]
    tls_server_name: Option<String>,
    #[serde(rename = "TLSSkipVerify")]
    tls_skip_verify: Option<bool>,
    #[serde(rename = "DisableRedirects")]
    disable_redirects: Option<bool>,
    #[serde(rename = "SuccessBeforePassing")]
    success_before_passing: Option<u32>,
    #[serde(rename = "FailuresBeforeWarning")]
    failures_before_warning: Option<u32>,
    #[serde(rename = "FailuresBeforeCritical")]
    failures_before_critical: Option<u32>,
}

impl RawCheck {
    fn is_blank(&self) -> bool {
        self.ttl.is_null()
            && self.http.as_deref().unwrap_or("").is_empty()
            && self.tcp.as_deref().unwrap_or("").is_empty()
            && self.grpc.as_deref().unwrap_or("").is_empty()
            && self.script_args.as_ref().is_none_or(Vec::is_empty)
            && self.check_id.is_none()
            && self.id.is_none()
            && self.name.is_none()
    }
}

fn decode<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request decode failed: empty body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

fn dur(value: &Value, field: &str) -> Result<Option<Duration>, ApiError> {
    duration::parse_json(value)
        .map(|d| d.filter(|d| !d.is_zero()))
        .map_err(|e| ApiError::bad_request(format!("Invalid check: {field}: {e}")))
}

fn valid_status(status: &str) -> bool {
    matches!(status, PASSING | WARNING | CRITICAL)
}

/// Validates a check and turns it into a definition plus its (optional)
/// initial status.
fn build_check_def(raw: &RawCheck) -> Result<(CheckDef, Option<String>), ApiError> {
    let ttl = dur(&raw.ttl, "TTL")?;
    let interval = dur(&raw.interval, "Interval")?;
    let timeout = dur(&raw.timeout, "Timeout")?;
    let deregister_after = dur(&raw.deregister_after, "DeregisterCriticalServiceAfter")?;
    let http = raw.http.clone().unwrap_or_default();
    let tcp = raw.tcp.clone().unwrap_or_default();
    let grpc = raw.grpc.clone().unwrap_or_default();
    let script_args = raw.script_args.clone().unwrap_or_default();
    let kind = if ttl.is_some() {
        CheckKind::Ttl
    } else if !http.is_empty() {
        CheckKind::Http
    } else if !tcp.is_empty() {
        CheckKind::Tcp
    } else if !grpc.is_empty() {
        CheckKind::Grpc
    } else if !script_args.is_empty() {
        CheckKind::Script
    } else {
        return Err(ApiError::bad_request(
            "Invalid check: one of TTL, HTTP, TCP, GRPC or Args must be set",
        ));
    };
    if kind == CheckKind::Ttl && interval.is_some() {
        return Err(ApiError::bad_request(
            "Invalid check: Interval and TTL cannot both be specified",
        ));
    }
    if matches!(
        kind,
        CheckKind::Http | CheckKind::Tcp | CheckKind::Script | CheckKind::Grpc
    ) && interval.is_none()
    {
        return Err(ApiError::bad_request(
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
        ));
    }
    let status = match raw.status.as_deref() {
        None | Some("") => None,
        Some(s) if valid_status(s) => Some(s.to_owned()),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "Invalid check status: {s:?}"
            )));
        }
    };
    let def = CheckDef {
        kind,
        http,
        method: raw.method.clone().unwrap_or_default(),
        header: raw.header.clone().unwrap_or_default(),
        body: raw.body.clone().unwrap_or_default(),
        tcp,
        grpc,
        script_args,
        ttl,
        interval,
        timeout,
        deregister_after,
        tls_server_name: raw.tls_server_name.clone().unwrap_or_default(),
        tls_skip_verify: raw.tls_skip_verify.unwrap_or(false),
        disable_redirects: raw.disable_redirects.unwrap_or(false),
        success_before_passing: raw.success_before_passing.unwrap_or(0),
        failures_before_warning: raw.failures_before_warning.unwrap_or(0),
        failures_before_critical: raw.failures_before_critical.unwrap_or(0),
    };
    Ok((def, status))
}

fn unspecified_ip(address: &str) -> bool {
    let trimmed = address.trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

fn replace_flag(params: &Params) -> Result<bool, ApiError> {
    match params.get("replace-existing-checks") {
        None => Ok(false),
        Some("") => Ok(true),
        Some(v) => match v {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
            "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
            _ => Err(ApiError::bad_request(
                "Invalid value for ?replace-existing-checks",
            )),
        },
    }
}

/// `PUT /v1/agent/service/register`.
pub(crate) async fn service_register(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let replace = replace_flag(&params)?;
    let raw_svc: RawService = decode(canon_service(parse_body(&body)?))?;
    let name = raw_svc.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    let id = raw_svc
        .id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    let address = raw_svc.address.clone().unwrap_or_default();
    if unspecified_ip(&address) {
        return Err(ApiError::bad_request(format!(
            "Invalid Service Address: {address:?} is not a valid address"
        )));
    }
    let port = raw_svc.port.unwrap_or(0);
    if !(0..=65535).contains(&port) {
        return Err(ApiError::bad_request(format!(
            "Invalid Service Port: {port}"
        )));
    }
    let mut tagged_addresses = BTreeMap::new();
    for (tag, addr) in raw_svc.tagged_addresses.unwrap_or_default() {
        let address = addr.address.unwrap_or_default();
        if unspecified_ip(&address) {
            return Err(ApiError::bad_request(format!(
                "Invalid Tagged address for {tag:?}: {address:?} is not a valid address"
            )));
        }
        tagged_addresses.insert(
            tag,
            TaggedAddress {
                address,
                port: addr.port.unwrap_or(0),
            },
        );
    }
    let weights = raw_svc
        .weights
        .map(|w| Weights {
            passing: w.passing.unwrap_or(1),
            warning: w.warning.unwrap_or(1),
        })
        .unwrap_or_default();
    if weights.passing < 1 {
        return Err(ApiError::bad_request("Passing must be greater than 0"));
    }

    let mut raw_checks: Vec<RawCheck> = Vec::new();
    if let Some(check) = raw_svc.check.filter(|c| !c.is_blank()) {
        raw_checks.push(check);
    }
    raw_checks.extend(
        raw_svc
            .checks
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !c.is_blank()),
    );
    let many = raw_checks.len() > 1;
    let mut checks = Vec::with_capacity(raw_checks.len());
    for (i, rc) in raw_checks.iter().enumerate() {
        let (def, status) = build_check_def(rc)?;
        let check_id = rc
            .check_id
            .clone()
            .or_else(|| rc.id.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if many {
                    format!("service:{id}:{}", i + 1)
                } else {
                    format!("service:{id}")
                }
            });
        let check_name = rc
            .name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("Service '{name}' check"));
        checks.push(NewCheck {
            id: check_id,
            name: check_name,
            notes: rc.notes.clone().unwrap_or_default(),
            service_id: id.clone(),
            status,
            def,
        });
    }
    let svc = Service {
        id: id.clone(),
        name,
        tags: raw_svc.tags.unwrap_or_default(),
        address,
        port,
        meta: raw_svc.meta.unwrap_or_default(),
        tagged_addresses,
        enable_tag_override: raw_svc.enable_tag_override.unwrap_or(false),
        weights,
        kind: raw_svc.kind.unwrap_or_default(),
        create_index: 0,
        modify_index: 0,
    };
    let now = Instant::now();
    let changed = store.write(|inner| inner.register_service(svc, checks, replace, now));
    tracing::debug!(service_id = %id, changed, "consul: service registered");
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/service/deregister/:id`; an unknown ID is a no-op.
pub(crate) async fn service_deregister(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> Response {
    let removed = store.write(|inner| inner.deregister_service(&id));
    tracing::debug!(service_id = %id, removed, "consul: service deregistered");
    StatusCode::OK.into_response()
}

/// `GET /v1/agent/services`: map of service ID to service.
pub(crate) async fn services(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let filter = parse_filter(&params)?;
    let out: Map<String, Value> = store.read(|inner| {
        inner
            .services
            .values()
            .map(|s| (s.id.clone(), render::agent_service(s, &store.node)))
            .filter(|(_, v)| filter.as_ref().is_none_or(|f| f.matches(v)))
            .collect()
    });
    Ok(json(&out, params.present("pretty")))
}

/// `GET /v1/agent/service/:id`.
pub(crate) async fn service(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let svc = store.read(|inner| {
        inner
            .services
            .get(&id)
            .map(|s| render::agent_service(s, &store.node))
    });
    match svc {
        Some(v) => Ok(json(&v, params.present("pretty"))),
        None => Err(ApiError::not_found(format!("unknown service ID: {id}"))),
    }
}

/// `GET /v1/agent/checks`: map of check ID to check.
pub(crate) async fn checks(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let filter = parse_filter(&params)?;
    let out: Map<String, Value> = store.read(|inner| {
        inner
            .checks
            .values()
            .map(|c| (c.id.clone(), render::check(c, &store.node, inner)))
            .filter(|(_, v)| filter.as_ref().is_none_or(|f| f.matches(v)))
            .collect()
    });
    Ok(json(&out, params.present("pretty")))
}

fn parse_filter(params: &Params) -> Result<Option<super::filter::Filter>, ApiError> {
    match params.get("filter") {
        None | Some("") => Ok(None),
        Some(expr) => super::filter::Filter::parse(expr).map(Some).map_err(|e| {
            ApiError::bad_request(format!(
                "Failed to create boolean expression evaluator: {e}"
            ))
        }),
    }
}

/// `PUT /v1/agent/check/register`.
pub(crate) async fn check_register(
    State(store): State<Arc<Store>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let raw: RawCheck = decode(canon_check(parse_body(&body)?))?;
    let name = raw.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing check name"));
    }
    let (def, status) = build_check_def(&raw)?;
    let id = raw
        .check_id
        .clone()
        .or_else(|| raw.id.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let service_id = raw.service_id.clone().unwrap_or_default();
    let now = Instant::now();
    let result = store.write(|inner| {
        if !service_id.is_empty() && !inner.services.contains_key(&service_id) {
            return Err(ApiError::bad_request(format!(
                "ServiceID {service_id:?} does not exist"
            )));
        }
        inner.register_check(
            NewCheck {
                id,
                name,
                notes: raw.notes.clone().unwrap_or_default(),
                service_id: service_id.clone(),
                status,
                def,
            },
            now,
        );
        Ok(())
    });
    result.map(|()| StatusCode::OK.into_response())
}

/// `PUT /v1/agent/check/deregister/:id`.
pub(crate) async fn check_deregister(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> Response {
    store.write(|inner| inner.deregister_check(&id));
    StatusCode::OK.into_response()
}

fn ttl_update(store: &Store, id: &str, status: &str, output: String) -> Result<Response, ApiError> {
    let now = Instant::now();
    match store.write(|inner| inner.ttl_update(id, status, output, now)) {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(TtlError::Unknown) => Err(ApiError::not_found(format!(
            "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
        ))),
        Err(TtlError::NotTtl) => Err(ApiError::internal(format!(
            "CheckID {id:?} does not have associated TTL"
        ))),
    }
}

/// `PUT /v1/agent/check/pass/:id`.
pub(crate) async fn check_pass(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let note = Params::parse(raw.as_deref())
        .get("note")
        .unwrap_or("")
        .to_owned();
    ttl_update(&store, &id, PASSING, note)
}

/// `PUT /v1/agent/check/warn/:id`.
pub(crate) async fn check_warn(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let note = Params::parse(raw.as_deref())
        .get("note")
        .unwrap_or("")
        .to_owned();
    ttl_update(&store, &id, WARNING, note)
}

/// `PUT /v1/agent/check/fail/:id`.
pub(crate) async fn check_fail(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let note = Params::parse(raw.as_deref())
        .get("note")
        .unwrap_or("")
        .to_owned();
    ttl_update(&store, &id, CRITICAL, note)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUpdate {
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "Output")]
    output: Option<String>,
}

/// `PUT /v1/agent/check/update/:id` with `{Status, Output}`.
pub(crate) async fn check_update(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = canon_object(parse_body(&body)?, &["Status", "Output"], &[]);
    let update: RawUpdate = decode(Value::Object(value))?;
    let status = update.status.unwrap_or_default();
    if !valid_status(&status) {
        return Err(ApiError::bad_request(format!(
            "Invalid check status: {status:?}"
        )));
    }
    ttl_update(&store, &id, &status, update.output.unwrap_or_default())
}

fn aggregate(statuses: impl Iterator<Item = String>) -> &'static str {
    let mut worst = PASSING;
    for s in statuses {
        match s.as_str() {
            CRITICAL => return CRITICAL,
            WARNING => worst = WARNING,
            _ => {}
        }
    }
    worst
}

fn health_code(status: &str) -> StatusCode {
    match status {
        PASSING => StatusCode::OK,
        WARNING => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn wants_text(params: &Params, headers: &HeaderMap) -> bool {
    params.get("format") == Some("text")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"))
}

/// `GET /v1/agent/health/service/id/:id`: the status code carries the
/// aggregated health (200 passing, 429 warning, 503 critical, 404 unknown).
pub(crate) async fn health_by_id(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let text_mode = wants_text(&params, &headers);
    let found = store.read(|inner| {
        let svc = inner.services.get(&id)?;
        let checks: Vec<Value> = inner
            .checks
            .values()
            .filter(|c| c.service_id == id)
            .map(|c| render::check(c, &store.node, inner))
            .collect();
        let status = aggregate(
            inner
                .checks
                .values()
                .filter(|c| c.service_id == id)
                .map(|c| c.status.clone()),
        );
        Some((
            status,
            render::agent_health_service(svc, &store.node),
            checks,
        ))
    });
    let Some((status, service, checks)) = found else {
        let msg = format!("ServiceId {id} not found");
        return if text_mode {
            text(StatusCode::NOT_FOUND, msg)
        } else {
            let body =
                serde_json::json!({"AggregatedStatus": CRITICAL, "Service": null, "Checks": null});
            let mut resp = json(&body, params.present("pretty"));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        };
    };
    let code = health_code(status);
    if text_mode {
        return text(code, status);
    }
    let body =
        serde_json::json!({"AggregatedStatus": status, "Service": service, "Checks": checks});
    let mut resp = json(&body, params.present("pretty"));
    *resp.status_mut() = code;
    resp
}

/// `GET /v1/agent/health/service/name/:name`: every local instance; the
/// status code is the worst aggregated status (404 when none).
pub(crate) async fn health_by_name(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let text_mode = wants_text(&params, &headers);
    let entries: Vec<(&'static str, Value)> = store.read(|inner| {
        inner
            .services
            .values()
            .filter(|s| s.name == name)
            .map(|svc| {
                let checks: Vec<Value> = inner
                    .checks
                    .values()
                    .filter(|c| c.service_id == svc.id)
                    .map(|c| render::check(c, &store.node, inner))
                    .collect();
                let status = aggregate(
                    inner
                        .checks
                        .values()
                        .filter(|c| c.service_id == svc.id)
                        .map(|c| c.status.clone()),
                );
                let body = serde_json::json!({
                    "AggregatedStatus": status,
                    "Service": render::agent_health_service(svc, &store.node),
                    "Checks": checks,
                });
                (status, body)
            })
            .collect()
    });
    if entries.is_empty() {
        return text(
            StatusCode::NOT_FOUND,
            format!("ServiceName {name} Not Found"),
        );
    }
    let status = aggregate(entries.iter().map(|(s, _)| (*s).to_owned()));
    let code = health_code(status);
    if text_mode {
        return text(code, status);
    }
    let bodies: Vec<Value> = entries.into_iter().map(|(_, b)| b).collect();
    let mut resp = json(&bodies, params.present("pretty"));
    *resp.status_mut() = code;
    resp
}
