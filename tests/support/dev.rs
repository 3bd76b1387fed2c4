//! `switchyard dev` as a child process (the kit's [`DevChild`]), started from this package's
//! own build of the binary.

use std::path::Path;

pub use switchyard_testkit::TempDir;
pub use switchyard_testkit::dev::{DevChild, addr, wait_dev_json};

/// Starts `switchyard dev` on `data` with every address on port 0 (state
/// persisted, unless `extra` says otherwise), its stderr in `log`.
pub fn spawn_dev(data: &Path, log: &Path, extra: &[&str]) -> DevChild {
    switchyard_testkit::spawn_dev(
        Path::new(env!("CARGO_BIN_EXE_switchyard")),
        data,
        log,
        extra,
    )
}

pub use switchyard_testkit::dev::{OPERATOR_VARS, SecureDev};

/// Starts this package's `switchyard dev --secure --ephemeral <extra>` in `dir` and waits until
/// it is ready (its `dev.json` and `dev.env` written).
pub async fn start_secure(dir: &Path, extra: &[&str]) -> SecureDev {
    SecureDev::start(Path::new(env!("CARGO_BIN_EXE_switchyard")), dir, extra).await
}

/// `cmd` with every variable the controller reads removed, then exactly `env` (the
/// operator's `dev.env`, plus what a test adds) set.
pub fn operator_env<'a>(
    cmd: &mut std::process::Command,
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for var in OPERATOR_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env);
}

/// The controller's history of `service` (`switchyard/state/<service>`'s `entries`), oldest
/// first; empty when nothing was recorded yet.
pub async fn history(
    consul: &switchyard_hashi::consul::ConsulClient,
    service: &str,
) -> Vec<serde_json::Value> {
    let (pair, _) = consul
        .kv_get(
            &format!("switchyard/state/{service}"),
            &switchyard_hashi::QueryOptions::default(),
        )
        .await
        .unwrap();
    let Some(pair) = pair else {
        return Vec::new();
    };
    let doc: serde_json::Value =
        serde_json::from_slice(pair.value.as_deref().unwrap_or(b"{}")).unwrap();
    doc["entries"].as_array().cloned().unwrap_or_default()
}
