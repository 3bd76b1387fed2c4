//! HTTP plumbing shared by every endpoint: query-string parsing, the
//! blocking-query options, error bodies and response metadata headers.
//!
//! Consul's query flags are presence flags (`?recurse`, `?stale=`), some are
//! repeatable (`?tag=a&tag=b`), so the raw query string is parsed here rather
//! than through a typed extractor that would reject or collapse them.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::duration;
use super::filter::Filter;

/// Default blocking time when `wait` is absent, as in Consul.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Upper bound on `wait`; larger requests are clamped, not rejected.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// An error answered as a `text/plain` body with a status code, the way
/// Consul's HTTP layer reports every failure.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text(self.status, self.message)
    }
}

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Parsed query string: ordered `(key, value)` pairs, with `value = ""` for
/// bare flags.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let Some(raw) = raw else {
            return Self::default();
        };
        let pairs = raw
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| match part.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(part), String::new()),
            })
            .collect();
        Self(pairs)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A presence flag that may also carry a Go-style boolean. Bare or empty
    /// means true; an unparsable value is a 400 naming the parameter.
    pub(crate) fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(v) => parse_go_bool(v)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid value for ?{key}"))),
        }
    }

    /// A presence flag where any value counts as set (Consul ignores the value
    /// of `recurse`, `keys`, `raw`, `stale`, ...).
    pub(crate) fn present(&self, key: &str) -> bool {
        self.has(key)
    }

    pub(crate) fn u64(&self, key: &str, err: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(err.to_owned())),
        }
    }
}

fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which consistency mode the caller asked for; echoed in
/// `X-Consul-Effective-Consistency`. The dev server is its own leader, so
/// all three are served identically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consistency {
    Leader,
    Stale,
    Consistent,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Stale => "stale",
            Self::Consistent => "consistent",
        }
    }
}

/// Options common to every read endpoint.
#[derive(Debug)]
pub(crate) struct QueryOpts {
    /// `index`: 0 means "answer now".
    pub(crate) min_index: u64,
    /// Effective blocking time, already defaulted, capped and jittered.
    pub(crate) wait: Duration,
    pub(crate) consistency: Consistency,
    pub(crate) filter: Option<Filter>,
    pub(crate) pretty: bool,
}

impl QueryOpts {
    pub(crate) fn parse(params: &Params) -> Result<Self, ApiError> {
        let min_index = params.u64("index", "Invalid index")?.unwrap_or(0);
        let base_wait = match params.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(w) => {
                duration::parse_go(w).ok_or_else(|| ApiError::bad_request("Invalid wait time"))?
            }
        };
        let base_wait = if base_wait.is_zero() {
            DEFAULT_WAIT
        } else {
            base_wait.min(MAX_WAIT)
        };
        let jitter_cap = base_wait.as_millis() / 16;
        let jitter = if jitter_cap == 0 {
            0
        } else {
            fastrand::u64(0..=u64::try_from(jitter_cap).unwrap_or(u64::MAX))
        };
        let wait = base_wait + Duration::from_millis(jitter);

        let stale = params.present("stale") || params.present("max_stale");
        let consistent = params.present("consistent");
        if stale && consistent {
            return Err(ApiError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        let consistency = if stale {
            Consistency::Stale
        } else if consistent {
            Consistency::Consistent
        } else {
            Consistency::Leader
        };
        let filter = match params.get("filter") {
            None | Some("") => None,
            Some(expr) => Some(Filter::parse(expr).map_err(|e| {
                ApiError::bad_request(format!(
                    "Failed to create boolean expression evaluator: {e}"
                ))
            })?),
        };
        Ok(Self {
            min_index,
            wait,
            consistency,
            filter,
            pretty: params.present("pretty"),
        })
    }
}

/// Serialises `value` as JSON (indented with `?pretty`).
pub(crate) fn json_body<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Vec<u8> {
    let encoded = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    // Serialising plain data (maps with string keys, numbers, strings)
    // cannot fail; fall back to `null` rather than panicking.
    encoded.unwrap_or_else(|_| b"null".to_vec())
}

/// A JSON response with status 200.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json_body(value, pretty),
    )
        .into_response()
}

/// Adds the read metadata headers Consul sends on every blocking-capable
/// endpoint. The index is never 0 (clients would spin).
pub(crate) fn with_meta(mut resp: Response, index: u64, consistency: Consistency) -> Response {
    let headers: &mut HeaderMap = resp.headers_mut();
    headers.insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    headers.insert(
        "X-Consul-Effective-Consistency",
        HeaderValue::from_static(consistency.as_str()),
    );
    headers.insert(
        "X-Consul-Query-Backend",
        HeaderValue::from_static("blocking-query"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_and_flags() {
        let p = Params::parse(Some(
            "recurse&tag=a&tag=B%20c&passing=false&filter=x+%3D%3D+1",
        ));
        assert!(p.present("recurse"));
        assert_eq!(p.all("tag"), vec!["a", "B c"]);
        assert!(!p.flag("passing").unwrap_or(true));
        assert_eq!(p.get("filter"), Some("x == 1"));
        assert!(
            Params::parse(Some("passing=maybe"))
                .flag("passing")
                .is_err()
        );
    }
}
