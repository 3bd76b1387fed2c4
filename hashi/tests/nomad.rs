use std::time::Duration;

use serde_json::json;
use switchyard_hashi::nomad::{Job, NomadClient, NomadConfig};
use switchyard_hashi::{Error, QueryMeta, QueryOptions};

use crate::support::{MockServer, Reply, closed_port, fixture};

fn client(server: &MockServer) -> NomadClient {
    NomadClient::new(NomadConfig {
        address: server.url(),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn job_read_with_token_region_namespace() {
    let server = MockServer::always(
        Reply::json(fixture("nomad/job_get.response.json"))
            .header("X-Nomad-Index", 7)
            .header("X-Nomad-KnownLeader", "true")
            .header("X-Nomad-LastContact", 0),
    )
    .await;
    let nomad = NomadClient::new(NomadConfig {
        address: server.host_port(),
        token: Some("nomad-secret".into()),
        region: Some("global".into()),
        namespace: Some("apps".into()),
        ..Default::default()
    })
    .unwrap();
    let (job, meta) = nomad
        .job(
            "example",
            &QueryOptions {
                index: 6,
                wait: Some(Duration::from_secs(120)),
                stale: true,
            },
        )
        .await
        .unwrap();
    let job = job.unwrap();
    assert_eq!(job.id(), "example");
    assert_eq!(job.job_modify_index(), 7);
    assert_eq!(
        meta,
        QueryMeta {
            index: 7,
            known_leader: true,
            last_contact: Duration::ZERO
        }
    );
    let req = server.single();
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.target(),
        "/v1/job/example?index=6&wait=120000ms&stale&region=global&namespace=apps"
    );
    assert_eq!(req.header("x-nomad-token"), Some("nomad-secret"));
}

#[tokio::test]
async fn missing_job_is_none() {
    let server =
        MockServer::always(Reply::new(404, "job not found").header("X-Nomad-Index", 12)).await;
    let (job, meta) = client(&server)
        .job("web/x", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(job, None);
    assert_eq!(meta.index, 12);
    assert_eq!(server.single().target(), "/v1/job/web%2Fx");
}

#[tokio::test]
async fn register_with_enforce_index() {
    let server = MockServer::always(
        Reply::json(fixture("nomad/job_update.response.json")).header("X-Nomad-Index", 36),
    )
    .await;
    let job =
        Job(json!({"ID": "web", "Name": "web", "TaskGroups": [], "Unmodelled": {"kept": true}}));
    let answer = client(&server).register(&job, Some(4)).await.unwrap();
    assert_eq!(answer.eval_id, "d092fdc0-e1fd-2536-67d8-43af8ca798ac");
    assert_eq!(answer.job_modify_index, 34);
    assert_eq!(
        answer.index, 36,
        "from X-Nomad-Index when the body has no Index"
    );

    let req = server.single();
    assert_eq!(
        (req.method.as_str(), req.target()),
        ("POST", "/v1/job/web".to_owned())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "Job": {"ID": "web", "Name": "web", "TaskGroups": [], "Unmodelled": {"kept": true}},
            "EnforceIndex": true,
            "JobModifyIndex": 4
        })
    );
}

#[tokio::test]
async fn register_without_enforce_index_and_create_only() {
    let server = MockServer::always(Reply::json(fixture("nomad/job_register.response.json"))).await;
    let nomad = client(&server);
    let job = Job(json!({"ID": "web"}));
    let answer = nomad.register(&job, None).await.unwrap();
    assert_eq!(answer.job_modify_index, 109);
    nomad.register(&job, Some(0)).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].json(), json!({"Job": {"ID": "web"}}));
    assert_eq!(
        requests[1].json(),
        json!({"Job": {"ID": "web"}, "EnforceIndex": true, "JobModifyIndex": 0}),
        "JobModifyIndex 0 = create only, sent explicitly"
    );

    let err = nomad
        .register(&Job(json!({"Name": "x"})), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn register_conflict_is_cas_conflict() {
    let message =
        "rpc error: Enforcing job modify index 4: job exists with conflicting job modify index: 9";
    let server = MockServer::always(Reply::new(500, message)).await;
    let err = client(&server)
        .register(&Job(json!({"ID": "web"})), Some(4))
        .await
        .unwrap_err();
    assert!(err.is_cas_conflict(), "{err:?}");
    assert!(matches!(&err, Error::CasConflict(m) if m == message));
    assert_eq!(err.status(), None);

    // Other 500s stay plain status errors.
    let server = MockServer::always(Reply::new(500, "rpc error: No cluster leader")).await;
    let err = client(&server)
        .register(&Job(json!({"ID": "web"})), Some(4))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(!err.is_cas_conflict());
}

#[tokio::test]
async fn revert_with_enforce_prior_version() {
    let server = MockServer::start(|req| {
        if req.json()["EnforcePriorVersion"] == 3 {
            Reply::new(500, "Current job has version 4; enforcing version 3")
        } else {
            Reply::json(fixture("nomad/job_revert.response.json"))
        }
    })
    .await;
    let nomad = client(&server);
    let answer = nomad.revert("web", 2, Some(4)).await.unwrap();
    assert_eq!(answer.job_modify_index, 34);
    let err = nomad.revert("web", 2, Some(3)).await.unwrap_err();
    assert!(err.is_cas_conflict(), "{err:?}");
    nomad.revert("web", 1, None).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].target(), "/v1/job/web/revert");
    assert_eq!(
        requests[0].json(),
        json!({"JobID": "web", "JobVersion": 2, "EnforcePriorVersion": 4})
    );
    assert_eq!(requests[2].json(), json!({"JobID": "web", "JobVersion": 1}));
}

#[tokio::test]
async fn versions_are_jobs() {
    let server = MockServer::always(Reply::json(fixture("nomad/job_versions.response.json"))).await;
    let versions = client(&server).versions("example").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert!(versions[0].stable());
    assert_eq!(versions[0].job_modify_index(), 44);
    assert_eq!(server.single().target(), "/v1/job/example/versions");
}

#[tokio::test]
async fn job_allocations_all_and_blocking() {
    let server = MockServer::always(
        Reply::json(fixture("nomad/allocations_list.response.json")).header("X-Nomad-Index", 16),
    )
    .await;
    let (allocs, meta) = client(&server)
        .job_allocations(
            "example",
            true,
            &QueryOptions::blocking(15, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(allocs[0].healthy(), Some(true));
    assert_eq!(meta.index, 16);
    assert_eq!(
        server.single().target(),
        "/v1/job/example/allocations?index=15&wait=30000ms&all=true"
    );
}

#[tokio::test]
async fn job_deployment_null_and_present() {
    let server = MockServer::start(|req| {
        if req.path == "/v1/job/never/deployment" {
            Reply::json("null").header("X-Nomad-Index", 1)
        } else {
            Reply::json(fixture("nomad/job_deployment.response.json")).header("X-Nomad-Index", 25)
        }
    })
    .await;
    let nomad = client(&server);
    let (none, meta) = nomad
        .job_deployment("never", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(meta.index, 1);
    let (deployment, _) = nomad
        .job_deployment("my-job", &QueryOptions::default())
        .await
        .unwrap();
    let deployment = deployment.unwrap();
    assert_eq!(deployment.status, "running");
    assert_eq!(deployment.task_groups["cache"].placed_canaries.len(), 2);
}

#[tokio::test]
async fn deployments_evaluations_allocation() {
    let server = MockServer::start(|req| match req.path.as_str() {
        "/v1/job/my-job/deployments" => Reply::json(fixture("nomad/job_deployments.response.json")),
        "/v1/job/my-job/evaluations" => Reply::json(fixture("nomad/job_evaluations.response.json")),
        "/v1/allocation/5457f16d" => {
            Reply::json(r#"{"ID": "5457f16d", "ClientStatus": "running"}"#)
        }
        _ => Reply::new(404, "alloc not found"),
    })
    .await;
    let nomad = client(&server);
    let deployments = nomad.job_deployments("my-job").await.unwrap();
    assert_eq!(deployments.len(), 2);
    let evals = nomad.job_evaluations("my-job").await.unwrap();
    assert_eq!(evals[0]["Status"], "complete");
    let alloc = nomad.allocation("5457f16d").await.unwrap().unwrap();
    assert_eq!(alloc["ClientStatus"], "running");
    assert_eq!(nomad.allocation("gone").await.unwrap(), None);
}

#[tokio::test]
async fn deployment_promote_and_fail() {
    let server = MockServer::start(|req| {
        if req.path.starts_with("/v1/deployment/fail/") {
            Reply::json(fixture("nomad/deployment_fail.response.json"))
        } else {
            Reply::json(fixture("nomad/deployment_promote.response.json"))
        }
    })
    .await;
    let nomad = client(&server);
    let answer = nomad.deployment_promote("5456bd7a", None).await.unwrap();
    assert_eq!(answer["DeploymentModifyIndex"], 20);
    let groups = vec!["web".to_owned(), "api-server".to_owned()];
    nomad
        .deployment_promote("5456bd7a", Some(&groups))
        .await
        .unwrap();
    let answer = nomad.deployment_fail("5456bd7a").await.unwrap();
    assert_eq!(answer["RevertedJobVersion"], 1);

    let requests = server.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].target(), "/v1/deployment/promote/5456bd7a");
    assert_eq!(
        requests[0].json(),
        json!({"DeploymentID": "5456bd7a", "All": true})
    );
    assert_eq!(
        requests[1].json(),
        json!({"DeploymentID": "5456bd7a", "Groups": ["web", "api-server"]})
    );
    assert_eq!(requests[2].method, "POST");
    assert_eq!(requests[2].target(), "/v1/deployment/fail/5456bd7a");
    assert_eq!(requests[2].json(), json!({"DeploymentID": "5456bd7a"}));
}

#[tokio::test]
async fn promote_refusal_is_a_status_error() {
    let server = MockServer::always(Reply::new(
        500,
        "rpc error: Task group \"web\" has 1/2 healthy allocations",
    ))
    .await;
    let err = client(&server)
        .deployment_promote("d", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(matches!(&err, Error::Status { body, .. } if body.contains("1/2 healthy")));
}

#[tokio::test]
async fn parse_hcl() {
    let server = MockServer::always(Reply::json(fixture("nomad/jobs_parse.response.json"))).await;
    let request: serde_json::Value =
        serde_json::from_str(&fixture("nomad/jobs_parse_bluegreen.request.json")).unwrap();
    let hcl = request["JobHCL"].as_str().unwrap();
    let job = client(&server).parse(hcl, true).await.unwrap();
    assert_eq!(job.id(), "my-job");
    let req = server.single();
    assert_eq!(
        (req.method.as_str(), req.target()),
        ("POST", "/v1/jobs/parse".to_owned())
    );
    assert_eq!(
        req.json(),
        request,
        "the body the jobs.mdx example builds with jq"
    );
}

#[tokio::test]
async fn jobs_list_and_leader() {
    let server = MockServer::start(|req| match req.path.as_str() {
        "/v1/jobs" => {
            Reply::json(fixture("nomad/jobs_list.response.json")).header("X-Nomad-Index", 96)
        }
        _ => Reply::json(fixture("nomad/status_leader.response.json")),
    })
    .await;
    let nomad = client(&server);
    let (jobs, meta) = nomad.jobs(&QueryOptions::default()).await.unwrap();
    assert_eq!(jobs[0].id, "example");
    assert_eq!(meta.index, 96);
    assert_eq!(nomad.status_leader().await.unwrap(), "127.0.0.1:4647");
}

#[tokio::test]
async fn garbage_and_transport_errors() {
    let server = MockServer::always(Reply::json("[{\"ID\": ").header("X-Nomad-Index", 3)).await;
    let nomad = client(&server);
    let err = nomad
        .job_allocations("web", false, &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let err = nomad
        .job_deployment("web", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let err = nomad
        .register(&Job(json!({"ID": "web"})), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");

    // A typed field of the wrong type is a decode error too, never a panic.
    let server = MockServer::always(Reply::json(r#"[{"ID": 5, "JobVersion": "one"}]"#)).await;
    let err = client(&server)
        .job_allocations("web", false, &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");

    let nomad = NomadClient::new(NomadConfig {
        address: closed_port().await,
        ..Default::default()
    })
    .unwrap();
    let err = nomad
        .job("web", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");
}

#[tokio::test]
async fn plan_with_diff() {
    let answer = json!({
        "JobModifyIndex": 40,
        "Annotations": {"DesiredTGUpdates": {
            "blue": {"Ignore": 2, "Place": 0, "Migrate": 0, "Stop": 0, "InPlaceUpdate": 0,
                     "DestructiveUpdate": 0, "Canary": 0, "Preemptions": 0},
            "green": {"Ignore": 0, "Place": 0, "Migrate": 0, "Stop": 0, "InPlaceUpdate": 0,
                      "DestructiveUpdate": 2, "Canary": 0, "Preemptions": 0}},
            "PreemptedAllocs": null},
        "Diff": {"Type": "Edited", "ID": "web", "Fields": null, "Objects": null, "TaskGroups": [
            {"Type": "Edited", "Name": "green", "Objects": null, "Tasks": null,
             "Updates": {"create/destroy update": 2},
             "Fields": [{"Type": "Edited", "Name": "Meta[version]", "Old": "v2", "New": "v4",
                         "Annotations": null}]}]},
        "FailedTGAllocs": null,
        "CreatedEvals": null,
        "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
        "Warnings": "",
        "Index": 41
    });
    let server = MockServer::always(Reply::json(answer.to_string())).await;
    let job = Job(json!({"ID": "web", "TaskGroups": []}));
    let plan = client(&server).plan(&job, true).await.unwrap();
    assert_eq!(plan.job_modify_index, 40);
    let d = &plan.annotations.unwrap().desired_tg_updates;
    assert_eq!((d["blue"].ignore, d["green"].destructive_update), (2, 2));
    let diff = plan.diff.unwrap();
    assert_eq!(diff.task_groups[0].fields[0].new, "v4");
    assert!(plan.failed_tg_allocs.is_empty());

    let req = server.single();
    assert_eq!(
        (req.method.as_str(), req.target()),
        ("POST", "/v1/job/web/plan".to_owned())
    );
    assert_eq!(
        req.json(),
        json!({"Job": {"ID": "web", "TaskGroups": []}, "Diff": true})
    );
    assert!(matches!(
        client(&server).plan(&Job(json!({})), false).await,
        Err(Error::InvalidArgument(_))
    ));
}
