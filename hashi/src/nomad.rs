//! A Nomad HTTP API client: jobs, versions, allocations, deployments, evaluations, parsing.
//!
//! Paths, parameters and headers follow the official Go client (`api/api.go`, `api/jobs.go`,
//! `api/deployments.go`): `X-Nomad-Token` carries the token, `region` and `namespace` go on
//! every request, writes are `POST`s with `PascalCase` JSON bodies.
//!
//! Check-and-set writes ([`NomadClient::register`] with `enforce_index`, [`NomadClient::revert`]
//! with `enforce_prior_version`) that lose come back as [`Error::CasConflict`]; Nomad reports
//! them as HTTP 500 with a recognisable message.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::serde_util::null_default;
use crate::tls::{TlsConfig, parse_go_bool};
use crate::transport::{self, Body, NOMAD, Path, Query, REQUEST_TIMEOUT, Transport};
use crate::{Error, QueryMeta, QueryOptions};

mod job;
mod types;

pub use job::Job;
pub use types::*;

/// Used when `NOMAD_ADDR` is not set.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:4646";

/// The start of Nomad's error for a lost `EnforceIndex` register (`api.RegisterEnforceIndexErrPrefix`).
const ENFORCE_INDEX_ERROR: &str = "Enforcing job modify index";
/// Nomad's error for a lost `EnforcePriorVersion` revert: `Current job has version X; enforcing
/// version V`.
const ENFORCE_VERSION_ERROR: &str = "; enforcing version ";

/// Where and how to reach a Nomad agent.
#[derive(Clone, PartialEq, Eq)]
pub struct NomadConfig {
    /// `host:port`, `http://host:port`, `https://host:port` or `unix:///path/to.sock`. Empty
    /// means [`DEFAULT_ADDRESS`].
    pub address: String,
    /// Sent as `X-Nomad-Token`.
    pub token: Option<String>,
    /// Sent as `?region=` on every request; `None` means the agent's region.
    pub region: Option<String>,
    /// Sent as `?namespace=` on every request; `None` means `default`.
    pub namespace: Option<String>,
    /// How to verify an `https://` agent and identify to it.
    pub tls: TlsConfig,
    /// Sent as the job's `ConsulToken` on register and revert, as `nomad job run` does with
    /// `CONSUL_HTTP_TOKEN`: Nomad 1.7-1.9 clusters on the legacy Consul token workflow
    /// (`consul.allow_unauthenticated = false`) check it. Newer clusters ignore it.
    pub consul_token: Option<String>,
}

impl NomadConfig {
    /// Reads the variables the `nomad` CLI reads: `NOMAD_ADDR` (default
    /// `http://127.0.0.1:4646`), `NOMAD_TOKEN`, `NOMAD_REGION`, `NOMAD_NAMESPACE`,
    /// `NOMAD_CACERT`, `NOMAD_CAPATH`, `NOMAD_CLIENT_CERT`, `NOMAD_CLIENT_KEY`,
    /// `NOMAD_TLS_SERVER_NAME`, `NOMAD_SKIP_VERIFY`, and `CONSUL_HTTP_TOKEN` for the job's
    /// Consul token. Empty variables count as unset; an unreadable `NOMAD_SKIP_VERIFY` is
    /// ignored, as the CLI does.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables taken from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let path = |name: &str| var(name).map(PathBuf::from);
        NomadConfig {
            address: var("NOMAD_ADDR").unwrap_or_else(|| DEFAULT_ADDRESS.to_owned()),
            token: var("NOMAD_TOKEN"),
            region: var("NOMAD_REGION"),
            namespace: var("NOMAD_NAMESPACE"),
            tls: TlsConfig {
                ca_cert: path("NOMAD_CACERT"),
                ca_path: path("NOMAD_CAPATH"),
                client_cert: path("NOMAD_CLIENT_CERT"),
                client_key: path("NOMAD_CLIENT_KEY"),
                server_name: var("NOMAD_TLS_SERVER_NAME"),
                insecure_skip_verify: var("NOMAD_SKIP_VERIFY")
                    .and_then(|v| parse_go_bool(&v))
                    .unwrap_or(false),
            },
            consul_token: var("CONSUL_HTTP_TOKEN"),
        }
    }
}

impl Default for NomadConfig {
    fn default() -> Self {
        NomadConfig {
            address: DEFAULT_ADDRESS.to_owned(),
            token: None,
            region: None,
            namespace: None,
            tls: TlsConfig::default(),
            consul_token: None,
        }
    }
}

impl fmt::Debug for NomadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NomadConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("region", &self.region)
            .field("namespace", &self.namespace)
            .field("tls", &self.tls)
            .field(
                "consul_token",
                &self.consul_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A Nomad client. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct NomadClient {
    transport: Arc<Transport>,
    consul_token: Option<Arc<str>>,
}

impl fmt::Debug for NomadClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NomadClient")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl NomadClient {
    /// Builds a client. Fails on an unusable address or a token that cannot be a header value;
    /// makes no request.
    pub fn new(cfg: NomadConfig) -> Result<Self, Error> {
        let common = [("region", cfg.region), ("namespace", cfg.namespace)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.filter(|v| !v.is_empty())?)))
            .collect();
        let address = if cfg.address.trim().is_empty() {
            DEFAULT_ADDRESS
        } else {
            cfg.address.as_str()
        };
        let transport = Transport::new(&NOMAD, address, cfg.token.as_deref(), &cfg.tls, common)?;
        Ok(NomadClient {
            transport: Arc::new(transport),
            consul_token: cfg.consul_token.filter(|t| !t.is_empty()).map(Arc::from),
        })
    }

    /// The agent's base URL, `http(s)://host:port` (`http://localhost` over a Unix socket).
    pub fn address(&self) -> &str {
        self.transport.base()
    }

    /// `GET /v1/jobs`. Blocking.
    pub async fn jobs(&self, opts: &QueryOptions) -> Result<(Vec<JobListStub>, QueryMeta), Error> {
        self.read(&Path::new("/v1/jobs"), Query::read(opts), opts)
            .await
    }

    /// `GET /v1/job/:id`. A missing job is `Ok((None, meta))`. Blocking (on the job's
    /// `ModifyIndex`).
    pub async fn job(
        &self,
        id: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<Job>, QueryMeta), Error> {
        let path = Path::new("/v1/job").segment(id)?;
        self.read_optional(&path, Query::read(opts), opts).await
    }

    /// `POST /v1/job/:id` with `{"Job": ..}`: registers a new version of the job (a changed spec
    /// bumps `Version`; an unchanged one creates only an evaluation).
    ///
    /// With a [`NomadConfig::consul_token`], the job carries it as `ConsulToken`. The job is sent
    /// without its `VersionTag` ([`Job::without_version_tag`]).
    ///
    /// With `enforce_index: Some(n)` the body adds `"EnforceIndex": true, "JobModifyIndex": n`:
    /// the write succeeds only if the job's current `JobModifyIndex` is `n` (`0`: only if the job
    /// does not exist). Otherwise it fails with [`Error::CasConflict`].
    pub async fn register(
        &self,
        job: &Job,
        enforce_index: Option<u64>,
    ) -> Result<JobRegisterResponse, Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            job: &'a Job,
            #[serde(skip_serializing_if = "Option::is_none")]
            enforce_index: Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            job_modify_index: Option<u64>,
        }
        if job.id().is_empty() {
            return Err(Error::InvalidArgument("the job has no ID".to_owned()));
        }
        let path = Path::new("/v1/job").segment(job.id())?;
        let mut job = job.without_version_tag();
        if let (Some(token), Some(fields)) = (&self.consul_token, job.0.as_object_mut()) {
            fields.insert("ConsulToken".to_owned(), token.as_ref().into());
        }
        let body = Request {
            job: &job,
            enforce_index: enforce_index.map(|_| true),
            job_modify_index: enforce_index,
        };
        self.write_register(&path, Body::json("job register", &body)?)
            .await
    }

    /// `POST /v1/job/:id/plan` with `{"Job": .., "Diff": diff}`: what registering `job` would do
    /// (per-group allocation counts, and with `diff` the field-by-field difference), computed
    /// by the scheduler without changing anything. Its `JobModifyIndex` is the `enforce_index`
    /// that makes a following [`register`](Self::register) apply exactly the planned change.
    pub async fn plan(&self, job: &Job, diff: bool) -> Result<JobPlanResponse, Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            job: &'a Job,
            diff: bool,
        }
        if job.id().is_empty() {
            return Err(Error::InvalidArgument("the job has no ID".to_owned()));
        }
        let path = Path::new("/v1/job").segment(job.id())?.segment("plan")?;
        let job = &job.without_version_tag();
        self.write(&path, Body::json("job plan", &Request { job, diff })?)
            .await?
            .json()
    }

    /// `GET /v1/job/:id/versions`: the tracked versions, newest first (Nomad keeps 6 by
    /// default). A missing job is an [`Error::Status`] 404.
    pub async fn versions(&self, id: &str) -> Result<Vec<Job>, Error> {
        #[derive(serde::Deserialize)]
        struct Versions {
            #[serde(rename = "Versions", default, deserialize_with = "null_default")]
            versions: Vec<Job>,
        }
        let path = Path::new("/v1/job").segment(id)?.segment("versions")?;
        let (versions, _meta): (Versions, _) = self
            .read(&path, Query::default(), &QueryOptions::default())
            .await?;
        Ok(versions.versions)
    }

    /// `POST /v1/job/:id/revert` with `{JobID, JobVersion[, EnforcePriorVersion]}`: registers a
    /// copy of `version` as a new version (`Stable = false`). Reverting to the current version is
    /// an error from Nomad.
    ///
    /// With `enforce_prior_version: Some(v)` the revert happens only if the current version is
    /// still `v`; otherwise [`Error::CasConflict`].
    pub async fn revert(
        &self,
        id: &str,
        version: u64,
        enforce_prior_version: Option<u64>,
    ) -> Result<JobRegisterResponse, Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            #[serde(rename = "JobID")]
            job_id: &'a str,
            job_version: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            enforce_prior_version: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            consul_token: Option<&'a str>,
        }
        let path = Path::new("/v1/job").segment(id)?.segment("revert")?;
        let body = Request {
            job_id: id,
            job_version: version,
            enforce_prior_version,
            consul_token: self.consul_token.as_deref(),
        };
        self.write_register(&path, Body::json("job revert", &body)?)
            .await
    }

    /// `GET /v1/job/:id/allocations[?all=true]`: the job's allocations (`all` includes those of
    /// earlier job instances with the same ID). Blocking, on the cluster-wide allocation index:
    /// wakeups happen on unrelated changes too.
    pub async fn job_allocations(
        &self,
        id: &str,
        all: bool,
        opts: &QueryOptions,
    ) -> Result<(Vec<AllocationListStub>, QueryMeta), Error> {
        let path = Path::new("/v1/job").segment(id)?.segment("allocations")?;
        let mut query = Query::read(opts);
        if all {
            query.pair("all", "true");
        }
        self.read(&path, query, opts).await
    }

    /// `GET /v1/allocation/:id`: the full allocation as JSON; `None` when it does not exist.
    pub async fn allocation(&self, id: &str) -> Result<Option<serde_json::Value>, Error> {
        let path = Path::new("/v1/allocation").segment(id)?;
        let (alloc, _meta) = self
            .read_optional(&path, Query::default(), &QueryOptions::default())
            .await?;
        Ok(alloc)
    }

    /// `GET /v1/job/:id/deployment`: the latest deployment. `None` when the job never had one
    /// (Nomad answers `null`) or does not exist. Blocking, on the deployment table's index.
    pub async fn job_deployment(
        &self,
        id: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<Deployment>, QueryMeta), Error> {
        let path = Path::new("/v1/job").segment(id)?.segment("deployment")?;
        self.read_optional(&path, Query::read(opts), opts).await
    }

    /// `GET /v1/job/:id/deployments`: the job's deployments.
    pub async fn job_deployments(&self, id: &str) -> Result<Vec<Deployment>, Error> {
        let path = Path::new("/v1/job").segment(id)?.segment("deployments")?;
        let (deployments, _meta) = self
            .read(&path, Query::default(), &QueryOptions::default())
            .await?;
        Ok(deployments)
    }

    /// `POST /v1/deployment/promote/:id` with `{"DeploymentID", "All": true}`, or with
    /// `"Groups"` when `groups` is given. Nomad refuses (HTTP 500, `Task group "x" has h/n
    /// healthy allocations`) unless every affected group's canaries are healthy. Returns Nomad's
    /// answer (`EvalID`, `EvalCreateIndex`, `DeploymentModifyIndex`, `Index`).
    pub async fn deployment_promote(
        &self,
        id: &str,
        groups: Option<&[String]>,
    ) -> Result<serde_json::Value, Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            #[serde(rename = "DeploymentID")]
            deployment_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            all: Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            groups: Option<&'a [String]>,
        }
        let path = Path::new("/v1/deployment/promote").segment(id)?;
        let body = Request {
            deployment_id: id,
            all: groups.is_none().then_some(true),
            groups,
        };
        self.write(&path, Body::json("deployment promote", &body)?)
            .await?
            .json()
    }

    /// `POST /v1/deployment/fail/:id`: marks the deployment failed (and, with `auto_revert`,
    /// re-registers the latest stable version: see `RevertedJobVersion` in the answer).
    pub async fn deployment_fail(&self, id: &str) -> Result<serde_json::Value, Error> {
        #[derive(Serialize)]
        struct Request<'a> {
            #[serde(rename = "DeploymentID")]
            deployment_id: &'a str,
        }
        let path = Path::new("/v1/deployment/fail").segment(id)?;
        let body = Request { deployment_id: id };
        self.write(&path, Body::json("deployment fail", &body)?)
            .await?
            .json()
    }

    /// `GET /v1/job/:id/evaluations`, as JSON.
    pub async fn job_evaluations(&self, id: &str) -> Result<Vec<serde_json::Value>, Error> {
        let path = Path::new("/v1/job").segment(id)?.segment("evaluations")?;
        let (evals, _meta) = self
            .read(&path, Query::default(), &QueryOptions::default())
            .await?;
        Ok(evals)
    }

    /// `POST /v1/jobs/parse` with `{"JobHCL", "Canonicalize"}`: HCL to the JSON job (bare, not
    /// wrapped in `{"Job": ..}`; durations in ns). `canonicalize` fills in defaults. A parse
    /// error is an [`Error::Status`] 400 with Nomad's message.
    pub async fn parse(&self, hcl: &str, canonicalize: bool) -> Result<Job, Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Request<'a> {
            #[serde(rename = "JobHCL")]
            job_hcl: &'a str,
            canonicalize: bool,
        }
        let body = Request {
            job_hcl: hcl,
            canonicalize,
        };
        self.write(
            &Path::new("/v1/jobs/parse"),
            Body::json("job parse", &body)?,
        )
        .await?
        .json()
    }

    /// `GET /v1/status/leader`: the leader's RPC `ip:port`, or `""` when there is none.
    pub async fn status_leader(&self) -> Result<String, Error> {
        let (leader, _meta) = self
            .read(
                &Path::new("/v1/status/leader"),
                Query::default(),
                &QueryOptions::default(),
            )
            .await?;
        Ok(leader)
    }

    async fn send_read(
        &self,
        path: &Path,
        query: Query,
        opts: &QueryOptions,
    ) -> Result<transport::Reply, Error> {
        self.transport
            .send(
                Method::GET,
                path,
                &query,
                None,
                transport::read_timeout(opts),
            )
            .await
    }

    async fn read<T: DeserializeOwned>(
        &self,
        path: &Path,
        query: Query,
        opts: &QueryOptions,
    ) -> Result<(T, QueryMeta), Error> {
        let reply = self.send_read(path, query, opts).await?.success()?;
        Ok((reply.json()?, reply.meta()?))
    }

    /// A read where 404 and a `null` body both mean "none".
    async fn read_optional<T: DeserializeOwned>(
        &self,
        path: &Path,
        query: Query,
        opts: &QueryOptions,
    ) -> Result<(Option<T>, QueryMeta), Error> {
        let reply = self.send_read(path, query, opts).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((None, reply.meta()?));
        }
        let reply = reply.success()?;
        Ok((reply.json()?, reply.meta()?))
    }

    async fn write(&self, path: &Path, body: Body) -> Result<transport::Reply, Error> {
        let reply = self
            .transport
            .send(
                Method::POST,
                path,
                &Query::default(),
                Some(body),
                REQUEST_TIMEOUT,
            )
            .await?;
        if reply.status.is_success() {
            return Ok(reply);
        }
        let text = reply.error_text();
        if text.contains(ENFORCE_INDEX_ERROR) || text.contains(ENFORCE_VERSION_ERROR) {
            Err(Error::CasConflict(text))
        } else {
            Err(reply.into_status_error())
        }
    }

    /// A register-like write; fills `Index` from `X-Nomad-Index` when the body has none.
    async fn write_register(&self, path: &Path, body: Body) -> Result<JobRegisterResponse, Error> {
        let reply = self.write(path, body).await?;
        let mut response: JobRegisterResponse = reply.json()?;
        if response.index == 0 {
            response.index = reply.index()?.unwrap_or(0);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
