//! `GET /v1/agent/self`: the agent's configuration and its gossip member
//! entry, in the shape the Go and Python clients decode (`Config`,
//! `DebugConfig`, `Coord`, `Member`, `Meta`).
//!
//! The dev agent is a single server that is also the leader; it reports
//! the Consul API version it follows ([`COMPATIBLE_VERSION`]) so clients that
//! gate features on the version take the modern paths.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json;

use super::http::{ApiError, Params, json};
use super::state::Store;

/// The Consul release whose HTTP API the dev agent follows.
pub(crate) const COMPATIBLE_VERSION: &str = "1.19.2";

/// Serf LAN port a real agent gossips on; reported, never opened.
const SERF_LAN_PORT: u16 = 8301;

pub(crate) async fn agent_self(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let node = &store.node;
    let node_id = store.read(|inner| inner.node_id.clone());
    let body = json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node_id,
            "Partition": "",
            "Revision": "",
            "Server": true,
            "Version": COMPATIBLE_VERSION,
            "BuildDate": "",
        },
        "DebugConfig": {
            "Datacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node_id,
            "ServerMode": true,
            "Bootstrap": true,
            "BindAddr": node.address,
            "AdvertiseAddrLAN": node.address,
            "ClientAddrs": [node.address],
        },
        "Coord": {
            "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "Error": 1.5,
            "Adjustment": 0.0,
            "Height": 1.0e-5,
        },
        "Member": {
            "Name": node.name,
            "Addr": node.address,
            "Port": SERF_LAN_PORT,
            "Tags": {
                "bootstrap": "1",
                "build": COMPATIBLE_VERSION,
                "dc": node.datacenter,
                "id": node_id,
                "port": "8300",
                "role": "consul",
                "segment": "",
                "vsn": "2",
                "vsn_max": "3",
                "vsn_min": "2",
            },
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        },
        "Meta": {"consul-network-segment": ""},
    });
    Ok(json(&body, params.present("pretty")))
}
