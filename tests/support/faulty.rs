//! Misbehaving upstreams for the fault tests.
//!
//! - [`StatusUpstream`]: answers one switchable status to every request,
//!   whatever the path (the proxy forwards paths unchanged, so a `/status/500`
//!   path cannot make one instance fail while its peers succeed).
//! - [`HelloProcess`]: the real `hello-service` binary as a child process on
//!   a free port, so an instance can die the way processes really die
//!   (SIGKILL: the kernel closes its sockets; SIGTERM: it drains and exits).
//! - [`Tally`]: a load run's samples summarised per answering instance.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_loadcheck::Sample;
use switchyard_testkit::{AbortOnDrop, accept_loop};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// An upstream answering `status` (switchable at run time) to everything.
pub struct StatusUpstream {
    pub addr: SocketAddr,
    pub name: String,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl StatusUpstream {
    pub async fn start(name: &str, status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(AtomicUsize::new(0));
        let (st, rq, n) = (status.clone(), requests.clone(), name.to_owned());
        let task = accept_loop(listener, move |stream| {
            let (st, rq, n) = (st.clone(), rq.clone(), n.clone());
            async move {
                let svc = service_fn(move |_req| {
                    rq.fetch_add(1, Ordering::SeqCst);
                    let code = StatusCode::from_u16(st.load(Ordering::SeqCst))
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let resp = Response::builder()
                        .status(code)
                        .header("x-upstream", n.as_str())
                        .body(Full::new(Bytes::from(format!(
                            "{n} says {}",
                            code.as_u16()
                        ))))
                        .unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            status,
            requests,
            _task: AbortOnDrop(task),
        }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A `hello-service` child process.
pub struct HelloProcess {
    pub addr: SocketAddr,
    pub version: String,
    child: Child,
}

impl HelloProcess {
    /// Starts `target/debug/hello-service --port 0 --version <version> <extra>`
    /// and reads the bound address from its first output line.
    pub async fn start(version: &str, extra: &[&str]) -> Self {
        let bin = switchyard_testkit::hello_bin_dir().join("hello-service");
        let mut child = Command::new(&bin)
            .args(["--port", "0", "--version", version])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("hello-service did not start in 10 s")
            .unwrap()
            .expect("hello-service exited before listening");
        let addr: SocketAddr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            addr,
            version: version.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends `signal` (e.g. `KILL`, `TERM`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; `Some(code)` for a normal exit,
    /// `None` when a signal ended it.
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("hello-service did not exit in time")
            .unwrap();
        status.code()
    }
}

/// A load run, summarised.
#[derive(Debug, Default)]
pub struct Tally {
    pub total: usize,
    pub failed: usize,
    /// Answers per value of the version/instance header.
    pub by_instance: BTreeMap<String, usize>,
    /// Slowest request, in ms.
    pub max_ms: f64,
}

impl Tally {
    pub fn of(samples: &[Sample]) -> Self {
        let mut t = Tally::default();
        for s in samples {
            t.total += 1;
            if !s.ok {
                t.failed += 1;
            }
            *t.by_instance.entry(s.version.clone()).or_default() += 1;
            t.max_ms = t.max_ms.max(s.end_ms - s.start_ms);
        }
        t
    }

    pub fn count(&self, instance: &str) -> usize {
        self.by_instance.get(instance).copied().unwrap_or(0)
    }
}
