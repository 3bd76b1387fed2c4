//! `switchyard dev` as a child process for end-to-end tests: every address on port 0, its
//! log in a file, stopped (TERM, then KILL) on drop so no stack outlives a failed test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `switchyard dev` child; stopped (TERM, then KILL) if a test fails
/// half way, so no stack outlives the test run.
pub struct DevChild {
    pub child: Child,
    pub log: PathBuf,
}

impl DevChild {
    /// The child's log, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Sends `sig` (e.g. `TERM`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the child to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for DevChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            if self.wait_exit(Duration::from_secs(20)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Removes `ESC [ ... m` colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An address from `dev.json`.
pub fn addr(doc: &Value, key: &str) -> SocketAddr {
    doc[key]
        .as_str()
        .unwrap_or_else(|| panic!("dev.json has no {key:?}: {doc}"))
        .parse()
        .unwrap()
}

/// Starts `<bin> dev` (the switchyard binary at `bin`) on `data` with every address on
/// port 0 (state persisted, unless `extra` says otherwise), its stderr in `log`.
pub fn spawn_dev(bin: &Path, data: &Path, log: &Path, extra: &[&str]) -> DevChild {
    let child = Command::new(bin)
        .arg("dev")
        .arg("--data-dir")
        .arg(data)
        .args([
            "--consul-addr",
            "127.0.0.1:0",
            "--nomad-addr",
            "127.0.0.1:0",
            "--proxy-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    DevChild {
        child,
        log: log.to_path_buf(),
    }
}

/// Waits (at most `within`) for `dev.json` in `data`, failing the test if
/// the dev stack exits first.
pub async fn wait_dev_json(dev: &mut DevChild, data: &Path, within: Duration) -> Value {
    let dev_json = data.join("dev.json");
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(&dev_json) {
            return serde_json::from_str(&text).unwrap();
        }
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!("switchyard dev exited early ({status}):\n{}", dev.log());
        }
        assert!(
            Instant::now() < deadline,
            "no dev.json after {within:?}:\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
