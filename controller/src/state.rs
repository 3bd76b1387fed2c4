//! The controller's state directory (`.switchyard` by default).
//!
//! - `backups/<job>.<group>.<unix-ms>.json`: the job as Nomad returned it, written before a
//!   deploy changes anything, so an operator can always put back what ran before.
//! - `state/<service>.json`: a [`SwitchRecord`] of the last switch. `rollback` needs to know
//!   which version served before the switch, which neither Consul nor Nomad remembers once the
//!   standby colour has been redeployed.
//!
//! Files are written to a temporary name and renamed, so a crash never leaves half a file.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_hashi::nomad::Job;

use crate::ControllerError;

/// What the last switch of a service did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// The service.
    pub service: String,
    /// The colour that was active before the switch.
    pub from: String,
    /// The colour made active.
    pub to: String,
    /// The version `from` ran at the time (its `version=` tag).
    pub from_version: Option<String>,
    /// The version `to` ran at the time.
    pub to_version: Option<String>,
    /// The route key generation written.
    pub generation: u64,
    /// When, RFC 3339.
    pub at: String,
}

/// A job backup on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// The file.
    pub path: PathBuf,
    /// The task group the deploy was about to change.
    pub group: String,
    /// Unix milliseconds when it was taken.
    pub taken_at_ms: u128,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state directory rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, service: &str) -> PathBuf {
        self.root.join("state").join(format!("{service}.json"))
    }

    /// The last switch of `service`, if one was recorded. A file that cannot be parsed is an
    /// error rather than "none": rollback must not guess.
    pub fn read_record(&self, service: &str) -> Result<Option<SwitchRecord>, ControllerError> {
        let path = self.record_path(service);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(ControllerError::Io {
                    what: "reading",
                    path,
                    error,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ControllerError::Io {
                what: "parsing",
                path,
                error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    /// Records a switch.
    pub fn write_record(&self, record: &SwitchRecord) -> Result<PathBuf, ControllerError> {
        let path = self.record_path(&record.service);
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Saves `job` as `backups/<job>.<group>.<unix-ms>.json`.
    pub fn write_backup(&self, job: &Job, group: &str) -> Result<PathBuf, ControllerError> {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = self
            .root
            .join("backups")
            .join(format!("{}.{group}.{ms}.json", job.id()));
        let bytes = serde_json::to_vec_pretty(job).unwrap_or_default();
        write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// The backups of `job`, oldest first. A missing directory is an empty list.
    pub fn backups(&self, job: &str) -> Vec<Backup> {
        let dir = self.root.join("backups");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<Backup> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix(job)?.strip_prefix('.')?;
                let rest = rest.strip_suffix(".json")?;
                let (group, ms) = rest.rsplit_once('.')?;
                Some(Backup {
                    path: e.path(),
                    group: group.to_owned(),
                    taken_at_ms: ms.parse().ok()?,
                })
            })
            .collect();
        out.sort_by_key(|b| b.taken_at_ms);
        out
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ControllerError> {
    let io = |what, error| ControllerError::Io {
        what,
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into", e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "switchyard-controller-{name}-{}-{:?}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn record_round_trip_and_missing_is_none() {
        let dir = StateDir::new(temp_dir("record"));
        assert_eq!(dir.read_record("web").unwrap(), None);
        let r = SwitchRecord {
            service: "web".into(),
            from: "blue".into(),
            to: "green".into(),
            from_version: Some("v1".into()),
            to_version: Some("v2".into()),
            generation: 4,
            at: "2026-01-01T00:00:00.000Z".into(),
        };
        dir.write_record(&r).unwrap();
        assert_eq!(dir.read_record("web").unwrap(), Some(r));
        std::fs::write(dir.root().join("state/web.json"), b"{").unwrap();
        assert!(dir.read_record("web").is_err());
    }

    #[test]
    fn backups_are_listed_per_job_in_time_order() {
        let dir = StateDir::new(temp_dir("backups"));
        assert!(dir.backups("web").is_empty());
        let job = Job(serde_json::json!({"ID": "web", "Version": 3}));
        let first = dir.write_backup(&job, "green").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let second = dir.write_backup(&job, "blue").unwrap();
        let other = Job(serde_json::json!({"ID": "webby"}));
        dir.write_backup(&other, "green").unwrap();
        let list = dir.backups("web");
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].path, first);
        assert_eq!(list[0].group, "green");
        assert_eq!(list[1].path, second);
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
        assert_eq!(saved["Version"], 3);
    }
}
