//! External nodes: `PUT /v1/catalog/register` and `PUT /v1/catalog/deregister`.
//!
//! Consul lets a client write nodes, services and checks straight into the
//! catalog for machines that run no agent ("external" nodes). Nothing probes
//! those checks: their status is whatever the last registration said, which
//! is how a test puts an instance on a failed node (register the node with a
//! critical `serfHealth`). The reads in `catalog` merge these nodes with the
//! agent's own node, node checks first in every health entry, as Consul's
//! state store orders them.
//!
//! The agent's own node is managed through `/v1/agent/*`; a catalog write
//! for it is refused (a real agent's anti-entropy would undo it within a
//! minute, which the dev stack does not model).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::http::{ApiError, json};
use super::render;
use super::session::{field, string_field};
use super::state::{CRITICAL, Inner, NodeInfo, PASSING, Service, Store, WARNING, Weights};

/// A check written through the catalog (not run by anyone).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ExtCheck {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) notes: String,
    pub(crate) output: String,
    pub(crate) service_id: String,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

/// A node registered through the catalog, with its services and checks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ExtNode {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) datacenter: String,
    pub(crate) tagged_addresses: BTreeMap<String, String>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) checks: BTreeMap<String, ExtCheck>,
}

/// A decoded `catalog/register` request.
#[derive(Debug)]
struct Registration {
    id: String,
    node: String,
    address: String,
    tagged_addresses: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
    skip_node_update: bool,
    service: Option<Service>,
    checks: Vec<ExtCheck>,
}

fn string_map(map: &Map<String, Value>, name: &str) -> Result<BTreeMap<String, String>, String> {
    match field(map, name) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| format!("'{name}[{k}]' expected type 'string', got {v}"))
            })
            .collect(),
        Some(other) => Err(format!("'{name}' expected a map, got {other}")),
    }
}

fn object<'a>(
    map: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match field(map, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(format!("'{name}' expected a map, got {other}")),
    }
}

fn decode_service(m: &Map<String, Value>) -> Result<Service, String> {
    let name = string_field(m, "Service")?.unwrap_or_default();
    let id = string_field(m, "ID")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let tags = match field(m, "Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or("'Tags' expected a list of strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("'Tags' expected a list of strings".to_owned()),
    };
    let port = match field(m, "Port") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|p| (0..=65535).contains(p))
            .ok_or_else(|| format!("'Port' expected a port number, got {v}"))?,
    };
    let weights = match object(m, "Weights")? {
        None => Weights::default(),
        Some(w) => Weights {
            passing: field(w, "Passing").and_then(Value::as_i64).unwrap_or(1),
            warning: field(w, "Warning").and_then(Value::as_i64).unwrap_or(1),
        },
    };
    Ok(Service {
        id,
        name,
        tags,
        address: string_field(m, "Address")?.unwrap_or_default(),
        port,
        meta: string_map(m, "Meta")?,
        tagged_addresses: BTreeMap::new(),
        enable_tag_override: field(m, "EnableTagOverride")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        weights,
        kind: string_field(m, "Kind")?.unwrap_or_default(),
        create_index: 0,
        modify_index: 0,
    })
}

fn decode_check(m: &Map<String, Value>) -> Result<ExtCheck, String> {
    let name = string_field(m, "Name")?.unwrap_or_default();
    let id = string_field(m, "CheckID")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    Ok(ExtCheck {
        id,
        name,
        status: string_field(m, "Status")?.unwrap_or_default(),
        notes: string_field(m, "Notes")?.unwrap_or_default(),
        output: string_field(m, "Output")?.unwrap_or_default(),
        service_id: string_field(m, "ServiceID")?.unwrap_or_default(),
        create_index: 0,
        modify_index: 0,
    })
}

fn decode_registration(body: &[u8]) -> Result<Registration, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object".to_owned());
    };
    let mut checks = Vec::new();
    if let Some(c) = object(&map, "Check")? {
        checks.push(decode_check(c)?);
    }
    match field(&map, "Checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::Object(c) = item else {
                    return Err("'Checks' expected a list of objects".to_owned());
                };
                checks.push(decode_check(c)?);
            }
        }
        Some(_) => return Err("'Checks' expected a list of objects".to_owned()),
    }
    Ok(Registration {
        id: string_field(&map, "ID")?.unwrap_or_default(),
        node: string_field(&map, "Node")?.unwrap_or_default(),
        address: string_field(&map, "Address")?.unwrap_or_default(),
        tagged_addresses: string_map(&map, "TaggedAddresses")?,
        meta: string_map(&map, "NodeMeta")?,
        skip_node_update: field(&map, "SkipNodeUpdate")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        service: object(&map, "Service")?.map(decode_service).transpose()?,
        checks,
    })
}

impl Inner {
    /// The index of `/v1/catalog/nodes`: the agent's node or any external
    /// node changing.
    pub(crate) fn nodes_table_index(&self) -> u64 {
        self.node_index.max(self.ext_nodes_index)
    }

    /// Touches every service name on an external node (a node check
    /// changed) or just `service_id`'s name.
    fn touch_ext_scope(&mut self, node: &str, service_id: &str, idx: u64) {
        let names: BTreeSet<String> = self
            .ext_nodes
            .get(node)
            .map(|n| {
                n.services
                    .values()
                    .filter(|s| service_id.is_empty() || s.id == service_id)
                    .map(|s| s.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in names {
            self.service_indexes.insert(name, idx);
        }
    }

    fn catalog_register(&mut self, reg: Registration, dc: &str) -> Result<(), String> {
        let idx = self.index + 1;
        let mut changed = false;
        let node = match self.ext_nodes.get(&reg.node) {
            Some(n) => n.clone(),
            None if reg.skip_node_update => return Err("Missing node registration".to_owned()),
            None => ExtNode {
                id: String::new(),
                name: reg.node.clone(),
                address: String::new(),
                datacenter: dc.to_owned(),
                tagged_addresses: BTreeMap::new(),
                meta: BTreeMap::new(),
                create_index: idx,
                modify_index: idx,
                services: BTreeMap::new(),
                checks: BTreeMap::new(),
            },
        };
        let mut node = node;
        if !reg.skip_node_update {
            let fresh = (
                reg.id.clone(),
                reg.address.clone(),
                reg.tagged_addresses.clone(),
                reg.meta.clone(),
            );
            let current = (
                node.id.clone(),
                node.address.clone(),
                node.tagged_addresses.clone(),
                node.meta.clone(),
            );
            if fresh != current || node.create_index == idx {
                (node.id, node.address, node.tagged_addresses, node.meta) = fresh;
                node.modify_index = idx;
                self.ext_nodes_index = idx;
                changed = true;
            }
        }
        if let Some(mut svc) = reg.service {
            let existing = node.services.get(&svc.id);
            svc.create_index = existing.map_or(idx, |e| e.create_index);
            svc.modify_index = existing.map_or(idx, |e| e.modify_index);
            if existing != Some(&svc) {
                svc.modify_index = idx;
                if let Some(old) = existing.filter(|o| o.name != svc.name) {
                    self.service_indexes.insert(old.name.clone(), idx);
                }
                self.service_indexes.insert(svc.name.clone(), idx);
                self.services_index = idx;
                node.services.insert(svc.id.clone(), svc);
                changed = true;
            }
        }
        let mut touched_checks = Vec::new();
        for mut check in reg.checks {
            if !check.service_id.is_empty() && !node.services.contains_key(&check.service_id) {
                return Err("Missing service registration".to_owned());
            }
            if check.status.is_empty() {
                check.status = CRITICAL.to_owned();
            }
            let existing = node.checks.get(&check.id);
            check.create_index = existing.map_or(idx, |e| e.create_index);
            check.modify_index = existing.map_or(idx, |e| e.modify_index);
            if existing != Some(&check) {
                check.modify_index = idx;
                touched_checks.push((
                    check.id.clone(),
                    check.service_id.clone(),
                    check.status.clone(),
                ));
                node.checks.insert(check.id.clone(), check);
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let name = node.name.clone();
        self.ext_nodes.insert(name.clone(), node);
        for (id, service_id, status) in touched_checks {
            self.checks_index = idx;
            self.touch_ext_scope(&name, &service_id, idx);
            if status == CRITICAL {
                self.invalidate_sessions_for_node_check(&name, &id, idx);
            }
        }
        self.index = idx;
        Ok(())
    }

    fn invalidate_sessions_for_node_check(&mut self, node: &str, check_id: &str, idx: u64) {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node)
            .filter(|s| s.check_ids_contain(check_id))
            .map(|s| s.id.clone())
            .collect();
        let now = tokio::time::Instant::now();
        for id in doomed {
            self.invalidate_session_at(&id, idx, now);
        }
    }

    fn catalog_deregister(&mut self, node: &str, service_id: Option<&str>, check_id: Option<&str>) {
        let Some(mut ext) = self.ext_nodes.get(node).cloned() else {
            return;
        };
        let idx = self.index + 1;
        match (service_id, check_id) {
            (Some(sid), _) => {
                let Some(svc) = ext.services.remove(sid) else {
                    return;
                };
                let gone: Vec<String> = ext
                    .checks
                    .values()
                    .filter(|c| c.service_id == sid)
                    .map(|c| c.id.clone())
                    .collect();
                for id in &gone {
                    ext.checks.remove(id);
                }
                self.service_indexes.insert(svc.name, idx);
                self.services_index = idx;
                self.checks_index = idx;
                self.ext_nodes.insert(node.to_owned(), ext);
                for id in gone {
                    self.invalidate_sessions_for_node_check(node, &id, idx);
                }
            }
            (None, Some(cid)) => {
                let Some(check) = ext.checks.remove(cid) else {
                    return;
                };
                self.ext_nodes.insert(node.to_owned(), ext);
                self.checks_index = idx;
                self.touch_ext_scope(node, &check.service_id, idx);
                self.invalidate_sessions_for_node_check(node, cid, idx);
            }
            (None, None) => {
                self.touch_ext_scope(node, "", idx);
                self.ext_nodes.remove(node);
                self.ext_nodes_index = idx;
                self.services_index = idx;
                self.checks_index = idx;
                let doomed: Vec<String> = self
                    .sessions
                    .values()
                    .filter(|s| s.node == node)
                    .map(|s| s.id.clone())
                    .collect();
                let now = tokio::time::Instant::now();
                for id in doomed {
                    self.invalidate_session_at(&id, idx, now);
                }
            }
        }
        self.index = idx;
    }

    /// Status of a check on an external node, for session validation.
    pub(crate) fn ext_check_status(&self, node: &str, check_id: &str) -> Option<Option<&str>> {
        self.ext_nodes
            .get(node)
            .map(|n| n.checks.get(check_id).map(|c| c.status.as_str()))
    }
}

/// `PUT /v1/catalog/register`.
pub(crate) async fn register(
    State(store): State<Arc<Store>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reg = decode_registration(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    if reg.node.is_empty() {
        return Err(ApiError::internal("Must provide node"));
    }
    if reg.address.is_empty() && !reg.skip_node_update {
        return Err(ApiError::internal(
            "Must provide address if SkipNodeUpdate is not set",
        ));
    }
    if !reg.id.is_empty() && uuid::Uuid::parse_str(&reg.id).is_err() {
        let why = if reg.id.len() == 36 {
            "uuid is improperly formatted"
        } else {
            "uuid string is wrong length"
        };
        return Err(ApiError::internal(format!("Bad node ID: {why}")));
    }
    if let Some(bad) = reg
        .checks
        .iter()
        .find(|c| !c.status.is_empty() && !known_status(&c.status))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid check status {:?} for check {:?}: must be passing, warning or critical",
            bad.status, bad.id
        )));
    }
    if let Some(svc) = &reg.service
        && svc.name.is_empty()
    {
        return Err(ApiError::internal(
            "Must provide service name (Service.Service)",
        ));
    }
    if reg.node == store.node.name {
        return Err(ApiError::bad_request(format!(
            "dev stack: catalog writes for the agent's own node {:?} are not modelled; register through /v1/agent/service/register",
            reg.node
        )));
    }
    let dc = store.node.datacenter.clone();
    store
        .write(|inner| inner.catalog_register(reg, &dc))
        .map_err(ApiError::internal)?;
    Ok(json(&true, false))
}

/// `PUT /v1/catalog/deregister`.
pub(crate) async fn deregister(
    State(store): State<Arc<Store>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "Request decode failed: expected a JSON object",
        ));
    };
    let text = |name: &str| {
        string_field(&map, name)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
            .map(|v| v.filter(|s| !s.is_empty()))
    };
    let node = text("Node")?.ok_or_else(|| ApiError::internal("Must provide node"))?;
    let service_id = text("ServiceID")?;
    let check_id = text("CheckID")?;
    if node == store.node.name {
        return Err(ApiError::bad_request(format!(
            "dev stack: catalog writes for the agent's own node {node:?} are not modelled; deregister through /v1/agent/service/deregister"
        )));
    }
    store
        .write(|inner| inner.catalog_deregister(&node, service_id.as_deref(), check_id.as_deref()));
    Ok(json(&true, false))
}

// ----- rendering -------------------------------------------------------------

/// An external node as `/v1/catalog/nodes` and health entries show it.
pub(crate) fn node_json(n: &ExtNode) -> Value {
    json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "Meta": n.meta,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    })
}

/// A catalog-written check (`HealthCheck`); it has no definition to run.
pub(crate) fn check_json(n: &ExtNode, c: &ExtCheck) -> Value {
    let svc = n.services.get(&c.service_id);
    json!({
        "Node": n.name,
        "CheckID": c.id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": svc.map(|s| s.name.as_str()).unwrap_or(""),
        "ServiceTags": svc.map(|s| s.tags.clone()).unwrap_or_default(),
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
        "Namespace": "default",
    })
}

/// A health entry of a service on an external node: node checks first.
pub(crate) fn health_entry(n: &ExtNode, svc: &Service) -> Value {
    let node_checks = n.checks.values().filter(|c| c.service_id.is_empty());
    let svc_checks = n.checks.values().filter(|c| c.service_id == svc.id);
    let checks: Vec<Value> = node_checks
        .chain(svc_checks)
        .map(|c| check_json(n, c))
        .collect();
    json!({
        "Node": node_json(n),
        "Service": render::health_service(svc),
        "Checks": checks,
    })
}

/// A `/v1/catalog/service/:name` entry for a service on an external node.
pub(crate) fn catalog_service(n: &ExtNode, svc: &Service, inner: &Inner) -> Value {
    let info = NodeInfo {
        name: n.name.clone(),
        datacenter: n.datacenter.clone(),
        address: n.address.clone(),
    };
    let mut v = render::catalog_service(svc, &info, inner);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("ID".into(), Value::String(n.id.clone()));
        obj.insert("TaggedAddresses".into(), json!(n.tagged_addresses));
        obj.insert("NodeMeta".into(), json!(n.meta));
    }
    v
}

/// Every service instance on external nodes.
pub(crate) fn services(inner: &Inner) -> impl Iterator<Item = (&ExtNode, &Service)> {
    inner
        .ext_nodes
        .values()
        .flat_map(|n| n.services.values().map(move |s| (n, s)))
}

/// Every check on external nodes.
pub(crate) fn checks(inner: &Inner) -> impl Iterator<Item = (&ExtNode, &ExtCheck)> {
    inner
        .ext_nodes
        .values()
        .flat_map(|n| n.checks.values().map(move |c| (n, c)))
}

/// Whether a status word is one Consul stores.
pub(crate) fn known_status(s: &str) -> bool {
    matches!(s, PASSING | WARNING | CRITICAL)
}
