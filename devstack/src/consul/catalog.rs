//! Catalog, health and status reads: `/v1/catalog/*`, `/v1/health/*`,
//! `/v1/status/*`.
//!
//! Every catalog/health read is a blocking query. The index of a
//! per-service read (`/health/service/:name`, `/catalog/service/:name`,
//! `/health/checks/:name`) moves only when an instance of that service or one
//! of its checks changes, so a discovery watcher of service A sleeps through
//! KV writes and through changes to service B. `?passing` and `?tag` are
//! applied after the query, so the index reflects the unfiltered set, as in
//! Consul.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::Value;

use super::catalog_ext;
use super::http::{ApiError, Params, QueryOpts, json, with_meta};
use super::render;
use super::state::{CRITICAL, Inner, PASSING, Service, Store, WARNING};

/// The dev server is its own (only) raft peer; Consul reports the server RPC
/// address, port 8300.
fn server_addr(store: &Store) -> String {
    format!("{}:8300", store.node.address)
}

pub(crate) async fn status_leader(State(store): State<Arc<Store>>) -> Response {
    json(&server_addr(&store), false)
}

pub(crate) async fn status_peers(State(store): State<Arc<Store>>) -> Response {
    json(&[server_addr(&store)], false)
}

fn apply_filter(entries: Vec<Value>, opts: &QueryOpts) -> Vec<Value> {
    match &opts.filter {
        Some(f) => entries.into_iter().filter(|e| f.matches(e)).collect(),
        None => entries,
    }
}

/// `?tag=` (repeatable): an instance must carry every listed tag, compared
/// without regard to case.
fn has_tags(svc: &Service, wanted: &[&str]) -> bool {
    wanted.iter().all(|w| {
        let w = w.to_lowercase();
        svc.tags.iter().any(|t| t.to_lowercase() == w)
    })
}

/// `GET /v1/health/service/:name`.
pub(crate) async fn health_service(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    let passing = params.flag("passing")?;
    let tags = params.all("tag");
    store.block(&opts, |inner| inner.service_index(&name)).await;
    let (index, entries) = store.read(|inner| {
        let mut entries: Vec<Value> = inner
            .services
            .values()
            .filter(|s| s.name == name && has_tags(s, &tags))
            .map(|s| render::health_entry(s, &store.node, inner))
            .collect();
        entries.extend(
            catalog_ext::services(inner)
                .filter(|(_, s)| s.name == name && has_tags(s, &tags))
                .map(|(n, s)| catalog_ext::health_entry(n, s)),
        );
        (inner.service_index(&name), entries)
    });
    let mut entries = apply_filter(entries, &opts);
    if passing {
        entries.retain(|e| {
            e.get("Checks")
                .and_then(Value::as_array)
                .is_none_or(|checks| {
                    checks
                        .iter()
                        .all(|c| c.get("Status").and_then(Value::as_str) == Some(PASSING))
                })
        });
    }
    Ok(with_meta(
        json(&entries, opts.pretty),
        index,
        opts.consistency,
    ))
}

/// `GET /v1/health/checks/:name`: the checks of every instance of a service.
pub(crate) async fn health_checks(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    store.block(&opts, |inner| inner.service_index(&name)).await;
    let (index, checks) = store.read(|inner| {
        let mut checks: Vec<Value> = inner
            .checks
            .values()
            .filter(|c| {
                inner
                    .services
                    .get(&c.service_id)
                    .is_some_and(|s| s.name == name)
            })
            .map(|c| render::check(c, &store.node, inner))
            .collect();
        checks.extend(
            catalog_ext::checks(inner)
                .filter(|(n, c)| {
                    n.services
                        .get(&c.service_id)
                        .is_some_and(|s| s.name == name)
                })
                .map(|(n, c)| catalog_ext::check_json(n, c)),
        );
        (inner.service_index(&name), checks)
    });
    let checks = apply_filter(checks, &opts);
    Ok(with_meta(
        json(&checks, opts.pretty),
        index,
        opts.consistency,
    ))
}

/// `GET /v1/health/state/:state` (`any`, `passing`, `warning`, `critical`).
pub(crate) async fn health_state(
    State(store): State<Arc<Store>>,
    Path(state): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    if !matches!(state.as_str(), "any" | PASSING | WARNING | CRITICAL) {
        return Err(ApiError::bad_request("Invalid check state"));
    }
    let index_of = |inner: &Inner| inner.checks_index;
    store.block(&opts, index_of).await;
    let (index, checks) = store.read(|inner| {
        let mut all = vec![render::serf_check(&store.node, inner)];
        all.extend(
            inner
                .checks
                .values()
                .map(|c| render::check(c, &store.node, inner)),
        );
        all.extend(catalog_ext::checks(inner).map(|(n, c)| catalog_ext::check_json(n, c)));
        let checks: Vec<Value> = all
            .into_iter()
            .filter(|c| {
                state == "any" || c.get("Status").and_then(Value::as_str) == Some(state.as_str())
            })
            .collect();
        (index_of(inner), checks)
    });
    let checks = apply_filter(checks, &opts);
    Ok(with_meta(
        json(&checks, opts.pretty),
        index,
        opts.consistency,
    ))
}

/// `GET /v1/catalog/services`: service name to the union of its tags.
pub(crate) async fn catalog_services(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    let index_of = |inner: &Inner| inner.services_index;
    store.block(&opts, index_of).await;
    let (index, out) = store.read(|inner| {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let local = inner
            .services
            .values()
            .map(|s| (s, render::catalog_service(s, &store.node, inner)));
        let external = catalog_ext::services(inner)
            .map(|(n, s)| (s, catalog_ext::catalog_service(n, s, inner)));
        for (svc, rendered) in local.chain(external) {
            if let Some(f) = &opts.filter
                && !f.matches(&rendered)
            {
                continue;
            }
            let tags = out.entry(svc.name.clone()).or_default();
            for tag in &svc.tags {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        (index_of(inner), out)
    });
    Ok(with_meta(json(&out, opts.pretty), index, opts.consistency))
}

/// `GET /v1/catalog/service/:name`.
pub(crate) async fn catalog_service(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    let tags = params.all("tag");
    store.block(&opts, |inner| inner.service_index(&name)).await;
    let (index, entries) = store.read(|inner| {
        let mut entries: Vec<Value> = inner
            .services
            .values()
            .filter(|s| s.name == name && has_tags(s, &tags))
            .map(|s| render::catalog_service(s, &store.node, inner))
            .collect();
        entries.extend(
            catalog_ext::services(inner)
                .filter(|(_, s)| s.name == name && has_tags(s, &tags))
                .map(|(n, s)| catalog_ext::catalog_service(n, s, inner)),
        );
        (inner.service_index(&name), entries)
    });
    let entries = apply_filter(entries, &opts);
    Ok(with_meta(
        json(&entries, opts.pretty),
        index,
        opts.consistency,
    ))
}

/// `GET /v1/catalog/nodes`: the agent's node and any external nodes.
pub(crate) async fn catalog_nodes(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    let index_of = |inner: &Inner| inner.nodes_table_index();
    store.block(&opts, index_of).await;
    let (index, nodes) = store.read(|inner| {
        let mut nodes = vec![render::node(&store.node, inner)];
        nodes.extend(inner.ext_nodes.values().map(catalog_ext::node_json));
        // Consul lists nodes in name order.
        nodes.sort_by(|a, b| a["Node"].as_str().cmp(&b["Node"].as_str()));
        (index_of(inner), nodes)
    });
    let nodes = apply_filter(nodes, &opts);
    Ok(with_meta(
        json(&nodes, opts.pretty),
        index,
        opts.consistency,
    ))
}
