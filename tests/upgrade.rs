//! Binary upgrade with the real binary: `switchyard proxy --upgrade` takes the listening
//! sockets over from the running process, which stops accepting, lets its in-flight request
//! finish and exits 0, while a stream of new connections sees no refusal and no failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::proxy_process::ProxyProcess;
use crate::support::*;

fn write_config(dir: &Path, upstream: SocketAddr) -> PathBuf {
    write_config_with(
        dir,
        &format!(
            r#"[[services]]
name = "svc"
static = {{ active = ["{upstream}"], active_version = "v1" }}
"#
        ),
    )
}

fn write_config_with(dir: &Path, rest: &str) -> PathBuf {
    let socket = dir.join("upgrade.sock");
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[log]
format = "json"
access_log = false
[timeouts]
shutdown_grace = "10s"
[shutdown]
deregister_delay = "300ms"
[upgrade]
socket = "{}"
{rest}"#,
            socket.display()
        ),
    )
    .unwrap();
    path
}

/// Sends requests on a new connection each (the case a handover must not refuse) until
/// stopped; returns (answered, failures).
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (ok, stop) = (Arc::clone(&ok), Arc::clone(&stop));
            workers.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                let fresh = switchyard_hashi::tls::http_client_builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::SeqCst) {
                    match fresh.get(format!("http://{addr}/")).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(format!("{e:?}")),
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for w in workers {
            failures.extend(w.await.unwrap());
        }
        (ok.load(Ordering::SeqCst), failures)
    })
}

#[tokio::test]
async fn upgrade_hands_the_listeners_over_without_refusing_or_cutting() {
    let upstream = Upstream::start("a").await;
    let dir = tempdir("upgrade");
    let config = write_config(&dir, upstream.addr);

    // Starting with --upgrade when nothing runs fails with the cause.
    let mut orphan = ProxyProcess::spawn(&config, true);
    assert_eq!(orphan.exit_code(Duration::from_secs(10)).await, Some(1));

    let mut old = ProxyProcess::spawn(&config, false);
    let traffic = old.address("proxy listening").await;
    let admin = old.address("admin listening").await;
    old.wait_for("upgrade socket listening").await;
    let c = client();
    assert_eq!(
        c.get(format!("http://{traffic}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A second proxy without --upgrade on the same socket is refused.
    let mut second = ProxyProcess::spawn(&config, false);
    assert_eq!(second.exit_code(Duration::from_secs(10)).await, Some(1));
    let said = second.drain();
    assert!(
        said.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("another proxy answers on the upgrade socket"))),
        "{said:#?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = load(traffic, Arc::clone(&stop));
    // In flight on the old process when it hands over; it must finish.
    let slow_url = format!("http://{traffic}/slow?ms=2000");
    let inflight = tokio::spawn(async move { client().get(slow_url).send().await?.text().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two upgrades in a row: the new process serves the upgrade socket too.
    let mut current = old;
    for round in 0..2 {
        let mut next = ProxyProcess::spawn(&config, true);
        next.wait_for("listener taken over").await;
        assert_eq!(
            current.exit_code(Duration::from_secs(15)).await,
            Some(0),
            "round {round}: {:#?}",
            current.drain()
        );
        let log = current.drain();
        let position = |msg: &str| {
            log.iter()
                .position(|v| v["fields"]["message"] == msg)
                .unwrap_or_else(|| panic!("round {round}: no {msg:?} in {log:#?}"))
        };
        assert!(
            position("listeners handed over to the new process")
                < position("all connections closed")
        );
        next.wait_for("upgrade socket listening").await;
        current = next;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(inflight.await.unwrap().unwrap(), "slow a");

    stop.store(true, Ordering::SeqCst);
    let (answered, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(answered > 20, "only {answered} answered");

    // The last process serves on the same ports and is ready.
    let ready = c
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        c.get(format!("http://{traffic}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // SIGTERM: not ready at once, still accepting during the delay, then gone; exit 0.
    current.signal("TERM");
    current
        .wait_for("not ready: accepting until the deregister delay is over")
        .await;
    let ready = client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(current.exit_code(Duration::from_secs(15)).await, Some(0));
    assert!(tokio::net::TcpStream::connect(traffic).await.is_err());
    // A clean stop removes the socket file.
    assert!(!dir.join("upgrade.sock").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 connection to `addr`, kept open by the caller.
async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<String> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<String>,
    path: &str,
) -> (u16, String) {
    use http_body_util::BodyExt as _;
    send.ready().await.unwrap();
    let req = http::Request::builder()
        .uri(path)
        .header("host", "proxy.test")
        .body(String::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// SIGHUP reloads static pools, routes and request-path settings without dropping a
/// connection; an invalid file is reported with every problem and changes nothing.
#[tokio::test]
async fn sighup_reloads_without_dropping_connections_and_refuses_a_bad_file() {
    let (a, b, standby) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("s").await,
    );
    let dir = tempdir("reload");
    let services = |active: SocketAddr| {
        format!(
            r#"[[services]]
name = "svc"
static = {{ active = ["{active}"], standby = ["{}"] }}
"#,
            standby.addr
        )
    };
    let config = write_config_with(&dir, &services(a.addr));
    let mut p = ProxyProcess::spawn(&config, false);
    let traffic = p.address("proxy listening").await;
    let mut kept = connection(traffic).await;
    assert_eq!(get(&mut kept, "/").await, (200, "hello from a".to_owned()));
    let mut slow = connection(traffic).await;
    let inflight = tokio::spawn(async move { get(&mut slow, "/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // New pool, a route that only takes /api, and a new preview header.
    write_config_with(
        &dir,
        &format!(
            "[preview]\nheader = \"x-preview\"\n{}[[routes]]\npath_prefix = \"/api\"\nservice = \"svc\"\n",
            services(b.addr)
        ),
    );
    p.signal("HUP");
    let done = p.wait_for("configuration reloaded").await;
    assert_eq!(done["pools"], "[\"svc\"]", "{done}");
    assert_eq!(done["routes_changed"], true, "{done}");

    // The open connection carries on, to the new pool and routes.
    assert_eq!(
        get(&mut kept, "/api").await,
        (200, "hello from b".to_owned())
    );
    assert_eq!(get(&mut kept, "/").await.0, 404);
    assert_eq!(inflight.await.unwrap(), (200, "slow a".to_owned()));
    // A new connection uses the new preview header.
    let c = client();
    let preview = c
        .get(format!("http://{traffic}/api"))
        .header("x-preview", "standby")
        .send()
        .await
        .unwrap();
    assert_eq!(preview.text().await.unwrap(), "hello from s");

    // An invalid file: every problem reported, the running configuration stays.
    write_config_with(
        &dir,
        &format!(
            "[retry]\nattempts = 99\n[limits]\nmax_header_bytes = 10\n{}",
            services(a.addr)
        ),
    );
    p.signal("HUP");
    let refused = p
        .wait_for("configuration reload refused: the running configuration stays")
        .await;
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("2 problem(s)")
            && error.contains("retry.attempts")
            && error.contains("limits.max_header_bytes"),
        "{error}"
    );
    // A service added needs a restart: refused whole.
    write_config_with(
        &dir,
        &format!(
            "{}[[services]]\nname = \"other\"\nstatic = {{ active = [\"{}\"] }}\n[[routes]]\npath_prefix = \"/api\"\nservice = \"svc\"\n[[routes]]\npath_prefix = \"/other\"\nservice = \"other\"\n",
            services(a.addr),
            a.addr
        ),
    );
    p.signal("HUP");
    let refused = p.wait_for("configuration reload refused").await;
    assert!(
        refused["error"].as_str().unwrap().contains("restart"),
        "{refused}"
    );
    assert_eq!(
        get(&mut kept, "/api").await,
        (200, "hello from b".to_owned())
    );
    let again = c.get(format!("http://{traffic}/api")).send().await.unwrap();
    assert_eq!(again.text().await.unwrap(), "hello from b");

    p.signal("TERM");
    assert_eq!(p.exit_code(Duration::from_secs(15)).await, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Across an upgrade the proxy's Consul registration stays: the new process registers the same
/// service ID (same admin socket) and the old one leaves it in place when it exits; a SIGTERM
/// then takes it out.
#[tokio::test]
async fn the_consul_registration_survives_an_upgrade() {
    let (consul_url, client, stop_consul, server) = crate::cli::dev_consul().await;
    let dir = tempdir("upgrade-consul");
    let config = write_config_with(
        &dir,
        &format!(
            r#"[consul]
address = "{consul_url}"
wait = "2s"
[registration]
check_interval = "1s"
check_timeout = "1s"
[[services]]
name = "hello-service"
consul = {{}}
"#
        ),
    );
    let mut old = ProxyProcess::spawn(&config, false);
    let id = old.wait_for("registered in Consul").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(client.agent_services().await.unwrap().contains_key(&id));

    let mut new = ProxyProcess::spawn(&config, true);
    assert_eq!(
        new.wait_for("registered in Consul").await["id"],
        id.as_str()
    );
    assert_eq!(old.exit_code(Duration::from_secs(15)).await, Some(0));
    let said = old.drain();
    assert!(
        !said
            .iter()
            .any(|v| v["fields"]["message"] == "deregistered from Consul"),
        "{said:#?}"
    );
    assert!(
        client.agent_services().await.unwrap().contains_key(&id),
        "the registration left with the old process"
    );

    new.signal("TERM");
    assert_eq!(new.exit_code(Duration::from_secs(15)).await, Some(0));
    assert!(!client.agent_services().await.unwrap().contains_key(&id));
    let _ = stop_consul.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A keep-alive connection open on the old process when it hands over is not closed under a
/// client about to send on it: its next request (a POST, which no client retries) is served,
/// with `Connection: close`, and only then does the connection end. The old process exits as
/// soon as its connections have ended this way, well before half its grace period.
#[tokio::test]
async fn an_upgrade_ends_keep_alive_connections_after_a_complete_exchange() {
    use http_body_util::BodyExt as _;
    let upstream = Upstream::start("a").await;
    let dir = tempdir("upgrade-keepalive");
    let config = write_config(&dir, upstream.addr);
    let mut old = ProxyProcess::spawn(&config, false);
    let traffic = old.address("proxy listening").await;
    old.wait_for("upgrade socket listening").await;

    let mut send = connection(traffic).await;
    assert_eq!(get(&mut send, "/").await, (200, "hello from a".to_owned()));

    let mut new = ProxyProcess::spawn(&config, true);
    new.wait_for("listener taken over").await;
    old.wait_for("listeners handed over: no longer accepting")
        .await;
    // Idle on the old process for a while after the handover (the old shutdown closed idle
    // connections half a second in).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send.ready().await.expect("the idle connection was closed");
    let req = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "proxy.test")
        .body("payload".to_owned())
        .unwrap();
    let resp = send.send_request(req).await.expect("the POST failed");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["connection"], "close");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello from a");
    // The connection ends after that exchange.
    tokio::time::timeout(Duration::from_secs(2), async {
        while !send.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the connection stayed open after Connection: close");
    // No connection left: the old process does not wait out half its 10 s grace.
    assert_eq!(old.exit_code(Duration::from_secs(3)).await, Some(0));

    // The new process serves keep-alive connections as usual.
    let mut send = connection(traffic).await;
    assert_eq!(get(&mut send, "/").await, (200, "hello from a".to_owned()));
    assert_eq!(get(&mut send, "/").await, (200, "hello from a".to_owned()));
    drop(send);
    new.signal("TERM");
    assert_eq!(new.exit_code(Duration::from_secs(15)).await, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
