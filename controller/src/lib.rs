//! The switchyard controller: the operator commands `deploy`, `switch`, `rollback`, `status`
//! and `diagnose`.
//!
//! Every command follows the same three steps so that its decisions can be tested without a
//! cluster:
//!
//! 1. [`Controller::observe`] gathers the state of one service: the Nomad job and its
//!    allocations, every Consul instance (passing or not) with the version it reports on
//!    `GET /version`, the route key, each proxy's `/status`, and the last recorded switch.
//!    Sources that cannot be read are recorded as errors, not raised, so `status` and `diagnose`
//!    can still report on the rest.
//! 2. A pure planner ([`plan::plan_deploy`], [`plan::plan_switch`], [`plan::plan_rollback`],
//!    [`report::status_report`], [`report::diagnose`]) turns the [`Observed`] state into a plan
//!    or a [`Refusal`].
//! 3. The executor in [`exec`] carries the plan out with check-and-set writes only (Nomad
//!    `EnforceIndex`, Consul `?cas=`), then verifies the outcome from the outside (Consul
//!    health, the instances' own `/version`, the proxies' `/status`).
//!
//! # Module map
//!
//! - [`settings`]: addresses, tokens, deadlines, names; read from the environment.
//! - [`observe`]: [`Observed`] and its pieces, plus the parsing of a proxy's `/status`.
//! - [`plan`]: planners and [`Refusal`]; [`plan::validate_version`].
//! - [`report`]: the `status` report and the `diagnose` findings (pure).
//! - [`state`]: the state directory: job backups and the per-service switch record.
//! - [`exec`]: [`Controller`], the executors and their wait loops.
//! - [`error`]: [`ControllerError`] and its exit codes.

pub mod error;
pub mod exec;
pub mod observe;
pub mod plan;
pub mod report;
pub mod settings;
pub mod state;

pub use error::ControllerError;
pub use exec::{Controller, DeployOutcome, SwitchOutcome};
pub use observe::Observed;
pub use plan::Refusal;
pub use settings::Settings;

/// Parses a human duration such as `5m`, `30s` or `1500ms` (for command-line flags).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Pretty JSON of a report or outcome, for `--json` output.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
