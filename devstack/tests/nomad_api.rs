//! End-to-end tests of the dev Nomad with real `hello-service` processes and a
//! fake Consul agent, all on 127.0.0.1 ephemeral ports.
//!
//! Prerequisite: `cargo build -p hello-service` (see `nomad_support`).

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::time::{Duration, Instant};

use nomad_support::{FakeConsul, Nomad, alive, assert_shape, http_port, ids, wait_for};
use serde_json::{Value, json};

/// GET /hello, retrying while the freshly started process is not listening yet.
async fn hello(port: u16) -> (String, String) {
    let url = format!("http://127.0.0.1:{port}/hello");
    let r = wait_for(Duration::from_secs(10), || async {
        switchyard_hashi::tls::http_client_builder()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .ok()
    })
    .await
    .unwrap_or_else(|| panic!("nothing answers on port {port}"));
    let v = r.headers()["x-app-version"].to_str().unwrap().to_string();
    (v, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_runs_processes_registers_services_and_shutdown_cleans_up() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let job = nomad.parse_job_file().await;
    let reply = nomad.register(&job).await;
    assert!(!reply["EvalID"].as_str().unwrap().is_empty());
    assert!(reply["JobModifyIndex"].as_u64().unwrap() > 0);

    let allocs = nomad.wait_running("hello-service", 4, 0).await;
    for a in &allocs {
        let port = http_port(a);
        let (version, body) = hello(port).await;
        match a["TaskGroup"].as_str().unwrap() {
            "blue" => {
                assert_eq!(version, "v1");
                assert_eq!(body, "Lionel Messi is the best player in the world!");
            }
            _ => {
                assert_eq!(version, "v2");
                assert_eq!(body, "Cristiano Ronaldo is the best player in the world!");
            }
        }
    }
    // Consul registrations as Nomad makes them (`hashi/tests/fixtures/README.md` §N6).
    let services = consul.services();
    assert_eq!(services.len(), 4);
    let mut check_ids = std::collections::BTreeSet::new();
    for a in &allocs {
        let id = format!(
            "_nomad-task-{}-group-{}-hello-service-http",
            a["ID"].as_str().unwrap(),
            a["TaskGroup"].as_str().unwrap()
        );
        let svc = &services[&id];
        let port = http_port(a);
        assert_eq!(svc["Port"], port);
        assert_eq!(svc["Address"], "127.0.0.1");
        assert_eq!(svc["Meta"]["external-source"], "nomad");
        let version = if a["TaskGroup"] == "blue" { "v1" } else { "v2" };
        assert!(
            svc["Tags"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("version={version}")))
        );
        let check = &svc["Checks"][0];
        assert_eq!(check["Name"], "service: \"hello-service\" check");
        assert_eq!(check["HTTP"], format!("http://127.0.0.1:{port}/health"));
        // Nomad's MakeCheckID: the prefix and a hex SHA-256.
        let check_id = check["CheckID"].as_str().unwrap();
        let hash = check_id.strip_prefix("_nomad-check-").unwrap();
        assert_eq!(hash.len(), 64, "{check_id}");
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(
            check_ids.insert(check_id.to_owned()),
            "each instance's check has its own ID: {check_id}"
        );
        assert!(
            check.get("Status").is_none(),
            "no initial status: checks start critical"
        );
    }
    // Deployment of version 0 succeeds once checks pass; the version is stable.
    let dep = nomad.wait_deployment("hello-service", "successful").await;
    assert_eq!(dep["TaskGroups"]["blue"]["HealthyAllocs"], 2);
    let allocs: Vec<Value> = nomad.live_allocs("hello-service").await;
    assert!(
        allocs
            .iter()
            .all(|a| a["DeploymentStatus"]["Healthy"] == true)
    );
    let (_, versions) = nomad.get("/v1/job/hello-service/versions").await;
    assert_eq!(versions["Versions"][0]["Stable"], true);

    // Shapes against the fixtures.
    let (_, job_get) = nomad.get("/v1/job/hello-service").await;
    assert_shape("job_get.response.json", &job_get, 40);
    assert_shape("job_versions.response.json", &versions, 100);
    let (_, job_allocs) = nomad.get("/v1/job/hello-service/allocations").await;
    assert_shape("job_allocations.response.json", &job_allocs, 40);
    assert_shape("allocations_list.response.json", &job_allocs, 60);
    assert_shape("job_deployment.response.json", &dep, 25);
    let (_, deps) = nomad.get("/v1/job/hello-service/deployments").await;
    assert_shape("job_deployments.response.json", &deps, 25);
    let (_, summary) = nomad.get("/v1/job/hello-service/summary").await;
    assert_shape("job_summary.response.json", &summary, 18);
    assert_eq!(summary["Summary"]["green"]["Running"], 2);
    let (_, jobs) = nomad.get("/v1/jobs").await;
    assert_shape("jobs_list.response.json", &jobs, 30);
    let (_, evals) = nomad.get("/v1/job/hello-service/evaluations").await;
    assert_shape("job_evaluations.response.json", &evals, 20);
    let (_, leader) = nomad.get("/v1/status/leader").await;
    assert!(leader.as_str().unwrap().ends_with(":4647"));

    // Shutdown stops every process and deregisters every service.
    let pids: Vec<u32> = nomad.handle.task_pids().keys().copied().collect();
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|p| alive(*p)));
    nomad.shutdown().await;
    assert!(nomad.handle.task_pids().is_empty());
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived shutdown");
    }
    assert!(consul.services().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_errors_and_check_and_set() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    // Keep this test process-free: no instances.
    for g in job["TaskGroups"].as_array_mut().unwrap() {
        g["Count"] = json!(0);
    }
    // A bare job is not a register body.
    let (st, body) = nomad
        .send(reqwest::Method::POST, "/v1/jobs", Some(job.clone()))
        .await;
    assert_eq!((st, body.as_str()), (400, "Job must be specified"));
    let (st, body) = nomad
        .send(
            reqwest::Method::PUT,
            "/v1/job/other",
            Some(json!({"Job": job})),
        )
        .await;
    assert_eq!((st, body.as_str()), (400, "Job ID does not match name"));
    let (st, body) = nomad
        .send(reqwest::Method::GET, "/v1/job/hello-service", None)
        .await;
    assert_eq!((st, body.as_str()), (404, "job not found"));

    // CAS create with index 0.
    let (st, reply) = nomad
        .post(
            "/v1/jobs",
            json!({"Job": job, "EnforceIndex": true, "JobModifyIndex": 0}),
        )
        .await;
    assert_eq!(st, 200, "{reply}");
    let jmi = reply["JobModifyIndex"].as_u64().unwrap();
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(json!({"Job": job, "EnforceIndex": true, "JobModifyIndex": 0})),
        )
        .await;
    assert_eq!(st, 500);
    assert_eq!(body, "Enforcing job modify index 0: job already exists");

    // Unchanged spec: no new version.
    let again = nomad.register(&job).await;
    let (_, versions) = nomad.get("/v1/job/hello-service/versions").await;
    assert_eq!(versions["Versions"].as_array().unwrap().len(), 1);
    assert_eq!(again["JobModifyIndex"].as_u64().unwrap(), {
        let (_, j) = nomad.get("/v1/job/hello-service").await;
        j["ModifyIndex"].as_u64().unwrap()
    });

    // Changed spec with the right index: new version; stale index: 500.
    job["Priority"] = json!(60);
    let (st, reply) = nomad
        .post(
            "/v1/job/hello-service",
            json!({"Job": job, "EnforceIndex": true, "JobModifyIndex": jmi}),
        )
        .await;
    assert_eq!(st, 200, "{reply}");
    let new_jmi = reply["JobModifyIndex"].as_u64().unwrap();
    assert!(new_jmi > jmi);
    job["Priority"] = json!(70);
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(json!({"Job": job, "EnforceIndex": true, "JobModifyIndex": jmi})),
        )
        .await;
    assert_eq!(st, 500);
    assert!(body.starts_with("Enforcing job modify index"), "{body}");
    assert!(
        body.ends_with(&format!("conflicting job modify index: {new_jmi}")),
        "{body}"
    );
    let (_, j) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(j["Version"], 1);
    assert_eq!(j["Priority"], 60);

    // Revert errors.
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/job/hello-service/revert",
            Some(json!({"JobID": "x", "JobVersion": 0})),
        )
        .await;
    assert_eq!((st, body.as_str()), (400, "Job ID does not match"));
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/job/hello-service/revert",
            Some(json!({"JobID": "hello-service", "JobVersion": 1})),
        )
        .await;
    assert_eq!(
        (st, body.as_str()),
        (500, "can't revert to current version")
    );
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/job/hello-service/revert",
            Some(json!({"JobID": "hello-service", "JobVersion": 0, "EnforcePriorVersion": 5})),
        )
        .await;
    assert_eq!(
        (st, body.as_str()),
        (500, "Current job has version 1; enforcing version 5")
    );

    // jobs/parse errors.
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/jobs/parse",
            Some(json!({"JobHCL": "job {"})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(body.starts_with("Failed to parse job: "), "{body}");
    let (st, body) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/jobs/parse",
            Some(json!({"JobHCL": ""})),
        )
        .await;
    assert_eq!((st, body.as_str()), (400, "Job spec is empty"));
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_in_place_and_revert_per_group() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    nomad.register(&job).await;
    let v0 = nomad.wait_running("hello-service", 4, 0).await;
    let blue0 = ids(&v0, "blue");
    let green0 = ids(&v0, "green");
    let pids_of = |n: &Nomad, allocs: &[String]| -> Vec<u32> {
        let mut p: Vec<u32> = n
            .handle
            .task_pids()
            .into_iter()
            .filter(|(_, owner)| allocs.iter().any(|a| owner.starts_with(a.as_str())))
            .map(|(pid, _)| pid)
            .collect();
        p.sort();
        p
    };
    let blue_pids = pids_of(&nomad, &blue0);
    assert_eq!(blue_pids.len(), 2);

    // Destructive: green's meta.version v2 -> v3 replaces only green.
    job["TaskGroups"][1]["Meta"]["version"] = json!("v3");
    nomad.register(&job).await;
    let v1 = nomad.wait_running("hello-service", 4, 1).await;
    assert_eq!(ids(&v1, "blue"), blue0, "blue allocations must survive");
    let green1 = ids(&v1, "green");
    assert!(
        green1.iter().all(|id| !green0.contains(id)),
        "green must be replaced"
    );
    assert_eq!(
        pids_of(&nomad, &blue0),
        blue_pids,
        "blue processes must not restart"
    );
    for a in v1.iter().filter(|a| a["TaskGroup"] == "green") {
        let (version, body) = hello(http_port(a)).await;
        assert_eq!(version, "v3");
        assert_eq!(body, "Zinedine Zidane is the best player in the world!");
        assert!(!a["PreviousAllocation"].as_str().unwrap().is_empty());
    }
    // Old green services are gone from Consul, new ones are there.
    let services = consul.services();
    assert!(
        green0
            .iter()
            .all(|id| !services.keys().any(|k| k.contains(id.as_str())))
    );
    assert_eq!(services.len(), 4);

    // In place: swap tags only; same allocations, same ports, new tags.
    let blue_ports: Vec<u16> = v1
        .iter()
        .filter(|a| a["TaskGroup"] == "blue")
        .map(http_port)
        .collect();
    job["TaskGroups"][0]["Services"][0]["Tags"] =
        json!(["blue", "standby", "version=${NOMAD_META_version}"]);
    job["TaskGroups"][1]["Services"][0]["Tags"] =
        json!(["green", "active", "version=${NOMAD_META_version}"]);
    nomad.register(&job).await;
    let v2 = nomad.wait_running("hello-service", 4, 2).await;
    assert_eq!(ids(&v2, "blue"), blue0);
    assert_eq!(ids(&v2, "green"), green1);
    let mut ports_now: Vec<u16> = v2
        .iter()
        .filter(|a| a["TaskGroup"] == "blue")
        .map(http_port)
        .collect();
    let mut ports_before = blue_ports.clone();
    ports_now.sort();
    ports_before.sort();
    assert_eq!(ports_now, ports_before);
    assert_eq!(pids_of(&nomad, &blue0), blue_pids);
    let tags_ok = wait_for(Duration::from_secs(10), || async {
        let s = consul.services();
        let ok = s.values().all(|svc| {
            let tags = svc["Tags"].as_array().unwrap();
            let blue = tags.contains(&json!("blue"));
            tags.contains(&json!(if blue { "standby" } else { "active" }))
        });
        ok.then_some(())
    })
    .await;
    assert!(
        tags_ok.is_some(),
        "tags were not re-registered: {:#?}",
        consul.services()
    );
    let dep = nomad.wait_deployment("hello-service", "successful").await;
    assert_eq!(dep["JobVersion"], 2);

    // Versions: newest first.
    let (_, versions) = nomad.get("/v1/job/hello-service/versions").await;
    let list: Vec<u64> = versions["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_u64().unwrap())
        .collect();
    assert_eq!(list, vec![2, 1, 0]);

    // Revert to version 0: a new version 3 with green back on v2 (destructive)
    // and the original tags (blue in place).
    let (st, reply) = nomad
        .post(
            "/v1/job/hello-service/revert",
            json!({"JobID": "hello-service", "JobVersion": 0, "EnforcePriorVersion": 2}),
        )
        .await;
    assert_eq!(st, 200, "{reply}");
    let v3 = nomad.wait_running("hello-service", 4, 3).await;
    assert_eq!(ids(&v3, "blue"), blue0);
    assert!(ids(&v3, "green").iter().all(|id| !green1.contains(id)));
    for a in v3.iter().filter(|a| a["TaskGroup"] == "green") {
        assert_eq!(hello(http_port(a)).await.0, "v2");
    }
    let (_, j) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(j["Version"], 3);
    assert_eq!(j["TaskGroups"][1]["Meta"]["version"], "v2");

    // Stop: a new version with Stop=true, all allocations stopped.
    let (st, _) = nomad
        .send(reqwest::Method::DELETE, "/v1/job/hello-service", None)
        .await;
    assert_eq!(st, 200);
    let stopped = wait_for(Duration::from_secs(30), || async {
        let (_, j) = nomad.get("/v1/job/hello-service").await;
        (j["Status"] == "dead" && nomad.handle.task_pids().is_empty()).then_some(j)
    })
    .await
    .expect("job never became dead");
    assert_eq!(stopped["Stop"], true);
    assert!(consul.services().is_empty());
    // Deregistration happens before the processes are signalled.
    let log = consul.log();
    assert!(log.iter().any(|(op, _)| op == "deregister"));
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_fails_when_checks_never_pass() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(1);
    nomad.register(&job).await;
    nomad.wait_deployment("hello-service", "successful").await;
    let before = nomad.live_allocs("hello-service").await;
    let blue_id = ids(&before, "blue");
    let blue_pids: Vec<u32> = nomad.handle.task_pids().keys().copied().collect();

    // New green that never turns healthy, with a short healthy deadline.
    job["TaskGroups"][1]["Meta"]["version"] = json!("v4");
    job["TaskGroups"][1]["Tasks"][0]["Config"]["args"]
        .as_array_mut()
        .unwrap()
        .push(json!("--fail-health"));
    job["TaskGroups"][1]["Update"]["HealthyDeadline"] = json!(2_000_000_000u64);
    let started = Instant::now();
    nomad.register(&job).await;
    let dep = nomad.wait_deployment("hello-service", "failed").await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        dep["StatusDescription"],
        "Failed due to unhealthy allocations"
    );
    assert_eq!(dep["TaskGroups"]["green"]["UnhealthyAllocs"], 1);
    let live = nomad.live_allocs("hello-service").await;
    let green = live.iter().find(|a| a["TaskGroup"] == "green").unwrap();
    assert_eq!(green["DeploymentStatus"]["Healthy"], false);
    // Blue's group did not change, but its allocation moved to the new job
    // version in place, as Nomad's scheduler does it: same allocation, same
    // process, new version, part of the new deployment.
    let blue = live.iter().find(|a| a["TaskGroup"] == "blue").unwrap();
    assert_eq!(ids(&live, "blue"), blue_id);
    assert_eq!(blue["JobVersion"], 1);
    assert_eq!(blue["DeploymentID"], dep["ID"]);
    assert_eq!(blue["TaskStates"]["hello"]["Restarts"], 0);
    assert_ne!(blue["DeploymentStatus"]["Healthy"], false);
    assert_eq!(dep["TaskGroups"]["blue"]["DesiredTotal"], 1);
    assert_eq!(dep["TaskGroups"]["blue"]["PlacedAllocs"], 1);
    let blue_pid = nomad
        .handle
        .task_pids()
        .into_iter()
        .find(|(_, owner)| owner.starts_with(blue_id[0].as_str()))
        .map(|(pid, _)| pid)
        .unwrap();
    assert!(blue_pids.contains(&blue_pid), "blue's task was restarted");
    let (_, versions) = nomad.get("/v1/job/hello-service/versions").await;
    assert_eq!(versions["Versions"][0]["Stable"], false);
    assert_eq!(versions["Versions"][1]["Stable"], true);
    nomad.shutdown().await;
}

/// A destructive update replaces at most `max_parallel` allocations at a
/// time: the next one only once those placed are healthy; the deployment
/// ends when the whole group is replaced and healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_honours_max_parallel() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(2);
    job["TaskGroups"][1]["Update"]["MaxParallel"] = json!(1);
    nomad.register(&job).await;
    nomad.wait_deployment("hello-service", "successful").await;
    let old_green = ids(&nomad.live_allocs("hello-service").await, "green");

    job["TaskGroups"][1]["Meta"]["version"] = json!("v5");
    nomad.register(&job).await;
    // One replacement now, the other allocation keeps running the old version.
    let live = nomad.live_allocs("hello-service").await;
    let green: Vec<&Value> = live.iter().filter(|a| a["TaskGroup"] == "green").collect();
    assert_eq!(green.len(), 2, "{live:?}");
    let new: Vec<&&Value> = green.iter().filter(|a| a["JobVersion"] == 1).collect();
    assert_eq!(new.len(), 1, "{green:?}");
    assert!(!old_green.contains(&new[0]["ID"].as_str().unwrap().to_string()));
    assert!(green.iter().any(
        |a| a["JobVersion"] == 0 && old_green.contains(&a["ID"].as_str().unwrap().to_string())
    ));
    // While the first replacement is not yet healthy, nothing else is replaced.
    let (_, d) = nomad.get("/v1/job/hello-service/deployment").await;
    assert_eq!(d["Status"], "running");
    assert_eq!(d["TaskGroups"]["green"]["DesiredTotal"], 2);
    assert_eq!(d["TaskGroups"]["green"]["PlacedAllocs"], 1);

    let dep = nomad.wait_deployment("hello-service", "successful").await;
    assert_eq!(dep["ID"], d["ID"]);
    assert_eq!(dep["TaskGroups"]["green"]["PlacedAllocs"], 2);
    assert_eq!(dep["TaskGroups"]["green"]["HealthyAllocs"], 2);
    let live = nomad.wait_running("hello-service", 3, 1).await;
    let green = ids(&live, "green");
    assert!(green.iter().all(|id| !old_green.contains(id)));
    // The second replacement was placed after the first turned healthy.
    let by_id = |id: &str| live.iter().find(|a| a["ID"] == id).unwrap().clone();
    let (first, second) =
        if by_id(&green[0])["CreateIndex"].as_u64() < by_id(&green[1])["CreateIndex"].as_u64() {
            (by_id(&green[0]), by_id(&green[1]))
        } else {
            (by_id(&green[1]), by_id(&green[0]))
        };
    assert!(
        second["CreateIndex"].as_u64().unwrap()
            > first["DeploymentStatus"]["ModifyIndex"].as_u64().unwrap(),
        "{first}\n{second}"
    );
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_job_file_round_trips_and_blocking_queries_wait() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let job = nomad.parse_job_file().await;
    assert_shape("jobs_parse.response.json", &job, 20);
    assert_eq!(job["ID"], "hello-service");
    let green = &job["TaskGroups"][1];
    assert_eq!(green["Name"], "green");
    assert_eq!(green["Meta"]["version"], "v2");
    assert_eq!(green["Networks"][0]["DynamicPorts"][0]["Label"], "http");
    assert_eq!(
        green["Services"][0]["Checks"][0]["Interval"],
        1_000_000_000u64
    );
    assert_eq!(green["Update"]["MaxParallel"], 2);
    assert_eq!(green["Update"]["HealthyDeadline"], 60_000_000_000u64);
    assert_eq!(green["ShutdownDelay"], 1_000_000_000u64);
    assert_eq!(green["Tasks"][0]["Driver"], "raw_exec");
    assert_eq!(green["Tasks"][0]["Config"]["args"][1], "${NOMAD_PORT_http}");
    assert_eq!(green["Tasks"][0]["KillTimeout"], 5_000_000_000u64);
    // The docker variant parses too, with its variable resolved; the image tag comes from the
    // group's version, which Nomad interpolates when it starts the task.
    let docker = std::fs::read_to_string(
        nomad_support::workspace_root().join("config/hello-service.docker.nomad.hcl"),
    )
    .unwrap();
    let (st, dj) = nomad
        .post(
            "/v1/jobs/parse",
            json!({"JobHCL": docker, "Variables": "image_repo = \"registry.example/x\""}),
        )
        .await;
    assert_eq!(st, 200, "{dj}");
    assert_eq!(
        dj["TaskGroups"][0]["Tasks"][0]["Config"]["image"],
        "registry.example/x:${NOMAD_META_version}"
    );

    // Blocking query: returns at the wait deadline when nothing changes…
    let mut zero = job.clone();
    for g in zero["TaskGroups"].as_array_mut().unwrap() {
        g["Count"] = json!(0);
    }
    nomad.register(&zero).await;
    let r = switchyard_hashi::tls::http_client_builder()
        .build()
        .unwrap()
        .get(format!("{}/v1/job/hello-service", nomad.url))
        .send()
        .await
        .unwrap();
    let index: u64 = r.headers()["x-nomad-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.headers()["x-nomad-knownleader"], "true");
    let t = Instant::now();
    let r = switchyard_hashi::tls::http_client_builder()
        .build()
        .unwrap()
        .get(format!(
            "{}/v1/job/hello-service?index={index}&wait=300ms",
            nomad.url
        ))
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        r.headers()["x-nomad-index"].to_str().unwrap(),
        index.to_string()
    );
    // …and wakes up on a change.
    let url = format!("{}/v1/job/hello-service?index={index}&wait=30s", nomad.url);
    let waiter = tokio::spawn(async move {
        switchyard_hashi::tls::http_client_builder()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    zero["Priority"] = json!(55);
    nomad.register(&zero).await;
    let changed = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed["Priority"], 55);
    assert!(changed["ModifyIndex"].as_u64().unwrap() > index);
    let (st, _) = nomad
        .send(
            reqwest::Method::GET,
            "/v1/job/hello-service?index=abc",
            None,
        )
        .await;
    assert_eq!(st, 400);
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_persist_and_allocations_are_replaced_on_restart() {
    let consul = FakeConsul::start().await;
    let dir = switchyard_testkit::temp_dir("devnomad");
    let mut nomad = Nomad::start(&consul.url(), Some(dir.clone())).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(1);
    nomad.register(&job).await;
    job["Priority"] = json!(51);
    nomad.register(&job).await;
    let before = nomad.wait_running("hello-service", 2, 1).await;
    let (_, j_before) = nomad.get("/v1/job/hello-service").await;
    nomad.shutdown().await;
    assert!(consul.services().is_empty());

    let mut nomad = Nomad::start(&consul.url(), Some(dir.clone())).await;
    let (st, j_after) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(st, 200);
    assert_eq!(j_after["Version"], 1);
    assert_eq!(j_after["JobModifyIndex"], j_before["JobModifyIndex"]);
    let (_, versions) = nomad.get("/v1/job/hello-service/versions").await;
    assert_eq!(versions["Versions"].as_array().unwrap().len(), 2);
    let after = nomad.wait_running("hello-service", 2, 1).await;
    assert!(
        ids(&after, "blue")
            .iter()
            .all(|id| !ids(&before, "blue").contains(id))
    );
    for a in &after {
        assert_eq!(
            switchyard_hashi::tls::http_client_builder()
                .build()
                .unwrap()
                .get(format!("http://127.0.0.1:{}/health", http_port(a)))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // The index keeps growing across restarts.
    let r = switchyard_hashi::tls::http_client_builder()
        .build()
        .unwrap()
        .get(format!("{}/v1/jobs", nomad.url))
        .send()
        .await
        .unwrap();
    let idx: u64 = r.headers()["x-nomad-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(idx >= j_before["ModifyIndex"].as_u64().unwrap());
    nomad.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_driver_fails_the_allocation() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(0);
    job["TaskGroups"][0]["Tasks"][0]["Driver"] = json!("docker");
    nomad.register(&job).await;
    let failed = wait_for(Duration::from_secs(10), || async {
        let live = nomad.live_allocs("hello-service").await;
        live.into_iter().find(|a| a["ClientStatus"] == "failed")
    })
    .await
    .expect("allocation never failed");
    let events = failed["TaskStates"]["hello"]["Events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["DriverError"].as_str().unwrap().contains("raw_exec"))
    );
    nomad.shutdown().await;
}
