//! The controller's proofs against the dev stack: the version check a job's meta chooses
//! (a response header, or Nomad's record with `none`), and the switch pre-flight over every
//! proxy registered in Consul.
//!
//! Prerequisite: `cargo build -p hello-service` (the binary is looked up in
//! `<workspace>/target/debug`).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Stack, set_task_args, version_served};
use switchyard_controller::{ControllerError, Refusal};
use switchyard_hashi::consul::{
    AgentServiceCheck, AgentServiceRegistration, CheckStatus, ConsulClient,
};

/// Waits until both colours have a passing instance, every proxy registered in Consul passes,
/// and the proxy serves `version`.
async fn wait_settled(stack: &Stack, version: &str) {
    let c = stack.controller();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let obs = c.observe().await;
        let proxies_pass = obs
            .proxies
            .iter()
            .all(|p| p.registration.as_ref().map(|r| r.health) == Some(CheckStatus::Passing));
        let ok = obs.passing_count(0) >= 1 && obs.passing_count(1) >= 1 && proxies_pass;
        let served = version_served(&stack.proxy_url).await;
        if ok && served.as_deref() == Some(version) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stack not settled: {:?} / {:?} / served {served:?}",
            obs.instances,
            obs.proxies
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The job's meta names a header: the instances are asked `GET /hello`, whose body is a
/// greeting, and the version is read from `X-App-Version`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_verified_by_a_response_header() {
    let stack = Stack::start("header", |job| {
        job.0["Meta"] = json!({
            "switchyard_version_check": "header:X-App-Version",
            "switchyard_version_path": "/hello",
        });
    })
    .await;
    wait_settled(&stack, "v1").await;
    let c = stack.controller();
    let obs = c.observe().await;
    let green = obs.instances_of(1);
    assert_eq!(green[0].reported(), Some("v2"), "{green:?}");

    let outcome = c.deploy("v3").await.unwrap();
    assert_eq!(outcome.version, "v3");
    let sw = c.switch(false, None).await.unwrap();
    assert_eq!(sw.plan.to, "green");
    stack.wait_serving("green", "v3").await;
    stack.shutdown().await;
}

/// `none`: nobody is asked; the green task even answers another version than its tag, and
/// deploy and switch still go through on Nomad's record (group meta and the allocations' job
/// version). The same job with the default check is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_check_none_trusts_nomads_record() {
    let stack = Stack::start("none", |job| {
        job.0["Meta"] = json!({"switchyard_version_check": "none"});
        set_task_args(
            job,
            "green",
            json!(["--port", "${NOMAD_PORT_http}", "--version", "unrelated"]),
        );
    })
    .await;
    wait_settled(&stack, "v1").await;
    let c = stack.controller();
    let obs = c.observe().await;
    assert!(
        obs.instances_of(1)
            .iter()
            .all(|i| i.reported_version.is_none()),
        "with none nobody is asked: {:?}",
        obs.instances
    );
    let outcome = c.deploy("v3").await.unwrap();
    assert_eq!(
        (outcome.colour.as_str(), outcome.version.as_str()),
        ("green", "v3")
    );
    let job = stack.job().await;
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    let sw = c.switch(false, None).await.unwrap();
    assert_eq!(sw.plan.to, "green");
    assert_eq!(sw.plan.to_version.as_deref(), Some("v3"));
    stack.shutdown().await;
}

/// A second proxy registered in Consul that fails its check: switch refuses and names it;
/// `--force` switches with a warning and does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_registered_proxy_refuses_the_switch_until_forced() {
    let stack = Stack::start("proxies", |_| {}).await;
    wait_settled(&stack, "v1").await;
    let consul = ConsulClient::new(switchyard_hashi::consul::ConsulConfig {
        address: stack.consul_url.clone(),
        ..Default::default()
    })
    .unwrap();
    // A port nothing listens on: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let id = format!("switchyard-proxy-127.0.0.1-{}", dead.port());
    consul
        .agent_service_register(&AgentServiceRegistration {
            id: id.clone(),
            name: "switchyard-proxy".to_owned(),
            address: "127.0.0.1".to_owned(),
            port: dead.port(),
            check: Some(AgentServiceCheck {
                check_id: format!("{id}-readyz"),
                name: "switchyard proxy ready".to_owned(),
                http: format!("http://{dead}/readyz"),
                method: "GET".to_owned(),
                interval: "1s".to_owned(),
                timeout: "1s".to_owned(),
                ..AgentServiceCheck::default()
            }),
            ..AgentServiceRegistration::default()
        })
        .await
        .unwrap();

    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let c = stack.controller().with_progress(Arc::new(move |l: &str| {
        sink.lock().unwrap().push(l.to_owned())
    }));
    let obs = c.observe().await;
    assert_eq!(obs.proxies.len(), 2, "{:?}", obs.proxies);

    let err = c.switch(false, None).await.unwrap_err();
    assert!(
        matches!(&err, ControllerError::Refused(Refusal::ProxyNotPassing { id: named, .. }) if *named == id),
        "{err}"
    );
    assert!(err.to_string().contains(&id), "{err}");
    assert_eq!(err.exit_code(), 1);
    assert!(
        matches!(c.observe().await.route, Ok(None)),
        "a refused switch writes nothing"
    );

    let sw = c.switch(true, None).await.unwrap();
    assert_eq!(sw.plan.to, "green");
    assert_eq!(sw.proxies_confirmed, vec![stack.admin_url.clone()]);
    assert_eq!(sw.proxies_skipped, vec![format!("http://{dead}")]);
    let printed = lines.lock().unwrap().clone();
    assert!(
        printed.iter().any(
            |l| l.starts_with("warning (forced): refusing to switch: proxy") && l.contains(&id)
        ),
        "{printed:?}"
    );
    stack.wait_serving("green", "v2").await;
    stack.shutdown().await;
}
