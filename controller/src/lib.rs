//! The switchyard controller: the operator commands `deploy`, `switch`, `rollback`, `status`
//! and `diagnose`.
//!
//! Every command follows the same three steps so that its decisions can be tested without a
//! cluster:
//!
//! 1. [`Controller::observe`] gathers the state of one service: the Nomad job and its
//!    allocations, every Consul instance (passing or not) with the version it reports on
//!    `GET /version`, the route key, each proxy's `/status`, and the history kept in Consul.
//!    Sources that cannot be read are recorded as errors, not raised, so `status` and `diagnose`
//!    can still report on the rest.
//! 2. A pure planner ([`deploy::plan_deploy`], [`switch::plan_switch`],
//!    [`rollback::plan_rollback`], [`status::status_report`], [`diagnose::diagnose`]) turns the
//!    [`Observed`] state into a plan, a report or a [`Refusal`].
//! 3. The command's executor carries the plan out with check-and-set writes only (Nomad
//!    `EnforceIndex`, Consul `?cas=`), then verifies the outcome from the outside (Consul
//!    health, the instances' own `/version`, the proxies' `/status`).
//!
//! # Module map
//!
//! One module per command, each with its planner, executor and rendering:
//!
//! - [`observe`]: [`Controller::observe`], [`Observed`] and its pieces, the parsing of a
//!   proxy's `/status`.
//! - [`deploy`] (with [`deploy_settings`]: what else it may change in the standby group, and
//!   [`deploy_guard`]: Nomad's plan before every register), [`switch`], [`rollback`], [`status`], [`diagnose`].
//!
//! Shared by them:
//!
//! - [`controller`]: [`Controller`], the clients and settings every command uses.
//! - [`refusal`]: [`Refusal`], [`refusal::validate_version`] and the route key check.
//! - [`settings`]: addresses, tokens, deadlines, names; read from the environment.
//! - [`version_check`]: how instances prove their version (set per service in the job's meta).
//! - [`nomad_health`]: Nomad's view of a deploy: allocation health, the deployment's status,
//!   canary promotion, auto-revert.
//! - [`history`]: the switch and deploy history in Consul KV (`switchyard/state/<service>`).
//! - [`lock`]: one mutating command per service at a time: the session lock on
//!   `switchyard/locks/<service>` that `deploy`, `switch` and `rollback` hold while they run.
//! - [`state`]: the state directory: job backups.
//! - [`error`]: [`ControllerError`] and its exit codes.

pub mod controller;
pub mod deploy;
pub mod deploy_guard;
pub mod deploy_settings;
pub mod diagnose;
pub mod error;
pub mod history;
pub mod lock;
pub mod nomad_health;
pub mod observe;
pub mod refusal;
pub mod rollback;
pub mod settings;
pub mod state;
pub mod status;
pub mod switch;
#[cfg(test)]
pub(crate) mod testing;
pub mod version_check;

pub use controller::{Controller, ProgressSink};
pub use deploy::DeployOutcome;
pub use error::ControllerError;
pub use lock::ServiceLock;
pub use observe::Observed;
pub use refusal::Refusal;
pub use settings::Settings;
pub use switch::SwitchOutcome;

/// Parses a human duration such as `5m`, `30s` or `1500ms` (for command-line flags).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Pretty JSON of a report or outcome, for `--json` output.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
