//! Nomad's update semantics in the dev Nomad: canaries next to the old
//! allocations, promotion (by hand and `auto_promote`) and its refusals,
//! `min_healthy_time` before `DeploymentStatus.Healthy`, `auto_revert`, and
//! the 400 for settings the dev stack does not model. Real `hello-service`
//! processes and a fake Consul agent on 127.0.0.1 ephemeral ports.
//!
//! Prerequisite: `cargo build -p hello-service` (see `nomad_support`).

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::time::{Duration, Instant};

use nomad_support::{FakeConsul, Nomad, ids, wait_for};
use serde_json::{Value, json};

const SEC: u64 = 1_000_000_000;

/// The job file's job with green's update block asking for `canary` canaries.
async fn canary_job(nomad: &Nomad, canary: u64, auto_promote: bool) -> Value {
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    let update = &mut job["TaskGroups"][1]["Update"];
    update["Canary"] = json!(canary);
    update["AutoPromote"] = json!(auto_promote);
    job
}

async fn promote(nomad: &Nomad, dep: &str, body: Value) -> (u16, Value) {
    nomad
        .post(&format!("/v1/deployment/promote/{dep}"), body)
        .await
}

async fn latest_deployment(nomad: &Nomad) -> Value {
    nomad.get("/v1/job/hello-service/deployment").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_run_next_to_the_old_allocations_until_promoted() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = canary_job(&nomad, 2, false).await;
    nomad.register(&job).await;
    // A new job has nothing to canary: its allocations are placed directly.
    nomad.wait_running("hello-service", 3, 0).await;
    let first = nomad.wait_deployment("hello-service", "successful").await;
    assert_eq!(first["TaskGroups"]["green"]["DesiredCanaries"], 0);
    let old_green = ids(&nomad.live_allocs("hello-service").await, "green");
    assert_eq!(old_green.len(), 2);

    // Promoting a finished deployment is refused as Nomad does.
    let (st, body) = promote(
        &nomad,
        first["ID"].as_str().unwrap(),
        json!({"DeploymentID": first["ID"], "All": true}),
    )
    .await;
    assert_eq!(
        (st, body.as_str()),
        (500, Some("can't promote terminal deployment"))
    );

    // A destructive change of green: two canaries next to the two old allocations.
    job["TaskGroups"][1]["Meta"]["version"] = json!("v3");
    nomad.register(&job).await;
    let live = nomad.live_allocs("hello-service").await;
    let green: Vec<&Value> = live.iter().filter(|a| a["TaskGroup"] == "green").collect();
    assert_eq!(green.len(), 4, "{live:#?}");
    let canaries: Vec<String> = green
        .iter()
        .filter(|a| a["DeploymentStatus"]["Canary"] == true)
        .map(|a| a["ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(canaries.len(), 2);
    assert!(canaries.iter().all(|c| !old_green.contains(c)));
    for a in &green {
        let old = old_green.contains(&a["ID"].as_str().unwrap().to_string());
        assert_eq!(a["JobVersion"], if old { 0 } else { 1 });
    }
    let dep = latest_deployment(&nomad).await;
    let dep_id = dep["ID"].as_str().unwrap().to_string();
    assert_eq!(dep["JobVersion"], 1);
    assert_eq!(dep["Status"], "running");
    assert_eq!(
        dep["StatusDescription"],
        "Deployment is running but requires manual promotion"
    );
    let state = &dep["TaskGroups"]["green"];
    assert_eq!(state["DesiredCanaries"], 2);
    assert_eq!(state["DesiredTotal"], 2);
    assert_eq!(state["Promoted"], false);
    let mut placed: Vec<String> = state["PlacedCanaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    placed.sort();
    let mut sorted = canaries.clone();
    sorted.sort();
    assert_eq!(placed, sorted);

    // Canaries not yet healthy (min_healthy_time is 1s): refused, naming each.
    let (st, body) = promote(
        &nomad,
        &dep_id,
        json!({"DeploymentID": dep_id, "All": true}),
    )
    .await;
    assert_eq!(st, 500, "{body}");
    let text = body.as_str().unwrap();
    assert!(text.starts_with("2 errors occurred:"), "{text}");
    for c in &canaries {
        assert!(
            text.contains(&format!(
                "Canary allocation \"{c}\" for group \"green\" is not healthy"
            )),
            "{text}"
        );
    }
    // A body that names another deployment is a bad request.
    let (st, _) = promote(
        &nomad,
        &dep_id,
        json!({"DeploymentID": "other", "All": true}),
    )
    .await;
    assert_eq!(st, 400);

    // Healthy canaries do not finish the deployment: it waits for the promotion.
    wait_for(Duration::from_secs(20), || async {
        let live = nomad.live_allocs("hello-service").await;
        live.iter()
            .filter(|a| canaries.contains(&a["ID"].as_str().unwrap().to_string()))
            .all(|a| a["DeploymentStatus"]["Healthy"] == true)
            .then_some(())
    })
    .await
    .expect("canaries never healthy");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let dep = latest_deployment(&nomad).await;
    assert_eq!(dep["Status"], "running");
    assert_eq!(dep["TaskGroups"]["green"]["HealthyAllocs"], 2);
    assert_eq!(nomad.live_allocs("hello-service").await.len(), 5);

    // Promotion: the canaries become green, the old allocations stop.
    let (st, reply) = promote(
        &nomad,
        &dep_id,
        json!({"DeploymentID": dep_id, "Groups": ["green"]}),
    )
    .await;
    assert_eq!(st, 200, "{reply}");
    assert!(!reply["EvalID"].as_str().unwrap().is_empty());
    let live = nomad.wait_running("hello-service", 3, 1).await;
    let mut now_green = ids(&live, "green");
    now_green.sort();
    assert_eq!(now_green, sorted);
    assert!(
        live.iter()
            .filter(|a| a["TaskGroup"] == "green")
            .all(|a| a["DeploymentStatus"]["Canary"] == false)
    );
    let (_, allocs) = nomad.get("/v1/job/hello-service/allocations").await;
    for a in allocs.as_array().unwrap() {
        if old_green.contains(&a["ID"].as_str().unwrap().to_string()) {
            assert_eq!(a["DesiredStatus"], "stop");
        }
    }
    let dep = nomad.wait_deployment("hello-service", "successful").await;
    assert_eq!(dep["ID"], dep_id.as_str());
    assert_eq!(dep["TaskGroups"]["green"]["Promoted"], true);

    // A running deployment without canaries has nothing to promote.
    job["TaskGroups"][0]["Meta"]["version"] = json!("v5");
    job["TaskGroups"][0]["Update"]["MinHealthyTime"] = json!(30 * SEC);
    nomad.register(&job).await;
    let dep = latest_deployment(&nomad).await;
    assert_eq!(dep["Status"], "running");
    let id = dep["ID"].as_str().unwrap();
    let (st, body) = promote(&nomad, id, json!({"DeploymentID": id, "All": true})).await;
    assert_eq!((st, body.as_str()), (500, Some("no canaries to promote")));
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_promote_replaces_the_rest_once_the_canary_is_healthy() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = canary_job(&nomad, 1, true).await;
    nomad.register(&job).await;
    nomad.wait_deployment("hello-service", "successful").await;
    let old_green = ids(&nomad.wait_running("hello-service", 3, 0).await, "green");

    job["TaskGroups"][1]["Meta"]["version"] = json!("v3");
    nomad.register(&job).await;
    let dep = latest_deployment(&nomad).await;
    assert_eq!(
        dep["StatusDescription"],
        "Deployment is running pending automatic promotion"
    );
    let canary = nomad
        .live_allocs("hello-service")
        .await
        .into_iter()
        .find(|a| a["DeploymentStatus"]["Canary"] == true)
        .expect("no canary placed");
    let dep = nomad.wait_deployment("hello-service", "successful").await;
    assert_eq!(dep["TaskGroups"]["green"]["Promoted"], true);
    assert_eq!(dep["TaskGroups"]["green"]["PlacedAllocs"], 2);
    let live = nomad.wait_running("hello-service", 3, 1).await;
    let green = ids(&live, "green");
    assert!(green.contains(&canary["ID"].as_str().unwrap().to_string()));
    assert!(green.iter().all(|g| !old_green.contains(g)));
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_waits_for_min_healthy_time() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(0);
    job["TaskGroups"][0]["Update"]["MinHealthyTime"] = json!(3 * SEC);
    nomad.register(&job).await;
    let running = Instant::now();
    nomad.wait_running("hello-service", 1, 0).await;
    // Passing checks (hello-service answers /health at once) are not enough yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = &nomad.live_allocs("hello-service").await[0];
    assert!(a["DeploymentStatus"]["Healthy"].is_null(), "{a}");
    assert_eq!(latest_deployment(&nomad).await["Status"], "running");
    let healthy = wait_for(Duration::from_secs(10), || async {
        let a = nomad.live_allocs("hello-service").await.remove(0);
        (a["DeploymentStatus"]["Healthy"] == true).then_some(Instant::now())
    })
    .await
    .expect("never healthy");
    assert!(healthy.duration_since(running) >= Duration::from_secs(3));
    nomad.wait_deployment("hello-service", "successful").await;
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_revert_registers_the_last_stable_version() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(1);
    job["TaskGroups"][1]["Update"]["AutoRevert"] = json!(true);
    job["TaskGroups"][1]["Update"]["HealthyDeadline"] = json!(2 * SEC);
    nomad.register(&job).await;
    nomad.wait_deployment("hello-service", "successful").await;

    job["TaskGroups"][1]["Meta"]["version"] = json!("v4");
    job["TaskGroups"][1]["Tasks"][0]["Config"]["args"]
        .as_array_mut()
        .unwrap()
        .push(json!("--fail-health"));
    nomad.register(&job).await;
    let failed = wait_for(Duration::from_secs(20), || async {
        let (_, deps) = nomad.get("/v1/job/hello-service/deployments").await;
        deps.as_array()
            .unwrap()
            .iter()
            .find(|d| d["JobVersion"] == 1 && d["Status"] == "failed")
            .cloned()
    })
    .await
    .expect("deployment of version 1 never failed");
    assert_eq!(
        failed["StatusDescription"],
        "Failed due to unhealthy allocations - rolling back to job version 0"
    );
    // The revert is a new version with version 0's spec, running green v2 again.
    let live = nomad.wait_running("hello-service", 2, 2).await;
    let (_, j) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(j["Version"], 2);
    assert_eq!(j["TaskGroups"][1]["Meta"]["version"], "v2");
    assert_eq!(ids(&live, "green").len(), 1);
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_dev_stack_does_not_model_are_refused_by_name() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    // A job file with a template block: refused by the parser, naming it.
    let hcl = std::fs::read_to_string(
        nomad_support::workspace_root().join("config/hello-service.nomad.hcl"),
    )
    .unwrap()
    .replacen(
        "kill_timeout = \"5s\"",
        "kill_timeout = \"5s\"\n      template {\n        data = \"x\"\n        destination = \"local/x\"\n      }",
        1,
    );
    let (st, body) = nomad
        .post(
            "/v1/jobs/parse",
            json!({"JobHCL": hcl, "Canonicalize": true}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let text = body.as_str().unwrap();
    assert!(
        text.contains("\"template\"") && text.contains("task \"hello\""),
        "{text}"
    );

    // The same settings in JSON are refused at register and plan, by name.
    let job = nomad.parse_job_file().await;
    let mut templated = job.clone();
    templated["TaskGroups"][0]["Tasks"][0]["Templates"] =
        json!([{"EmbeddedTmpl": "x", "DestPath": "local/x"}]);
    let mut exec = job.clone();
    exec["TaskGroups"][1]["Tasks"][0]["Driver"] = json!("exec");
    let mut constrained = job.clone();
    constrained["Constraints"] =
        json!([{"LTarget": "${attr.kernel.name}", "RTarget": "linux", "Operand": "="}]);
    for (bad, named) in [
        (&templated, "group \"blue\" task \"hello\": template"),
        (&exec, "group \"green\" task \"hello\": driver \"exec\""),
        (&constrained, "job: constraint"),
    ] {
        let (st, body) = nomad.post("/v1/jobs", json!({"Job": bad})).await;
        assert_eq!(st, 400, "{body}");
        assert!(body.as_str().unwrap().contains(named), "{body}");
        let (st, body) = nomad
            .post("/v1/job/hello-service/plan", json!({"Job": bad}))
            .await;
        assert_eq!(st, 400, "{body}");
    }
    // Nothing was registered.
    let (st, _) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(st, 404);
    nomad.shutdown().await;
}
