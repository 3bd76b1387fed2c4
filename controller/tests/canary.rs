//! Canary-style jobs on the dev stack: a standby group whose `update` block sets
//! `canary = count` (Nomad's own blue/green recipe) is deployed, its canaries promoted by the
//! deploy once Nomad calls them healthy, and the deploy waits for Nomad's
//! `DeploymentStatus.Healthy`, not only Consul's checks.
//!
//! Prerequisite: `cargo build -p hello-service` (looked up in `<workspace>/target/debug`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Stack, alloc_ids, group_mut};
use switchyard_hashi::QueryOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_standby_group_is_deployed_and_promoted() {
    // Count is 1 per group: `canary = 1` is `canary = count`.
    let stack = Stack::start("canary", |job| {
        for g in ["blue", "green"] {
            group_mut(job, g)["Update"]["Canary"] = json!(1);
        }
    })
    .await;
    stack.wait_serving("blue", "v1").await;
    let c = stack.controller();
    let before = stack.job().await.version();
    let allocs = c.observe().await.nomad.unwrap().allocations;
    let (blue_before, green_before) = (alloc_ids(&allocs, "blue"), alloc_ids(&allocs, "green"));

    let started = Instant::now();
    let outcome = c.deploy("v3").await.unwrap();
    assert_eq!(
        (outcome.colour.as_str(), outcome.version.as_str()),
        ("green", "v3")
    );
    assert_eq!(outcome.job_version, before + 1);
    // The deploy waited for min_healthy_time (1s in the job file) on top of the checks.
    assert!(started.elapsed() >= Duration::from_secs(1));

    // The new version's deployment placed a canary and the deploy promoted it.
    let d = stack
        .nomad
        .job_deployment("hello-service", &QueryOptions::default())
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(d.job_version, before + 1);
    let green = &d.task_groups["green"];
    assert_eq!(green.desired_canaries, 1);
    assert!(green.promoted, "{d:?}");
    assert_eq!(green.placed_canaries.len(), 1);
    // Green now runs the promoted canary; the old allocation is stopped; blue is untouched.
    let allocs = c.observe().await.nomad.unwrap().allocations;
    assert_eq!(alloc_ids(&allocs, "green"), green.placed_canaries);
    assert!(
        green_before
            .iter()
            .all(|id| !green.placed_canaries.contains(id))
    );
    assert_eq!(alloc_ids(&allocs, "blue"), blue_before);
    let promoted = allocs
        .iter()
        .find(|a| a.id == green.placed_canaries[0])
        .unwrap();
    assert_eq!(promoted.healthy(), Some(true));
    assert!(!promoted.is_canary());
    // The deployment finishes without anyone else's help.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (d, _) = stack
            .nomad
            .job_deployment("hello-service", &QueryOptions::default())
            .await
            .unwrap();
        if d.as_ref().is_some_and(|d| d.status == "successful") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deployment never finished: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.shutdown().await;
}
