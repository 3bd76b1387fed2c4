//! Test support shared by every crate's tests, so each helper is written once:
//!
//! - [`serve`]: a server task on `127.0.0.1:0` stopped through a shutdown signal
//!   ([`Served`]), and a plain accept loop whose connections die with it ([`accept_loop`]);
//! - [`wait`]: polls with a deadline ([`poll`], [`wait_for`], [`eventually`]);
//! - [`http`]: HTTP clients built with `switchyard_hashi::tls::http_client_builder()` (a
//!   bare `reqwest::Client::new()` panics: rustls has no default crypto provider), a port
//!   nothing listens on, small request helpers;
//! - [`consul`] and [`nomad`]: the dev stack's Consul and Nomad on ephemeral ports, and
//!   instances registered in Consul tagged `[colour, role, version=v]`;
//! - [`proxy`]: a switchyard proxy from TOML text with its listeners on ephemeral ports;
//! - [`load`]: keep-alive clients requesting one URL, recording
//!   `switchyard_loadcheck::Sample`s;
//! - [`dev`]: `switchyard dev` as a child process, and `dev --secure` with the operator's
//!   environment from its `dev.env` ([`SecureDev`]);
//! - [`fs`]: temporary directories, the workspace root and the built binaries.
//!
//! Everything here is for tests: a helper that cannot do its job panics, which fails the
//! test that called it.
#![allow(clippy::unwrap_used)]

pub mod consul;
pub mod dev;
pub mod fs;
pub mod http;
pub mod json;
pub mod load;
pub mod nomad;
pub mod proxy;
pub mod serve;
pub mod wait;

pub use consul::{DevConsulServer, register, register_with_status};
pub use dev::{DevChild, SecureDev, read_dev_env, spawn_dev, strip_ansi, wait_dev_json};
pub use fs::{TempDir, hello_bin_dir, temp_dir, workspace_root};
pub use http::{answered_by, client, dead_addr, get_text, http_client};
pub use load::{Clock, LoadGen};
pub use proxy::{ProxyHandle, consul_config};
pub use serve::{AbortOnDrop, Served, Shutdown, accept_loop};
pub use wait::{eventually, poll, wait_for};
