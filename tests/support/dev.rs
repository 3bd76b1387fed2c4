//! `switchyard dev` as a child process: every address on port 0 unless a
//! test overrides it, its log in a temp dir, stopped (TERM, then KILL) on
//! drop so no stack outlives a failed test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "switchyard-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `switchyard dev` child.
pub struct DevChild {
    pub child: Child,
    pub log: PathBuf,
}

/// The `hello-service` binary next to `switchyard`, which the dev stack
/// runs as its tasks.
pub fn hello_bin_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let hello = bin.with_file_name("hello-service");
    assert!(
        hello.is_file(),
        "{} is missing: build it first with `cargo build -p hello-service` (the dev stack runs it as its tasks)",
        hello.display()
    );
    bin.parent().unwrap().to_owned()
}

impl DevChild {
    /// Starts `switchyard dev --ephemeral --data-dir <tmp>/data` with
    /// `extra` arguments; the four listeners default to `127.0.0.1:0`.
    pub fn spawn(tmp: &TempDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"));
        let log = tmp.0.join("dev.log");
        let mut args = vec![
            "dev".to_owned(),
            "--ephemeral".into(),
            "--data-dir".into(),
            tmp.0.join("data").display().to_string(),
        ];
        for flag in [
            "--consul-addr",
            "--nomad-addr",
            "--proxy-addr",
            "--admin-addr",
        ] {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// Waits for `<data-dir>/dev.json` (written once the stack is ready)
    /// and returns it.
    pub async fn ready(&mut self, tmp: &TempDir, within: Duration) -> Value {
        let dev_json = tmp.0.join("data").join("dev.json");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(text) = std::fs::read_to_string(&dev_json) {
                return serde_json::from_str(&text).unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("switchyard dev exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no dev.json after {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The child's log, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

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
