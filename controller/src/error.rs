//! [`ControllerError`]: why a command failed, and which exit code that maps to.
//!
//! The binary prints the error on one line, so every message names the cause and, where one
//! exists, what the operator can do next.

use std::path::PathBuf;

use crate::refusal::Refusal;

/// Why a controller command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The arguments or settings are unusable (exit code 2).
    #[error("{0}")]
    BadInput(String),

    /// A planner refused to act on the observed state; nothing was changed.
    #[error(transparent)]
    Refused(#[from] Refusal),

    /// A Consul or Nomad call failed.
    #[error("{what}: {error}")]
    Hashi {
        /// What was being done, e.g. `registering job hello-service`.
        what: String,
        /// The client error (its message is complete; it is not chained again).
        error: switchyard_hashi::Error,
    },

    /// A check-and-set write lost against a concurrent change; this command changed nothing.
    #[error("{0}")]
    Conflict(String),

    /// Nomad's plan of a register would create, destroy or replace allocations of the active
    /// group (exit code 4); nothing was registered. The message names the offending fields.
    #[error("{0}")]
    PlanRefused(String),

    /// The change was made but did not come out right (wrong version, never healthy, deadline,
    /// proxies that did not follow). The message says what was undone.
    #[error("{0}")]
    Failed(String),

    /// Another command holds the service's lock (exit code 3); nothing was changed. The
    /// message names the holder: host, pid, command and since when.
    #[error("{0}")]
    Locked(String),

    /// SIGINT or SIGTERM stopped the command (exit code 130). The message says what was
    /// undone and what is left.
    #[error("{0}")]
    Interrupted(String),

    /// The state directory could not be read or written.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
}

impl ControllerError {
    /// The process exit code: 2 for bad input (including an invalid version or an unknown
    /// service), 3 when another command holds the service's lock, 4 when Nomad's plan would
    /// touch the active group, 130 when interrupted, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ControllerError::BadInput(_) => 2,
            ControllerError::Refused(r) if r.is_bad_input() => 2,
            ControllerError::Locked(_) => 3,
            ControllerError::PlanRefused(_) => 4,
            ControllerError::Interrupted(_) => 130,
            _ => 1,
        }
    }

    pub(crate) fn hashi(what: impl Into<String>, source: switchyard_hashi::Error) -> Self {
        ControllerError::Hashi {
            what: what.into(),
            error: source,
        }
    }
}
