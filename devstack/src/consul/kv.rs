//! `/v1/kv/<key>`: GET (blocking; `raw`, `recurse`, `keys`, `separator`),
//! PUT (raw body; `cas`, `flags`, `acquire`, `release`; the lock forms are
//! in `session`) and DELETE (`recurse`, `cas`).
//!
//! A missing key is a 404 that still carries `X-Consul-Index` (the KV table
//! index), so a client can block until the key appears. A single key's index
//! is its ModifyIndex; a prefix's is the highest ModifyIndex (or delete
//! index) beneath it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::http::{ApiError, Params, QueryOpts, json, with_meta};
use super::render;
use super::state::{Inner, Store};

/// Consul's default `kv_max_value_size`.
pub(crate) const MAX_VALUE_SIZE: usize = 512 * 1024;

pub(crate) async fn get_root(
    state: State<Arc<Store>>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    get_key(state, Path(String::new()), query).await
}

pub(crate) async fn put_root(query: RawQuery) -> Result<Response, ApiError> {
    let _ = query;
    Err(ApiError::bad_request("Missing key name"))
}

pub(crate) async fn delete_root(
    state: State<Arc<Store>>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    delete_key(state, Path(String::new()), query).await
}

enum Mode {
    Single,
    Recurse,
    Keys(Option<String>),
}

pub(crate) async fn get_key(
    State(store): State<Arc<Store>>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    let mode = if params.present("keys") {
        let sep = params
            .get("separator")
            .or_else(|| params.get("seperator"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Mode::Keys(sep)
    } else if params.present("recurse") {
        Mode::Recurse
    } else {
        Mode::Single
    };
    let index_of = |inner: &Inner| match mode {
        Mode::Single => inner.kv_key_index(&key),
        Mode::Recurse | Mode::Keys(_) => inner.kv_prefix_index(&key),
    };
    store.block(&opts, index_of).await;

    let (index, resp) = store.read(|inner| {
        let index = index_of(inner);
        let resp = match &mode {
            Mode::Single => match inner.kv.get(&key) {
                None => not_found(),
                Some(entry) if params.present("raw") => raw_value(&entry.value),
                Some(entry) => {
                    let entries = vec![render::kv_entry(entry)];
                    filtered_json(entries, &opts)
                }
            },
            Mode::Recurse => {
                let entries: Vec<_> = prefixed(inner, &key).map(render::kv_entry).collect();
                if entries.is_empty() {
                    not_found()
                } else {
                    filtered_json(entries, &opts)
                }
            }
            Mode::Keys(sep) => {
                let mut keys: Vec<String> = Vec::new();
                for entry in prefixed(inner, &key) {
                    let shown = match sep {
                        Some(sep) => {
                            let rest = entry.key.get(key.len()..).unwrap_or("");
                            match rest.find(sep.as_str()) {
                                Some(pos) => {
                                    format!("{key}{}", rest.get(..pos + sep.len()).unwrap_or(rest))
                                }
                                None => entry.key.clone(),
                            }
                        }
                        None => entry.key.clone(),
                    };
                    if keys.last() != Some(&shown) {
                        keys.push(shown);
                    }
                }
                if keys.is_empty() && !key.is_empty() {
                    not_found()
                } else {
                    json(&keys, opts.pretty)
                }
            }
        };
        (index, resp)
    });
    Ok(with_meta(resp, index, opts.consistency))
}

fn prefixed<'a>(
    inner: &'a Inner,
    prefix: &'a str,
) -> impl Iterator<Item = &'a super::state::KvEntry> {
    inner
        .kv
        .range(prefix.to_owned()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(_, e)| e)
}

fn filtered_json(entries: Vec<serde_json::Value>, opts: &QueryOpts) -> Response {
    let entries: Vec<_> = match &opts.filter {
        Some(f) => entries.into_iter().filter(|e| f.matches(e)).collect(),
        None => entries,
    };
    json(&entries, opts.pretty)
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

fn raw_value(value: &[u8]) -> Response {
    let mut resp = (StatusCode::OK, value.to_vec()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    resp
}

pub(crate) async fn put_key(
    State(store): State<Arc<Store>>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let cas = params.u64("cas", "Invalid cas index")?;
    let flags = params.u64("flags", "Invalid flags")?.unwrap_or(0);
    let flags_set = ["cas", "acquire", "release"]
        .iter()
        .filter(|f| params.has(f))
        .count();
    if flags_set > 1 {
        return Err(ApiError::bad_request(
            "Conflicting flags: cas, acquire, release",
        ));
    }
    if body.len() > MAX_VALUE_SIZE {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
                body.len()
            ),
        });
    }
    let pretty = params.present("pretty");
    let now = tokio::time::Instant::now();
    let ok = if let Some(session) = params.get("acquire") {
        store
            .write(|inner| inner.kv_acquire(&key, body.to_vec(), flags, session, now))
            .map_err(|e| ApiError::internal(e.0))?
    } else if let Some(session) = params.get("release") {
        store
            .write(|inner| inner.kv_release(&key, body.to_vec(), flags, session))
            .map_err(|e| ApiError::internal(e.0))?
    } else {
        store.write(|inner| inner.kv_put(&key, body.to_vec(), flags, cas))
    };
    Ok(json(&ok, pretty))
}

pub(crate) async fn delete_key(
    State(store): State<Arc<Store>>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let cas = params.u64("cas", "Invalid cas index")?;
    let recurse = params.present("recurse");
    if cas.is_some() && recurse {
        return Err(ApiError::bad_request("Conflicting flags: cas, recurse"));
    }
    let pretty = params.present("pretty");
    let ok = store.write(|inner| {
        if recurse {
            inner.kv_delete_tree(&key);
            true
        } else {
            inner.kv_delete(&key, cas)
        }
    });
    Ok(json(&ok, pretty))
}
