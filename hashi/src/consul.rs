//! A Consul HTTP API client: health, catalog, KV (with session locks), session, agent and
//! status endpoints.
//!
//! Paths, parameters and headers follow the official Go client (`api/api.go`, `api/agent.go`):
//! `X-Consul-Token` carries the token, `dc` the datacenter, `wait` is sent as `<n>ms`, `stale` as
//! a bare flag and `passing` as `passing=1`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, StatusCode};

use crate::tls::{TlsConfig, parse_go_bool};
use crate::transport::{self, Body, CONSUL, Path, Query, REQUEST_TIMEOUT, Transport};
use crate::{Error, QueryMeta, QueryOptions};

mod session;
mod types;

pub use session::{SessionBehavior, SessionEntry, SessionRequest};
pub use types::*;

/// Used when `CONSUL_HTTP_ADDR` is not set.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";

/// Where and how to reach a Consul agent.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `host:port`, `http://host:port`, `https://host:port` or `unix:///path/to.sock`. Empty
    /// means [`DEFAULT_ADDRESS`].
    pub address: String,
    /// Sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored). Read when the client is built;
    /// a non-empty file wins over `token`, as in Consul's own client.
    pub token_file: Option<PathBuf>,
    /// Sent as `?dc=` on every request; `None` means the agent's own datacenter.
    pub datacenter: Option<String>,
    /// How to verify an `https://` agent and identify to it.
    pub tls: TlsConfig,
}

impl ConsulConfig {
    /// Reads the variables the `consul` CLI reads: `CONSUL_HTTP_ADDR` (default
    /// `http://127.0.0.1:8500`; without a scheme it is `http`, or `https` when `CONSUL_HTTP_SSL`
    /// is true), `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`, `CONSUL_CAPATH`,
    /// `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME` and
    /// `CONSUL_HTTP_SSL_VERIFY` (false skips verification). Empty variables count as unset;
    /// unreadable booleans are ignored with a warning, as the CLI does.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables taken from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let flag = |name: &str| {
            let value = var(name)?;
            let parsed = parse_go_bool(&value);
            if parsed.is_none() {
                tracing::warn!(variable = name, %value, "not a boolean; ignored");
            }
            parsed
        };
        let mut address = var("CONSUL_HTTP_ADDR").unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        if flag("CONSUL_HTTP_SSL") == Some(true) {
            // TLS asked for explicitly is never downgraded, not even by an `http://` address.
            let rest = address.strip_prefix("http://").unwrap_or(&address);
            if !rest.contains("://") {
                address = format!("https://{rest}");
            }
        }
        let path = |name: &str| var(name).map(PathBuf::from);
        ConsulConfig {
            address,
            token: var("CONSUL_HTTP_TOKEN"),
            token_file: path("CONSUL_HTTP_TOKEN_FILE"),
            datacenter: None,
            tls: TlsConfig {
                ca_cert: path("CONSUL_CACERT"),
                ca_path: path("CONSUL_CAPATH"),
                client_cert: path("CONSUL_CLIENT_CERT"),
                client_key: path("CONSUL_CLIENT_KEY"),
                server_name: var("CONSUL_TLS_SERVER_NAME"),
                insecure_skip_verify: flag("CONSUL_HTTP_SSL_VERIFY") == Some(false),
            },
        }
    }

    /// The token to send: the token file's content when it is not empty, else `token`.
    pub fn effective_token(&self) -> Result<Option<String>, Error> {
        read_token(self.token.as_deref(), self.token_file.as_deref(), "Consul")
    }
}

/// A token, or the non-empty content of a token file, which wins.
pub(crate) fn read_token(
    token: Option<&str>,
    file: Option<&std::path::Path>,
    product: &str,
) -> Result<Option<String>, Error> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::Config(format!(
                "cannot read the {product} token file {}: {e}",
                file.display()
            ))
        })?;
        let text = text.trim();
        if !text.is_empty() {
            return Ok(Some(text.to_owned()));
        }
    }
    Ok(token.filter(|t| !t.is_empty()).map(str::to_owned))
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: DEFAULT_ADDRESS.to_owned(),
            token: None,
            token_file: None,
            datacenter: None,
            tls: TlsConfig::default(),
        }
    }
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("datacenter", &self.datacenter)
            .field("tls", &self.tls)
            .finish()
    }
}

/// One registered instance of a service, as [`ConsulClient::service_instances`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInstance {
    /// The service ID (unique per agent).
    pub id: String,
    /// The node it is registered on.
    pub node: String,
    /// `host:port` (`[v6]:port`): the service address, or the node's when it has none.
    pub address: String,
    /// The worst status among its service and node checks.
    pub status: CheckStatus,
    /// The service's meta.
    pub meta: BTreeMap<String, String>,
}

/// Filters for [`ConsulClient::health_service`].
#[derive(Clone, Debug, Default)]
pub struct HealthQuery {
    /// Only instances whose checks (service **and** node checks) are all `passing`. Applied by
    /// the agent after the query, so `X-Consul-Index` covers the unfiltered set.
    pub passing: bool,
    /// Instances must carry every one of these tags (case-insensitive). Deprecated upstream in
    /// favour of `filter`, still honoured.
    pub tags: Vec<String>,
    /// A bexpr filter run on the servers, e.g. `Service.Meta.colour == "blue"`.
    pub filter: Option<String>,
}

/// Options for [`ConsulClient::kv_put`].
#[derive(Clone, Debug, Default)]
pub struct KvWrite {
    /// Check-and-set: `Some(0)` writes only if the key does not exist, `Some(n)` only if its
    /// `ModifyIndex` is still `n`.
    pub cas: Option<u64>,
    /// An opaque u64 stored with the value.
    pub flags: Option<u64>,
}

/// A Consul client. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct ConsulClient {
    transport: Arc<Transport>,
}

impl fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClient")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl ConsulClient {
    /// Builds a client. Fails on an unusable address, an unreadable token file, CA,
    /// certificate or key, or a token that cannot be a header value; makes no request.
    pub fn new(cfg: ConsulConfig) -> Result<Self, Error> {
        let token = cfg.effective_token()?;
        let address = if cfg.address.trim().is_empty() {
            DEFAULT_ADDRESS
        } else {
            cfg.address.as_str()
        };
        let common = cfg
            .datacenter
            .filter(|dc| !dc.is_empty())
            .map(|dc| ("dc", dc))
            .into_iter()
            .collect();
        let transport = Transport::new(&CONSUL, address, token.as_deref(), &cfg.tls, common)?;
        Ok(ConsulClient {
            transport: Arc::new(transport),
        })
    }

    /// The agent's base URL, `http(s)://host:port` (`http://localhost` over a Unix socket).
    pub fn address(&self) -> &str {
        self.transport.base()
    }

    /// `GET /v1/health/service/:service`: the instances of a service with their checks.
    /// Blocking. An unknown service is an empty list.
    pub async fn health_service(
        &self,
        service: &str,
        q: &HealthQuery,
        opts: &QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta), Error> {
        let path = Path::new("/v1/health/service").segment(service)?;
        let mut query = Query::read(opts);
        if q.passing {
            query.pair("passing", "1");
        }
        for tag in &q.tags {
            query.pair("tag", tag.as_str());
        }
        if let Some(filter) = &q.filter {
            query.pair("filter", filter.as_str());
        }
        self.read(&path, &query, opts).await
    }

    /// Every registered instance of `service`, healthy or not, from `GET
    /// /v1/health/service/:service`: where it listens and the worst status among its checks.
    /// This is how the controller finds every registered proxy.
    pub async fn service_instances(&self, service: &str) -> Result<Vec<ServiceInstance>, Error> {
        let (entries, _meta) = self
            .health_service(service, &HealthQuery::default(), &QueryOptions::default())
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let host = e.address();
                let address = if host.contains(':') {
                    format!("[{host}]:{}", e.service.port)
                } else {
                    format!("{host}:{}", e.service.port)
                };
                ServiceInstance {
                    status: e.aggregated_status(),
                    address,
                    id: e.service.id,
                    node: e.node.node,
                    meta: e.service.meta,
                }
            })
            .collect())
    }

    /// `GET /v1/catalog/services`: every service name with the union of its instances' tags.
    /// Blocking.
    pub async fn catalog_services(
        &self,
        opts: &QueryOptions,
    ) -> Result<(BTreeMap<String, Vec<String>>, QueryMeta), Error> {
        let path = Path::new("/v1/catalog/services");
        let (services, meta): (BTreeMap<String, Option<Vec<String>>>, _) =
            self.read(&path, &Query::read(opts), opts).await?;
        let services = services
            .into_iter()
            .map(|(name, tags)| (name, tags.unwrap_or_default()))
            .collect();
        Ok((services, meta))
    }

    /// `GET /v1/catalog/service/:service`: the registered instances, regardless of health.
    /// Blocking.
    pub async fn catalog_service(
        &self,
        service: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<CatalogService>, QueryMeta), Error> {
        let path = Path::new("/v1/catalog/service").segment(service)?;
        self.read(&path, &Query::read(opts), opts).await
    }

    /// `GET /v1/kv/:key`: one key. A missing key is `Ok((None, meta))`, with the index from the
    /// 404's `X-Consul-Index`, so a blocking read can wait for the key to appear. Blocking.
    pub async fn kv_get(
        &self,
        key: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<KvPair>, QueryMeta), Error> {
        let path = Path::new("/v1/kv").key(key)?;
        let reply = self.send_read(&path, &Query::read(opts), opts).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((None, reply.meta()?));
        }
        let reply = reply.success()?;
        let pairs: Vec<KvPair> = reply.json()?;
        Ok((pairs.into_iter().next(), reply.meta()?))
    }

    /// `GET /v1/kv/:prefix?recurse`: every key under a prefix (a plain string prefix, not a
    /// directory). Nothing under it is an empty list. The index is the highest `ModifyIndex`
    /// under the prefix. Blocking.
    pub async fn kv_list(
        &self,
        prefix: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<KvPair>, QueryMeta), Error> {
        let path = Path::new("/v1/kv").key(prefix)?;
        let mut query = Query::read(opts);
        query.flag("recurse");
        self.read_or_empty(&path, &query, opts).await
    }

    /// `GET /v1/kv/:prefix?keys[&separator=]`: the key names under a prefix, without values;
    /// with a separator, keys are folded at its first occurrence after the prefix
    /// (`web/subdir/`). Nothing under the prefix is an empty list. Blocking.
    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta), Error> {
        let path = Path::new("/v1/kv").key(prefix)?;
        let mut query = Query::read(opts);
        query.flag("keys");
        if let Some(separator) = separator {
            query.pair("separator", separator);
        }
        self.read_or_empty(&path, &query, opts).await
    }

    /// `PUT /v1/kv/:key` with the raw bytes as the body. Returns the server's answer: always
    /// `true` for a plain write; with `cas`, `false` means the key changed (or exists, for
    /// `cas = 0`) and nothing was written. A `false` is not an error.
    pub async fn kv_put(&self, key: &str, value: &[u8], w: &KvWrite) -> Result<bool, Error> {
        let path = Path::new("/v1/kv").key(key)?;
        let mut query = Query::default();
        if let Some(cas) = w.cas {
            query.pair("cas", cas.to_string());
        }
        if let Some(flags) = w.flags {
            query.pair("flags", flags.to_string());
        }
        self.write(Method::PUT, &path, &query, Some(Body::raw(value)))
            .await?
            .json()
    }

    /// `DELETE /v1/kv/:key[?cas=]`. Always `true` without `cas`; with `cas`, `false` means the
    /// key changed and was kept. `cas = Some(0)` never deletes.
    pub async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool, Error> {
        let path = Path::new("/v1/kv").key(key)?;
        let mut query = Query::default();
        if let Some(cas) = cas {
            query.pair("cas", cas.to_string());
        }
        self.write(Method::DELETE, &path, &query, None)
            .await?
            .json()
    }

    /// `PUT /v1/agent/service/register`. Registering an existing ID again updates it in place.
    pub async fn agent_service_register(
        &self,
        reg: &AgentServiceRegistration,
    ) -> Result<(), Error> {
        let path = Path::new("/v1/agent/service/register");
        let body = Body::json("service registration", reg)?;
        self.write(Method::PUT, &path, &Query::default(), Some(body))
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/service/deregister/:service_id`: removes the service and its checks. An
    /// unknown ID is a no-op on the agent.
    pub async fn agent_service_deregister(&self, service_id: &str) -> Result<(), Error> {
        let path = Path::new("/v1/agent/service/deregister").segment(service_id)?;
        self.write(Method::PUT, &path, &Query::default(), None)
            .await
            .map(drop)
    }

    /// `GET /v1/agent/services`: the services registered on this agent, by service ID. Agent
    /// state can lag the catalog; discovery should read [`health_service`](Self::health_service).
    pub async fn agent_services(&self) -> Result<BTreeMap<String, AgentService>, Error> {
        let path = Path::new("/v1/agent/services");
        let (services, _meta) = self
            .read(&path, &Query::default(), &QueryOptions::default())
            .await?;
        Ok(services)
    }

    /// `PUT /v1/agent/check/{pass,warn,fail}/:check_id[?note=]`: reports a TTL check's status
    /// (`note` becomes the check's output). Only `Passing`, `Warning` and `Critical` can be
    /// reported.
    pub async fn agent_check_ttl(
        &self,
        check_id: &str,
        status: CheckStatus,
        note: Option<&str>,
    ) -> Result<(), Error> {
        let verb = match status {
            CheckStatus::Passing => "/v1/agent/check/pass",
            CheckStatus::Warning => "/v1/agent/check/warn",
            CheckStatus::Critical => "/v1/agent/check/fail",
            other => {
                return Err(Error::InvalidArgument(format!(
                    "a TTL check cannot be set to {other}"
                )));
            }
        };
        let path = Path::new(verb).segment(check_id)?;
        let mut query = Query::default();
        if let Some(note) = note {
            query.pair("note", note);
        }
        self.write(Method::PUT, &path, &query, None).await.map(drop)
    }

    /// `GET /v1/status/leader`: the Raft leader's `ip:port`, or `""` when there is none.
    pub async fn status_leader(&self) -> Result<String, Error> {
        let path = Path::new("/v1/status/leader");
        let (leader, _meta) = self
            .read(&path, &Query::default(), &QueryOptions::default())
            .await?;
        Ok(leader)
    }

    async fn send_read(
        &self,
        path: &Path,
        query: &Query,
        opts: &QueryOptions,
    ) -> Result<transport::Reply, Error> {
        self.transport
            .send(
                Method::GET,
                path,
                query,
                None,
                transport::read_timeout(opts),
            )
            .await
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        query: &Query,
        opts: &QueryOptions,
    ) -> Result<(T, QueryMeta), Error> {
        let reply = self.send_read(path, query, opts).await?.success()?;
        Ok((reply.json()?, reply.meta()?))
    }

    /// A KV listing, where 404 means "nothing under this prefix".
    async fn read_or_empty<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        query: &Query,
        opts: &QueryOptions,
    ) -> Result<(Vec<T>, QueryMeta), Error> {
        let reply = self.send_read(path, query, opts).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), reply.meta()?));
        }
        let reply = reply.success()?;
        Ok((reply.json()?, reply.meta()?))
    }

    async fn write(
        &self,
        method: Method,
        path: &Path,
        query: &Query,
        body: Option<Body>,
    ) -> Result<transport::Reply, Error> {
        self.transport
            .send(method, path, query, body, REQUEST_TIMEOUT)
            .await?
            .success()
    }
}

#[cfg(test)]
mod tests;
