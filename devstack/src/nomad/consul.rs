//! The dev Nomad's view of Consul: register/deregister allocation services and
//! read their health, over Consul's HTTP agent API only.
//!
//! It speaks plain HTTP on purpose: the same code path works against the dev
//! Consul of this crate and against a real Consul agent, and the dev Nomad
//! never reaches into the dev Consul's internals. Registrations follow digest
//! §N6: service ID `_nomad-task-<alloc>-<task>-<service>-<port label>`, a
//! group service's with `group-<group>` for the task,
//! `external-source = nomad` in Meta, checks without an initial status (so
//! they start critical) and IDs `_nomad-check-<hash>`, the hash being
//! Nomad's `ServiceCheck.Hash`: SHA-256 (Nomad 2.0.5 on; SHA-1 before) over
//! the service ID and the check's fields in Nomad's order, in lower-case hex.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::spec::{CheckSpec, ServiceSpec};
use super::util::go_duration;
use crate::consul::duration::format_go;

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

/// Nomad's `OnUpdate` default (`ServiceCheck.Canonicalize`); the dev stack
/// models no other value.
const ON_UPDATE_REQUIRE_HEALTHY: &str = "require_healthy";

/// Nomad's check ID (`MakeCheckID`): `_nomad-check-` and the hex SHA-256 of
/// `ServiceCheck.Hash(serviceID)`: the service ID, then the check's name,
/// type, command, args, path, protocol, port label, interval and timeout
/// (Go's `Duration.String()`), method, body, on_update and notes written
/// back to back; then the fields Nomad adds only when set (TLS skip verify,
/// TLS server name, headers as sorted `name + values` strings, address
/// mode, gRPC, success/failure thresholds). `name` is the check's name after
/// Nomad's default and interpolation, `path` the interpolated path. Fields
/// the dev stack does not model hash as Nomad hashes them unset.
fn check_id(service_id: &str, c: &CheckSpec, name: &str, path: &str) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let (command, args, body, notes) = ("", "", "", "");
    for field in [
        service_id,
        name,
        &c.kind,
        command,
        args,
        path,
        &c.protocol,
        &c.port_label,
        &format_go(c.interval),
        &format_go(c.timeout),
        &c.method,
        body,
        ON_UPDATE_REQUIRE_HEALTHY,
        notes,
    ] {
        h.update(field.as_bytes());
    }
    if let Some(header) = c.header.as_object().filter(|m| !m.is_empty()) {
        let mut lines: Vec<String> = header
            .iter()
            .map(|(k, v)| {
                let values: String = match v {
                    Value::Array(vs) => vs.iter().filter_map(Value::as_str).collect(),
                    Value::String(one) => one.clone(),
                    _ => String::new(),
                };
                format!("{k}{values}")
            })
            .collect();
        lines.sort();
        h.update(lines.concat().as_bytes());
    }
    let digest = h.finish();
    let mut id = String::from("_nomad-check-");
    for b in digest.as_ref() {
        id.push_str(&format!("{b:02x}"));
    }
    id
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
    let name = if c.name.is_empty() {
        // Nomad's default check name, from the service's name.
        format!("service: {service_name:?} check")
    } else {
        interp(&c.name)
    };
    let check_id = check_id(service_id, c, &name, &interp(&c.path));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SERVICE_ID: &str = "_nomad-task-0b3c-group-blue-hello-service-http";
    const NAME: &str = "service: \"hello-service\" check";

    fn http_check() -> CheckSpec {
        CheckSpec {
            name: String::new(),
            kind: "http".into(),
            path: "/health".into(),
            protocol: String::new(),
            method: String::new(),
            port_label: String::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            header: Value::Null,
            initial_status: String::new(),
        }
    }

    #[test]
    fn check_ids_are_nomads_sha256_over_its_field_order() {
        // Expected values: SHA-256 (Python's hashlib) of the fields in
        // Nomad's order: the service ID, the name, "http", "", "", "/health",
        // "", "", "1s", "2s", "", "", "require_healthy", "".
        let c = http_check();
        assert_eq!(
            check_id(SERVICE_ID, &c, NAME, &c.path),
            "_nomad-check-f3b9c616b21cb0b986f4922c404f7a87aad2cd9601aa309a2940a0b471108b5c"
        );
        // Headers: `name + values`, sorted, concatenated, after the rest.
        let mut with_header = http_check();
        with_header.header = json!({"X-B": ["c"], "X-A": ["a", "b"]});
        assert_eq!(
            check_id(SERVICE_ID, &with_header, NAME, &with_header.path),
            "_nomad-check-c167d08dcc642b0376298b1e2657cc0918caad34229bad5ac529891649b1daac"
        );
    }

    #[test]
    fn check_ids_are_stable_and_differ_in_any_field() {
        let base = http_check();
        let id = |c: &CheckSpec| check_id(SERVICE_ID, c, NAME, &c.path);
        let first = id(&base);
        let hex = first.strip_prefix("_nomad-check-").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(id(&base.clone()), first, "same check, same ID");
        let variants: Vec<CheckSpec> = vec![
            CheckSpec {
                path: "/ready".into(),
                ..base.clone()
            },
            CheckSpec {
                kind: "tcp".into(),
                ..base.clone()
            },
            CheckSpec {
                protocol: "https".into(),
                ..base.clone()
            },
            CheckSpec {
                method: "POST".into(),
                ..base.clone()
            },
            CheckSpec {
                port_label: "admin".into(),
                ..base.clone()
            },
            CheckSpec {
                interval: Duration::from_millis(1500),
                ..base.clone()
            },
            CheckSpec {
                timeout: Duration::from_secs(3),
                ..base.clone()
            },
            CheckSpec {
                header: json!({"X-A": ["1"]}),
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(id(v), first, "{v:?}");
        }
        assert_ne!(check_id("_nomad-task-other", &base, NAME, "/health"), first);
        assert_ne!(check_id(SERVICE_ID, &base, "other", "/health"), first);
    }
}
