//! `switchyard proxy --config F` as a child process of this package's build, its JSON log
//! lines read as they come (the proxy's listeners bound on port 0 are learnt from them).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A `switchyard proxy` process and its JSON log lines.
pub struct ProxyProcess {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl ProxyProcess {
    pub fn spawn(config: &Path, upgrade: bool) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("proxy").arg("--config").arg(config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "fields": { "message": line } }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the log line with this message; returns its fields.
    pub async fn wait_for(&mut self, message: &str) -> serde_json::Value {
        if let Some(v) = self.seen.iter().find(|v| v["fields"]["message"] == message) {
            return v["fields"].clone();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if v["fields"]["message"] == message {
                        return v["fields"].clone();
                    }
                }
                _ => panic!("no log line {message:?}; saw {:#?}", self.seen),
            }
        }
    }

    pub async fn address(&mut self, message: &str) -> SocketAddr {
        let fields = self.wait_for(message).await;
        fields["address"].as_str().unwrap().parse().unwrap()
    }

    /// Waits for the exit and its last log lines; panics after `within`.
    pub async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {within:?}"))
            .unwrap();
        // The reader ends at the end of stderr.
        while let Ok(Some(v)) = tokio::time::timeout(within, self.lines.recv()).await {
            self.seen.push(v);
        }
        status.code()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Everything logged so far (for failure messages).
    pub fn drain(&mut self) -> Vec<serde_json::Value> {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        self.seen.clone()
    }
}
