//! Temporary directories, the workspace root and the built binaries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The workspace root, where `config/` and the job files live.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh directory under the system temp dir, unique per process and call (tests running
/// in parallel never share one). The caller removes it; [`TempDir`] does that on drop.
pub fn temp_dir(tag: &str) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let p = std::env::temp_dir().join(format!(
        "switchyard-test-{tag}-{}-{nanos}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A [`temp_dir`], removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self(temp_dir(tag))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The directory the running test binary's package binaries were built into
/// (`target/debug` for `cargo test`): test binaries live in its `deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} has no build directory", exe.display()))
        .to_path_buf()
}

/// The directory holding the `hello-service` binary; fails clearly when it was not built.
pub fn hello_bin_dir() -> PathBuf {
    let dir = bin_dir();
    let bin = dir.join("hello-service");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p hello-service`",
        bin.display()
    );
    dir
}
