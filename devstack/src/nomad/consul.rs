//! The dev Nomad's view of Consul: register/deregister allocation services and
//! read their health, over Consul's HTTP agent API only.
//!
//! It speaks plain HTTP on purpose: the same code path works against the dev
//! Consul of this crate and against a real Consul agent, and the dev Nomad
//! never reaches into the dev Consul's internals. Registrations follow digest
//! §N6: service ID `_nomad-task-<alloc>-<task>-<service>-<port label>`, a
//! group service's with `group-<group>` for the task,
//! `external-source = nomad` in Meta, checks without an initial status (so
//! they start critical) and IDs `_nomad-check-<hash>`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::spec::{CheckSpec, ServiceSpec};
use super::util::{fnv64, go_duration};

/// Errors talking to the Consul agent.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// Transport failure (connection refused, timeout…).
    #[error("consul request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The client could not be set up (CA file, token).
    #[error("consul client: {0}")]
    Config(String),
    /// Consul answered with an error status.
    #[error("consul answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body (Consul errors are text/plain).
        body: String,
    },
}

/// Aggregated health of one registered service, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Passing,
    Warning,
    Critical,
    Unknown,
}

/// Thin client for the agent endpoints the dev Nomad needs.
#[derive(Debug, Clone)]
pub(crate) struct ConsulAgent {
    http: reqwest::Client,
    base: String,
}

/// Everything needed to register one service instance of an allocation.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) id: String,
    pub(crate) body: Value,
}

impl ConsulAgent {
    /// A client of the agent at `addr`, sending `token` (the Nomad agent's
    /// Consul token) in `X-Consul-Token`, trusting `ca_cert` for
    /// `https://` when given (else the system's roots).
    pub(crate) fn new(
        addr: &str,
        token: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, ConsulError> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let builder = match ca_cert {
            Some(ca) => switchyard_hashi::tls::http_client_builder_with(
                &switchyard_hashi::tls::TlsConfig {
                    ca_cert: Some(ca.to_path_buf()),
                    ..Default::default()
                },
                "Consul",
            )
            .map_err(|e| ConsulError::Config(e.to_string()))?,
            None => switchyard_hashi::tls::http_client_builder(),
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                ConsulError::Config("the Consul token is not a valid header value".to_owned())
            })?;
            value.set_sensitive(true);
            headers.insert("X-Consul-Token", value);
        }
        let http = builder
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, base })
    }

    async fn check_status(resp: reqwest::Response) -> Result<(), ConsulError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(ConsulError::Status {
            status: status.as_u16(),
            body,
        })
    }

    /// `PUT /v1/agent/service/register?replace-existing-checks=true`, so an
    /// in-place update that drops a check removes it in Consul too.
    pub(crate) async fn register(&self, reg: &Registration) -> Result<(), ConsulError> {
        let resp = self
            .http
            .put(format!(
                "{}/v1/agent/service/register?replace-existing-checks=true",
                self.base
            ))
            .json(&reg.body)
            .send()
            .await?;
        Self::check_status(resp).await
    }

    /// `PUT /v1/agent/service/deregister/:id` (unknown IDs are a no-op in Consul).
    pub(crate) async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        let resp = self
            .http
            .put(format!("{}/v1/agent/service/deregister/{id}", self.base))
            .send()
            .await?;
        Self::check_status(resp).await
    }

    /// `GET /v1/agent/services`: the IDs of the services on the agent.
    pub(crate) async fn service_ids(&self) -> Result<Vec<String>, ConsulError> {
        let resp = self
            .http
            .get(format!("{}/v1/agent/services", self.base))
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ConsulError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let map: serde_json::Map<String, Value> = resp.json().await?;
        Ok(map.into_iter().map(|(id, _)| id).collect())
    }

    /// `GET /v1/agent/health/service/id/:id`: the status code is the health.
    pub(crate) async fn health(&self, id: &str) -> Result<Health, ConsulError> {
        let resp = self
            .http
            .get(format!("{}/v1/agent/health/service/id/{id}", self.base))
            .send()
            .await?;
        Ok(match resp.status().as_u16() {
            200 => Health::Passing,
            429 => Health::Warning,
            503 => Health::Critical,
            404 => Health::Unknown,
            other => {
                let body = resp.text().await.unwrap_or_default();
                return Err(ConsulError::Status {
                    status: other,
                    body,
                });
            }
        })
    }
}

/// Who owns a service in its ID: the task of a task service, `group-<group>`
/// for a group service (Nomad's workload name).
pub(crate) fn service_owner(group: &str, svc: &ServiceSpec) -> String {
    match &svc.task {
        Some(task) => task.clone(),
        None => format!("group-{group}"),
    }
}

/// Service ID Nomad uses for a service of an allocation; `owner` is
/// [`service_owner`].
pub(crate) fn service_id(alloc_id: &str, owner: &str, svc: &ServiceSpec) -> String {
    format!(
        "_nomad-task-{alloc_id}-{owner}-{}-{}",
        svc.name, svc.port_label
    )
}

/// Builds the agent registration body of one service of an allocation.
/// `interp` resolves `${NOMAD_…}` in tags, meta and check paths; `ports` maps
/// port labels to host ports.
pub(crate) fn registration(
    alloc_id: &str,
    owner: &str,
    svc: &ServiceSpec,
    address: &str,
    ports: &BTreeMap<String, u16>,
    canary: bool,
    interp: &dyn Fn(&str) -> String,
) -> Registration {
    let id = service_id(alloc_id, owner, svc);
    let tags: Vec<String> = if canary && !svc.canary_tags.is_empty() {
        &svc.canary_tags
    } else {
        &svc.tags
    }
    .iter()
    .map(|t| interp(t))
    .collect();
    let mut meta: BTreeMap<String, String> = svc
        .meta
        .iter()
        .map(|(k, v)| (k.clone(), interp(v)))
        .collect();
    meta.insert("external-source".into(), "nomad".into());
    let port = ports.get(&svc.port_label).copied().unwrap_or(0);
    let checks: Vec<Value> = svc
        .checks
        .iter()
        .filter_map(|c| check_body(&id, &svc.name, c, address, port, ports, interp))
        .collect();
    let body = json!({
        "ID": id,
        "Name": interp(&svc.name),
        "Tags": tags,
        "Address": address,
        "Port": port,
        "Meta": meta,
        "Checks": checks,
    });
    Registration { id, body }
}

fn check_body(
    service_id: &str,
    service_name: &str,
    c: &CheckSpec,
    address: &str,
    svc_port: u16,
    ports: &BTreeMap<String, u16>,
    interp: &dyn Fn(&str) -> String,
) -> Option<Value> {
    let port = if c.port_label.is_empty() {
        svc_port
    } else {
        ports.get(&c.port_label).copied().unwrap_or(svc_port)
    };
    let hash = fnv64(format!("{service_id}|{c:?}").as_bytes());
    let check_id = format!("_nomad-check-{hash:016x}");
    let name = if c.name.is_empty() {
        // Nomad's default check name, from the service's name.
        format!("service: {service_name:?} check")
    } else {
        interp(&c.name)
    };
    let mut body = json!({
        "CheckID": check_id,
        "Name": name,
        "Interval": go_duration(c.interval),
        "Timeout": go_duration(c.timeout),
    });
    let obj = body.as_object_mut()?;
    if !c.initial_status.is_empty() {
        obj.insert("Status".into(), json!(c.initial_status));
    }
    match c.kind.as_str() {
        "http" => {
            let proto = if c.protocol.is_empty() {
                "http"
            } else {
                c.protocol.as_str()
            };
            let path = interp(&c.path);
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            obj.insert(
                "HTTP".into(),
                json!(format!("{proto}://{address}:{port}{path}")),
            );
            if !c.method.is_empty() {
                obj.insert("Method".into(), json!(c.method));
            }
            if c.header.is_object() {
                obj.insert("Header".into(), c.header.clone());
            }
        }
        "tcp" => {
            obj.insert("TCP".into(), json!(format!("{address}:{port}")));
        }
        other => {
            tracing::warn!(
                check_type = other,
                "check type not supported by the dev stack; skipped"
            );
            return None;
        }
    }
    Some(body)
}
