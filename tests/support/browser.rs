//! Headless Chromium driven over the DevTools protocol (CDP), with nothing
//! but a WebSocket: the browser is started with `--remote-debugging-port=0`,
//! its port read from `DevToolsActivePort`, and the first page target is
//! attached. Every uncaught page exception (`Runtime.exceptionThrown`) is
//! recorded so tests can fail on them.
//!
//! Chromium is Debian's `chromium` package (CI installs it); a missing
//! browser fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::dev::TempDir;

/// The Chromium binary: `$CHROMIUM`, else `chromium` on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium is not installed: the status page is tested in a real browser (apt-get install chromium, as .ci/run does)"
    );
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Uncaught exceptions the page threw, as Chromium reported them.
    pub exceptions: Vec<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Self {
        let profile = TempDir::new("chromium");
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        let mut child = ChildGuard(Some(child));
        let port = devtools_port(&profile.0, &mut child).await;
        let targets: Vec<Value> = super::client()
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets:#?}"));
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut b = Self {
            child: child.0.take().unwrap(),
            ws,
            next_id: 0,
            exceptions: Vec::new(),
            _profile: profile,
        };
        b.call("Runtime.enable", json!({})).await;
        b.call("Page.enable", json!({})).await;
        b
    }

    /// Sends a CDP command and returns its result; events that arrive
    /// meanwhile are recorded.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => panic!("DevTools connection ended during {method}: {other:?}"),
                }
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            if v["method"] == "Runtime.exceptionThrown" {
                let d = &v["params"]["exceptionDetails"];
                let what = d["exception"]["description"]
                    .as_str()
                    .or_else(|| d["text"].as_str())
                    .unwrap_or("exception");
                self.exceptions.push(format!(
                    "{what} at {}:{}",
                    d["url"].as_str().unwrap_or("?"),
                    d["lineNumber"]
                ));
            }
        }
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(r.get("errorText").is_none(), "loading {url}: {r}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.eval("document.readyState").await != "complete" {
            assert!(Instant::now() < deadline, "{url} did not finish loading");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Evaluates a JavaScript expression in the page (promises awaited)
    /// and returns its value; a thrown exception fails the test.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`, at most `within`; returns how long
    /// it took.
    pub async fn wait_for(&mut self, expr: &str, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.eval(expr).await == Value::Bool(true) {
                return Some(start.elapsed());
            }
            if start.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Emulates a viewport (CSS pixels).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    /// Writes a PNG of the whole page to `path` and returns its size.
    pub async fn screenshot(&mut self, path: &Path) -> usize {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, &png).unwrap();
        png.len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills Chromium if start-up fails half way.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Chromium writes its DevTools port to `<profile>/DevToolsActivePort`.
async fn devtools_port(profile: &Path, child: &mut ChildGuard) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok())
        {
            return port;
        }
        if let Some(c) = child.0.as_mut()
            && let Some(status) = c.try_wait().unwrap()
        {
            panic!("chromium exited at start-up ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "chromium wrote no DevToolsActivePort within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where screenshots go: `target/screenshots/` of the workspace, kept
/// for the CI log.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}
