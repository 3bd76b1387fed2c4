//! The controller's state directory (`.switchyard` by default).
//!
//! - `backups/<job>.<group>.<unix-ms>.json`: the job as Nomad returned it, written before a
//!   deploy changes anything, so an operator can always put back what ran before.
//!
//! Nomad's job versions are the primary backup (the history in Consul records the version a
//! deploy can be reverted to); these files are the copy an operator can read and re-submit.
//!
//! Files are written to a temporary name and renamed, so a crash never leaves half a file.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchyard_hashi::nomad::Job;

use crate::ControllerError;

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
