//! On-disk snapshot of the dev Consul state.
//!
//! The whole state (KV, services, checks with their last status, and the
//! indexes) is small, so each write saves a full JSON snapshot: written to a
//! temporary file, synced, then renamed over `consul-state.json`, so a crash
//! leaves either the old or the new snapshot, never half of one. A sequence
//! number (the raft-like index) stops a slow writer from replacing a newer
//! snapshot with an older one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ConsulError;
use super::state::Inner;

const FILE_NAME: &str = "consul-state.json";

/// Writes snapshots into one data directory.
#[derive(Debug)]
pub(crate) struct Persister {
    path: PathBuf,
    written: Mutex<u64>,
}

impl Persister {
    /// Prepares `dir` and loads the snapshot it holds, if any.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Option<Inner>), ConsulError> {
        fs::create_dir_all(dir).map_err(|source| ConsulError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let loaded = match fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice::<Inner>(&bytes).map_err(|source| {
                ConsulError::Corrupt {
                    path: path.clone(),
                    source,
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ConsulError::Io { path, source }),
        };
        let seq = loaded.as_ref().map(|i| i.index).unwrap_or(0);
        Ok((
            Self {
                path,
                written: Mutex::new(seq),
            },
            loaded,
        ))
    }

    /// Saves a snapshot taken at index `seq`, unless a newer one was saved.
    pub(crate) fn save(&self, seq: u64, bytes: &[u8]) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if seq <= *written {
            return;
        }
        if self.write_atomically(bytes) {
            *written = seq;
        }
    }

    /// Saves regardless of the sequence (final flush).
    pub(crate) fn save_force(&self, seq: u64, bytes: &[u8]) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if self.write_atomically(bytes) {
            *written = (*written).max(seq);
        }
    }

    fn write_atomically(&self, bytes: &[u8]) -> bool {
        let tmp = self.path.with_extension("json.tmp");
        let result = (|| -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "consul: cannot save state");
                false
            }
        }
    }
}
