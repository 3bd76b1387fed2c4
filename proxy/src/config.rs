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
use switchyard_hashi::consul::{ConsulClient, ConsulConfig};
use switchyard_hashi::tls::TlsConfig as ClientTls;

// ---------------------------------------------------------------------------
// Defaults and bounds: the one place they are decided. The doc comments of the
// file keys link here, and a test checks docs/config.md against these values.
// ---------------------------------------------------------------------------

/// `listener.address`
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:8080";
/// `admin.enabled`
pub const DEFAULT_ADMIN_ENABLED: bool = true;
/// `admin.address`
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:8081";
/// `admin.token`: the shortest token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// `log.level`
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `log.format`
pub const DEFAULT_LOG_FORMAT: &str = "text";
/// `log.access_log`
pub const DEFAULT_ACCESS_LOG: bool = true;
/// `timeouts.connect`
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `timeouts.response_head`
pub const DEFAULT_RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// `timeouts.client_header`
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `timeouts.client_idle`
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `timeouts.read_idle`: longest pause between two reads of a body being proxied (the client's
/// request body, the upstream's response body), like nginx's `client_body_timeout` and
/// `proxy_read_timeout`.
pub const DEFAULT_READ_IDLE: Duration = Duration::from_secs(60);
/// `timeouts.send_idle`: longest pause between two writes of a body being proxied (the request
/// body to the upstream, the response to the client), like nginx's `proxy_send_timeout` and
/// `send_timeout`.
pub const DEFAULT_SEND_IDLE: Duration = Duration::from_secs(60);
/// `timeouts.upstream_idle`: below the keep-alive timeouts of common application servers
/// (gunicorn 2 s, Node 5 s) with margin, so the proxy gives a connection up before the server
/// closes it under a request in flight.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_millis(800);
/// TCP keepalive probes on upstream sockets start after this much silence.
pub const DEFAULT_UPSTREAM_TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// `timeouts.shutdown_grace`
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `shutdown.deregister_delay`: after SIGTERM, how long the proxy keeps accepting with its
/// readiness failed and its Consul registration gone, so load balancers stop sending first.
pub const DEFAULT_DEREGISTER_DELAY: Duration = Duration::from_secs(5);
/// `upgrade.socket`: the Unix socket a `proxy --upgrade` process takes the listeners over from.
pub const DEFAULT_UPGRADE_SOCKET: &str = "/tmp/switchyard_upgrade.sock";
/// `timeouts.drain`
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// `forwarding.trusted_peers`: none, so every client's forwarding headers are replaced.
pub const DEFAULT_TRUSTED_PEERS: &[&str] = &[];
/// `forwarding.upgrade_protocols`: the `Upgrade` protocols passed on to the upstream.
pub const DEFAULT_UPGRADE_PROTOCOLS: &[&str] = &["websocket"];
/// `forwarding.forwarded`: whether an RFC 7239 `Forwarded` header is sent upstream.
pub const DEFAULT_EMIT_FORWARDED: bool = false;
/// `ejection.max_ejected_percent`: the largest share of a pool passive ejection may take out.
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
/// `retry.attempts`
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// `retry.attempts`: the most accepted.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// `retry.budget_percent`: retries a service may make, as a share of its requests over
/// [`RETRY_BUDGET_WINDOW`].
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// `retry.budget_min_per_second`: retries allowed on top of the share, so a quiet service can
/// still retry.
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
/// The window over which the retry budget counts requests and retries.
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// `preview.header`: a request with this header set to `standby` goes to the standby pool.
pub const DEFAULT_PREVIEW_HEADER: &str = "x-switchyard-pool";
/// `preview.path_prefix`: requests under this prefix go to the standby pool.
pub const DEFAULT_PREVIEW_PREFIX: &str = "/standby";
/// `preview.access`: who may preview the standby colour.
pub const DEFAULT_PREVIEW_ACCESS: &str = "restricted";
/// `preview.allow`: loopback and private ranges (RFC 1918, RFC 4193 unique local).
pub const DEFAULT_PREVIEW_ALLOW: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];
/// `preview.token_header`: the header carrying `preview.token`.
pub const DEFAULT_PREVIEW_TOKEN_HEADER: &str = "x-switchyard-preview-token";
/// `preview.token`: the shortest token accepted.
pub const MIN_PREVIEW_TOKEN_LEN: usize = 16;
/// `limits.max_header_bytes`
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// `limits.max_header_bytes`: the least accepted.
pub const MIN_MAX_HEADER_BYTES: usize = 8192;
/// `limits.max_headers`
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// `limits.max_connections`
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `upstream.max_idle_per_instance`
pub const DEFAULT_MAX_IDLE_PER_INSTANCE: usize = 256;
/// `ejection.consecutive_failures` (0 disables ejection).
pub const DEFAULT_EJECTION_CONSECUTIVE_FAILURES: u32 = 5;
/// `ejection.cool_down`
pub const DEFAULT_EJECTION_COOL_DOWN: Duration = Duration::from_secs(10);
/// `consul.address`, when neither the file nor `CONSUL_HTTP_ADDR` sets one.
pub const DEFAULT_CONSUL_ADDRESS: &str = switchyard_hashi::consul::DEFAULT_ADDRESS;
/// `consul.wait`
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(5 * 60);
/// `consul.wait`: Consul's own cap.
pub const MAX_CONSUL_WAIT: Duration = Duration::from_secs(10 * 60);
/// `consul.resync`
pub const DEFAULT_CONSUL_RESYNC: Duration = Duration::from_secs(5 * 60);
/// `consul.min_interval`
pub const DEFAULT_CONSUL_MIN_INTERVAL: Duration = Duration::from_millis(50);
/// `registration.enabled`: register in Consul when any service uses Consul discovery.
pub const DEFAULT_REGISTRATION_ENABLED: bool = true;
/// `registration.service`: the Consul service every proxy registers under.
pub const DEFAULT_REGISTRATION_SERVICE: &str = switchyard_model::DEFAULT_PROXY_SERVICE;
/// `registration.check_interval`: how often Consul polls the proxy's `/readyz`.
pub const DEFAULT_REGISTRATION_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// `registration.check_timeout`
pub const DEFAULT_REGISTRATION_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// `registration.deregister_after`: Consul drops a proxy whose check stayed critical this long
/// (a proxy that died without deregistering).
pub const DEFAULT_REGISTRATION_DEREGISTER_AFTER: Duration = Duration::from_secs(60 * 60);
/// `services[].balance`
pub const DEFAULT_BALANCE: &str = "p2c";
/// `services[].colours`
pub const DEFAULT_COLOURS: [&str; 2] = switchyard_model::DEFAULT_COLOURS;
/// `services[].consul.route_key` is this prefix followed by the service name.
pub const DEFAULT_ROUTE_KEY_PREFIX: &str = "switchyard/routes/";
/// `routes[].path_prefix`
pub const DEFAULT_ROUTE_PATH_PREFIX: &str = "/";
/// `runtime.worker_threads`: the most accepted.
pub const MAX_WORKER_THREADS: usize = 1024;

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
    /// How the proxy registers itself in Consul.
    #[serde(default)]
    pub registration: FileRegistration,
    /// Services and their pools.
    #[serde(default)]
    pub services: Vec<FileService>,
    /// Host / path-prefix routes to services.
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    /// Runtime settings.
    #[serde(default)]
    pub runtime: FileRuntime,
    /// The SIGTERM sequence.
    #[serde(default)]
    pub shutdown: FileShutdown,
    /// Binary upgrades (listener handover).
    #[serde(default)]
    pub upgrade: FileUpgrade,
}

/// `[shutdown]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileShutdown {
    /// After SIGTERM: readiness fails and the registration is removed, then the proxy keeps
    /// accepting this long before it stops. `"0s"` stops at once. Default
    /// [`DEFAULT_DEREGISTER_DELAY`].
    pub deregister_delay: Option<String>,
}

/// `[upgrade]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpgrade {
    /// Unix socket path the running proxy hands its listeners over on. Default
    /// [`DEFAULT_UPGRADE_SOCKET`].
    pub socket: Option<PathBuf>,
}

/// `[listener]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// Plain-text listener (HTTP/1.1 and h2c). Default [`DEFAULT_LISTEN_ADDRESS`].
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
    /// `false` turns the admin listener off. Default [`DEFAULT_ADMIN_ENABLED`].
    pub enabled: Option<bool>,
    /// Default [`DEFAULT_ADMIN_ADDRESS`].
    pub address: Option<String>,
    /// Bearer token for mutating calls; else `SWITCHYARD_ADMIN_TOKEN`.
    pub token: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// `trace`..`error`, or a full `tracing` filter. `RUST_LOG` wins. Default
    /// [`DEFAULT_LOG_LEVEL`].
    pub level: Option<String>,
    /// `text` or `json`. Default [`DEFAULT_LOG_FORMAT`].
    pub format: Option<String>,
    /// One line per request at `info` on target `access`. Default [`DEFAULT_ACCESS_LOG`].
    pub access_log: Option<bool>,
}

/// `[timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// TCP connect to an upstream instance. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect: Option<String>,
    /// From request body sent to response head received. Default
    /// [`DEFAULT_RESPONSE_HEAD_TIMEOUT`].
    pub response_head: Option<String>,
    /// Longest pause between two reads of a body (client request body,
    /// upstream response body). Default [`DEFAULT_READ_IDLE`].
    pub read_idle: Option<String>,
    /// Longest pause between two writes of a body (request body to the
    /// upstream, response to the client). Default [`DEFAULT_SEND_IDLE`].
    pub send_idle: Option<String>,
    /// A client's request head must arrive within this (HTTP/1); it also
    /// bounds the idle time between requests on a keep-alive connection. Default
    /// [`DEFAULT_CLIENT_HEADER_TIMEOUT`].
    pub client_header: Option<String>,
    /// HTTP/2 client connections: a PING is sent after this long without frames (no answer
    /// closes the connection). Default [`DEFAULT_CLIENT_IDLE_TIMEOUT`].
    pub client_idle: Option<String>,
    /// Idle pooled upstream connections are closed after this. Default
    /// [`DEFAULT_UPSTREAM_IDLE_TIMEOUT`].
    pub upstream_idle: Option<String>,
    /// Grace period for in-flight requests at shutdown. Default [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Option<String>,
    /// How long upgraded (WebSocket) connections to a colour that stopped
    /// being active stay open. Default [`DEFAULT_DRAIN`].
    pub drain: Option<String>,
}

/// `[retry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetry {
    /// Extra tries on another instance. Default [`DEFAULT_RETRY_ATTEMPTS`], at most
    /// [`MAX_RETRY_ATTEMPTS`].
    pub attempts: Option<u32>,
    /// Retries as a share (percent) of requests. Default [`DEFAULT_RETRY_BUDGET_PERCENT`].
    pub budget_percent: Option<u32>,
    /// Retries per second allowed on top. Default [`DEFAULT_RETRY_BUDGET_MIN_PER_SECOND`].
    pub budget_min_per_second: Option<u32>,
}

/// `[preview]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePreview {
    /// Header whose value `standby` selects the standby pool. Default
    /// [`DEFAULT_PREVIEW_HEADER`].
    pub header: Option<String>,
    /// Path prefix that selects the standby pool (stripped before forwarding). Default
    /// [`DEFAULT_PREVIEW_PREFIX`].
    pub path_prefix: Option<String>,
    /// Header carrying the preview token. Default [`DEFAULT_PREVIEW_TOKEN_HEADER`].
    pub token_header: Option<String>,
    /// Who may preview, for every service that does not say otherwise: `off`, `open` or
    /// `restricted`. Default [`DEFAULT_PREVIEW_ACCESS`].
    pub access: Option<String>,
    /// `restricted`: client addresses (CIDRs) let in. Default [`DEFAULT_PREVIEW_ALLOW`].
    pub allow: Option<Vec<String>>,
    /// `restricted`: a request carrying this token in `token_header` is let in from anywhere.
    pub token: Option<String>,
}

/// Who may preview a service's standby colour: `[preview]` for every
/// service, `services[].preview` for one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePreviewAccess {
    /// `off`, `open` or `restricted`. Default [`DEFAULT_PREVIEW_ACCESS`].
    pub access: Option<String>,
    /// `restricted`: client addresses (CIDRs) let in. Default [`DEFAULT_PREVIEW_ALLOW`].
    pub allow: Option<Vec<String>>,
    /// `restricted`: a request carrying this token in `token_header` is let in from anywhere;
    /// at least [`MIN_PREVIEW_TOKEN_LEN`] characters.
    pub token: Option<String>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest request head accepted, in bytes (431 above). Default
    /// [`DEFAULT_MAX_HEADER_BYTES`], at least [`MIN_MAX_HEADER_BYTES`].
    pub max_header_bytes: Option<usize>,
    /// Most header fields accepted (431 above). Default [`DEFAULT_MAX_HEADERS`].
    pub max_headers: Option<usize>,
    /// Most concurrent client connections. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// Idle keep-alive connections kept per instance. Default
    /// [`DEFAULT_MAX_IDLE_PER_INSTANCE`].
    pub max_idle_per_instance: Option<usize>,
}

/// `[ejection]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEjection {
    /// Consecutive failures (connect errors and timeouts, broken exchanges,
    /// 502/503/504) before an instance is ejected. 0 disables ejection.
    /// Default [`DEFAULT_EJECTION_CONSECUTIVE_FAILURES`].
    pub consecutive_failures: Option<u32>,
    /// How long an ejected instance is skipped. Default [`DEFAULT_EJECTION_COOL_DOWN`].
    pub cool_down: Option<String>,
    /// Most instances of a pool ejected at once, in percent (0-100).
    /// Default [`DEFAULT_MAX_EJECTED_PERCENT`].
    pub max_ejected_percent: Option<u32>,
}

/// `[forwarding]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileForwarding {
    /// CIDRs (or single addresses) of trusted peers, e.g. a load balancer in
    /// front. Default [`DEFAULT_TRUSTED_PEERS`] (none).
    pub trusted_peers: Option<Vec<String>>,
    /// Also send RFC 7239 `Forwarded`. Default [`DEFAULT_EMIT_FORWARDED`].
    pub forwarded: Option<bool>,
    /// `Upgrade` protocols passed on; others are dropped. Default
    /// [`DEFAULT_UPGRADE_PROTOCOLS`].
    pub upgrade_protocols: Option<Vec<String>>,
}

/// `[consul]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConsul {
    /// Agent address; else `CONSUL_HTTP_ADDR`; else [`DEFAULT_CONSUL_ADDRESS`].
    pub address: Option<String>,
    /// ACL token; else `CONSUL_HTTP_TOKEN`.
    pub token: Option<String>,
    /// Blocking-query wait. Default [`DEFAULT_CONSUL_WAIT`], at most [`MAX_CONSUL_WAIT`].
    pub wait: Option<String>,
    /// Full resync period (a non-blocking read). Default [`DEFAULT_CONSUL_RESYNC`].
    pub resync: Option<String>,
    /// Least time between two reads of one watch once its burst is spent. Default
    /// [`DEFAULT_CONSUL_MIN_INTERVAL`].
    pub min_interval: Option<String>,
    /// File holding the ACL token (wins over `token`); else `CONSUL_HTTP_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) for an `https://` agent; else `CONSUL_CACERT`.
    pub ca_cert: Option<PathBuf>,
    /// Directory of CA certificates; else `CONSUL_CAPATH`.
    pub ca_path: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; else `CONSUL_CLIENT_CERT`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM); else `CONSUL_CLIENT_KEY`.
    pub client_key: Option<PathBuf>,
    /// Name the agent's certificate must carry; else `CONSUL_TLS_SERVER_NAME`.
    pub tls_server_name: Option<String>,
    /// `true` accepts any certificate; else `CONSUL_HTTP_SSL_VERIFY=false`.
    pub tls_skip_verify: Option<bool>,
}

/// `[registration]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistration {
    /// `false`: never register. Default [`DEFAULT_REGISTRATION_ENABLED`] (only when a service
    /// uses Consul discovery and the admin listener is on).
    pub enabled: Option<bool>,
    /// Consul service name. Default [`DEFAULT_REGISTRATION_SERVICE`].
    pub service: Option<String>,
    /// The admin address registered (`ip:port`); default: the admin listener's, with the
    /// agent's node address when it listens on every interface.
    pub address: Option<String>,
    /// Default [`DEFAULT_REGISTRATION_CHECK_INTERVAL`].
    pub check_interval: Option<String>,
    /// Default [`DEFAULT_REGISTRATION_CHECK_TIMEOUT`].
    pub check_timeout: Option<String>,
    /// Default [`DEFAULT_REGISTRATION_DEREGISTER_AFTER`].
    pub deregister_after: Option<String>,
}

/// `[[services]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileService {
    /// Service name, as in Consul.
    pub name: String,
    /// `p2c` or `round_robin`. Default [`DEFAULT_BALANCE`].
    pub balance: Option<String>,
    /// The two colour tags. Default [`DEFAULT_COLOURS`].
    pub colours: Option<Vec<String>>,
    /// Static pools (no discovery).
    #[serde(rename = "static")]
    pub static_pools: Option<FileStaticPools>,
    /// Consul discovery for this service.
    pub consul: Option<FileServiceConsul>,
    /// Who may preview this service's standby colour; unset keys come from `[preview]`.
    pub preview: Option<FilePreviewAccess>,
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
    /// KV route key. Default [`DEFAULT_ROUTE_KEY_PREFIX`] followed by the service name.
    pub route_key: Option<String>,
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Exact host (port ignored, case-insensitive); absent = any host.
    pub host: Option<String>,
    /// Path prefix, on segment boundaries. Default [`DEFAULT_ROUTE_PATH_PREFIX`].
    pub path_prefix: Option<String>,
    /// The service name.
    pub service: String,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    /// Worker threads. Default: the CPUs this process may run on; at most
    /// [`MAX_WORKER_THREADS`].
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
    /// How many retries a service may make.
    pub retry_budget: RetryBudgetConfig,
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
    /// Registration of this proxy in Consul; `None` when it does not register.
    pub registration: Option<RegistrationConfig>,
    /// Services.
    pub services: Vec<ServiceConfig>,
    /// Routes, most specific first.
    pub routes: Vec<RouteConfig>,
    /// Worker threads, if set.
    pub worker_threads: Option<usize>,
    /// The SIGTERM sequence.
    pub shutdown: ShutdownConfig,
    /// Binary upgrades.
    pub upgrade: UpgradeConfig,
}

/// The SIGTERM sequence (see `docs/config.md`, `[shutdown]`).
#[derive(Clone, Copy, Debug)]
pub struct ShutdownConfig {
    /// How long the proxy keeps accepting after readiness failed and the registration left.
    pub deregister_delay: Duration,
}

/// Binary upgrades (see `docs/config.md`, `[upgrade]`).
#[derive(Clone, Debug)]
pub struct UpgradeConfig {
    /// The Unix socket the listeners are handed over on.
    pub socket: PathBuf,
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
            connect: DEFAULT_CONNECT_TIMEOUT,
            response_head: DEFAULT_RESPONSE_HEAD_TIMEOUT,
            read_idle: DEFAULT_READ_IDLE,
            send_idle: DEFAULT_SEND_IDLE,
            client_header: DEFAULT_CLIENT_HEADER_TIMEOUT,
            client_idle: DEFAULT_CLIENT_IDLE_TIMEOUT,
            upstream_idle: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// How many retries a service may make: `percent` of its requests over
/// [`RETRY_BUDGET_WINDOW`], plus `min_per_second`.
#[derive(Clone, Copy, Debug)]
pub struct RetryBudgetConfig {
    /// Share of requests, in percent.
    pub percent: u32,
    /// Retries per second on top of the share.
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            percent: DEFAULT_RETRY_BUDGET_PERCENT,
            min_per_second: DEFAULT_RETRY_BUDGET_MIN_PER_SECOND,
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
    /// Header carrying a preview token.
    pub token_header: http::HeaderName,
    /// Who may preview each service, by service name.
    pub access: std::collections::HashMap<String, PreviewAccess>,
}

/// Who may preview one service's standby colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreviewAccess {
    /// Nobody: the prefix and the header are ordinary parts of a request to the active colour.
    Off,
    /// Anyone.
    Open,
    /// Clients whose address is in `allow`, or whose request carries `token`.
    Restricted {
        /// Client address ranges let in.
        allow: Vec<ipnet::IpNet>,
        /// A token that lets a request in from anywhere.
        token: Option<String>,
    },
}

/// Forwarding-header settings.
#[derive(Clone, Debug, Default)]
pub struct ForwardingConfig {
    /// Peers whose forwarding headers are extended rather than replaced.
    pub trusted_peers: Vec<ipnet::IpNet>,
    /// Whether RFC 7239 `Forwarded` is sent upstream.
    pub emit_forwarded: bool,
    /// Lower-case `Upgrade` protocol names passed on to the upstream.
    pub upgrade_protocols: Vec<String>,
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
    /// Address, token and TLS of the agent.
    pub client: ConsulConfig,
    /// Blocking-query wait.
    pub wait: Duration,
    /// Full resync period.
    pub resync: Duration,
    /// Least spacing between reads once the burst is spent.
    pub min_interval: Duration,
}

/// How the proxy registers itself in Consul (see `docs/config.md`, `[registration]`).
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// Consul service name.
    pub service: String,
    /// The admin address to register; `None`: the admin listener's.
    pub address: Option<SocketAddr>,
    /// Interval of the HTTP check on `/readyz`.
    pub check_interval: Duration,
    /// Timeout of each check.
    pub check_timeout: Duration,
    /// Consul deregisters the proxy after its check stayed critical this long.
    pub deregister_after: Duration,
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
    /// Who may preview the standby colour.
    pub preview: PreviewAccess,
}

/// A validated route.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The Consul agent as the `CONSUL_*` variables describe it (see
    /// [`ConsulConfig::from_lookup`]), defaults included.
    pub consul: ConsulConfig,
    /// `SWITCHYARD_ADMIN_TOKEN`
    pub admin_token: Option<String>,
}

impl Env {
    /// Reads the process environment (empty values count as unset).
    pub fn from_process() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`from_process`](Self::from_process) with the variables taken from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            admin_token: lookup("SWITCHYARD_ADMIN_TOKEN").filter(|v| !v.trim().is_empty()),
            consul: ConsulConfig::from_lookup(lookup),
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

    /// Stage 2: validates a parsed file, one section at a time. Returns every problem found.
    pub fn from_file_config(file: FileConfig, env: &Env) -> Result<Self, Vec<ConfigIssue>> {
        let mut v = Validator::default();
        let (listen, tls) = listener_section(&mut v, file.listener);
        let admin = admin_section(&mut v, file.admin, env);
        let log = log_section(&mut v, file.log);
        let timeouts = timeouts_section(&mut v, &file.timeouts);
        let (retry_attempts, retry_budget) = retry_section(&mut v, &file.retry);
        let preview = preview_section(&mut v, &file.preview);
        let preview_global = &FilePreviewAccess {
            access: file.preview.access.clone(),
            allow: file.preview.allow.clone(),
            token: file.preview.token.clone(),
        };
        let forwarding = forwarding_section(&mut v, &file.forwarding);
        let limits = limits_section(&mut v, &file.limits);
        let max_idle_per_instance = file
            .upstream
            .max_idle_per_instance
            .unwrap_or(DEFAULT_MAX_IDLE_PER_INSTANCE);
        let ejection = ejection_section(&mut v, &file.ejection);
        let consul = consul_section(&mut v, file.consul, env);
        let (services, names) = services_section(&mut v, file.services, preview_global);
        let mut preview = preview;
        preview.access = services
            .iter()
            .map(|s| (s.name.clone(), s.preview.clone()))
            .collect();
        let uses_consul = services
            .iter()
            .any(|s| matches!(s.source, PoolSource::Consul { .. }));
        if uses_consul {
            // Build a client once to report an unusable address, token file, CA, certificate or
            // key here, rather than at startup.
            if let Err(e) = ConsulClient::new(consul.client.clone()) {
                v.issue("consul", e.to_string());
            }
        }
        let registration = registration_section(
            &mut v,
            file.registration,
            uses_consul && admin.listen.is_some(),
        );
        let routes = routes_section(&mut v, file.routes, &services, &names);
        runtime_section(&mut v, &file.runtime);
        let shutdown = ShutdownConfig {
            deregister_delay: v.duration_or_zero(
                "shutdown.deregister_delay",
                file.shutdown.deregister_delay.as_deref(),
                DEFAULT_DEREGISTER_DELAY,
            ),
        };
        let upgrade = upgrade_section(&mut v, file.upgrade);

        if !v.issues.is_empty() {
            return Err(v.issues);
        }
        Ok(Config {
            listen,
            tls,
            admin,
            log,
            timeouts,
            retry_attempts,
            retry_budget,
            preview,
            forwarding,
            limits,
            max_idle_per_instance,
            ejection,
            consul,
            registration,
            services,
            routes,
            worker_threads: file.runtime.worker_threads,
            shutdown,
            upgrade,
        })
    }
}

/// `[listener]`: the traffic address and the optional TLS listener.
fn listener_section(v: &mut Validator, file: FileListener) -> (SocketAddr, Option<TlsConfig>) {
    let listen = v.addr(
        "listener.address",
        file.address.as_deref().unwrap_or(DEFAULT_LISTEN_ADDRESS),
    );
    let tls = file.tls.map(|t| TlsConfig {
        listen: v.addr("listener.tls.address", &t.address),
        cert: v.existing_file("listener.tls.cert", t.cert),
        key: v.existing_file("listener.tls.key", t.key),
    });
    (listen, tls)
}

/// `[admin]`: the address (unless turned off) and the token, else `SWITCHYARD_ADMIN_TOKEN`.
fn admin_section(v: &mut Validator, file: FileAdmin, env: &Env) -> AdminConfig {
    let listen = if file.enabled.unwrap_or(DEFAULT_ADMIN_ENABLED) {
        Some(v.addr(
            "admin.address",
            file.address.as_deref().unwrap_or(DEFAULT_ADMIN_ADDRESS),
        ))
    } else {
        None
    };
    let token = file
        .token
        .filter(|t| !t.is_empty())
        .or_else(|| env.admin_token.clone());
    if let Some(t) = &token
        && t.len() < MIN_ADMIN_TOKEN_LEN
    {
        v.issue(
            "admin.token",
            format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
        );
    }
    AdminConfig { listen, token }
}

/// `[log]`
fn log_section(v: &mut Validator, file: FileLog) -> LogConfig {
    let format = match file.format.as_deref().unwrap_or(DEFAULT_LOG_FORMAT) {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            v.issue(
                "log.format",
                format!("expected \"text\" or \"json\", got {other:?}"),
            );
            LogFormat::Text
        }
    };
    LogConfig {
        level: file.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
        format,
        access_log: file.access_log.unwrap_or(DEFAULT_ACCESS_LOG),
    }
}

/// `[timeouts]`
fn timeouts_section(v: &mut Validator, t: &FileTimeouts) -> Timeouts {
    let mut d = |key: &str, value: &Option<String>, default: Duration| {
        v.duration(&format!("timeouts.{key}"), value.as_deref(), default)
    };
    Timeouts {
        connect: d("connect", &t.connect, DEFAULT_CONNECT_TIMEOUT),
        response_head: d(
            "response_head",
            &t.response_head,
            DEFAULT_RESPONSE_HEAD_TIMEOUT,
        ),
        read_idle: d("read_idle", &t.read_idle, DEFAULT_READ_IDLE),
        send_idle: d("send_idle", &t.send_idle, DEFAULT_SEND_IDLE),
        client_header: d(
            "client_header",
            &t.client_header,
            DEFAULT_CLIENT_HEADER_TIMEOUT,
        ),
        client_idle: d("client_idle", &t.client_idle, DEFAULT_CLIENT_IDLE_TIMEOUT),
        upstream_idle: d(
            "upstream_idle",
            &t.upstream_idle,
            DEFAULT_UPSTREAM_IDLE_TIMEOUT,
        ),
        shutdown_grace: d("shutdown_grace", &t.shutdown_grace, DEFAULT_SHUTDOWN_GRACE),
        drain: d("drain", &t.drain, DEFAULT_DRAIN),
    }
}

/// `[retry]`
fn retry_section(v: &mut Validator, file: &FileRetry) -> (u32, RetryBudgetConfig) {
    let attempts = file.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS);
    if attempts > MAX_RETRY_ATTEMPTS {
        v.issue("retry.attempts", format!("at most {MAX_RETRY_ATTEMPTS}"));
    }
    let budget = RetryBudgetConfig {
        percent: file.budget_percent.unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT),
        min_per_second: file
            .budget_min_per_second
            .unwrap_or(DEFAULT_RETRY_BUDGET_MIN_PER_SECOND),
    };
    if budget.percent > 100 {
        v.issue("retry.budget_percent", "0-100");
    }
    (attempts, budget)
}

/// `[preview]`
fn preview_section(v: &mut Validator, file: &FilePreview) -> PreviewConfig {
    let header_name = file.header.as_deref().unwrap_or(DEFAULT_PREVIEW_HEADER);
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
        file.path_prefix
            .as_deref()
            .unwrap_or(DEFAULT_PREVIEW_PREFIX),
    );
    if path_prefix.is_empty() {
        v.issue("preview.path_prefix", "must not be \"/\"");
    }
    let token_header_name = file
        .token_header
        .as_deref()
        .unwrap_or(DEFAULT_PREVIEW_TOKEN_HEADER);
    let token_header = match http::HeaderName::from_bytes(token_header_name.as_bytes()) {
        Ok(h) if h != header => h,
        _ => {
            v.issue(
                "preview.token_header",
                format!(
                    "{token_header_name:?} is not a valid header name other than preview.header"
                ),
            );
            http::HeaderName::from_static(DEFAULT_PREVIEW_TOKEN_HEADER)
        }
    };
    PreviewConfig {
        header,
        path_prefix,
        token_header,
        access: std::collections::HashMap::new(),
    }
}

/// `[preview]` access keys, or a service's `preview` over them (`p` is the key path).
fn preview_access(
    v: &mut Validator,
    p: &str,
    own: Option<&FilePreviewAccess>,
    global: &FilePreviewAccess,
) -> PreviewAccess {
    let pick = |f: fn(&FilePreviewAccess) -> bool| {
        own.filter(|o| f(o)).map_or(("preview", global), |o| (p, o))
    };
    let (ap, a) = pick(|o| o.access.is_some());
    let access = a.access.as_deref().unwrap_or(DEFAULT_PREVIEW_ACCESS);
    let (lp, l) = pick(|o| o.allow.is_some());
    let allow: Vec<ipnet::IpNet> = match &l.allow {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| v.cidr(&format!("{lp}.allow[{i}]"), c))
            .collect(),
        None => DEFAULT_PREVIEW_ALLOW
            .iter()
            .filter_map(|c| v.cidr("preview.allow", c))
            .collect(),
    };
    let (tp, t) = pick(|o| o.token.is_some());
    let token = t.token.clone().filter(|t| !t.is_empty());
    if let Some(t) = &token
        && (t.len() < MIN_PREVIEW_TOKEN_LEN || http::HeaderValue::from_str(t).is_err())
    {
        v.issue(
            format!("{tp}.token"),
            format!("must be at least {MIN_PREVIEW_TOKEN_LEN} characters of header text"),
        );
    }
    match access {
        "off" => PreviewAccess::Off,
        "open" => PreviewAccess::Open,
        "restricted" => PreviewAccess::Restricted { allow, token },
        other => {
            v.issue(
                format!("{ap}.access"),
                format!("expected \"off\", \"open\" or \"restricted\", got {other:?}"),
            );
            PreviewAccess::Off
        }
    }
}

/// `[forwarding]`
fn forwarding_section(v: &mut Validator, file: &FileForwarding) -> ForwardingConfig {
    let trusted_peers = match &file.trusted_peers {
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
    let upgrade_protocols: Vec<String> = match &file.upgrade_protocols {
        Some(list) => list.iter().map(|p| p.trim().to_ascii_lowercase()).collect(),
        None => DEFAULT_UPGRADE_PROTOCOLS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
    };
    for (i, p) in upgrade_protocols.iter().enumerate() {
        if p.is_empty() || http::HeaderName::from_bytes(p.as_bytes()).is_err() {
            v.issue(
                format!("forwarding.upgrade_protocols[{i}]"),
                format!("{p:?} is not a protocol name"),
            );
        } else if p == "h2c" {
            v.issue(
                format!("forwarding.upgrade_protocols[{i}]"),
                "h2c is spoken by the proxy itself, never passed on",
            );
        }
    }
    ForwardingConfig {
        trusted_peers,
        emit_forwarded: file.forwarded.unwrap_or(DEFAULT_EMIT_FORWARDED),
        upgrade_protocols,
    }
}

/// `[limits]`
fn limits_section(v: &mut Validator, file: &FileLimits) -> Limits {
    let limits = Limits {
        max_header_bytes: file.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_headers: file.max_headers.unwrap_or(DEFAULT_MAX_HEADERS),
        max_connections: file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
    };
    if limits.max_header_bytes < MIN_MAX_HEADER_BYTES {
        v.issue(
            "limits.max_header_bytes",
            format!("at least {MIN_MAX_HEADER_BYTES}"),
        );
    }
    if limits.max_headers == 0 {
        v.issue("limits.max_headers", "at least 1");
    }
    if limits.max_connections == 0 {
        v.issue("limits.max_connections", "at least 1");
    }
    limits
}

/// `[ejection]`
fn ejection_section(v: &mut Validator, file: &FileEjection) -> EjectionConfig {
    let ejection = EjectionConfig {
        consecutive_failures: file
            .consecutive_failures
            .unwrap_or(DEFAULT_EJECTION_CONSECUTIVE_FAILURES),
        cool_down: v.duration(
            "ejection.cool_down",
            file.cool_down.as_deref(),
            DEFAULT_EJECTION_COOL_DOWN,
        ),
        max_ejected_percent: file
            .max_ejected_percent
            .unwrap_or(DEFAULT_MAX_EJECTED_PERCENT),
    };
    if ejection.max_ejected_percent > 100 {
        v.issue("ejection.max_ejected_percent", "at most 100");
    }
    ejection
}

/// `[consul]`: the file wins, then the environment, then the defaults.
fn consul_section(v: &mut Validator, file: FileConsul, env: &Env) -> ConsulSettings {
    let from_env = &env.consul;
    let tls = ClientTls {
        ca_cert: file.ca_cert.or_else(|| from_env.tls.ca_cert.clone()),
        ca_path: file.ca_path.or_else(|| from_env.tls.ca_path.clone()),
        client_cert: file
            .client_cert
            .or_else(|| from_env.tls.client_cert.clone()),
        client_key: file.client_key.or_else(|| from_env.tls.client_key.clone()),
        server_name: file
            .tls_server_name
            .or_else(|| from_env.tls.server_name.clone()),
        insecure_skip_verify: file
            .tls_skip_verify
            .unwrap_or(from_env.tls.insecure_skip_verify),
    };
    let mut client = ConsulConfig {
        address: file.address.unwrap_or_else(|| from_env.address.clone()),
        token: file
            .token
            .filter(|t| !t.is_empty())
            .or_else(|| from_env.token.clone()),
        token_file: file.token_file.or_else(|| from_env.token_file.clone()),
        datacenter: None,
        tls,
    };
    if client.address.trim().is_empty() {
        client.address = DEFAULT_CONSUL_ADDRESS.to_owned();
    }
    let consul = ConsulSettings {
        client,
        wait: v.duration("consul.wait", file.wait.as_deref(), DEFAULT_CONSUL_WAIT),
        resync: v.duration(
            "consul.resync",
            file.resync.as_deref(),
            DEFAULT_CONSUL_RESYNC,
        ),
        min_interval: v.duration(
            "consul.min_interval",
            file.min_interval.as_deref(),
            DEFAULT_CONSUL_MIN_INTERVAL,
        ),
    };
    if consul.wait > MAX_CONSUL_WAIT {
        v.issue("consul.wait", "at most 10m (Consul's cap)");
    }
    consul
}

/// `[registration]`: `None` when the proxy does not register (turned off, or nothing to
/// register for: no Consul service or no admin listener).
fn registration_section(
    v: &mut Validator,
    file: FileRegistration,
    possible: bool,
) -> Option<RegistrationConfig> {
    let service = file
        .service
        .unwrap_or_else(|| DEFAULT_REGISTRATION_SERVICE.to_owned());
    if !valid_name(&service) {
        v.issue("registration.service", "invalid Consul service name");
    }
    let address = file
        .address
        .as_deref()
        .map(|a| v.addr("registration.address", a));
    if let Some(a) = address
        && (a.ip().is_unspecified() || a.port() == 0)
    {
        v.issue(
            "registration.address",
            "must be a concrete ip:port others can reach",
        );
    }
    let registration = RegistrationConfig {
        service,
        address,
        check_interval: v.duration(
            "registration.check_interval",
            file.check_interval.as_deref(),
            DEFAULT_REGISTRATION_CHECK_INTERVAL,
        ),
        check_timeout: v.duration(
            "registration.check_timeout",
            file.check_timeout.as_deref(),
            DEFAULT_REGISTRATION_CHECK_TIMEOUT,
        ),
        deregister_after: v.duration(
            "registration.deregister_after",
            file.deregister_after.as_deref(),
            DEFAULT_REGISTRATION_DEREGISTER_AFTER,
        ),
    };
    (possible && file.enabled.unwrap_or(DEFAULT_REGISTRATION_ENABLED)).then_some(registration)
}

/// `[[services]]`: names unique and valid, exactly one pool source each. Also returns every
/// name given, valid or not, so routes to a broken service are not reported twice.
fn services_section(
    v: &mut Validator,
    file: Vec<FileService>,
    preview: &FilePreviewAccess,
) -> (Vec<ServiceConfig>, HashSet<String>) {
    let mut services = Vec::new();
    let mut names = HashSet::new();
    if file.is_empty() {
        v.issue("services", "at least one service is required");
    }
    for (i, s) in file.into_iter().enumerate() {
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
        let balance = match s.balance.as_deref().unwrap_or(DEFAULT_BALANCE) {
            "p2c" => Balance::P2c,
            "round_robin" => Balance::RoundRobin,
            other => {
                v.issue(
                    format!("{p}.balance"),
                    format!("expected \"p2c\" or \"round_robin\", got {other:?}"),
                );
                Balance::P2c
            }
        };
        let default_colours = || DEFAULT_COLOURS.map(str::to_owned);
        let colours = match s.colours {
            None => default_colours(),
            Some(c) if c.len() == 2 && c[0] != c[1] && c.iter().all(|c| valid_name(c)) => {
                [c[0].clone(), c[1].clone()]
            }
            Some(_) => {
                v.issue(format!("{p}.colours"), "expected two different tag names");
                default_colours()
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
            (Some(st), None) => Some(static_pools(v, &p, st)),
            (None, Some(c)) => Some(consul_pools(v, &p, &s.name, c)),
        };
        let preview = preview_access(v, &format!("{p}.preview"), s.preview.as_ref(), preview);
        if let Some(source) = source {
            services.push(ServiceConfig {
                name: s.name,
                balance,
                colours,
                source,
                preview,
            });
        }
    }
    (services, names)
}

/// `[services.static]` of the service at key path `p`.
fn static_pools(v: &mut Validator, p: &str, st: FileStaticPools) -> PoolSource {
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
    PoolSource::Static {
        active,
        standby,
        active_version: st.active_version,
        standby_version: st.standby_version,
    }
}

/// `[services.consul]` of the service `name` at key path `p`.
fn consul_pools(v: &mut Validator, p: &str, name: &str, c: FileServiceConsul) -> PoolSource {
    let service = c.service.unwrap_or_else(|| name.to_owned());
    if !valid_name(&service) {
        v.issue(format!("{p}.consul.service"), "invalid Consul service name");
    }
    let route_key = c
        .route_key
        .unwrap_or_else(|| format!("{DEFAULT_ROUTE_KEY_PREFIX}{name}"));
    if route_key.is_empty() || route_key.starts_with('/') {
        v.issue(
            format!("{p}.consul.route_key"),
            "must be a non-empty KV key without a leading '/'",
        );
    }
    PoolSource::Consul { service, route_key }
}

/// `[[routes]]`: each names a known service; sorted most specific first. One service and no
/// routes: it takes everything.
fn routes_section(
    v: &mut Validator,
    file: Vec<FileRoute>,
    services: &[ServiceConfig],
    names: &HashSet<String>,
) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    for (i, r) in file.into_iter().enumerate() {
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
            r.path_prefix
                .as_deref()
                .unwrap_or(DEFAULT_ROUTE_PATH_PREFIX),
        );
        routes.push(RouteConfig {
            host,
            path_prefix,
            service: r.service,
        });
    }
    if routes.is_empty() && services.len() == 1 {
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
    // Most specific first: a route with a host before one without, then longer prefixes first.
    routes.sort_by(|a, b| {
        b.host
            .is_some()
            .cmp(&a.host.is_some())
            .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
    });
    routes
}

/// `[runtime]`
fn runtime_section(v: &mut Validator, file: &FileRuntime) {
    if let Some(w) = file.worker_threads
        && !(1..=MAX_WORKER_THREADS).contains(&w)
    {
        v.issue(
            "runtime.worker_threads",
            format!("between 1 and {MAX_WORKER_THREADS}"),
        );
    }
}

/// `[upgrade]`: the handover socket path (absolute, so every process finds the same one).
fn upgrade_section(v: &mut Validator, file: FileUpgrade) -> UpgradeConfig {
    let socket = file
        .socket
        .unwrap_or_else(|| PathBuf::from(DEFAULT_UPGRADE_SOCKET));
    if !socket.is_absolute() {
        v.issue("upgrade.socket", "must be an absolute path");
    }
    UpgradeConfig { socket }
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

    /// Like [`Self::duration`], but zero is allowed (it turns the wait off).
    fn duration_or_zero(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            Some(z) if humantime::parse_duration(z).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
            _ => self.duration(path, value, default),
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

    /// docs/config.md, as `section.key` → (default cell, meaning cell), from its key tables.
    fn documented_keys() -> std::collections::BTreeMap<String, (String, String)> {
        let mut keys = std::collections::BTreeMap::new();
        let mut section = String::new();
        for line in include_str!("../../docs/config.md").lines() {
            if let Some(heading) = line.strip_prefix("## `") {
                section = heading
                    .split('`')
                    .next()
                    .unwrap()
                    .trim_matches(['[', ']'])
                    .to_owned();
            } else if let Some(row) = line.strip_prefix("| `") {
                let cells: Vec<&str> = row.split(" | ").collect();
                let key = cells[0].trim_end_matches('`');
                let prev = keys.insert(
                    format!("{section}.{key}"),
                    (cells[1].to_owned(), cells[2].to_owned()),
                );
                assert!(prev.is_none(), "{section}.{key} documented twice");
            }
        }
        keys
    }

    #[test]
    fn docs_state_the_defaults_and_bounds_the_code_uses() {
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let quoted = |s: &str| format!("{s:?}");
        // Every key whose default is a value, with that value as docs/config.md writes it.
        let defaults: Vec<(&str, String)> = vec![
            ("listener.address", quoted(DEFAULT_LISTEN_ADDRESS)),
            ("admin.enabled", DEFAULT_ADMIN_ENABLED.to_string()),
            ("admin.address", quoted(DEFAULT_ADMIN_ADDRESS)),
            ("log.level", quoted(DEFAULT_LOG_LEVEL)),
            ("log.format", quoted(DEFAULT_LOG_FORMAT)),
            ("log.access_log", DEFAULT_ACCESS_LOG.to_string()),
            ("timeouts.connect", dur(DEFAULT_CONNECT_TIMEOUT)),
            ("timeouts.response_head", dur(DEFAULT_RESPONSE_HEAD_TIMEOUT)),
            ("timeouts.read_idle", dur(DEFAULT_READ_IDLE)),
            ("timeouts.send_idle", dur(DEFAULT_SEND_IDLE)),
            ("timeouts.client_header", dur(DEFAULT_CLIENT_HEADER_TIMEOUT)),
            ("timeouts.client_idle", dur(DEFAULT_CLIENT_IDLE_TIMEOUT)),
            ("timeouts.upstream_idle", dur(DEFAULT_UPSTREAM_IDLE_TIMEOUT)),
            ("timeouts.shutdown_grace", dur(DEFAULT_SHUTDOWN_GRACE)),
            ("timeouts.drain", dur(DEFAULT_DRAIN)),
            ("retry.attempts", DEFAULT_RETRY_ATTEMPTS.to_string()),
            (
                "retry.budget_percent",
                DEFAULT_RETRY_BUDGET_PERCENT.to_string(),
            ),
            (
                "retry.budget_min_per_second",
                DEFAULT_RETRY_BUDGET_MIN_PER_SECOND.to_string(),
            ),
            ("preview.header", quoted(DEFAULT_PREVIEW_HEADER)),
            ("preview.path_prefix", quoted(DEFAULT_PREVIEW_PREFIX)),
            ("preview.access", quoted(DEFAULT_PREVIEW_ACCESS)),
            ("preview.allow", format!("{DEFAULT_PREVIEW_ALLOW:?}")),
            ("preview.token_header", quoted(DEFAULT_PREVIEW_TOKEN_HEADER)),
            (
                "limits.max_header_bytes",
                DEFAULT_MAX_HEADER_BYTES.to_string(),
            ),
            ("limits.max_headers", DEFAULT_MAX_HEADERS.to_string()),
            (
                "limits.max_connections",
                DEFAULT_MAX_CONNECTIONS.to_string(),
            ),
            (
                "upstream.max_idle_per_instance",
                DEFAULT_MAX_IDLE_PER_INSTANCE.to_string(),
            ),
            (
                "ejection.consecutive_failures",
                DEFAULT_EJECTION_CONSECUTIVE_FAILURES.to_string(),
            ),
            ("ejection.cool_down", dur(DEFAULT_EJECTION_COOL_DOWN)),
            (
                "ejection.max_ejected_percent",
                DEFAULT_MAX_EJECTED_PERCENT.to_string(),
            ),
            ("forwarding.forwarded", DEFAULT_EMIT_FORWARDED.to_string()),
            (
                "forwarding.upgrade_protocols",
                format!("{DEFAULT_UPGRADE_PROTOCOLS:?}"),
            ),
            (
                "forwarding.trusted_peers",
                format!("{DEFAULT_TRUSTED_PEERS:?}"),
            ),
            ("consul.address", DEFAULT_CONSUL_ADDRESS.to_owned()),
            ("consul.wait", dur(DEFAULT_CONSUL_WAIT)),
            ("consul.resync", dur(DEFAULT_CONSUL_RESYNC)),
            ("consul.min_interval", dur(DEFAULT_CONSUL_MIN_INTERVAL)),
            (
                "registration.enabled",
                DEFAULT_REGISTRATION_ENABLED.to_string(),
            ),
            ("registration.service", quoted(DEFAULT_REGISTRATION_SERVICE)),
            (
                "registration.check_interval",
                dur(DEFAULT_REGISTRATION_CHECK_INTERVAL),
            ),
            (
                "registration.check_timeout",
                dur(DEFAULT_REGISTRATION_CHECK_TIMEOUT),
            ),
            (
                "registration.deregister_after",
                dur(DEFAULT_REGISTRATION_DEREGISTER_AFTER),
            ),
            ("services.balance", quoted(DEFAULT_BALANCE)),
            ("services.colours", format!("{DEFAULT_COLOURS:?}")),
            ("routes.path_prefix", quoted(DEFAULT_ROUTE_PATH_PREFIX)),
            ("shutdown.deregister_delay", dur(DEFAULT_DEREGISTER_DELAY)),
            ("upgrade.socket", quoted(DEFAULT_UPGRADE_SOCKET)),
        ];
        // Bounds, as the meaning column states them.
        let bounds: Vec<(&str, String)> = vec![
            (
                "admin.token",
                format!("at least {MIN_ADMIN_TOKEN_LEN} characters"),
            ),
            ("retry.attempts", format!("0-{MAX_RETRY_ATTEMPTS}")),
            (
                "retry.budget_percent",
                format!("over {}", humantime::format_duration(RETRY_BUDGET_WINDOW)),
            ),
            (
                "preview.token",
                format!("at least {MIN_PREVIEW_TOKEN_LEN} characters"),
            ),
            (
                "limits.max_header_bytes",
                format!("≥ {MIN_MAX_HEADER_BYTES}"),
            ),
            ("consul.wait", format!("at most {}", dur(MAX_CONSUL_WAIT))),
            (
                "services.consul",
                format!("route_key = \"{DEFAULT_ROUTE_KEY_PREFIX}<name>\""),
            ),
        ];

        let docs = documented_keys();
        for (key, value) in &defaults {
            let (cell, _) = docs
                .get(*key)
                .unwrap_or_else(|| panic!("{key} is not in docs/config.md"));
            // The last code span is the built-in default (an environment variable may come first).
            let last = cell.rsplit('`').nth(1).unwrap_or_default();
            match (
                humantime::parse_duration(last),
                humantime::parse_duration(value),
            ) {
                // `60s` and `1m` say the same.
                (Ok(doc), Ok(code)) => assert_eq!(doc, code, "docs/config.md: default of {key}"),
                _ => assert_eq!(last, value, "docs/config.md: default of {key}"),
            }
        }
        for (key, text) in &bounds {
            let (_, meaning) = &docs[*key];
            let (default, _) = &docs[*key];
            assert!(
                meaning.contains(text.as_str()) || default.contains(text.as_str()),
                "docs/config.md: {key} should say {text:?}"
            );
        }
        // And the other way round: every documented default that is a plain value has its constant.
        for (key, (cell, _)) in &docs {
            let plain = cell.starts_with('`') && !cell.starts_with("`$");
            if plain {
                assert!(
                    defaults.iter().any(|(k, _)| k == key),
                    "docs/config.md documents a default for {key} that no constant backs"
                );
            }
        }
    }

    #[test]
    fn consul_tls_keys_and_registration() {
        let env = Env::from_lookup(|name| {
            Some(
                match name {
                    "CONSUL_HTTP_ADDR" => "consul.service:8501",
                    "CONSUL_HTTP_SSL" => "true",
                    "CONSUL_CACERT" => "/env/ca.pem",
                    "CONSUL_TLS_SERVER_NAME" => "server.dc1.consul",
                    "CONSUL_HTTP_SSL_VERIFY" => "false",
                    _ => return None,
                }
                .to_owned(),
            )
        });
        let consul_service = "[[services]]\nname = \"a\"\nconsul = {}\n";
        // The environment alone.
        let c = Config::parse(consul_service, Path::new("x"), &env).unwrap();
        assert_eq!(c.consul.client.address, "https://consul.service:8501");
        assert_eq!(
            c.consul.client.tls.ca_cert,
            Some(PathBuf::from("/env/ca.pem"))
        );
        assert!(c.consul.client.tls.insecure_skip_verify);
        let r = c.registration.unwrap();
        assert_eq!(r.service, DEFAULT_REGISTRATION_SERVICE);
        assert_eq!(r.check_interval, DEFAULT_REGISTRATION_CHECK_INTERVAL);
        assert_eq!(r.address, None);

        // The file wins, key by key.
        let c = Config::parse(
            &format!(
                "[consul]\naddress = \"http://127.0.0.1:8500\"\nca_cert = \"/file/ca.pem\"\ntls_skip_verify = false\n[registration]\nservice = \"edge\"\naddress = \"10.1.2.3:8081\"\n{consul_service}"
            ),
            Path::new("x"),
            &env,
        )
        .unwrap();
        // (TLS files are only read for an https:// agent.)
        assert_eq!(c.consul.client.address, "http://127.0.0.1:8500");
        assert_eq!(
            c.consul.client.tls.ca_cert,
            Some(PathBuf::from("/file/ca.pem"))
        );
        assert_eq!(
            c.consul.client.tls.server_name.as_deref(),
            Some("server.dc1.consul")
        );
        assert!(!c.consul.client.tls.insecure_skip_verify);
        let r = c.registration.unwrap();
        assert_eq!(r.service, "edge");
        assert_eq!(r.address, Some("10.1.2.3:8081".parse().unwrap()));

        // Off by key, and never without a Consul service or an admin listener.
        let off = |text: &str| {
            Config::parse(text, Path::new("x"), &Env::default())
                .unwrap()
                .registration
                .is_none()
        };
        assert!(off(&format!(
            "[registration]\nenabled = false\n{consul_service}"
        )));
        assert!(off(&format!("[admin]\nenabled = false\n{consul_service}")));
        assert!(off(
            "[[services]]\nname = \"a\"\nstatic = { active = [\"127.0.0.1:1\"] }\n"
        ));

        // Bad values are reported with their keys.
        let err = Config::parse(
            &format!(
                "[consul]\naddress = \"https://c:8501\"\nca_cert = \"/nope/ca.pem\"\n[registration]\naddress = \"0.0.0.0:8081\"\nservice = \"a b\"\n{consul_service}"
            ),
            Path::new("x"),
            &Env::default(),
        )
        .unwrap_err();
        let ConfigError::Invalid { issues, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["consul", "registration.service", "registration.address"],
            "{issues:?}"
        );
        assert!(issues[0].message.contains("/nope/ca.pem"), "{issues:?}");
    }

    #[test]
    fn env_fills_only_what_the_file_leaves_out() {
        let env = Env {
            consul: ConsulConfig {
                address: "http://10.0.0.1:8500".into(),
                token: Some("t".into()),
                ..ConsulConfig::default()
            },
            admin_token: Some("0123456789abcdef".into()),
        };
        let c = Config::parse(
            "[consul]\naddress = \"http://127.0.0.2:8500\"\n[[services]]\nname = \"a\"\nconsul = {}\n",
            Path::new("x"),
            &env,
        )
        .unwrap();
        assert_eq!(c.consul.client.address, "http://127.0.0.2:8500");
        assert_eq!(c.consul.client.token.as_deref(), Some("t"));
        assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef"));
    }
}
