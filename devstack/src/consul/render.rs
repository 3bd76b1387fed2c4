//! JSON shapes of the read endpoints, built from the state.
//!
//! Field names and JSON types follow the published samples in
//! `fixtures/consul/` (the ground truth for our clients); fields that real
//! Consul marks `omitempty` (`Kind`, empty `TaggedAddresses` of a service,
//! `Session` of a KV pair) are left out the same way. Tags and Meta are
//! never `null`: Consul's HTTP layer turns nil slices into `[]`.

use serde_json::{Map, Value, json};

use super::duration::format_go;
use super::state::{Check, CheckKind, Inner, KvEntry, NodeInfo, PASSING, Service};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub(crate) const SERF_CHECK_ID: &str = "serfHealth";

fn tagged_addresses_lower(svc: &Service) -> Value {
    let map: Map<String, Value> = svc
        .tagged_addresses
        .iter()
        .map(|(k, a)| (k.clone(), json!({"address": a.address, "port": a.port})))
        .collect();
    Value::Object(map)
}

fn tagged_addresses_upper(svc: &Service) -> Value {
    let map: Map<String, Value> = svc
        .tagged_addresses
        .iter()
        .map(|(k, a)| (k.clone(), json!({"Address": a.address, "Port": a.port})))
        .collect();
    Value::Object(map)
}

/// The node object of health entries and `/v1/catalog/nodes`.
pub(crate) fn node(node: &NodeInfo, inner: &Inner) -> Value {
    json!({
        "ID": inner.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": {
            "lan": node.address,
            "lan_ipv4": node.address,
            "wan": node.address,
            "wan_ipv4": node.address,
        },
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": inner.node_index,
        "ModifyIndex": inner.node_index,
    })
}

/// A service as `/v1/agent/services` shows it (`api.AgentService`).
pub(crate) fn agent_service(svc: &Service, node: &NodeInfo) -> Value {
    let mut v = json!({
        "ID": svc.id,
        "Service": svc.name,
        "Tags": svc.tags,
        "Meta": svc.meta,
        "Port": svc.port,
        "Address": svc.address,
        "SocketPath": "",
        "Weights": {"Passing": svc.weights.passing, "Warning": svc.weights.warning},
        "EnableTagOverride": svc.enable_tag_override,
        "Datacenter": node.datacenter,
        "Namespace": "default",
    });
    if let Some(obj) = v.as_object_mut() {
        if !svc.tagged_addresses.is_empty() {
            obj.insert("TaggedAddresses".into(), tagged_addresses_lower(svc));
        }
        if !svc.kind.is_empty() {
            obj.insert("Kind".into(), Value::String(svc.kind.clone()));
        }
    }
    v
}

/// The service of `/v1/agent/health/service/id/:id`, whose sample spells
/// tagged addresses with capitals (as `api.AgentService` does).
pub(crate) fn agent_health_service(svc: &Service, node: &NodeInfo) -> Value {
    let mut v = agent_service(svc, node);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("TaggedAddresses".into(), tagged_addresses_upper(svc));
    }
    v
}

/// The service object of a `/v1/health/service/:name` entry.
pub(crate) fn health_service(svc: &Service) -> Value {
    let mut v = json!({
        "ID": svc.id,
        "Service": svc.name,
        "Tags": svc.tags,
        "Address": svc.address,
        "Meta": svc.meta,
        "Port": svc.port,
        "Weights": {"Passing": svc.weights.passing, "Warning": svc.weights.warning},
        "EnableTagOverride": svc.enable_tag_override,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "CreateIndex": svc.create_index,
        "ModifyIndex": svc.modify_index,
        "Namespace": "default",
    });
    if let Some(obj) = v.as_object_mut() {
        if !svc.tagged_addresses.is_empty() {
            obj.insert("TaggedAddresses".into(), tagged_addresses_lower(svc));
        }
        if !svc.kind.is_empty() {
            obj.insert("Kind".into(), Value::String(svc.kind.clone()));
        }
    }
    v
}

/// A `/v1/catalog/service/:name` entry (`ServiceNode`).
pub(crate) fn catalog_service(svc: &Service, node: &NodeInfo, inner: &Inner) -> Value {
    let mut v = json!({
        "ID": inner.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": {
            "lan": node.address,
            "lan_ipv4": node.address,
            "wan": node.address,
            "wan_ipv4": node.address,
        },
        "NodeMeta": {"consul-network-segment": ""},
        "ServiceKind": svc.kind,
        "ServiceID": svc.id,
        "ServiceName": svc.name,
        "ServiceTags": svc.tags,
        "ServiceAddress": svc.address,
        "ServiceWeights": {"Passing": svc.weights.passing, "Warning": svc.weights.warning},
        "ServiceMeta": svc.meta,
        "ServicePort": svc.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": svc.enable_tag_override,
        "ServiceProxy": {
            "DestinationServiceName": "",
            "DestinationServiceID": "",
            "LocalServiceAddress": "",
            "LocalServicePort": 0,
            "Config": null,
            "Upstreams": null,
            "Mode": "",
            "MeshGateway": {},
            "Expose": {},
        },
        "ServiceConnect": {"Native": false, "Proxy": null},
        "CreateIndex": svc.create_index,
        "ModifyIndex": svc.modify_index,
        "Namespace": "default",
    });
    if !svc.tagged_addresses.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("ServiceTaggedAddresses".into(), tagged_addresses_lower(svc));
    }
    v
}

/// A check as every endpoint shows it (`HealthCheck`).
pub(crate) fn check(check: &Check, node: &NodeInfo, inner: &Inner) -> Value {
    let svc = inner.services.get(&check.service_id);
    let def = &check.def;
    let interval = def.interval.map(format_go).unwrap_or_default();
    let timeout = match def.kind {
        CheckKind::Http | CheckKind::Tcp | CheckKind::Grpc | CheckKind::Script => {
            def.timeout.map(format_go).unwrap_or_default()
        }
        CheckKind::Ttl => String::new(),
    };
    let header = if def.header.is_empty() {
        Value::Null
    } else {
        json!(def.header)
    };
    json!({
        "Node": node.name,
        "CheckID": check.id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": svc.map(|s| s.name.as_str()).unwrap_or(""),
        "ServiceTags": svc.map(|s| s.tags.clone()).unwrap_or_default(),
        "Type": def.kind.as_str(),
        "Interval": interval,
        "Timeout": timeout,
        "ExposedPort": 0,
        "Definition": {
            "Interval": format_go(def.interval.unwrap_or_default()),
            "Timeout": format_go(def.timeout.unwrap_or_default()),
            "DeregisterCriticalServiceAfter": format_go(def.deregister_after.unwrap_or_default()),
            "HTTP": def.http,
            "Header": header,
            "Method": def.method,
            "Body": def.body,
            "TLSServerName": def.tls_server_name,
            "TLSSkipVerify": def.tls_skip_verify,
            "TCP": def.tcp,
        },
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
        "Namespace": "default",
    })
}

/// The node's `serfHealth` check; the dev node is always alive.
pub(crate) fn serf_check(node: &NodeInfo, inner: &Inner) -> Value {
    json!({
        "Node": node.name,
        "CheckID": SERF_CHECK_ID,
        "Name": "Serf Health Status",
        "Status": PASSING,
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": inner.node_index,
        "ModifyIndex": inner.node_index,
        "Namespace": "default",
    })
}

/// Node-level checks: `serfHealth` plus checks registered without a
/// service. They appear in every health entry of the node.
pub(crate) fn node_checks(node: &NodeInfo, inner: &Inner) -> Vec<Value> {
    let mut out = vec![serf_check(node, inner)];
    out.extend(
        inner
            .checks
            .values()
            .filter(|c| c.service_id.is_empty())
            .map(|c| check(c, node, inner)),
    );
    out
}

/// A `/v1/health/service/:name` entry: node, service, and the node checks
/// followed by the service's checks (Consul's state store order).
pub(crate) fn health_entry(svc: &Service, node: &NodeInfo, inner: &Inner) -> Value {
    let mut checks = node_checks(node, inner);
    checks.extend(
        inner
            .checks
            .values()
            .filter(|c| c.service_id == svc.id)
            .map(|c| check(c, node, inner)),
    );
    json!({
        "Node": self::node(node, inner),
        "Service": health_service(svc),
        "Checks": checks,
    })
}

/// A KV entry; an empty value is `null`, as Go encodes a nil byte slice.
pub(crate) fn kv_entry(e: &KvEntry) -> Value {
    let value = if e.value.is_empty() {
        Value::Null
    } else {
        Value::String(STANDARD.encode(&e.value))
    };
    let mut v = json!({
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        "Value": value,
    });
    if !e.session.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("Session".into(), Value::String(e.session.clone()));
    }
    v
}
