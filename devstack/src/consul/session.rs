//! Sessions and KV locks: `/v1/session/*` and the `acquire` / `release`
//! forms of `PUT /v1/kv/:key`.
//!
//! Semantics follow Consul's session endpoint and state store:
//!
//! - A session belongs to a node and is tied to health checks: by default
//!   the node's `serfHealth`; `NodeChecks` / `ServiceChecks` (and the
//!   deprecated `Checks`) replace the default. Creation fails when a check is
//!   missing (`Missing check 'x' registration`) or critical (`Check 'x' is in
//!   critical state`); a check that later turns critical, or is deregistered,
//!   invalidates the session.
//! - `TTL` (between `session_ttl_min`, 10 s by default, and 24 h) makes the
//!   session expire unless renewed; like Consul's servers the timer runs for
//!   twice the TTL.
//! - Invalidation (destroy, TTL expiry, check failure) applies the session's
//!   `Behavior` to every key it holds: `release` clears the lock, `delete`
//!   deletes the key. Either way the key then refuses new `acquire`s for the
//!   session's `LockDelay` (at most 60 s), answering `false`.
//! - `acquire` takes a free lock (LockIndex + 1) or refreshes the value of a
//!   lock the same session holds; `release` only works for the holder. Both
//!   write the request body as the new value. A plain `PUT` keeps the lock.
//!
//! Errors that Consul raises inside its RPC layer come back as HTTP 500 with
//! the error text, as they do from a real agent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::duration::{format_go, parse_go};
use super::http::{ApiError, Params, QueryOpts, json, with_meta};
use super::render::SERF_CHECK_ID;
use super::state::{CRITICAL, Inner, KvEntry, Store};

/// Consul's default `LockDelay`.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Consul caps the delay applied on invalidation (`structs.MaxLockDelay`).
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// Longest session TTL (`structs.SessionTTLMax`).
const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Servers let a TTL session live this many TTLs before invalidating it.
const TTL_MULTIPLIER: u32 = 2;
/// Lock delays below this many nanoseconds are taken as seconds, as the
/// agent does for clients that send `"LockDelay": 5`.
const LOCK_DELAY_SECONDS_THRESHOLD: u128 = 1000;

/// What happens to held keys when the session is invalidated.
pub(crate) const BEHAVIOR_RELEASE: &str = "release";
pub(crate) const BEHAVIOR_DELETE: &str = "delete";

/// A service check a session is tied to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ServiceCheckRef {
    pub(crate) id: String,
    pub(crate) namespace: String,
}

/// A session, as stored (and persisted).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) lock_delay: Duration,
    pub(crate) behavior: String,
    /// The TTL as the client sent it (Consul echoes the string).
    pub(crate) ttl: String,
    pub(crate) node_checks: Option<Vec<String>>,
    pub(crate) service_checks: Option<Vec<ServiceCheckRef>>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

impl Session {
    fn ttl_duration(&self) -> Option<Duration> {
        parse_go(&self.ttl).filter(|d| !d.is_zero())
    }

    pub(crate) fn check_ids_contain(&self, id: &str) -> bool {
        self.check_ids().any(|c| c == id)
    }

    fn check_ids(&self) -> impl Iterator<Item = &str> {
        self.node_checks
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(self.service_checks.iter().flatten().map(|c| c.id.as_str()))
    }
}

/// Process-local session timing: TTL deadlines and lock delays. Not
/// persisted (Consul keeps both in memory on the leader too).
#[derive(Debug, Default)]
pub(crate) struct SessionRuntime {
    deadlines: BTreeMap<String, Instant>,
    lock_delays: BTreeMap<String, Instant>,
}

/// Why a lock operation failed (an HTTP 500 with this text).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LockError(pub(crate) String);

impl Inner {
    /// Restores TTL timers after a load: every TTL session gets a full
    /// (doubled) TTL from now, as a newly elected Consul leader does.
    pub(crate) fn init_session_runtime(&mut self, now: Instant) {
        self.session_rt = SessionRuntime::default();
        let deadlines: Vec<(String, Instant)> = self
            .sessions
            .values()
            .filter_map(|s| {
                s.ttl_duration()
                    .map(|ttl| (s.id.clone(), now + ttl * TTL_MULTIPLIER))
            })
            .collect();
        self.session_rt.deadlines.extend(deadlines);
    }

    pub(crate) fn sessions_table_index(&self) -> u64 {
        self.sessions_index.max(1)
    }

    fn check_status(&self, node: &str, id: &str, local_node: &str) -> Option<&str> {
        if node != local_node {
            return self.ext_check_status(node, id).flatten();
        }
        if id == SERF_CHECK_ID {
            return Some(super::state::PASSING);
        }
        self.checks.get(id).map(|c| c.status.as_str())
    }

    /// Creates a session after Consul's validation; returns its ID or the
    /// error text.
    pub(crate) fn session_create(
        &mut self,
        mut session: Session,
        local_node: &str,
        now: Instant,
    ) -> Result<String, String> {
        if session.node != local_node && !self.ext_nodes.contains_key(&session.node) {
            return Err("Missing node registration".to_owned());
        }
        for id in session.check_ids() {
            match self.check_status(&session.node, id, local_node) {
                None => return Err(format!("Missing check '{id}' registration")),
                Some(CRITICAL) => return Err(format!("Check '{id}' is in critical state")),
                Some(_) => {}
            }
        }
        let idx = self.index + 1;
        session.id = uuid::Uuid::new_v4().to_string();
        session.create_index = idx;
        session.modify_index = idx;
        if let Some(ttl) = session.ttl_duration() {
            self.session_rt
                .deadlines
                .insert(session.id.clone(), now + ttl * TTL_MULTIPLIER);
        }
        let id = session.id.clone();
        self.sessions.insert(id.clone(), session);
        self.sessions_index = idx;
        self.index = idx;
        Ok(id)
    }

    /// Destroys a session (unknown IDs are a no-op, as in Consul).
    pub(crate) fn session_destroy(&mut self, id: &str, now: Instant) {
        if self.sessions.contains_key(id) {
            let idx = self.index + 1;
            self.invalidate_session_at(id, idx, now);
            self.index = idx;
        }
    }

    /// Restarts a session's TTL; `None` when the session does not exist.
    pub(crate) fn session_renew(&mut self, id: &str, now: Instant) -> Option<Session> {
        let session = self.sessions.get(id)?.clone();
        if let Some(ttl) = session.ttl_duration() {
            self.session_rt
                .deadlines
                .insert(id.to_owned(), now + ttl * TTL_MULTIPLIER);
        }
        Some(session)
    }

    /// Removes a session at `idx` and applies its behavior to held keys.
    /// The caller owns `idx` (and sets `self.index`).
    pub(crate) fn invalidate_session_at(&mut self, id: &str, idx: u64, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.session_rt.deadlines.remove(id);
        self.sessions_index = idx;
        let delay = session.lock_delay.min(MAX_LOCK_DELAY);
        let held: Vec<String> = self
            .kv
            .values()
            .filter(|e| e.session == id)
            .map(|e| e.key.clone())
            .collect();
        for key in held {
            if session.behavior == BEHAVIOR_DELETE {
                self.kv.remove(&key);
                self.kv_tombstones.insert(key.clone(), idx);
            } else if let Some(entry) = self.kv.get_mut(&key) {
                entry.session.clear();
                entry.modify_index = idx;
            }
            self.kv_index = idx;
            if !delay.is_zero() {
                self.session_rt.lock_delays.insert(key, now + delay);
            }
        }
    }

    /// Invalidates every session of the agent's node tied to `check_id` (the
    /// check turned critical or went away) at the caller's index `idx`.
    pub(crate) fn invalidate_sessions_for_check(&mut self, check_id: &str, idx: u64, now: Instant) {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| !self.ext_nodes.contains_key(&s.node) && s.check_ids_contain(check_id))
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            self.invalidate_session_at(&id, idx, now);
        }
    }

    /// Invalidates sessions whose TTL ran out; returns the next deadline.
    pub(crate) fn expire_sessions(&mut self, now: Instant) -> Option<Instant> {
        let expired: Vec<String> = self
            .session_rt
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            let idx = self.index + 1;
            for id in &expired {
                self.invalidate_session_at(id, idx, now);
                self.session_rt.deadlines.remove(id);
            }
            self.index = idx;
        }
        self.session_rt.lock_delays.retain(|_, until| *until > now);
        self.session_rt.deadlines.values().copied().min()
    }

    /// `PUT /v1/kv/:key?acquire=<session>`.
    pub(crate) fn kv_acquire(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
        now: Instant,
    ) -> Result<bool, LockError> {
        if self
            .session_rt
            .lock_delays
            .get(key)
            .is_some_and(|until| *until > now)
        {
            return Ok(false);
        }
        if session.is_empty() {
            return Err(LockError("missing session".to_owned()));
        }
        if !self.sessions.contains_key(session) {
            return Err(LockError(format!("invalid session {session:?}")));
        }
        let idx = self.index + 1;
        let entry = match self.kv.get(key) {
            Some(e) if e.session == session => KvEntry {
                modify_index: idx,
                value,
                flags,
                ..e.clone()
            },
            Some(e) if !e.session.is_empty() => return Ok(false),
            Some(e) => KvEntry {
                modify_index: idx,
                lock_index: e.lock_index + 1,
                session: session.to_owned(),
                value,
                flags,
                ..e.clone()
            },
            None => KvEntry {
                key: key.to_owned(),
                value,
                flags,
                create_index: idx,
                modify_index: idx,
                lock_index: 1,
                session: session.to_owned(),
            },
        };
        self.kv.insert(key.to_owned(), entry);
        self.kv_tombstones.remove(key);
        self.kv_index = idx;
        self.index = idx;
        Ok(true)
    }

    /// `PUT /v1/kv/:key?release=<session>`.
    pub(crate) fn kv_release(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, LockError> {
        if session.is_empty() {
            return Err(LockError("missing session".to_owned()));
        }
        let idx = self.index + 1;
        let Some(entry) = self.kv.get_mut(key) else {
            return Ok(false);
        };
        if entry.session != session {
            return Ok(false);
        }
        entry.session.clear();
        entry.value = value;
        entry.flags = flags;
        entry.modify_index = idx;
        self.kv_index = idx;
        self.index = idx;
        Ok(true)
    }
}

/// Invalidates TTL-expired sessions until shutdown. Any write wakes the loop
/// (a new session may carry an earlier deadline); renewals only push
/// deadlines later, so waking at an old deadline just re-computes.
pub(crate) async fn run_session_timers(store: Arc<Store>) {
    let mut changes = store.subscribe_changes();
    let mut shutdown = store.shutdown.subscribe();
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        changes.borrow_and_update();
        let now = Instant::now();
        let next = store.write(|inner| inner.expire_sessions(now));
        let wake_at = next.unwrap_or(now + Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            res = changes.changed() => {
                if res.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => {}
        }
    }
}

/// The JSON shape of a session (`structs.Session` in Consul's responses).
pub(crate) fn render(s: &Session) -> Value {
    let service_checks = s.service_checks.as_ref().map(|checks| {
        checks
            .iter()
            .map(|c| json!({"ID": c.id, "Namespace": c.namespace}))
            .collect::<Vec<_>>()
    });
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": u64::try_from(s.lock_delay.as_nanos()).unwrap_or(u64::MAX),
        "Behavior": s.behavior,
        "TTL": s.ttl,
        "NodeChecks": s.node_checks,
        "ServiceChecks": service_checks,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

pub(crate) fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

pub(crate) fn string_field(map: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(map, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("'{name}' expected type 'string', got {other}")),
    }
}

fn string_list(map: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, String> {
    match field(map, name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Vec::new())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("'{name}' expected a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("'{name}' expected a list of strings")),
    }
}

fn lock_delay(value: &Value) -> Result<Duration, String> {
    let raw = match value {
        Value::String(s) => parse_go(s).ok_or_else(|| format!("time: invalid duration {s:?}"))?,
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_nanos)
            .ok_or_else(|| format!("invalid LockDelay {n}"))?,
        other => return Err(format!("invalid LockDelay {other}")),
    };
    Ok(if raw.as_nanos() < LOCK_DELAY_SECONDS_THRESHOLD {
        Duration::from_secs(u64::try_from(raw.as_nanos()).unwrap_or(0))
    } else {
        raw
    })
}

/// Decodes a `session/create` body onto the agent's defaults.
fn decode_create(body: &[u8], local_node: &str) -> Result<Session, String> {
    let mut session = Session {
        id: String::new(),
        name: String::new(),
        node: local_node.to_owned(),
        lock_delay: DEFAULT_LOCK_DELAY,
        behavior: String::new(),
        ttl: String::new(),
        node_checks: Some(vec![SERF_CHECK_ID.to_owned()]),
        service_checks: None,
        create_index: 0,
        modify_index: 0,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(session);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object".to_owned());
    };
    if let Some(v) = field(&map, "LockDelay") {
        session.lock_delay = lock_delay(v)?;
    }
    if let Some(v) = string_field(&map, "Name")? {
        session.name = v;
    }
    if let Some(v) = string_field(&map, "Node")? {
        session.node = v;
    }
    if let Some(v) = string_field(&map, "Behavior")? {
        session.behavior = v;
    }
    if let Some(v) = string_field(&map, "TTL")? {
        session.ttl = v;
    }
    // Supplying any check list replaces the default `serfHealth`; the
    // deprecated `Checks` are node checks.
    let legacy = string_list(&map, "Checks")?;
    let node_checks = string_list(&map, "NodeChecks")?;
    if legacy.is_some() || node_checks.is_some() {
        let mut all: Vec<String> = legacy.unwrap_or_default();
        for c in node_checks.unwrap_or_default() {
            if !all.contains(&c) {
                all.push(c);
            }
        }
        session.node_checks = (!all.is_empty()).then_some(all);
    }
    match field(&map, "ServiceChecks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut refs = Vec::new();
            for item in items {
                let Value::Object(m) = item else {
                    return Err("'ServiceChecks' expected a list of objects".to_owned());
                };
                refs.push(ServiceCheckRef {
                    id: string_field(m, "ID")?.unwrap_or_default(),
                    namespace: string_field(m, "Namespace")?.unwrap_or_default(),
                });
            }
            session.service_checks = (!refs.is_empty()).then_some(refs);
        }
        Some(_) => return Err("'ServiceChecks' expected a list of objects".to_owned()),
    }
    Ok(session)
}

/// Checks done by Consul's `Session.Apply` before the write.
fn validate(session: &mut Session, ttl_min: Duration) -> Result<(), ApiError> {
    if session.node.is_empty() {
        return Err(ApiError::internal("Must provide Node"));
    }
    match session.behavior.as_str() {
        "" => session.behavior = BEHAVIOR_RELEASE.to_owned(),
        BEHAVIOR_RELEASE | BEHAVIOR_DELETE => {}
        other => {
            return Err(ApiError::internal(format!(
                "Invalid Behavior setting '{other}'"
            )));
        }
    }
    if !session.ttl.is_empty() {
        let ttl = parse_go(&session.ttl).ok_or_else(|| {
            ApiError::internal(format!(
                "Session TTL '{}' invalid: time: invalid duration {:?}",
                session.ttl, session.ttl
            ))
        })?;
        if !ttl.is_zero() && (ttl < ttl_min || ttl > SESSION_TTL_MAX) {
            return Err(ApiError::internal(format!(
                "Invalid Session TTL '{}', must be between [{}={}]",
                ttl.as_nanos(),
                format_go(ttl_min),
                format_go(SESSION_TTL_MAX)
            )));
        }
    }
    Ok(())
}

/// Settings the session endpoints need beyond the store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionConfig {
    pub(crate) ttl_min: Duration,
}

/// State of the session routes: the store plus the session settings.
pub(crate) type SessionState = (Arc<Store>, SessionConfig);

/// `PUT /v1/session/create`.
pub(crate) async fn create(
    State((store, cfg)): State<SessionState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut session = decode_create(&body, &store.node.name)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    validate(&mut session, cfg.ttl_min)?;
    let now = Instant::now();
    let local = store.node.name.clone();
    let id = store
        .write(|inner| inner.session_create(session, &local, now))
        .map_err(ApiError::internal)?;
    Ok(json(&json!({ "ID": id }), false))
}

/// `PUT /v1/session/destroy/:uuid`.
pub(crate) async fn destroy(
    State((store, _)): State<SessionState>,
    Path(id): Path<String>,
) -> Response {
    let now = Instant::now();
    store.write(|inner| inner.session_destroy(&id, now));
    json(&true, false)
}

/// `PUT /v1/session/renew/:uuid`.
pub(crate) async fn renew(
    State((store, _)): State<SessionState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = Instant::now();
    let session = store
        .write(|inner| inner.session_renew(&id, now))
        .ok_or_else(|| ApiError::not_found(format!("Session id '{id}' not found")))?;
    Ok(json(&[render(&session)], false))
}

/// `GET /v1/session/info/:uuid` (blocking): a list of zero or one session.
pub(crate) async fn info(
    State((store, _)): State<SessionState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list_where(store, raw, move |s| s.id == id).await
}

/// `GET /v1/session/node/:node` (blocking).
pub(crate) async fn node(
    State((store, _)): State<SessionState>,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list_where(store, raw, move |s| s.node == node).await
}

/// `GET /v1/session/list` (blocking).
pub(crate) async fn list(
    State((store, _)): State<SessionState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list_where(store, raw, |_| true).await
}

/// A path parameter left empty (`/v1/session/info/`).
pub(crate) async fn missing_session() -> ApiError {
    ApiError::bad_request("Missing session")
}

/// `/v1/session/node/` without a node.
pub(crate) async fn missing_node() -> ApiError {
    ApiError::bad_request("Missing node name")
}

async fn list_where(
    store: Arc<Store>,
    raw: Option<String>,
    keep: impl Fn(&Session) -> bool,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let opts = QueryOpts::parse(&params)?;
    store.block(&opts, Inner::sessions_table_index).await;
    let (index, sessions) = store.read(|inner| {
        let sessions: Vec<Value> = inner
            .sessions
            .values()
            .filter(|s| keep(s))
            .map(render)
            .collect();
        (inner.sessions_table_index(), sessions)
    });
    let sessions: Vec<Value> = match &opts.filter {
        Some(f) => sessions.into_iter().filter(|s| f.matches(s)).collect(),
        None => sessions,
    };
    Ok(with_meta(
        json(&sessions, opts.pretty),
        index,
        opts.consistency,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session(ttl: &str, behavior: &str) -> Session {
        let mut s = decode_create(b"", "n").unwrap();
        s.ttl = ttl.to_owned();
        s.behavior = behavior.to_owned();
        s.lock_delay = Duration::from_millis(500);
        s
    }

    #[test]
    fn lock_delay_small_numbers_are_seconds() {
        assert_eq!(lock_delay(&json!(5)).unwrap(), Duration::from_secs(5));
        assert_eq!(lock_delay(&json!("5ns")).unwrap(), Duration::from_secs(5));
        assert_eq!(lock_delay(&json!("15s")).unwrap(), Duration::from_secs(15));
        assert_eq!(
            lock_delay(&json!(2_000_000_000u64)).unwrap(),
            Duration::from_secs(2)
        );
        assert!(lock_delay(&json!("soon")).is_err());
    }

    #[test]
    fn acquire_release_and_invalidation() {
        let now = Instant::now();
        let mut s = Inner::fresh("id".into());
        let a = s.session_create(session("", "release"), "n", now).unwrap();
        let b = s.session_create(session("", "delete"), "n", now).unwrap();
        assert_eq!(s.kv_acquire("k", b"1".to_vec(), 0, &a, now), Ok(true));
        assert_eq!(s.kv.get("k").unwrap().lock_index, 1);
        assert_eq!(s.kv_acquire("k", b"2".to_vec(), 0, &b, now), Ok(false));
        // Re-acquiring by the holder updates the value, not the LockIndex.
        assert_eq!(s.kv_acquire("k", b"3".to_vec(), 0, &a, now), Ok(true));
        assert_eq!(s.kv.get("k").unwrap().lock_index, 1);
        assert_eq!(s.kv_release("k", b"4".to_vec(), 0, &b), Ok(false));
        assert_eq!(s.kv_release("k", b"4".to_vec(), 0, &a), Ok(true));
        assert_eq!(s.kv.get("k").unwrap().value, b"4".to_vec());
        assert_eq!(s.kv_acquire("k", b"5".to_vec(), 0, &b, now), Ok(true));
        assert_eq!(s.kv.get("k").unwrap().lock_index, 2);
        // Destroying a `delete` session deletes its keys and starts the delay.
        s.session_destroy(&b, now);
        assert!(!s.kv.contains_key("k"));
        assert_eq!(s.kv_acquire("k", b"6".to_vec(), 0, &a, now), Ok(false));
        let later = now + Duration::from_secs(1);
        s.expire_sessions(later);
        assert_eq!(s.kv_acquire("k", b"6".to_vec(), 0, &a, later), Ok(true));
        assert_eq!(
            s.kv_acquire("j", vec![], 0, "nope", later),
            Err(LockError("invalid session \"nope\"".to_owned()))
        );
    }

    #[test]
    fn ttl_expires_at_twice_the_ttl_unless_renewed() {
        let now = Instant::now();
        let mut s = Inner::fresh("id".into());
        let a = s
            .session_create(session("10s", "release"), "n", now)
            .unwrap();
        assert_eq!(s.kv_acquire("k", vec![], 0, &a, now), Ok(true));
        s.expire_sessions(now + Duration::from_secs(19));
        assert!(s.sessions.contains_key(&a));
        s.session_renew(&a, now + Duration::from_secs(19)).unwrap();
        s.expire_sessions(now + Duration::from_secs(38));
        assert!(s.sessions.contains_key(&a));
        s.expire_sessions(now + Duration::from_secs(39));
        assert!(!s.sessions.contains_key(&a));
        assert!(s.kv.get("k").unwrap().session.is_empty());
    }

    #[test]
    fn validation_texts() {
        let mut bad = session("1s", "release");
        let err = validate(&mut bad, Duration::from_secs(10)).unwrap_err();
        assert_eq!(
            err.message,
            "Invalid Session TTL '1000000000', must be between [10s=24h0m0s]"
        );
        let mut bad = session("", "keep");
        let err = validate(&mut bad, Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.message, "Invalid Behavior setting 'keep'");
        let mut s = Inner::fresh("id".into());
        let mut missing = session("", "release");
        missing.node_checks = Some(vec!["nope".into()]);
        assert_eq!(
            s.session_create(missing, "n", Instant::now()),
            Err("Missing check 'nope' registration".to_owned())
        );
    }
}
