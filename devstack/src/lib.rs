//! The switchyard dev stack: everything a blue/green deployment needs, on one
//! machine, with no cluster.
//!
//! - [`consul`]: a Consul-compatible HTTP API (agent services and checks,
//!   catalog incl. external nodes, health, KV with sessions and locks,
//!   blocking queries) with a check runner.
//! - [`nomad`]: a Nomad-compatible HTTP API (jobs, versions, revert, plan,
//!   allocations, evaluations, deployments, `jobs/parse`) with a local
//!   process driver that registers allocations' services in Consul over its
//!   HTTP API.
//! - [`tls`]: a CA and server certificate generated per run, and an HTTPS
//!   listener (`switchyard dev --secure`); [`connlimit`]: Consul's
//!   per-client connection limit.
//!
//! The proxy and the controller never know they are talking to this crate:
//! they use the same HTTP clients they use against real clusters.

mod blake2b;
pub mod connlimit;
pub mod consul;
pub mod nomad;
pub mod tls;
