//! Typed HTTP clients for the Consul and Nomad APIs.
//!
//! The proxy (service discovery, its own registration) and the controller (deploy / switch /
//! rollback / status) talk to Consul and Nomad through this crate, against real clusters and the
//! dev stack alike, so every request follows the real HTTP APIs: paths, query parameters, headers
//! and JSON field names are the ones the official Go clients use. The dev stack serves those APIs;
//! of this crate it uses only [`tls::http_client_builder`] for the HTTP clients it runs checks and
//! registrations with.
//!
//! # Modules
//!
//! - [`consul`]: [`ConsulClient`](consul::ConsulClient) for health, catalog, KV, agent and status
//!   endpoints, with the Consul JSON types.
//! - [`nomad`]: [`NomadClient`](nomad::NomadClient) for jobs, versions, allocations,
//!   deployments, evaluations and parsing, with [`Job`](nomad::Job) kept as raw JSON so a
//!   read-modify-write never drops fields this crate does not model.
//! - [`blocking`]: the client-side rules every blocking-query loop needs:
//!   [`next_index`](blocking::next_index), a [`ChurnLimiter`](blocking::ChurnLimiter) and a
//!   jittered [`Backoff`](blocking::Backoff).
//! - [`tls`]: [`TlsConfig`](tls::TlsConfig) for `https://` agents (CA, client certificate,
//!   server name, skip-verify), filled from the same variables the `consul` and `nomad` CLIs read
//!   by [`ConsulConfig::from_env`](consul::ConsulConfig::from_env) and
//!   [`NomadConfig::from_env`](nomad::NomadConfig::from_env).
//! - [`Error`]: one error type for both clients; a 403 is
//!   [`Error::PermissionDenied`], one line naming the API, the request and the missing permission.
//!
//! # Blocking queries
//!
//! Reads take [`QueryOptions`] and return a [`QueryMeta`] parsed from the response headers
//! (`X-Consul-*` or `X-Nomad-*`). An `index` of 0 asks for an answer now; an `index` above 0 asks
//! the server to hold the request until its index passes that value or `wait` runs out. A watch
//! loop looks like this:
//!
//! ```no_run
//! # async fn watch(consul: switchyard_hashi::consul::ConsulClient) {
//! use std::time::Duration;
//! use switchyard_hashi::{QueryOptions, blocking::{Backoff, ChurnLimiter, next_index}};
//! use switchyard_hashi::consul::HealthQuery;
//!
//! let query = HealthQuery { passing: true, ..Default::default() };
//! let mut limiter = ChurnLimiter::new(5, Duration::from_millis(100));
//! let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
//! let mut index = 0;
//! loop {
//!     limiter.acquire().await;
//!     let opts = QueryOptions { index, wait: Some(Duration::from_secs(300)), stale: true };
//!     match consul.health_service("web", &query, &opts).await {
//!         Ok((entries, meta)) => {
//!             backoff.reset();
//!             index = next_index(index, meta.index);
//!             // compare `entries` with the previous answer: a return is not proof of a change
//!         }
//!         Err(_) => tokio::time::sleep(backoff.next_delay()).await,
//!     }
//! }
//! # }
//! ```
//!
//! # Response headers
//!
//! A missing `X-*-Index`, `X-*-LastContact` or `X-*-KnownLeader` header leaves the matching
//! [`QueryMeta`] field at its default (0, zero, false), as the official Consul client does; a
//! missing index therefore reads as "reset" to [`blocking::next_index`]. A header that is present
//! but not a decimal integer is a protocol violation and fails the call with
//! [`Error::InvalidHeader`]. Nothing in this crate panics on network input.
//!
//! # Timeouts
//!
//! One pooled `reqwest::Client` per client value (clones share it). Requests that do not block get
//! a 10 s timeout. A blocking read (index above 0) gets `wait + wait/16 + 5 s`, where `wait`
//! defaults to the servers' 5 minutes: the servers add up to `wait/16` of jitter. Redirects are
//! not followed and environment proxies are ignored: the agents are addressed directly.
//!
//! # Addresses and TLS
//!
//! An address is `host:port` (plain HTTP), `http://host:port`, `https://host:port` or
//! `unix:///path/to.sock`. `https://` uses rustls with the `ring` provider: the CA file or
//! directory of the [`TlsConfig`](tls::TlsConfig) when given, else the system's roots.

pub mod blocking;
pub mod consul;
mod error;
pub mod nomad;
mod serde_util;
pub mod tls;
mod transport;

use std::time::Duration;

pub use error::{Denied, Error};

/// Options for reads. `index == 0` means "answer now" (no blocking).
///
/// With `index > 0` the request carries `?index=` (and `?wait=` when `wait` is set and non-zero),
/// and the server holds it until its index passes `index` or the wait runs out. `wait` is ignored
/// when `index` is 0. `stale` lets any server answer (Consul: `?stale`; Nomad: `?stale`).
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// The index to block on: the `index` of the previous answer's [`QueryMeta`]. 0 = no blocking.
    pub index: u64,
    /// How long the server may hold the request. `None` means the server default (5 minutes).
    pub wait: Option<Duration>,
    /// Allow any server to answer, not just the leader.
    pub stale: bool,
}

impl QueryOptions {
    /// Options for a blocking read on `index` for at most `wait`.
    pub fn blocking(index: u64, wait: Duration) -> Self {
        QueryOptions {
            index,
            wait: Some(wait),
            stale: false,
        }
    }
}

/// What a read's response headers said (`X-Consul-Index` / `X-Nomad-Index`, `KnownLeader`,
/// `LastContact`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryMeta {
    /// The index to pass as [`QueryOptions::index`] in the next blocking read (see
    /// [`blocking::next_index`]). 0 when the header was absent.
    pub index: u64,
    /// Whether the answering server knew of a leader.
    pub known_leader: bool,
    /// How long ago the answering server last heard from the leader (0 when it is the leader).
    pub last_contact: Duration,
}

/// Formats a duration the way Go's `time.ParseDuration` reads it: whole seconds as `"10s"`,
/// anything else in milliseconds (`"1500ms"`), rounded up to 1 ms when not zero.
///
/// Use it for Consul check fields such as `interval`, `timeout`, `ttl` and
/// `deregister_critical_service_after`.
pub fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", duration_millis(d))
    }
}

/// Milliseconds in `d`, at least 1 when `d` is not zero (what the Go clients send for `wait`).
pub(crate) fn duration_millis(d: Duration) -> u128 {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() { 1 } else { ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_formats() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(5400)), "5400s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_micros(10)), "1ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
