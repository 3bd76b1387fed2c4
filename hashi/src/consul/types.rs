//! Consul's JSON shapes, with the field names Consul sends and the official Go client expects.
//!
//! Every struct tolerates missing fields (`#[serde(default)]`) and `null` lists and maps (Go
//! writes nil slices and maps as `null`). The types also serialise, so the dev stack can serve
//! them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::serde_util::{base64_bytes, null_default};

/// One instance in a `/v1/health/service/:service` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: AgentService,
    /// The service's checks **and** the node's checks (such as `serfHealth`).
    #[serde(deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// Where to connect: `Service.Address`, or `Node.Address` when the service has none.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }

    /// The worst status among the entry's checks (service and node checks); `Passing` when there
    /// are none.
    pub fn aggregated_status(&self) -> CheckStatus {
        self.checks
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| s.severity())
            .unwrap_or(CheckStatus::Passing)
    }
}

/// A catalog node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service instance as the agent and the health endpoint describe it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AgentService {
    /// `""` for a typical service, or `connect-proxy`, `mesh-gateway`, ...
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name.
    pub service: String,
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    /// May be empty, meaning "the node's address" (see [`ServiceEntry::address`]).
    pub address: String,
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<AgentWeights>,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// An address and port under `TaggedAddresses` (`lan`, `wan`, `lan_ipv4`, ...).
///
/// The health endpoint writes the keys in lower case, the agent endpoints capitalised; both read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceAddress {
    #[serde(rename = "Address", alias = "address")]
    pub address: String,
    #[serde(rename = "Port", alias = "port")]
    pub port: u16,
}

/// DNS weights of an instance by health state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AgentWeights {
    pub passing: i32,
    pub warning: i32,
}

impl Default for AgentWeights {
    /// Consul's default, `{Passing: 1, Warning: 1}`.
    fn default() -> Self {
        AgentWeights {
            passing: 1,
            warning: 1,
        }
    }
}

/// A check and its current state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    /// Empty for a node-level check.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    #[serde(deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    /// `http`, `tcp`, `ttl`, ... (empty in some answers).
    #[serde(rename = "Type")]
    pub check_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The state of a check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    /// Also what Consul stores for a check registered without a status.
    Critical,
    Maintenance,
    /// Anything else (never sent by current servers). Counts as worse than critical.
    #[default]
    #[serde(other)]
    Unknown,
}

impl CheckStatus {
    /// The wire name (`passing`, `warning`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
            CheckStatus::Maintenance => "maintenance",
            CheckStatus::Unknown => "unknown",
        }
    }

    /// Orders statuses from best to worst, for aggregation.
    fn severity(self) -> u8 {
        match self {
            CheckStatus::Passing => 0,
            CheckStatus::Warning => 1,
            CheckStatus::Critical => 2,
            CheckStatus::Maintenance => 3,
            CheckStatus::Unknown => 4,
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One KV entry. `value` holds the decoded bytes (the wire form is standard base64).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct KvPair {
    pub key: String,
    pub create_index: u64,
    /// Equals the `X-Consul-Index` of a single-key read; the value to pass as `cas`.
    pub modify_index: u64,
    pub lock_index: u64,
    /// Opaque to Consul: any u64.
    pub flags: u64,
    #[serde(with = "base64_bytes")]
    pub value: Option<Vec<u8>>,
    /// The session holding the lock, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// One instance in a `/v1/catalog/service/:service` answer: node fields plus `Service*` fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CatalogService {
    /// The node ID.
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    /// The node address.
    pub address: String,
    pub datacenter: String,
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    /// May be empty, meaning "the node's address" (see [`CatalogService::address`]).
    pub service_address: String,
    #[serde(deserialize_with = "null_default")]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_weights: Option<AgentWeights>,
    pub service_enable_tag_override: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl CatalogService {
    /// Where to connect: `ServiceAddress`, or the node `Address` when the service has none.
    pub fn address(&self) -> &str {
        if self.service_address.is_empty() {
            &self.address
        } else {
            &self.service_address
        }
    }
}

/// The body of `PUT /v1/agent/service/register`, with the field names the official Go client
/// sends; empty fields are left out, as Go's `omitempty` does.
///
/// Deserialisation also accepts the snake_case spellings the agent endpoint accepts (`id`,
/// `name`, `tags`, ...), so a server can read what other clients send.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentServiceRegistration {
    #[serde(
        rename = "Kind",
        alias = "kind",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Defaults to `name` on the server; unique per agent.
    #[serde(rename = "ID", alias = "id", skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(
        rename = "Name",
        alias = "name",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        rename = "Tags",
        alias = "tags",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    #[serde(rename = "Port", alias = "port", skip_serializing_if = "is_zero_u16")]
    pub port: u16,
    /// Empty means "the node's address". `0.0.0.0` and `::` are rejected by the agent.
    #[serde(
        rename = "Address",
        alias = "address",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    #[serde(
        rename = "TaggedAddresses",
        alias = "tagged_addresses",
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(
        rename = "EnableTagOverride",
        alias = "enable_tag_override",
        skip_serializing_if = "is_false"
    )]
    pub enable_tag_override: bool,
    #[serde(
        rename = "Meta",
        alias = "meta",
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub meta: BTreeMap<String, String>,
    #[serde(
        rename = "Weights",
        alias = "weights",
        skip_serializing_if = "Option::is_none"
    )]
    pub weights: Option<AgentWeights>,
    #[serde(
        rename = "Check",
        alias = "check",
        skip_serializing_if = "Option::is_none"
    )]
    pub check: Option<AgentServiceCheck>,
    #[serde(
        rename = "Checks",
        alias = "checks",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub checks: Vec<AgentServiceCheck>,
    #[serde(
        rename = "Namespace",
        alias = "namespace",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
}

/// A check inside a service registration (`Check` or an element of `Checks`), with the field
/// names the official Go client sends (`CheckID`, `HTTP`, `TCP`, `TTL`, `ScriptArgs`, ...).
///
/// Durations are Go duration strings (`"10s"`, `"90m"`); [`crate::go_duration`] formats one.
/// Deserialisation also accepts the agent config-file (snake_case) spellings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentServiceCheck {
    #[serde(
        rename = "CheckID",
        alias = "ID",
        alias = "id",
        alias = "check_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub check_id: String,
    #[serde(
        rename = "Name",
        alias = "name",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// A script check's command line (sent as `ScriptArgs`).
    #[serde(
        rename = "ScriptArgs",
        alias = "Args",
        alias = "args",
        alias = "script_args",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    #[serde(
        rename = "DockerContainerID",
        alias = "docker_container_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub docker_container_id: String,
    #[serde(
        rename = "Shell",
        alias = "shell",
        skip_serializing_if = "String::is_empty"
    )]
    pub shell: String,
    /// Required for HTTP, TCP and UDP checks.
    #[serde(
        rename = "Interval",
        alias = "interval",
        skip_serializing_if = "String::is_empty"
    )]
    pub interval: String,
    /// Defaults to 10 s on the agent.
    #[serde(
        rename = "Timeout",
        alias = "timeout",
        skip_serializing_if = "String::is_empty"
    )]
    pub timeout: String,
    /// A TTL check: the service must report through `/v1/agent/check/pass|warn|fail/:id` within
    /// this time. Consul rejects a check that sets both `ttl` and `interval`.
    #[serde(
        rename = "TTL",
        alias = "ttl",
        skip_serializing_if = "String::is_empty"
    )]
    pub ttl: String,
    /// An HTTP check's URL: any 2xx is passing, 429 warning, anything else critical.
    #[serde(
        rename = "HTTP",
        alias = "http",
        skip_serializing_if = "String::is_empty"
    )]
    pub http: String,
    #[serde(
        rename = "Header",
        alias = "header",
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(
        rename = "Method",
        alias = "method",
        skip_serializing_if = "String::is_empty"
    )]
    pub method: String,
    #[serde(
        rename = "Body",
        alias = "body",
        skip_serializing_if = "String::is_empty"
    )]
    pub body: String,
    /// A TCP check's `host:port`.
    #[serde(
        rename = "TCP",
        alias = "tcp",
        skip_serializing_if = "String::is_empty"
    )]
    pub tcp: String,
    /// The initial status; when absent the agent starts the check `critical`.
    #[serde(
        rename = "Status",
        alias = "status",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<CheckStatus>,
    #[serde(
        rename = "Notes",
        alias = "notes",
        skip_serializing_if = "String::is_empty"
    )]
    pub notes: String,
    #[serde(
        rename = "TLSServerName",
        alias = "tls_server_name",
        skip_serializing_if = "String::is_empty"
    )]
    pub tls_server_name: String,
    #[serde(
        rename = "TLSSkipVerify",
        alias = "tls_skip_verify",
        skip_serializing_if = "is_false"
    )]
    pub tls_skip_verify: bool,
    #[serde(
        rename = "GRPC",
        alias = "grpc",
        skip_serializing_if = "String::is_empty"
    )]
    pub grpc: String,
    #[serde(
        rename = "GRPCUseTLS",
        alias = "grpc_use_tls",
        skip_serializing_if = "is_false"
    )]
    pub grpc_use_tls: bool,
    #[serde(
        rename = "SuccessBeforePassing",
        alias = "success_before_passing",
        skip_serializing_if = "is_zero_u32"
    )]
    pub success_before_passing: u32,
    #[serde(
        rename = "FailuresBeforeWarning",
        alias = "failures_before_warning",
        skip_serializing_if = "is_zero_u32"
    )]
    pub failures_before_warning: u32,
    #[serde(
        rename = "FailuresBeforeCritical",
        alias = "failures_before_critical",
        skip_serializing_if = "is_zero_u32"
    )]
    pub failures_before_critical: u32,
    /// Remove the whole service once this check has been critical for this long (minimum 1
    /// minute; the reaper runs every 30 s).
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        alias = "deregister_critical_service_after",
        skip_serializing_if = "String::is_empty"
    )]
    pub deregister_critical_service_after: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}
