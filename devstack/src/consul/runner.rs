//! The check runner and the reaper.
//!
//! One scheduler task owns timing: it asks the state which HTTP/TCP probes
//! are due (and expires TTLs on the way), spawns each probe, and sleeps until
//! the next due time, a registration (via `Store::runner_wake`) or shutdown.
//! Probes run outside the state lock and report back through
//! `Inner::finish_probe`, which takes an index only when the status changes.
//!
//! HTTP checks: any 2xx is passing, 429 is warning, anything else (or no
//! answer within `Timeout`, default 10 s) is critical. Only plain `http://`
//! is supported by the dev server's HTTP client. TCP checks pass when a
//! connection opens within the timeout.
//!
//! The reaper removes services whose check stayed critical for longer than
//! its `DeregisterCriticalServiceAfter`. Real Consul enforces a 1 minute
//! minimum and reaps every 30 s; the dev server accepts any duration and
//! reaps at the configured interval so tests can be quick.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::state::{CRITICAL, CheckKind, PASSING, Probe, Store, WARNING};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY_IN_OUTPUT: usize = 4096;
/// Upper bound on one scheduler sleep; a safety net only, wakeups are
/// event-driven.
const IDLE_SLEEP: Duration = Duration::from_secs(60);

/// HTTP clients for probes (with and without redirect following).
#[derive(Clone)]
struct Clients {
    follow: reqwest::Client,
    no_follow: reqwest::Client,
}

impl Clients {
    fn new() -> Option<Self> {
        let follow = switchyard_hashi::tls::http_client_builder().build().ok()?;
        let no_follow = switchyard_hashi::tls::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        Some(Self { follow, no_follow })
    }
}

/// Runs due checks until shutdown.
pub(crate) async fn run_checks(store: Arc<Store>) {
    let Some(clients) = Clients::new() else {
        tracing::error!("consul: cannot build the HTTP client for checks; checks will not run");
        return;
    };
    let mut shutdown = store.shutdown.subscribe();
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let now = Instant::now();
        let (probes, next) = store.write(|inner| inner.runner_tick(now));
        for probe in probes {
            let store = Arc::clone(&store);
            let clients = clients.clone();
            tokio::spawn(async move {
                let (status, output) = execute(&clients, &probe).await;
                let done = Instant::now();
                store.write(|inner| {
                    inner.finish_probe(&probe.check_id, probe.generation, status, output, done);
                });
                // The check's next run time moved; let the scheduler see it.
                store.runner_wake.notify_one();
            });
        }
        let wake_at = next.unwrap_or(now + IDLE_SLEEP).min(now + IDLE_SLEEP);
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = store.runner_wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Reaps services with long-critical checks every `interval` until shutdown.
pub(crate) async fn run_reaper(store: Arc<Store>, interval: Duration) {
    let mut shutdown = store.shutdown.subscribe();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = Instant::now();
        let removed = store.write(|inner| inner.reap(now));
        for id in removed {
            tracing::info!(service_id = %id, "consul: deregistered service with long-critical check");
        }
    }
}

async fn execute(clients: &Clients, probe: &Probe) -> (&'static str, String) {
    let timeout = probe.def.timeout.unwrap_or(DEFAULT_TIMEOUT);
    match probe.def.kind {
        CheckKind::Http => http_probe(clients, probe, timeout).await,
        CheckKind::Tcp => tcp_probe(&probe.def.tcp, timeout).await,
        // Not scheduled by the runner; keep whatever status they have.
        CheckKind::Ttl | CheckKind::Script | CheckKind::Grpc => {
            (CRITICAL, "check type not run by the dev server".to_owned())
        }
    }
}

async fn http_probe(clients: &Clients, probe: &Probe, timeout: Duration) -> (&'static str, String) {
    let def = &probe.def;
    let method_name = if def.method.is_empty() {
        "GET"
    } else {
        def.method.as_str()
    };
    let Ok(method) = reqwest::Method::from_bytes(method_name.as_bytes()) else {
        return (CRITICAL, format!("invalid HTTP method {method_name:?}"));
    };
    let client = if def.disable_redirects {
        &clients.no_follow
    } else {
        &clients.follow
    };
    let mut req = client
        .request(method, &def.http)
        .timeout(timeout)
        .header("User-Agent", "Consul Health Check")
        .header("Accept", "text/plain, text/*, */*");
    for (name, values) in &def.header {
        for value in values {
            req = req.header(name.as_str(), value.as_str());
        }
    }
    if !def.body.is_empty() {
        req = req.body(def.body.clone());
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => {
            return (CRITICAL, format!("{method_name} {}: {e}", def.http));
        }
    };
    let code = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => {
            let cut = b.len().min(MAX_BODY_IN_OUTPUT);
            String::from_utf8_lossy(b.get(..cut).unwrap_or(&[])).into_owned()
        }
        Err(_) => String::new(),
    };
    let status = if code.is_success() {
        PASSING
    } else if code.as_u16() == 429 {
        WARNING
    } else {
        CRITICAL
    };
    (
        status,
        format!("HTTP {method_name} {}: {code} Output: {body}", def.http),
    )
}

async fn tcp_probe(addr: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => (PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (CRITICAL, format!("dial tcp {addr}: {e}")),
        Err(_) => (CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}
