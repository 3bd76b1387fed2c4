//! The dev Consul's data: KV entries, services, checks, and the raft-like
//! index that orders every write.
//!
//! Everything lives in one [`Inner`] behind a mutex; handlers hold it only
//! for the length of a lookup or a mutation, never across an `.await`.
//! Every mutation that changes data takes the next index (one per logical
//! write, like one raft log entry) and then:
//!
//! - publishes the new index on a `watch` channel, which wakes blocking
//!   queries; each query then re-computes *its own* index (a KV key's
//!   ModifyIndex, a service's index, ...) and goes back to sleep if that did
//!   not move, so an unrelated write never answers a watcher;
//! - persists a JSON snapshot when a data directory is configured;
//! - wakes the check runner so new checks run right away.
//!
//! Output-only check updates deliberately take no index: real Consul defers
//! them, and waking every watcher on each check interval would make them
//! spin.
//!
//! Per-table indexes mirror Consul's: `kv_index` (last KV write),
//! `services_index` (any service added/changed/removed), `checks_index` (any
//! check added/removed/status change), and `service_indexes[name]` (the last
//! write that touched an instance of `name` or one of its checks, kept after
//! the service disappears so the index never goes backwards).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::http::QueryOpts;

/// Check statuses, as Consul spells them.
pub(crate) const PASSING: &str = "passing";
pub(crate) const WARNING: &str = "warning";
pub(crate) const CRITICAL: &str = "critical";

/// Shortest probe interval honoured (tests use tens of milliseconds).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Largest check output kept, like Consul's default `check_output_max_size`.
const MAX_OUTPUT: usize = 4096;

/// One KV pair.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct KvEntry {
    pub(crate) key: String,
    #[serde(with = "b64")]
    pub(crate) value: Vec<u8>,
    pub(crate) flags: u64,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) lock_index: u64,
    /// The session holding the lock; empty when unlocked.
    #[serde(default)]
    pub(crate) session: String,
}

/// A tagged address of a service (`lan`, `wan`, ...).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TaggedAddress {
    pub(crate) address: String,
    pub(crate) port: i64,
}

/// Load-balancing weights; Consul defaults both to 1.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Weights {
    pub(crate) passing: i64,
    pub(crate) warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// A registered service instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Service {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) address: String,
    pub(crate) port: i64,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) tagged_addresses: BTreeMap<String, TaggedAddress>,
    pub(crate) enable_tag_override: bool,
    pub(crate) weights: Weights,
    pub(crate) kind: String,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

impl Service {
    fn same_content(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.create_index = other.create_index;
        a.modify_index = other.modify_index;
        &a == other
    }
}

/// What kind of probe a check is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum CheckKind {
    Ttl,
    Http,
    Tcp,
    /// Script, gRPC and other kinds are stored and reported but not run by
    /// the dev server: they keep the status they were registered with.
    Script,
    Grpc,
}

impl CheckKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Script => "script",
            Self::Grpc => "grpc",
        }
    }
}

/// A check's definition, as registered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CheckDef {
    pub(crate) kind: CheckKind,
    pub(crate) http: String,
    pub(crate) method: String,
    pub(crate) header: BTreeMap<String, Vec<String>>,
    pub(crate) body: String,
    pub(crate) tcp: String,
    pub(crate) grpc: String,
    pub(crate) script_args: Vec<String>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) interval: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) deregister_after: Option<Duration>,
    pub(crate) tls_server_name: String,
    pub(crate) tls_skip_verify: bool,
    pub(crate) disable_redirects: bool,
}

/// Scheduling state of a check; not persisted (instants are process-local).
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckRuntime {
    pub(crate) next_run: Option<Instant>,
    pub(crate) in_flight: bool,
    pub(crate) ttl_deadline: Option<Instant>,
    pub(crate) critical_since: Option<Instant>,
    /// Bumped whenever the definition changes, so a probe started for an old
    /// definition cannot overwrite the status of the new one.
    pub(crate) generation: u64,
}

/// A registered check (node-level when `service_id` is empty).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Check {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) notes: String,
    pub(crate) service_id: String,
    pub(crate) status: String,
    pub(crate) output: String,
    pub(crate) def: CheckDef,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    #[serde(skip)]
    pub(crate) rt: CheckRuntime,
}

/// A check as submitted by a registration, before it is stored.
#[derive(Clone, Debug)]
pub(crate) struct NewCheck {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) notes: String,
    pub(crate) service_id: String,
    /// `None` keeps the current status of an existing check, and starts a new
    /// one as critical.
    pub(crate) status: Option<String>,
    pub(crate) def: CheckDef,
}

/// The whole persisted state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Inner {
    pub(crate) index: u64,
    pub(crate) node_id: String,
    pub(crate) node_index: u64,
    pub(crate) kv: BTreeMap<String, KvEntry>,
    /// Delete index of removed keys, so a prefix's index does not go
    /// backwards (and wakes prefix watchers) when a key under it is deleted.
    pub(crate) kv_tombstones: BTreeMap<String, u64>,
    pub(crate) kv_index: u64,
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) checks: BTreeMap<String, Check>,
    pub(crate) service_indexes: BTreeMap<String, u64>,
    pub(crate) services_index: u64,
    pub(crate) checks_index: u64,
    #[serde(default)]
    pub(crate) sessions: BTreeMap<String, super::session::Session>,
    #[serde(default)]
    pub(crate) sessions_index: u64,
    #[serde(skip)]
    pub(crate) session_rt: super::session::SessionRuntime,
    /// Nodes written through `/v1/catalog/register` (no agent runs there).
    #[serde(default)]
    pub(crate) ext_nodes: BTreeMap<String, super::catalog_ext::ExtNode>,
    #[serde(default)]
    pub(crate) ext_nodes_index: u64,
}

/// A probe the runner must execute outside the lock.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub(crate) check_id: String,
    pub(crate) generation: u64,
    pub(crate) def: CheckDef,
}

/// Why a TTL update was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TtlError {
    Unknown,
    NotTtl,
}

impl Inner {
    pub(crate) fn fresh(node_id: String) -> Self {
        Self {
            index: 1,
            node_id,
            node_index: 1,
            kv: BTreeMap::new(),
            kv_tombstones: BTreeMap::new(),
            kv_index: 1,
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            service_indexes: BTreeMap::new(),
            services_index: 1,
            checks_index: 1,
            sessions: BTreeMap::new(),
            sessions_index: 1,
            session_rt: super::session::SessionRuntime::default(),
            ext_nodes: BTreeMap::new(),
            ext_nodes_index: 0,
        }
    }

    /// Restores runtime scheduling after a load: probes run at once, TTLs get
    /// a full TTL from now (a TTL check keeps its last status until then),
    /// critical checks start their critical clock now.
    pub(crate) fn init_runtime(&mut self, now: Instant) {
        for check in self.checks.values_mut() {
            check.rt = CheckRuntime::default();
            check.rt.next_run = Some(now);
            check.rt.ttl_deadline = check.def.ttl.map(|ttl| now + ttl);
            if check.status == CRITICAL {
                check.rt.critical_since = Some(now);
            }
        }
        self.init_session_runtime(now);
    }

    // ----- index lookups -------------------------------------------------

    pub(crate) fn kv_key_index(&self, key: &str) -> u64 {
        self.kv
            .get(key)
            .map(|e| e.modify_index)
            .unwrap_or(self.kv_index)
    }

    pub(crate) fn kv_prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index)
            .max();
        let dead = self
            .kv_tombstones
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max();
        match (live, dead) {
            (None, None) => self.kv_index,
            (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)),
        }
    }

    pub(crate) fn service_index(&self, name: &str) -> u64 {
        self.service_indexes
            .get(name)
            .copied()
            .unwrap_or(self.services_index)
    }

    // ----- KV ---------------------------------------------------------------

    /// Sets a key. With `cas`, only when the key's ModifyIndex equals it (0 =
    /// only when absent). Returns whether the write happened.
    pub(crate) fn kv_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    ) -> bool {
        let existing = self.kv.get(key);
        if let Some(cas) = cas {
            let current = existing.map(|e| e.modify_index).unwrap_or(0);
            if current != cas {
                return false;
            }
        }
        let idx = self.index + 1;
        // A plain write keeps the lock (and its holder) of an existing key.
        let (create_index, lock_index, session) = existing
            .map(|e| (e.create_index, e.lock_index, e.session.clone()))
            .unwrap_or((idx, 0, String::new()));
        self.kv.insert(
            key.to_owned(),
            KvEntry {
                key: key.to_owned(),
                value,
                flags,
                create_index,
                modify_index: idx,
                lock_index,
                session,
            },
        );
        self.kv_tombstones.remove(key);
        self.kv_index = idx;
        self.index = idx;
        true
    }

    /// Deletes one key. With `cas`, only when its ModifyIndex matches (0 never
    /// deletes). Returns the outcome Consul reports.
    pub(crate) fn kv_delete(&mut self, key: &str, cas: Option<u64>) -> bool {
        let Some(existing) = self.kv.get(key) else {
            return cas.is_none();
        };
        if let Some(cas) = cas
            && (cas == 0 || existing.modify_index != cas)
        {
            return false;
        }
        let idx = self.index + 1;
        self.kv.remove(key);
        self.kv_tombstones.insert(key.to_owned(), idx);
        self.kv_index = idx;
        self.index = idx;
        true
    }

    /// Deletes every key under a prefix.
    pub(crate) fn kv_delete_tree(&mut self, prefix: &str) {
        let keys: Vec<String> = self
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let idx = self.index + 1;
        for key in keys {
            self.kv.remove(&key);
            self.kv_tombstones.insert(key, idx);
        }
        self.kv_index = idx;
        self.index = idx;
    }

    // ----- services and checks ---------------------------------------------

    fn touch_service_name(&mut self, name: &str, idx: u64) {
        self.service_indexes.insert(name.to_owned(), idx);
    }

    /// Records that a check of `service_id` (or a node check, when empty)
    /// changed at `idx`.
    fn touch_check_scope(&mut self, service_id: &str, idx: u64) {
        self.checks_index = idx;
        if service_id.is_empty() {
            let names: BTreeSet<String> = self.services.values().map(|s| s.name.clone()).collect();
            for name in names {
                self.touch_service_name(&name, idx);
            }
        } else if let Some(name) = self.services.get(service_id).map(|s| s.name.clone()) {
            self.touch_service_name(&name, idx);
        }
    }

    /// Inserts or updates a check at index `idx`; returns whether anything
    /// visible changed.
    fn upsert_check(&mut self, new: NewCheck, idx: u64, now: Instant) -> bool {
        let scope = new.service_id.clone();
        let new_id = new.id.clone();
        let changed = match self.checks.get_mut(&new.id) {
            Some(existing) => {
                let def_changed = existing.def != new.def
                    || existing.name != new.name
                    || existing.notes != new.notes
                    || existing.service_id != new.service_id;
                let status_changed = new.status.as_ref().is_some_and(|s| *s != existing.status);
                if def_changed {
                    existing.def = new.def;
                    existing.name = new.name;
                    existing.notes = new.notes;
                    existing.service_id = new.service_id;
                    existing.rt.generation += 1;
                    existing.rt.in_flight = false;
                    existing.rt.next_run = Some(now);
                    existing.rt.ttl_deadline = existing.def.ttl.map(|ttl| now + ttl);
                }
                if let Some(status) = new.status.filter(|_| status_changed) {
                    set_status_fields(existing, status, now);
                }
                if def_changed || status_changed {
                    existing.modify_index = idx;
                }
                def_changed || status_changed
            }
            None => {
                let status = new.status.unwrap_or_else(|| CRITICAL.to_owned());
                let mut check = Check {
                    id: new.id.clone(),
                    name: new.name,
                    notes: new.notes,
                    service_id: new.service_id,
                    status: String::new(),
                    output: String::new(),
                    rt: CheckRuntime {
                        next_run: Some(now),
                        ttl_deadline: new.def.ttl.map(|ttl| now + ttl),
                        ..CheckRuntime::default()
                    },
                    def: new.def,
                    create_index: idx,
                    modify_index: idx,
                };
                set_status_fields(&mut check, status, now);
                self.checks.insert(new.id, check);
                true
            }
        };
        if changed {
            self.touch_check_scope(&scope, idx);
            if self
                .checks
                .get(&new_id)
                .is_some_and(|c| c.status == CRITICAL)
            {
                self.invalidate_sessions_for_check(&new_id, idx, now);
            }
        }
        changed
    }

    /// Registers (or updates) a service and its checks as one write.
    /// Returns whether anything changed (an identical re-registration, as
    /// Nomad's periodic sync sends, takes no index and wakes nobody).
    pub(crate) fn register_service(
        &mut self,
        mut svc: Service,
        checks: Vec<NewCheck>,
        replace_existing_checks: bool,
        now: Instant,
    ) -> bool {
        let idx = self.index + 1;
        let mut changed = false;
        let existing = self.services.get(&svc.id).cloned();
        let service_changed = existing.as_ref().is_none_or(|e| !e.same_content(&svc));
        if service_changed {
            svc.create_index = existing.as_ref().map(|e| e.create_index).unwrap_or(idx);
            svc.modify_index = idx;
            if let Some(old) = &existing
                && old.name != svc.name
            {
                self.touch_service_name(&old.name, idx);
            }
            self.touch_service_name(&svc.name, idx);
            self.services_index = idx;
            self.services.insert(svc.id.clone(), svc.clone());
            changed = true;
        }
        let keep: BTreeSet<String> = checks.iter().map(|c| c.id.clone()).collect();
        for check in checks {
            changed |= self.upsert_check(check, idx, now);
        }
        if replace_existing_checks {
            let stale: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.service_id == svc.id && !keep.contains(&c.id))
                .map(|c| c.id.clone())
                .collect();
            for id in stale {
                self.checks.remove(&id);
                self.touch_check_scope(&svc.id, idx);
                changed = true;
            }
        }
        if changed {
            self.index = idx;
        }
        changed
    }

    /// Removes a service and its checks; unknown IDs are a no-op.
    pub(crate) fn deregister_service(&mut self, id: &str) -> bool {
        let Some(svc) = self.services.remove(id) else {
            return false;
        };
        let idx = self.index + 1;
        let removed: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.service_id == id)
            .map(|c| c.id.clone())
            .collect();
        self.checks.retain(|_, c| c.service_id != id);
        if !removed.is_empty() {
            self.checks_index = idx;
        }
        for check_id in removed {
            self.invalidate_sessions_for_check(&check_id, idx, Instant::now());
        }
        self.touch_service_name(&svc.name, idx);
        self.services_index = idx;
        self.index = idx;
        true
    }

    /// Registers a standalone check (node-level or attached to a service).
    pub(crate) fn register_check(&mut self, check: NewCheck, now: Instant) -> bool {
        let idx = self.index + 1;
        let changed = self.upsert_check(check, idx, now);
        if changed {
            self.index = idx;
        }
        changed
    }

    pub(crate) fn deregister_check(&mut self, id: &str) -> bool {
        let Some(check) = self.checks.remove(id) else {
            return false;
        };
        let idx = self.index + 1;
        self.touch_check_scope(&check.service_id, idx);
        self.invalidate_sessions_for_check(id, idx, Instant::now());
        self.index = idx;
        true
    }

    /// Sets a check's status and output. Only a status change takes an index.
    fn set_status(&mut self, id: &str, status: &str, output: String, now: Instant) -> bool {
        let Some(check) = self.checks.get_mut(id) else {
            return false;
        };
        check.output = truncate_output(output);
        if check.status == status {
            return false;
        }
        let idx = self.index + 1;
        set_status_fields(check, status.to_owned(), now);
        check.modify_index = idx;
        let scope = check.service_id.clone();
        self.touch_check_scope(&scope, idx);
        if status == CRITICAL {
            self.invalidate_sessions_for_check(id, idx, now);
        }
        self.index = idx;
        true
    }

    /// A TTL heartbeat (`pass`/`warn`/`fail`/`update`): sets the status and
    /// restarts the TTL.
    pub(crate) fn ttl_update(
        &mut self,
        id: &str,
        status: &str,
        output: String,
        now: Instant,
    ) -> Result<(), TtlError> {
        let check = self.checks.get_mut(id).ok_or(TtlError::Unknown)?;
        let ttl = check.def.ttl.ok_or(TtlError::NotTtl)?;
        check.rt.ttl_deadline = Some(now + ttl);
        self.set_status(id, status, output, now);
        Ok(())
    }

    /// Expires TTLs and hands out probes that are due. Returns the probes and
    /// the next instant something is due.
    pub(crate) fn runner_tick(&mut self, now: Instant) -> (Vec<Probe>, Option<Instant>) {
        let mut probes = Vec::new();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        for check in self.checks.values_mut() {
            match check.def.kind {
                CheckKind::Ttl => {
                    if let Some(deadline) = check.rt.ttl_deadline {
                        if deadline <= now {
                            check.rt.ttl_deadline = None;
                            expired.push(check.id.clone());
                        } else {
                            consider(deadline);
                        }
                    }
                }
                CheckKind::Http | CheckKind::Tcp => {
                    if check.rt.in_flight {
                        continue;
                    }
                    let due = check.rt.next_run.unwrap_or(now);
                    if due <= now {
                        check.rt.in_flight = true;
                        probes.push(Probe {
                            check_id: check.id.clone(),
                            generation: check.rt.generation,
                            def: check.def.clone(),
                        });
                    } else {
                        consider(due);
                    }
                }
                CheckKind::Script | CheckKind::Grpc => {}
            }
        }
        for id in expired {
            self.set_status(&id, CRITICAL, "TTL expired".to_owned(), now);
        }
        (probes, next)
    }

    /// Records a probe result; ignored if the check was replaced meanwhile.
    /// Returns when the check is due again.
    pub(crate) fn finish_probe(
        &mut self,
        id: &str,
        generation: u64,
        status: &str,
        output: String,
        now: Instant,
    ) {
        let Some(check) = self.checks.get_mut(id) else {
            return;
        };
        if check.rt.generation != generation {
            return;
        }
        check.rt.in_flight = false;
        // Consul clamps tiny intervals too; the floor keeps a `1ns` interval
        // from turning the runner into a busy loop.
        let interval = check
            .def
            .interval
            .unwrap_or(Duration::from_secs(10))
            .max(MIN_INTERVAL);
        check.rt.next_run = Some(now + interval);
        self.set_status(id, status, output, now);
    }

    /// Removes services with a check that has been critical for longer than
    /// its `DeregisterCriticalServiceAfter`. Returns the removed IDs.
    pub(crate) fn reap(&mut self, now: Instant) -> Vec<String> {
        let doomed: BTreeSet<String> = self
            .checks
            .values()
            .filter(|c| !c.service_id.is_empty() && c.status == CRITICAL)
            .filter(|c| match (c.def.deregister_after, c.rt.critical_since) {
                (Some(after), Some(since)) => now.saturating_duration_since(since) >= after,
                _ => false,
            })
            .map(|c| c.service_id.clone())
            .collect();
        doomed
            .into_iter()
            .filter(|id| self.deregister_service(id))
            .collect()
    }
}

fn set_status_fields(check: &mut Check, status: String, now: Instant) {
    if status == CRITICAL {
        if check.status != CRITICAL || check.rt.critical_since.is_none() {
            check.rt.critical_since = Some(now);
        }
    } else {
        check.rt.critical_since = None;
    }
    check.status = status;
}

fn truncate_output(mut output: String) -> String {
    if output.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
        output.push_str(" ... (captured output truncated)");
    }
    output
}

/// Identity of the single dev node.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    pub(crate) name: String,
    pub(crate) datacenter: String,
    pub(crate) address: String,
}

/// Shared state plus the machinery that reacts to writes.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) node: NodeInfo,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    /// Wakes the check runner after registrations.
    pub(crate) runner_wake: Notify,
    /// Set once on shutdown: blocking queries answer at once, loops stop.
    pub(crate) shutdown: watch::Sender<bool>,
    persist: Option<super::persist::Persister>,
}

impl Store {
    pub(crate) fn new(
        node: NodeInfo,
        inner: Inner,
        persist: Option<super::persist::Persister>,
    ) -> Self {
        let index = inner.index;
        Self {
            node,
            inner: Mutex::new(inner),
            changes: watch::Sender::new(index),
            runner_wake: Notify::new(),
            shutdown: watch::Sender::new(false),
            persist,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated
        // in a way that matters more than refusing service forever would.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver that sees every write that took an index.
    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs a read-only closure on the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.lock())
    }

    /// Runs a mutation; if it took an index, wakes watchers and the runner
    /// and persists.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let (result, snapshot) = {
            let mut inner = self.lock();
            let before = inner.index;
            let result = f(&mut inner);
            if inner.index == before {
                return result;
            }
            let snapshot = self
                .persist
                .as_ref()
                .map(|_| (inner.index, serde_json::to_vec(&*inner)));
            self.changes.send_replace(inner.index);
            (result, snapshot)
        };
        self.runner_wake.notify_one();
        if let (Some(persist), Some((seq, bytes))) = (&self.persist, snapshot) {
            match bytes {
                Ok(bytes) => persist.save(seq, &bytes),
                Err(e) => tracing::warn!(error = %e, "consul: cannot encode state snapshot"),
            }
        }
        result
    }

    /// Writes the current state to disk (used on shutdown).
    pub(crate) fn flush(&self) {
        if let Some(persist) = &self.persist {
            let (seq, bytes) = {
                let inner = self.lock();
                (inner.index, serde_json::to_vec(&*inner))
            };
            match bytes {
                Ok(bytes) => persist.save_force(seq, &bytes),
                Err(e) => tracing::warn!(error = %e, "consul: cannot encode state snapshot"),
            }
        }
    }

    /// Waits, per Consul's blocking-query rules, until `index_of` moves past
    /// the requested index, the wait runs out or the server shuts down.
    pub(crate) async fn block(&self, opts: &QueryOpts, index_of: impl Fn(&Inner) -> u64) {
        if opts.min_index == 0 {
            return;
        }
        let mut changes = self.changes.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        let deadline = Instant::now() + opts.wait;
        loop {
            changes.borrow_and_update();
            if *shutdown.borrow_and_update() {
                return;
            }
            let current = self.read(&index_of).max(1);
            if current > opts.min_index || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                res = changes.changed() => {
                    if res.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kv_cas_and_indexes() {
        let mut s = Inner::fresh("n".into());
        assert!(s.kv_put("a/b", b"1".to_vec(), 0, Some(0)));
        let idx = s.kv_key_index("a/b");
        assert!(!s.kv_put("a/b", b"2".to_vec(), 0, Some(0)));
        assert!(!s.kv_put("a/b", b"2".to_vec(), 0, Some(idx + 5)));
        assert!(s.kv_put("a/b", b"2".to_vec(), 0, Some(idx)));
        assert!(s.kv_key_index("a/b") > idx);
        assert!(s.kv_put("a/c", b"3".to_vec(), 0, None));
        let before = s.kv_prefix_index("a/");
        assert!(s.kv_delete("a/c", None));
        assert!(
            s.kv_prefix_index("a/") > before,
            "deleting under a prefix moves its index"
        );
        assert!(!s.kv_delete("a/b", Some(0)));
    }
}
