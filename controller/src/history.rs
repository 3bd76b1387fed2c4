//! The history of a service's switches, rollbacks and deploys, kept in Consul KV at
//! `switchyard/state/<service>` so `rollback` and `status` work from any machine.
//!
//! The value is JSON `{"entries": [...]}`, oldest first, at most [`MAX_ENTRIES`]. Every change
//! is a read-modify-write with `?cas=<ModifyIndex>` (0 when absent), retried on a lost race, so
//! two controllers never drop each other's entries.

use serde::{Deserialize, Serialize};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{ConsulClient, KvWrite};

use crate::Controller;

/// Prefix of the history keys.
pub const STATE_PREFIX: &str = "switchyard/state/";
/// How the outcome of a command stopped by SIGINT or SIGTERM begins.
pub const INTERRUPTED: &str = "interrupted: ";
/// How many entries are kept.
pub const MAX_ENTRIES: usize = 50;
/// How many lost check-and-set races a change retries.
const CAS_ATTEMPTS: usize = 5;

/// The history key of a service.
pub fn history_key(service: &str) -> String {
    format!("{STATE_PREFIX}{service}")
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `switch`, `rollback` or `deploy`.
    pub command: String,
    /// Who ran it (the route key's `updated_by` form).
    pub who: String,
    /// When, RFC 3339.
    pub at: String,
    /// The colour active before (a switch) or the colour deployed to (a deploy).
    pub from: String,
    /// The colour made active (a switch) or the colour deployed to (a deploy).
    pub to: String,
    /// The version `from` ran (a switch) or the version replaced (a deploy).
    pub from_version: Option<String>,
    /// The version `to` ran (a switch) or the version deployed (a deploy).
    pub to_version: Option<String>,
    /// The route key generation written (switches).
    #[serde(default)]
    pub generation: u64,
    /// The Nomad job version a failed or unwanted deploy can be reverted to.
    #[serde(default)]
    pub revert_to_job_version: Option<u64>,
    /// `ok`, `route key written` (the command has not finished), `failed: <why>`, or
    /// `interrupted: <what was undone>`.
    pub outcome: String,
}

impl HistoryEntry {
    /// Whether the entry moved traffic: a switch or rollback whose route key write happened.
    pub fn is_switch(&self) -> bool {
        matches!(self.command.as_str(), "switch" | "rollback")
    }

    /// Whether SIGINT or SIGTERM stopped the command.
    pub fn is_interrupted(&self) -> bool {
        self.outcome.starts_with(INTERRUPTED)
    }
}

/// The stored document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
}

impl History {
    /// The last switch or rollback.
    pub fn last_switch(&self) -> Option<&HistoryEntry> {
        self.entries.iter().rev().find(|e| e.is_switch())
    }

    /// The last deploy, when it was interrupted (no deploy has run since).
    pub fn interrupted_deploy(&self) -> Option<&HistoryEntry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.command == "deploy")
            .filter(|e| e.is_interrupted())
    }

    /// Appends an entry, dropping the oldest beyond [`MAX_ENTRIES`].
    pub fn push(&mut self, entry: HistoryEntry) {
        self.entries.push(entry);
        let excess = self.entries.len().saturating_sub(MAX_ENTRIES);
        self.entries.drain(..excess);
    }
}

/// Why the history could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Consul failed.
    #[error("{key}: {error}")]
    Consul {
        /// The key.
        key: String,
        /// The client error.
        error: switchyard_hashi::Error,
    },
    /// The stored value is not a history.
    #[error("{key} is not a history document: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Other writers kept winning.
    #[error("{key} kept changing; gave up after {CAS_ATTEMPTS} attempts")]
    Contended {
        /// The key.
        key: String,
    },
}

/// Reads a service's history and its `ModifyIndex` (0 when absent).
pub async fn read(client: &ConsulClient, service: &str) -> Result<(History, u64), HistoryError> {
    let key = history_key(service);
    let (pair, _) = client
        .kv_get(&key, &QueryOptions::default())
        .await
        .map_err(|error| HistoryError::Consul {
            key: key.clone(),
            error,
        })?;
    let Some(pair) = pair else {
        return Ok((History::default(), 0));
    };
    let history = match pair.value.as_deref() {
        None | Some([]) => History::default(),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| HistoryError::Invalid {
            key: key.clone(),
            reason: e.to_string(),
        })?,
    };
    Ok((history, pair.modify_index))
}

/// Changes a service's history with check-and-set, retrying lost races.
pub async fn modify(
    client: &ConsulClient,
    service: &str,
    change: impl Fn(&mut History),
) -> Result<History, HistoryError> {
    let key = history_key(service);
    for _ in 0..CAS_ATTEMPTS {
        let (mut history, index) = read(client, service).await?;
        change(&mut history);
        let bytes = serde_json::to_vec(&history).unwrap_or_default();
        let write = KvWrite {
            cas: Some(index),
            flags: None,
        };
        match client.kv_put(&key, &bytes, &write).await {
            Ok(true) => return Ok(history),
            Ok(false) => continue,
            Err(error) => return Err(HistoryError::Consul { key, error }),
        }
    }
    Err(HistoryError::Contended { key })
}

impl Controller {
    /// Appends an entry to the service's history. A failure is reported, not raised: the
    /// change it records has already happened.
    pub(crate) async fn record(&self, entry: HistoryEntry) {
        if let Err(e) = modify(&self.consul, &self.settings.service, |h| {
            h.push(entry.clone())
        })
        .await
        {
            self.say(&format!("warning: the history was not updated: {e}"));
        }
    }

    /// Sets the outcome of the entry recorded earlier for the same command and time.
    pub(crate) async fn settle(&self, entry: &HistoryEntry) {
        let result = modify(&self.consul, &self.settings.service, |h| {
            match h
                .entries
                .iter_mut()
                .rev()
                .find(|e| e.command == entry.command && e.at == entry.at && e.who == entry.who)
            {
                Some(e) => e.outcome.clone_from(&entry.outcome),
                None => h.push(entry.clone()),
            }
        })
        .await;
        if let Err(e) = result {
            self.say(&format!("warning: the history was not updated: {e}"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(command: &str, n: u64) -> HistoryEntry {
        HistoryEntry {
            command: command.into(),
            who: "t".into(),
            at: "2026-01-01T00:00:00Z".into(),
            from: "blue".into(),
            to: "green".into(),
            from_version: None,
            to_version: None,
            generation: n,
            revert_to_job_version: None,
            outcome: "ok".into(),
        }
    }

    #[test]
    fn bounded_and_last_switch() {
        let mut h = History::default();
        assert!(h.last_switch().is_none());
        for n in 0..60 {
            h.push(entry("switch", n));
        }
        h.push(entry("deploy", 99));
        assert_eq!(h.entries.len(), MAX_ENTRIES);
        assert_eq!(h.entries[0].generation, 11);
        assert_eq!(h.last_switch().unwrap().generation, 59);
        assert!(h.interrupted_deploy().is_none());
        let back: History = serde_json::from_slice(&serde_json::to_vec(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn an_interrupted_deploy_stays_unfinished_until_the_next_deploy() {
        let mut h = History::default();
        let mut d = entry("deploy", 0);
        d.outcome = format!("{INTERRUPTED}deploy of v3 to green interrupted (SIGINT)");
        h.push(d.clone());
        h.push(entry("switch", 1));
        assert_eq!(h.interrupted_deploy(), Some(&d));
        h.push(entry("deploy", 2));
        assert!(h.interrupted_deploy().is_none());
    }
}
