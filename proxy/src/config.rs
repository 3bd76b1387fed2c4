//! Proxy configuration: a TOML file loaded in two stages.
//!
//! 1. [`FileConfig`] mirrors the file one to one (`deny_unknown_fields`, so a
//!    misspelt key is an error instead of a silently ignored setting).
//! 2. [`Config::from_file_config`] validates it into [`Config`]: durations,
//!    addresses and names are parsed once, cross references (routes naming
//!    services) are checked, and **every** problem is reported with its key
//!    path, not only the first one.
//!
//! Precedence: values in the file win over built-in defaults; the environment
//! fills only what the file leaves out (`CONSUL_HTTP_ADDR`,
//! `CONSUL_HTTP_TOKEN`, `SWITCHYARD_ADMIN_TOKEN`), mirroring how the Consul CLI
//! treats them. `docs/config.md` documents every key.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The name of the header that selects the standby pool, by default.
pub const DEFAULT_PREVIEW_HEADER: &str = "x-switchyard-pool";
/// The path prefix that selects the standby pool, by default.
pub const DEFAULT_PREVIEW_PREFIX: &str = "/standby";
/// Where the route key of a service lives in Consul KV, before the service name.
pub const DEFAULT_ROUTE_KEY_PREFIX: &str = "switchyard/routes/";

// ---------------------------------------------------------------------------
// Stage 1: the file as written.
// ---------------------------------------------------------------------------

/// The configuration file as written. See `docs/config.md`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The traffic listener.
    #[serde(default)]
    pub listener: FileListener,
    /// The operators' admin listener.
    #[serde(default)]
    pub admin: FileAdmin,
    /// Logging.
    #[serde(default)]
    pub log: FileLog,
    /// Timeouts, as humantime strings ("1s", "250ms").
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// Retry policy.
    #[serde(default)]
    pub retry: FileRetry,
    /// How a request asks for the standby pool.
    #[serde(default)]
    pub preview: FilePreview,
    /// Forwarding headers towards the upstream.
    #[serde(default)]
    pub forwarding: FileForwarding,
    /// Request limits.
    #[serde(default)]
    pub limits: FileLimits,
    /// Upstream connection pool.
    #[serde(default)]
    pub upstream: FileUpstream,
    /// Passive health: ejecting instances that fail.
    #[serde(default)]
    pub ejection: FileEjection,
    /// The Consul agent to discover services from.
    #[serde(default)]
    pub consul: FileConsul,
    /// Services and their pools.
    #[serde(default)]
    pub services: Vec<FileService>,
    /// Host / path-prefix routes to services.
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    /// Runtime settings.
    #[serde(default)]
    pub runtime: FileRuntime,
}

/// `[listener]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// Plain-text listener (HTTP/1.1 and h2c). Default `0.0.0.0:8080`.
    pub address: Option<String>,
    /// Optional TLS listener.
    pub tls: Option<FileTls>,
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// Address of the TLS listener, e.g. `0.0.0.0:8443`.
    pub address: String,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// `false` turns the admin listener off. Default on.
    pub enabled: Option<bool>,
    /// Default `127.0.0.1:8081`.
    pub address: Option<String>,
    /// Bearer token for mutating calls; else `SWITCHYARD_ADMIN_TOKEN`.
    pub token: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// `trace`..`error`, or a full `tracing` filter. `RUST_LOG` wins.
    pub level: Option<String>,
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// One line per request at `info` on target `access`. Default on.
    pub access_log: Option<bool>,
}

/// Longest pause between two reads of a body being proxied (the client's
/// request body, the upstream's response body), like nginx's
/// `client_body_timeout` and `proxy_read_timeout`.
pub const DEFAULT_READ_IDLE: Duration = Duration::from_secs(60);
/// Longest pause between two writes of a body being proxied (the request
/// body to the upstream, the response to the client), like nginx's
/// `proxy_send_timeout` and `send_timeout`.
pub const DEFAULT_SEND_IDLE: Duration = Duration::from_secs(60);
/// How long an idle pooled upstream connection is reused, by default:
/// below the keep-alive timeouts of common application servers (gunicorn
/// 2 s, Node 5 s) with margin, so the proxy gives a connection up before
/// the server closes it under a request in flight.
pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_millis(800);
/// TCP keepalive probes on upstream sockets start after this much silence.
pub const DEFAULT_UPSTREAM_TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// `[timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// TCP connect to an upstream instance. Default 1s.
    pub connect: Option<String>,
    /// From request body sent to response head received. Default 30s.
    pub response_head: Option<String>,
    /// Longest pause between two reads of a body (client request body,
    /// upstream response body). Default [`DEFAULT_READ_IDLE`].
    pub read_idle: Option<String>,
    /// Longest pause between two writes of a body (request body to the
    /// upstream, response to the client). Default [`DEFAULT_SEND_IDLE`].
    pub send_idle: Option<String>,
    /// A client's request head must arrive within this (HTTP/1); it also
    /// bounds the idle time between requests on a keep-alive connection. Default 10s.
    pub client_header: Option<String>,
    /// HTTP/2 client connections with no open stream are closed after this. Default 60s.
    pub client_idle: Option<String>,
    /// Idle pooled upstream connections are closed after this. Default
    /// [`DEFAULT_UPSTREAM_IDLE`].
    pub upstream_idle: Option<String>,
    /// Grace period for in-flight requests at shutdown. Default 30s.
    pub shutdown_grace: Option<String>,
    /// How long upgraded (WebSocket) connections to a colour that stopped
    /// being active stay open. Default 30s.
    pub drain: Option<String>,
}

/// `[retry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetry {
    /// Extra tries on another instance. Default 2.
    pub attempts: Option<u32>,
}

/// `[preview]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePreview {
    /// Header whose value `standby` selects the standby pool.
    pub header: Option<String>,
    /// Path prefix that selects the standby pool (stripped before forwarding).
    pub path_prefix: Option<String>,
}

/// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed and
/// extended, by default: none (every client's are replaced).
pub const DEFAULT_TRUSTED_PEERS: &[&str] = &[];
/// Whether an RFC 7239 `Forwarded` header is sent upstream, by default.
pub const DEFAULT_EMIT_FORWARDED: bool = false;

/// `[forwarding]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileForwarding {
    /// CIDRs (or single addresses) of trusted peers, e.g. a load balancer in
    /// front. Default [`DEFAULT_TRUSTED_PEERS`] (none).
    pub trusted_peers: Option<Vec<String>>,
    /// Also send RFC 7239 `Forwarded`. Default [`DEFAULT_EMIT_FORWARDED`].
    pub forwarded: Option<bool>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest request head accepted, in bytes (431 above). Default 16384.
    pub max_header_bytes: Option<usize>,
    /// Most header fields accepted (431 above). Default 100.
    pub max_headers: Option<usize>,
    /// Most concurrent client connections. Default 10000.
    pub max_connections: Option<usize>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// Idle keep-alive connections kept per instance. Default 256.
    pub max_idle_per_instance: Option<usize>,
}

/// The largest share of a pool, in percent, that passive ejection may take
/// out at once, by default.
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;

/// `[ejection]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEjection {
    /// Consecutive failures (connect errors and timeouts, broken exchanges,
    /// 502/503/504) before an instance is ejected. 0 disables ejection.
    /// Default 5.
    pub consecutive_failures: Option<u32>,
    /// How long an ejected instance is skipped. Default 10s.
    pub cool_down: Option<String>,
    /// Most instances of a pool ejected at once, in percent (0-100).
    /// Default [`DEFAULT_MAX_EJECTED_PERCENT`].
    pub max_ejected_percent: Option<u32>,
}

/// `[consul]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConsul {
    /// Agent address; else `CONSUL_HTTP_ADDR`; else `http://127.0.0.1:8500`.
    pub address: Option<String>,
    /// ACL token; else `CONSUL_HTTP_TOKEN`.
    pub token: Option<String>,
    /// Blocking-query wait. Default 5m.
    pub wait: Option<String>,
    /// Full resync period (a non-blocking read). Default 5m.
    pub resync: Option<String>,
    /// Least time between two reads of one watch once its burst is spent. Default 50ms.
    pub min_interval: Option<String>,
}

/// `[[services]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileService {
    /// Service name, as in Consul.
    pub name: String,
    /// `p2c` (default) or `round_robin`.
    pub balance: Option<String>,
    /// The two colour tags. Default `["blue", "green"]`.
    pub colours: Option<Vec<String>>,
    /// Static pools (no discovery).
    #[serde(rename = "static")]
    pub static_pools: Option<FileStaticPools>,
    /// Consul discovery for this service.
    pub consul: Option<FileServiceConsul>,
}

/// `[services.static]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStaticPools {
    /// `host:port` of the active instances.
    pub active: Vec<String>,
    /// `host:port` of the standby instances.
    #[serde(default)]
    pub standby: Vec<String>,
    /// Version label shown in metrics and status.
    pub active_version: Option<String>,
    /// Version label shown in metrics and status.
    pub standby_version: Option<String>,
}

/// `[services.consul]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServiceConsul {
    /// Consul service name, if it differs from `name`.
    pub service: Option<String>,
    /// KV route key. Default `switchyard/routes/<name>`.
    pub route_key: Option<String>,
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Exact host (port ignored, case-insensitive); absent = any host.
    pub host: Option<String>,
    /// Path prefix, on segment boundaries. Default `/`.
    pub path_prefix: Option<String>,
    /// The service name.
    pub service: String,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    /// Worker threads. Default: the CPUs this process may run on.
    pub worker_threads: Option<usize>,
}

// ---------------------------------------------------------------------------
// Stage 2: validated.
// ---------------------------------------------------------------------------

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Traffic listener address.
    pub listen: SocketAddr,
    /// Optional TLS listener.
    pub tls: Option<TlsConfig>,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Extra tries on another instance.
    pub retry_attempts: u32,
    /// How the standby pool is selected.
    pub preview: PreviewConfig,
    /// Forwarding headers.
    pub forwarding: ForwardingConfig,
    /// Request limits.
    pub limits: Limits,
    /// Upstream pool settings.
    pub max_idle_per_instance: usize,
    /// Passive ejection.
    pub ejection: EjectionConfig,
    /// Consul agent.
    pub consul: ConsulSettings,
    /// Services.
    pub services: Vec<ServiceConfig>,
    /// Routes, most specific first.
    pub routes: Vec<RouteConfig>,
    /// Worker threads, if set.
    pub worker_threads: Option<usize>,
}

/// TLS listener settings.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Listener address.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Admin listener settings.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// `None` when the admin listener is off.
    pub listen: Option<SocketAddr>,
    /// Bearer token for mutating calls.
    pub token: Option<String>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `tracing` filter directive.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Whether each request is logged.
    pub access_log: bool,
}

/// All timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Upstream TCP connect.
    pub connect: Duration,
    /// Upstream response head, from the end of the request body.
    pub response_head: Duration,
    /// Longest pause between two reads of a body.
    pub read_idle: Duration,
    /// Longest pause between two writes of a body.
    pub send_idle: Duration,
    /// Client request head (HTTP/1), also the keep-alive idle bound.
    pub client_header: Duration,
    /// Idle HTTP/2 client connection.
    pub client_idle: Duration,
    /// Idle pooled upstream connection.
    pub upstream_idle: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Upgraded-connection drain after a cutover.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            response_head: Duration::from_secs(30),
            read_idle: DEFAULT_READ_IDLE,
            send_idle: DEFAULT_SEND_IDLE,
            client_header: Duration::from_secs(10),
            client_idle: Duration::from_secs(60),
            upstream_idle: DEFAULT_UPSTREAM_IDLE,
            shutdown_grace: Duration::from_secs(30),
            drain: Duration::from_secs(30),
        }
    }
}

/// Standby preview settings.
#[derive(Clone, Debug)]
pub struct PreviewConfig {
    /// Lower-case header name.
    pub header: http::HeaderName,
    /// Path prefix, without a trailing slash.
    pub path_prefix: String,
}

/// Forwarding-header settings.
#[derive(Clone, Debug, Default)]
pub struct ForwardingConfig {
    /// Peers whose forwarding headers are extended rather than replaced.
    pub trusted_peers: Vec<ipnet::IpNet>,
    /// Whether RFC 7239 `Forwarded` is sent upstream.
    pub emit_forwarded: bool,
}

impl ForwardingConfig {
    /// Whether `ip` is a trusted peer (false at once when none are set).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        !self.trusted_peers.is_empty() && self.trusted_peers.iter().any(|n| n.contains(&ip))
    }
}

/// Request limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Most concurrent client connections.
    pub max_connections: usize,
}

/// Passive ejection settings.
#[derive(Clone, Copy, Debug)]
pub struct EjectionConfig {
    /// Consecutive failures before ejection; 0 = never.
    pub consecutive_failures: u32,
    /// How long an ejected instance is skipped.
    pub cool_down: Duration,
    /// Most instances of a pool ejected at once, in percent.
    pub max_ejected_percent: u32,
}

/// Consul agent settings.
#[derive(Clone, Debug)]
pub struct ConsulSettings {
    /// Agent address (URL).
    pub address: String,
    /// ACL token.
    pub token: Option<String>,
    /// Blocking-query wait.
    pub wait: Duration,
    /// Full resync period.
    pub resync: Duration,
    /// Least spacing between reads once the burst is spent.
    pub min_interval: Duration,
}

/// Load-balancing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Power of two random choices, on outstanding requests.
    P2c,
    /// Round robin.
    RoundRobin,
}

/// Where a service's pools come from.
#[derive(Clone, Debug)]
pub enum PoolSource {
    /// Fixed addresses from the file.
    Static {
        /// Active instances.
        active: Vec<SocketAddr>,
        /// Standby instances.
        standby: Vec<SocketAddr>,
        /// Version label of the active pool.
        active_version: Option<String>,
        /// Version label of the standby pool.
        standby_version: Option<String>,
    },
    /// Consul discovery.
    Consul {
        /// Consul service name.
        service: String,
        /// KV route key.
        route_key: String,
    },
}

/// A validated service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Name used by routes, metrics and the admin API.
    pub name: String,
    /// Balancer.
    pub balance: Balance,
    /// The two colours, in order.
    pub colours: [String; 2],
    /// Pool source.
    pub source: PoolSource,
}

/// A validated route.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Lower-case host without port, or any.
    pub host: Option<String>,
    /// Path prefix without trailing slash ("" = everything).
    pub path_prefix: String,
    /// Service name.
    pub service: String,
}

/// One problem in a configuration file, with the key path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `services[0].static.active[1]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema.
    #[error("{path}: {message}")]
    Syntax {
        /// File path.
        path: PathBuf,
        /// Parser message (includes line and column).
        message: String,
    },
    /// The file parsed but some values are invalid; all of them are listed.
    #[error("{path}: {} problem(s):\n  {}", .issues.len(), .issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// File path.
        path: PathBuf,
        /// Every problem found.
        issues: Vec<ConfigIssue>,
    },
}

/// The environment values a configuration may fall back to; a struct so
/// tests need not touch the process environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `CONSUL_HTTP_ADDR`
    pub consul_addr: Option<String>,
    /// `CONSUL_HTTP_TOKEN`
    pub consul_token: Option<String>,
    /// `SWITCHYARD_ADMIN_TOKEN`
    pub admin_token: Option<String>,
}

impl Env {
    /// Reads the process environment (empty values count as unset).
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            consul_addr: get("CONSUL_HTTP_ADDR"),
            consul_token: get("CONSUL_HTTP_TOKEN"),
            admin_token: get("SWITCHYARD_ADMIN_TOKEN"),
        }
    }
}

impl Config {
    /// Reads, parses and validates a file, with the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &Env::from_process())
    }

    /// Reads, parses and validates a file, with the given environment.
    pub fn load_with_env(path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Self::from_file_config(file, env).map_err(|issues| ConfigError::Invalid {
            path: path.to_owned(),
            issues,
        })
    }

    /// Stage 2: validates a parsed file. Returns every problem found.
    pub fn from_file_config(file: FileConfig, env: &Env) -> Result<Self, Vec<ConfigIssue>> {
        let mut v = Validator::default();
        let defaults = Timeouts::default();

        let listen = v.addr(
            "listener.address",
            file.listener.address.as_deref().unwrap_or("0.0.0.0:8080"),
        );
        let tls = file.listener.tls.map(|t| TlsConfig {
            listen: v.addr("listener.tls.address", &t.address),
            cert: v.existing_file("listener.tls.cert", t.cert),
            key: v.existing_file("listener.tls.key", t.key),
        });

        let admin_listen = if file.admin.enabled == Some(false) {
            None
        } else {
            Some(v.addr(
                "admin.address",
                file.admin.address.as_deref().unwrap_or("127.0.0.1:8081"),
            ))
        };
        let admin_token = file
            .admin
            .token
            .filter(|t| !t.is_empty())
            .or_else(|| env.admin_token.clone());
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            v.issue("admin.token", "must be at least 16 characters");
        }

        let format = match file.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                v.issue(
                    "log.format",
                    format!("expected \"text\" or \"json\", got {other:?}"),
                );
                LogFormat::Text
            }
        };

        let t = &file.timeouts;
        let timeouts = Timeouts {
            connect: v.duration("timeouts.connect", t.connect.as_deref(), defaults.connect),
            response_head: v.duration(
                "timeouts.response_head",
                t.response_head.as_deref(),
                defaults.response_head,
            ),
            read_idle: v.duration(
                "timeouts.read_idle",
                t.read_idle.as_deref(),
                defaults.read_idle,
            ),
            send_idle: v.duration(
                "timeouts.send_idle",
                t.send_idle.as_deref(),
                defaults.send_idle,
            ),
            client_header: v.duration(
                "timeouts.client_header",
                t.client_header.as_deref(),
                defaults.client_header,
            ),
            client_idle: v.duration(
                "timeouts.client_idle",
                t.client_idle.as_deref(),
                defaults.client_idle,
            ),
            upstream_idle: v.duration(
                "timeouts.upstream_idle",
                t.upstream_idle.as_deref(),
                defaults.upstream_idle,
            ),
            shutdown_grace: v.duration(
                "timeouts.shutdown_grace",
                t.shutdown_grace.as_deref(),
                defaults.shutdown_grace,
            ),
            drain: v.duration("timeouts.drain", t.drain.as_deref(), defaults.drain),
        };

        let retry_attempts = file.retry.attempts.unwrap_or(2);
        if retry_attempts > 10 {
            v.issue("retry.attempts", "at most 10");
        }

        let header_name = file
            .preview
            .header
            .as_deref()
            .unwrap_or(DEFAULT_PREVIEW_HEADER);
        let header = match http::HeaderName::from_bytes(header_name.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                v.issue(
                    "preview.header",
                    format!("{header_name:?} is not a valid header name"),
                );
                http::HeaderName::from_static(DEFAULT_PREVIEW_HEADER)
            }
        };
        let path_prefix = v.prefix(
            "preview.path_prefix",
            file.preview
                .path_prefix
                .as_deref()
                .unwrap_or(DEFAULT_PREVIEW_PREFIX),
        );
        if path_prefix.is_empty() {
            v.issue("preview.path_prefix", "must not be \"/\"");
        }

        let trusted_peers = match file.forwarding.trusted_peers {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, c)| v.cidr(&format!("forwarding.trusted_peers[{i}]"), c))
                .collect(),
            None => DEFAULT_TRUSTED_PEERS
                .iter()
                .filter_map(|c| v.cidr("forwarding.trusted_peers", c))
                .collect(),
        };
        let forwarding = ForwardingConfig {
            trusted_peers,
            emit_forwarded: file.forwarding.forwarded.unwrap_or(DEFAULT_EMIT_FORWARDED),
        };

        let limits = Limits {
            max_header_bytes: file.limits.max_header_bytes.unwrap_or(16 * 1024),
            max_headers: file.limits.max_headers.unwrap_or(100),
            max_connections: file.limits.max_connections.unwrap_or(10_000),
        };
        if limits.max_header_bytes < 8192 {
            v.issue("limits.max_header_bytes", "at least 8192");
        }
        if limits.max_headers == 0 {
            v.issue("limits.max_headers", "at least 1");
        }
        if limits.max_connections == 0 {
            v.issue("limits.max_connections", "at least 1");
        }

        let max_idle_per_instance = file.upstream.max_idle_per_instance.unwrap_or(256);

        let ejection = EjectionConfig {
            consecutive_failures: file.ejection.consecutive_failures.unwrap_or(5),
            cool_down: v.duration(
                "ejection.cool_down",
                file.ejection.cool_down.as_deref(),
                Duration::from_secs(10),
            ),
            max_ejected_percent: file
                .ejection
                .max_ejected_percent
                .unwrap_or(DEFAULT_MAX_EJECTED_PERCENT),
        };
        if ejection.max_ejected_percent > 100 {
            v.issue("ejection.max_ejected_percent", "at most 100");
        }

        let consul = ConsulSettings {
            address: file
                .consul
                .address
                .or_else(|| env.consul_addr.clone())
                .unwrap_or_else(|| "http://127.0.0.1:8500".to_owned()),
            token: file
                .consul
                .token
                .filter(|t| !t.is_empty())
                .or_else(|| env.consul_token.clone()),
            wait: v.duration(
                "consul.wait",
                file.consul.wait.as_deref(),
                Duration::from_secs(300),
            ),
            resync: v.duration(
                "consul.resync",
                file.consul.resync.as_deref(),
                Duration::from_secs(300),
            ),
            min_interval: v.duration(
                "consul.min_interval",
                file.consul.min_interval.as_deref(),
                Duration::from_millis(50),
            ),
        };
        if consul.wait > Duration::from_secs(600) {
            v.issue("consul.wait", "at most 10m (Consul's cap)");
        }

        let mut services = Vec::new();
        let mut names = HashSet::new();
        if file.services.is_empty() {
            v.issue("services", "at least one service is required");
        }
        for (i, s) in file.services.into_iter().enumerate() {
            let p = format!("services[{i}]");
            if !valid_name(&s.name) {
                v.issue(
                    format!("{p}.name"),
                    format!("{:?} must be 1-64 characters of [A-Za-z0-9._-]", s.name),
                );
            }
            if !names.insert(s.name.clone()) {
                v.issue(
                    format!("{p}.name"),
                    format!("duplicate service {:?}", s.name),
                );
            }
            let balance = match s.balance.as_deref() {
                None | Some("p2c") => Balance::P2c,
                Some("round_robin") => Balance::RoundRobin,
                Some(other) => {
                    v.issue(
                        format!("{p}.balance"),
                        format!("expected \"p2c\" or \"round_robin\", got {other:?}"),
                    );
                    Balance::P2c
                }
            };
            let colours = match s.colours {
                None => ["blue".to_owned(), "green".to_owned()],
                Some(c) if c.len() == 2 && c[0] != c[1] && c.iter().all(|c| valid_name(c)) => {
                    [c[0].clone(), c[1].clone()]
                }
                Some(_) => {
                    v.issue(format!("{p}.colours"), "expected two different tag names");
                    ["blue".to_owned(), "green".to_owned()]
                }
            };
            let source = match (s.static_pools, s.consul) {
                (Some(_), Some(_)) => {
                    v.issue(&p, "set either `static` or `consul`, not both");
                    None
                }
                (None, None) => {
                    v.issue(&p, "needs `static` pools or `consul` discovery");
                    None
                }
                (Some(st), None) => {
                    let active: Vec<_> = st
                        .active
                        .iter()
                        .enumerate()
                        .map(|(j, a)| v.addr(&format!("{p}.static.active[{j}]"), a))
                        .collect();
                    let standby: Vec<_> = st
                        .standby
                        .iter()
                        .enumerate()
                        .map(|(j, a)| v.addr(&format!("{p}.static.standby[{j}]"), a))
                        .collect();
                    if active.is_empty() {
                        v.issue(format!("{p}.static.active"), "needs at least one address");
                    }
                    Some(PoolSource::Static {
                        active,
                        standby,
                        active_version: st.active_version,
                        standby_version: st.standby_version,
                    })
                }
                (None, Some(c)) => {
                    let service = c.service.unwrap_or_else(|| s.name.clone());
                    if !valid_name(&service) {
                        v.issue(format!("{p}.consul.service"), "invalid Consul service name");
                    }
                    let route_key = c
                        .route_key
                        .unwrap_or_else(|| format!("{DEFAULT_ROUTE_KEY_PREFIX}{}", s.name));
                    if route_key.is_empty() || route_key.starts_with('/') {
                        v.issue(
                            format!("{p}.consul.route_key"),
                            "must be a non-empty KV key without a leading '/'",
                        );
                    }
                    Some(PoolSource::Consul { service, route_key })
                }
            };
            if let Some(source) = source {
                services.push(ServiceConfig {
                    name: s.name,
                    balance,
                    colours,
                    source,
                });
            }
        }

        let mut routes = Vec::new();
        for (i, r) in file.routes.into_iter().enumerate() {
            let p = format!("routes[{i}]");
            if !names.contains(&r.service) {
                v.issue(
                    format!("{p}.service"),
                    format!("no service named {:?}", r.service),
                );
            }
            let host = r.host.map(|h| h.to_ascii_lowercase());
            if let Some(h) = &host
                && (h.is_empty() || h.contains(['/', ' ']))
            {
                v.issue(format!("{p}.host"), format!("{h:?} is not a host name"));
            }
            let path_prefix = v.prefix(
                &format!("{p}.path_prefix"),
                r.path_prefix.as_deref().unwrap_or("/"),
            );
            routes.push(RouteConfig {
                host,
                path_prefix,
                service: r.service,
            });
        }
        if routes.is_empty() && services.len() == 1 {
            // One service and no routes: it takes everything.
            routes.push(RouteConfig {
                host: None,
                path_prefix: String::new(),
                service: services[0].name.clone(),
            });
        } else if routes.is_empty() && services.len() > 1 {
            v.issue("routes", "several services need routes to tell them apart");
        }
        let mut seen = HashSet::new();
        for (i, r) in routes.iter().enumerate() {
            if !seen.insert((r.host.clone(), r.path_prefix.clone())) {
                v.issue(
                    format!("routes[{i}]"),
                    "same host and path_prefix as an earlier route",
                );
            }
        }
        // Most specific first: a route with a host before one without, then
        // longer prefixes first.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });

        if let Some(w) = file.runtime.worker_threads
            && !(1..=1024).contains(&w)
        {
            v.issue("runtime.worker_threads", "between 1 and 1024");
        }

        if !v.issues.is_empty() {
            return Err(v.issues);
        }
        Ok(Config {
            listen,
            tls,
            admin: AdminConfig {
                listen: admin_listen,
                token: admin_token,
            },
            log: LogConfig {
                level: file.log.level.unwrap_or_else(|| "info".to_owned()),
                format,
                access_log: file.log.access_log.unwrap_or(true),
            },
            timeouts,
            retry_attempts,
            preview: PreviewConfig {
                header,
                path_prefix,
            },
            forwarding,
            limits,
            max_idle_per_instance,
            ejection,
            consul,
            services,
            routes,
            worker_threads: file.runtime.worker_threads,
        })
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Collects issues while parsing values, returning placeholders so that
/// validation can go on and find the next problem.
#[derive(Default)]
struct Validator {
    issues: Vec<ConfigIssue>,
}

impl Validator {
    fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn addr(&mut self, path: &str, value: &str) -> SocketAddr {
        match value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.issue(
                    path,
                    format!("{value:?} is not an ip:port address (e.g. 127.0.0.1:8080)"),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        }
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.issue(path, "must be greater than zero");
                default
            }
            Err(e) => {
                self.issue(
                    path,
                    format!("{value:?} is not a duration like \"10s\": {e}"),
                );
                default
            }
        }
    }

    /// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (a /32 or /128).
    fn cidr(&mut self, path: &str, value: &str) -> Option<ipnet::IpNet> {
        let value = value.trim();
        if let Ok(n) = value.parse::<ipnet::IpNet>() {
            return Some(n.trunc());
        }
        if let Ok(ip) = value.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
        self.issue(
            path,
            format!("{value:?} is not an address or CIDR (e.g. 10.0.0.0/8)"),
        );
        None
    }

    fn existing_file(&mut self, path: &str, value: PathBuf) -> PathBuf {
        if !value.is_file() {
            self.issue(path, format!("{} is not a readable file", value.display()));
        }
        value
    }

    /// A path prefix: must start with '/', stored without trailing '/'.
    fn prefix(&mut self, path: &str, value: &str) -> String {
        if !value.starts_with('/') {
            self.issue(path, format!("{value:?} must start with '/'"));
        }
        if value.contains(['?', '#', ' ']) {
            self.issue(path, format!("{value:?} must be a plain path"));
        }
        value.trim_end_matches('/').to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), &Env::default())
    }

    #[test]
    fn minimal_static_service_gets_a_catch_all_route() {
        let c = parse(
            r#"
            [[services]]
            name = "hello"
            static = { active = ["127.0.0.1:9001"] }
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin.listen.unwrap().to_string(), "127.0.0.1:8081");
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].path_prefix, "");
        assert_eq!(c.services[0].balance, Balance::P2c);
        assert_eq!(c.retry_attempts, 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse(
            r#"
            [listener]
            address = "nope"
            [timeouts]
            connect = "soon"
            [[services]]
            name = "a"
            balance = "random"
            static = { active = ["127.0.0.1:1", "bad"] }
            [[routes]]
            path_prefix = "x"
            service = "b"
            "#,
        )
        .unwrap_err();
        let ConfigError::Invalid { issues, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "listener.address",
            "timeouts.connect",
            "services[0].balance",
            "services[0].static.active[1]",
            "routes[0].service",
            "routes[0].path_prefix",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_line() {
        let err = parse("[listener]\nadress = \"127.0.0.1:1\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("adress"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn routes_sorted_most_specific_first() {
        let c = parse(
            r#"
            [[services]]
            name = "a"
            static = { active = ["127.0.0.1:1"] }
            [[services]]
            name = "b"
            consul = {}
            [[routes]]
            service = "a"
            [[routes]]
            path_prefix = "/api/"
            service = "b"
            [[routes]]
            host = "Example.COM"
            service = "b"
            "#,
        )
        .unwrap();
        assert_eq!(c.routes[0].host.as_deref(), Some("example.com"));
        assert_eq!(c.routes[1].path_prefix, "/api");
        assert_eq!(c.routes[2].path_prefix, "");
        let PoolSource::Consul { route_key, .. } = &c.services[1].source else {
            panic!()
        };
        assert_eq!(route_key, "switchyard/routes/b");
    }

    #[test]
    fn env_fills_only_what_the_file_leaves_out() {
        let env = Env {
            consul_addr: Some("http://10.0.0.1:8500".into()),
            consul_token: Some("t".into()),
            admin_token: Some("0123456789abcdef".into()),
        };
        let c = Config::parse(
            "[consul]\naddress = \"http://127.0.0.2:8500\"\n[[services]]\nname = \"a\"\nconsul = {}\n",
            Path::new("x"),
            &env,
        )
        .unwrap();
        assert_eq!(c.consul.address, "http://127.0.0.2:8500");
        assert_eq!(c.consul.token.as_deref(), Some("t"));
        assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef"));
    }
}
