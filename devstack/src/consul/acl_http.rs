//! ACL enforcement in front of every dev Consul endpoint, as Consul's HTTP
//! layer and RPC endpoints do it.
//!
//! - The token comes from `X-Consul-Token`, else `Authorization: Bearer`,
//!   else `?token=`; none means the anonymous token (no policy: default
//!   deny). An unknown token is `403 ACL not found`.
//! - Single objects need their permission up front and answer `403
//!   Permission denied: token with AccessorID '…' lacks permission
//!   'key:write' on "…"` (KV reads and writes, agent endpoints, registrations,
//!   sessions).
//! - Lists are filtered to what the token may read, like Consul's
//!   `filterACL` (catalog and health reads, agent listings, recursive KV
//!   reads, session lists), with `X-Consul-Results-Filtered-By-ACLs: true`
//!   when something was left out.
//! - `/v1/status/*` needs no token, as in Consul.
//! - `GET /v1/acl/token/self` reads the token the request carries (any
//!   token may; an unknown or missing one is `403 ACL not found`; with ACLs
//!   off, `401 ACL support disabled`). The rest of the ACL API is not
//!   served: tokens and policies are given at start.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::acl::{Access, Caller, ConsulAcl, Resource};
use super::http::{Consistency, Params, json, json_body, text, with_meta};
use super::state::Store;

/// Request and response bodies handled here are bounded like the router's.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What a request needs.
enum Gate {
    /// Nothing (status endpoints, unknown routes).
    Open,
    /// One permission, checked before the handler runs.
    Need(Resource, Access, String),
    /// Several permissions, all needed.
    NeedAll(Vec<(Resource, Access, String)>),
    /// `KeyWritePrefix` (recursive KV delete).
    KeyWritePrefix(String),
    /// The answer is filtered to what the token may read.
    Filter(Filter),
    /// Both: a permission, then a filtered answer.
    NeedThenFilter(Resource, Access, String, Filter),
}

#[derive(Clone, Copy)]
enum Filter {
    /// `[{"Key": ...}]` or `["key", ...]` (`?recurse`, `?keys`).
    Kv,
    /// `{"name": [tags]}` (`/v1/catalog/services`).
    ServiceNames,
    /// `{"id": {"Service": name}}` (`/v1/agent/services`).
    AgentServices,
    /// `{"id": {"Node", "ServiceName"}}` (`/v1/agent/checks`).
    AgentChecks,
    /// `[{"Node": name, "ServiceName"?}]` (catalog and health lists, checks).
    NodeAndService,
    /// `[{"Node": {"Node": name}, ...}]` (`/v1/health/service/:name`).
    HealthEntries,
    /// `[{"Node": name}]` sessions: session read on their node.
    Sessions,
}

/// The state the middleware needs.
pub(crate) type AclState = (Arc<Store>, Arc<ConsulAcl>);

/// The token a request carries, as Consul's HTTP layer reads it.
fn request_token(req: &Request, params: &Params) -> String {
    let headers = req.headers();
    if let Some(t) = headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    {
        return t.trim().to_owned();
    }
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = auth.trim().splitn(2, ' ');
        if let (Some(scheme), Some(value)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return value.trim().to_owned();
        }
    }
    params.get("token").unwrap_or("").to_owned()
}

pub(crate) async fn enforce(
    State((store, acl)): State<AclState>,
    req: Request,
    next: Next,
) -> Response {
    let params = Params::parse(req.uri().query());
    let path = req.uri().path().to_owned();
    if path.starts_with("/v1/status/") {
        return next.run(req).await;
    }
    let Some(caller) = acl.resolve(&request_token(&req, &params)) else {
        return text(StatusCode::FORBIDDEN, "ACL not found");
    };
    // Registrations name what they register in the body.
    let method = req.method().clone();
    let (req, body) = if method == Method::PUT && needs_body(&path) {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = to_bytes(body, BODY_LIMIT).await else {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
        };
        let json = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        (Request::from_parts(parts, Body::from(bytes)), json)
    } else {
        (req, Value::Null)
    };
    let gate = gate(&store, &method, &path, &params, &body);
    let filter = match gate {
        Gate::Open => None,
        Gate::Need(r, a, name) => {
            if let Some(denied) = check(&caller, &[(r, a, name)]) {
                return denied;
            }
            None
        }
        Gate::NeedAll(needs) => {
            if let Some(denied) = check(&caller, &needs) {
                return denied;
            }
            None
        }
        Gate::KeyWritePrefix(prefix) => {
            if !caller.allows_key_write_prefix(&prefix) {
                return text(
                    StatusCode::FORBIDDEN,
                    caller.denial(Resource::Key, Access::Write, &prefix),
                );
            }
            None
        }
        Gate::Filter(f) => Some(f),
        Gate::NeedThenFilter(r, a, name, f) => {
            if let Some(denied) = check(&caller, &[(r, a, name)]) {
                return denied;
            }
            Some(f)
        }
    };
    let resp = next.run(req).await;
    match filter {
        Some(f) if resp.status() == StatusCode::OK => {
            filter_response(resp, f, &caller, params.present("pretty")).await
        }
        _ => resp,
    }
}

fn needs_body(path: &str) -> bool {
    matches!(
        path,
        "/v1/agent/service/register"
            | "/v1/agent/check/register"
            | "/v1/catalog/register"
            | "/v1/catalog/deregister"
            | "/v1/session/create"
    )
}

fn check(caller: &Caller, needs: &[(Resource, Access, String)]) -> Option<Response> {
    needs
        .iter()
        .find(|(r, a, name)| !caller.allows(*r, name, *a))
        .map(|(r, a, name)| text(StatusCode::FORBIDDEN, caller.denial(*r, *a, name)))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The permission a request needs, from its method, path and body.
fn gate(store: &Store, method: &Method, path: &str, params: &Params, body: &Value) -> Gate {
    let node = store.node.name.clone();
    let service_name_of = |id: &str| store.read(|i| i.services.get(id).map(|s| s.name.clone()));
    let check_target = |id: &str| {
        store.read(|i| {
            let svc = i
                .checks
                .get(id)
                .map(|c| c.service_id.clone())
                .filter(|s| !s.is_empty());
            match svc {
                Some(sid) => i
                    .services
                    .get(&sid)
                    .map(|s| (Resource::Service, s.name.clone())),
                None => Some((Resource::Node, store.node.name.clone())),
            }
        })
    };
    if let Some(key) = path
        .strip_prefix("/v1/kv/")
        .or_else(|| (path == "/v1/kv").then_some(""))
    {
        let key = key.to_owned();
        return match *method {
            Method::GET if params.present("recurse") || params.present("keys") => {
                Gate::Filter(Filter::Kv)
            }
            Method::GET => Gate::Need(Resource::Key, Access::Read, key),
            Method::DELETE if params.present("recurse") => Gate::KeyWritePrefix(key),
            _ => Gate::Need(Resource::Key, Access::Write, key),
        };
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "agent", "self"] => Gate::Need(Resource::Agent, Access::Read, node),
        ["v1", "agent", "service", "register"] => {
            let name = str_field(body, "Name").unwrap_or("").to_owned();
            Gate::Need(Resource::Service, Access::Write, name)
        }
        ["v1", "agent", "service", "deregister", id] => match service_name_of(id) {
            Some(name) => Gate::Need(Resource::Service, Access::Write, name),
            None => Gate::Open,
        },
        ["v1", "agent", "service", id] => match service_name_of(id) {
            Some(name) => Gate::Need(Resource::Service, Access::Read, name),
            None => Gate::Open,
        },
        ["v1", "agent", "services"] => Gate::Filter(Filter::AgentServices),
        ["v1", "agent", "checks"] => Gate::Filter(Filter::AgentChecks),
        ["v1", "agent", "check", "register"] => {
            match str_field(body, "ServiceID").map(&service_name_of) {
                Some(Some(name)) => Gate::Need(Resource::Service, Access::Write, name),
                Some(None) => Gate::Open,
                None => Gate::Need(Resource::Node, Access::Write, node),
            }
        }
        [
            "v1",
            "agent",
            "check",
            "pass" | "warn" | "fail" | "update" | "deregister",
            id,
        ] => match check_target(id) {
            Some((resource, name)) => Gate::Need(resource, Access::Write, name),
            None => Gate::Open,
        },
        ["v1", "agent", "health", "service", "id", id] => match service_name_of(id) {
            Some(name) => Gate::Need(Resource::Service, Access::Read, name),
            None => Gate::Open,
        },
        ["v1", "agent", "health", "service", "name", name] => {
            Gate::Need(Resource::Service, Access::Read, (*name).to_owned())
        }
        ["v1", "catalog", "register"] => {
            let mut needs = vec![(
                Resource::Node,
                Access::Write,
                str_field(body, "Node").unwrap_or("").to_owned(),
            )];
            if let Some(svc) = body.get("Service").and_then(|s| str_field(s, "Service")) {
                needs.push((Resource::Service, Access::Write, svc.to_owned()));
            }
            Gate::NeedAll(needs)
        }
        ["v1", "catalog", "deregister"] => Gate::Need(
            Resource::Node,
            Access::Write,
            str_field(body, "Node").unwrap_or("").to_owned(),
        ),
        ["v1", "catalog", "services"] => Gate::Filter(Filter::ServiceNames),
        ["v1", "catalog", "nodes"] => Gate::Filter(Filter::NodeAndService),
        ["v1", "catalog", "service", name] => Gate::NeedThenFilter(
            Resource::Service,
            Access::Read,
            (*name).to_owned(),
            Filter::NodeAndService,
        )
        .filtering_when_denied(),
        ["v1", "health", "service", name] => Gate::NeedThenFilter(
            Resource::Service,
            Access::Read,
            (*name).to_owned(),
            Filter::HealthEntries,
        )
        .filtering_when_denied(),
        ["v1", "health", "checks", name] => Gate::NeedThenFilter(
            Resource::Service,
            Access::Read,
            (*name).to_owned(),
            Filter::NodeAndService,
        )
        .filtering_when_denied(),
        ["v1", "health", "state", _] => Gate::Filter(Filter::NodeAndService),
        ["v1", "session", "create"] => {
            let on = str_field(body, "Node").unwrap_or(&node).to_owned();
            Gate::Need(Resource::Session, Access::Write, on)
        }
        ["v1", "session", "destroy" | "renew", id] => {
            match store.read(|i| i.sessions.get(*id).map(|s| s.node.clone())) {
                Some(on) => Gate::Need(Resource::Session, Access::Write, on),
                None => Gate::Open,
            }
        }
        ["v1", "session", "info" | "node" | "list", ..] => Gate::Filter(Filter::Sessions),
        _ => Gate::Open,
    }
}

impl Gate {
    /// Consul answers a catalog or health read of a service the token may
    /// not read with an empty, filtered list rather than a 403: the
    /// permission turns into a filter on the service name.
    fn filtering_when_denied(self) -> Self {
        match self {
            Gate::NeedThenFilter(_, _, _, f) => Gate::Filter(f),
            other => other,
        }
    }
}

/// Whether one listed item may be seen.
fn visible(caller: &Caller, f: Filter, item: &Value) -> bool {
    let readable = |r: Resource, name: &str| caller.allows(r, name, Access::Read);
    let service_ok = |v: &Value| match str_field(v, "ServiceName") {
        Some(s) => readable(Resource::Service, s),
        None => true,
    };
    match f {
        Filter::Kv => match item {
            Value::String(k) => readable(Resource::Key, k),
            other => str_field(other, "Key").is_some_and(|k| readable(Resource::Key, k)),
        },
        Filter::ServiceNames => true,
        Filter::AgentServices => {
            str_field(item, "Service").is_some_and(|s| readable(Resource::Service, s))
        }
        Filter::AgentChecks | Filter::NodeAndService => {
            let node_ok = str_field(item, "Node").is_none_or(|n| readable(Resource::Node, n));
            // Catalog entries and service checks name their service in
            // `ServiceName`; node checks and nodes have none.
            node_ok && service_ok(item)
        }
        Filter::HealthEntries => {
            let node_ok = item
                .get("Node")
                .and_then(|n| str_field(n, "Node"))
                .is_some_and(|n| readable(Resource::Node, n));
            let svc_ok = item
                .get("Service")
                .and_then(|s| str_field(s, "Service"))
                .is_some_and(|s| readable(Resource::Service, s));
            node_ok && svc_ok
        }
        Filter::Sessions => str_field(item, "Node").is_some_and(|n| readable(Resource::Session, n)),
    }
}

async fn filter_response(resp: Response, f: Filter, caller: &Caller, pretty: bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response body unreadable",
        );
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut removed = false;
    match &mut doc {
        Value::Array(items) => {
            let before = items.len();
            items.retain(|item| visible(caller, f, item));
            removed = items.len() != before;
        }
        Value::Object(map) => {
            let before = map.len();
            match f {
                Filter::ServiceNames => {
                    map.retain(|name, _| caller.allows(Resource::Service, name, Access::Read));
                }
                _ => map.retain(|_, item| visible(caller, f, item)),
            }
            removed = map.len() != before;
        }
        _ => {}
    }
    if removed {
        parts.headers.insert(
            "X-Consul-Results-Filtered-By-ACLs",
            HeaderValue::from_static("true"),
        );
    }
    let out = json_body(&doc, pretty);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// `GET /v1/acl/token/self`, as Consul's `ACLTokenSelf` answers it.
pub(crate) async fn token_self(
    State(acl): State<Option<Arc<ConsulAcl>>>,
    req: Request,
) -> Response {
    let Some(acl) = acl else {
        return text(StatusCode::UNAUTHORIZED, "ACL support disabled");
    };
    let params = Params::parse(req.uri().query());
    match acl.token_self(&request_token(&req, &params)) {
        Some(token) => {
            let index = token["ModifyIndex"].as_u64().unwrap_or(1);
            with_meta(
                json(&token, params.present("pretty")),
                index,
                Consistency::Leader,
            )
        }
        None => text(StatusCode::FORBIDDEN, "ACL not found"),
    }
}
