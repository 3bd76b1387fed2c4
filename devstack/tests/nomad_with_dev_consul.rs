//! The dev Nomad against the dev Consul of this crate, both over HTTP on
//! 127.0.0.1 ephemeral ports: the registration, check and health paths a
//! real blue/green switch depends on.
//!
//! Prerequisite: `cargo build -p hello-service` (see `nomad_support`).

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::time::Duration;

use nomad_support::{Nomad, wait_for};
use serde_json::{Value, json};
use switchyard_devstack::consul::{ConsulConfig, DevConsul};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_become_passing_in_dev_consul_and_leave_on_shutdown() {
    let consul = DevConsul::new(ConsulConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consul_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_consul, rx) = tokio::sync::oneshot::channel::<()>();
    let consul_task = tokio::spawn(consul.serve(listener, async {
        let _ = rx.await;
    }));

    let mut nomad = Nomad::start(&consul_url, None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(1);
    nomad.register(&job).await;
    // The deployment reads health from the dev Consul's check runner.
    nomad.wait_deployment("hello-service", "successful").await;

    let passing = wait_for(Duration::from_secs(20), || async {
        let v: Value = switchyard_hashi::tls::http_client_builder()
            .build()
            .unwrap()
            .get(format!(
                "{consul_url}/v1/health/service/hello-service?passing"
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v.as_array()?.len() == 2).then_some(v)
    })
    .await
    .expect("both instances should be passing in Consul");
    let mut tags: Vec<String> = passing
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["Service"]["Tags"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert!(tags.contains(&"version=v1".to_string()), "{tags:?}");
    assert!(tags.contains(&"version=v2".to_string()), "{tags:?}");
    assert!(tags.contains(&"active".to_string()));

    nomad.shutdown().await;
    let left: Value = switchyard_hashi::tls::http_client_builder()
        .build()
        .unwrap()
        .get(format!("{consul_url}/v1/agent/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(left, json!({}), "services must be deregistered on shutdown");
    let _ = stop_consul.send(());
    consul_task.await.unwrap().unwrap();
}
