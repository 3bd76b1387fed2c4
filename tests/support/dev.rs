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
