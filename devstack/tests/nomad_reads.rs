//! Dev Nomad reads clients rely on: a 404 of a blocking read carries
//! `X-Nomad-Index` and blocks until the object appears, and
//! `/v1/evaluation/:id/allocations` lists what an evaluation placed.

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::time::{Duration, Instant};

use nomad_support::{FakeConsul, Nomad, wait_for};
use serde_json::{Value, json};

/// A plain GET, with the workspace's HTTP client (its TLS backend set up as every client's is).
async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    switchyard_hashi::tls::http_client_builder()
        .build()?
        .get(url)
        .send()
        .await
}

fn index_of(r: &reqwest::Response) -> u64 {
    r.headers()["x-nomad-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_reads_carry_index_and_block_until_the_job_appears() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    for path in [
        "/v1/job/later",
        "/v1/job/later/versions",
        "/v1/job/later/summary",
        "/v1/deployment/00000000-0000-0000-0000-000000000000",
        "/v1/allocation/00000000-0000-0000-0000-000000000000",
        "/v1/evaluation/00000000-0000-0000-0000-000000000000",
    ] {
        let r = get(format!("{}{path}", nomad.url)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(index_of(&r) >= 1, "{path} carries X-Nomad-Index");
        assert_eq!(r.headers()["x-nomad-knownleader"], "true");
        assert!(r.text().await.unwrap().ends_with("not found"), "{path}");
    }
    let r = get(format!("{}/v1/job/later", nomad.url)).await.unwrap();
    let index = index_of(&r);
    // A blocking read of the missing job times out with the same index…
    let t = Instant::now();
    let r = get(format!(
        "{}/v1/job/later?index={index}&wait=300ms",
        nomad.url
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert!(t.elapsed() >= Duration::from_millis(250), "the 404 blocked");
    assert_eq!(index_of(&r), index);
    // …and answers 200 once the job is registered.
    let url = format!("{}/v1/job/later?index={index}&wait=30s", nomad.url);
    let waiter = tokio::spawn(async move {
        let r = get(url).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    let mut job = nomad.parse_job_file().await;
    job["ID"] = json!("later");
    job["Name"] = json!("later");
    for g in job["TaskGroups"].as_array_mut().unwrap() {
        g["Count"] = json!(0);
    }
    nomad.register(&job).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["ID"], "later");
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_allocations_lists_what_the_evaluation_placed() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    // One group with one allocation is enough.
    let groups = job["TaskGroups"].as_array_mut().unwrap();
    groups.truncate(1);
    groups[0]["Count"] = json!(1);
    let reply = nomad.register(&job).await;
    let eval = reply["EvalID"].as_str().unwrap().to_owned();
    let allocs = wait_for(Duration::from_secs(20), || async {
        let (st, v) = nomad
            .get(&format!("/v1/evaluation/{eval}/allocations"))
            .await;
        assert_eq!(st, 200);
        let list = v.as_array().unwrap().clone();
        (!list.is_empty()).then_some(list)
    })
    .await
    .expect("the evaluation placed an allocation");
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0]["EvalID"], eval.as_str());
    assert_eq!(allocs[0]["JobID"], job["ID"]);
    let r = get(format!("{}/v1/evaluation/{eval}/allocations", nomad.url))
        .await
        .unwrap();
    assert!(index_of(&r) >= 1);
    let (st, none) = nomad
        .get("/v1/evaluation/00000000-0000-0000-0000-000000000000/allocations")
        .await;
    assert_eq!((st, none), (200, json!([])));
    nomad.shutdown().await;
}

/// Replaces the fixture's `["..."]` placeholders with `null` (which matches
/// anything) so the rest of the sample can be compared.
fn strip_placeholders(v: &mut Value) {
    match v {
        Value::Array(items) if items.first() == Some(&json!("...")) => *v = Value::Null,
        Value::Array(items) => items.iter_mut().for_each(strip_placeholders),
        Value::Object(m) => m.values_mut().for_each(strip_placeholders),
        _ => {}
    }
}

async fn plan(nomad: &Nomad, job: &Value) -> Value {
    let id = job["ID"].as_str().unwrap();
    let (st, reply) = nomad
        .post(
            &format!("/v1/job/{id}/plan"),
            json!({"Job": job, "Diff": true}),
        )
        .await;
    assert_eq!(st, 200, "{reply}");
    reply
}

fn group<'a>(reply: &'a Value, name: &str) -> &'a Value {
    reply["Diff"]["TaskGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["Name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_is_a_dry_run_with_nomads_annotations() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"].as_array_mut().unwrap().truncate(1);
    job["TaskGroups"][0]["Count"] = json!(2);

    // A new job: everything is placed, nothing is registered.
    let reply = plan(&nomad, &job).await;
    let mut sample = nomad_support::fixture("job_plan.response.json");
    strip_placeholders(&mut sample);
    let mut diffs = Vec::new();
    let n = nomad_support::shape_diff(&sample, &reply, "$", &mut diffs);
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert!(n >= 15, "only {n} fields compared");
    let sample_tg = sample["Annotations"]["DesiredTGUpdates"]["cache"]
        .as_object()
        .unwrap();
    let ours_tg = reply["Annotations"]["DesiredTGUpdates"]["blue"]
        .as_object()
        .unwrap();
    for k in sample_tg.keys() {
        assert!(ours_tg.contains_key(k), "DesiredTGUpdates lacks {k}");
    }
    assert_eq!(reply["Annotations"]["DesiredTGUpdates"]["blue"]["Place"], 2);
    assert_eq!(reply["Diff"]["Type"], "Added");
    assert_eq!(reply["JobModifyIndex"], 0);
    let blue = group(&reply, "blue");
    assert_eq!(blue["Type"], "Added");
    assert_eq!(blue["Updates"], json!({"create": 2}));
    assert_eq!(blue["Tasks"][0]["Annotations"], json!(["forces create"]));
    let (st, _) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(st, 404, "a plan registers nothing");

    nomad.register(&job).await;
    let before = nomad.wait_running("hello-service", 2, 0).await;
    let before_ids: Vec<&str> = before.iter().map(|a| a["ID"].as_str().unwrap()).collect();

    // Unchanged: ignore both.
    let reply = plan(&nomad, &job).await;
    assert_eq!(reply["Diff"]["Type"], "None");
    assert_eq!(
        reply["Annotations"]["DesiredTGUpdates"]["blue"]["Ignore"],
        2
    );
    assert!(reply["JobModifyIndex"].as_u64().unwrap() > 0);

    // Service tags only: in place.
    let mut tags = job.clone();
    tags["TaskGroups"][0]["Services"][0]["Tags"] = json!(["blue", "previewed"]);
    let reply = plan(&nomad, &tags).await;
    let tg = &reply["Annotations"]["DesiredTGUpdates"]["blue"];
    assert_eq!(
        (
            tg["InPlaceUpdate"].as_u64(),
            tg["DestructiveUpdate"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert_eq!(
        group(&reply, "blue")["Updates"],
        json!({"in-place update": 2})
    );
    assert_eq!(reply["Diff"]["Type"], "Edited");

    // Task env: create/destroy.
    let mut env = job.clone();
    env["TaskGroups"][0]["Tasks"][0]["Env"] = json!({"PLANNED": "1"});
    let reply = plan(&nomad, &env).await;
    assert_eq!(
        reply["Annotations"]["DesiredTGUpdates"]["blue"]["DestructiveUpdate"],
        2
    );
    let task = &group(&reply, "blue")["Tasks"][0];
    assert_eq!(task["Annotations"], json!(["forces create/destroy update"]));
    assert!(task.to_string().contains("PLANNED"), "{task}");

    // Count up: one placement, Count annotated; the new job version reaches
    // the other allocations in place.
    let mut more = job.clone();
    more["TaskGroups"][0]["Count"] = json!(3);
    let reply = plan(&nomad, &more).await;
    let tg = &reply["Annotations"]["DesiredTGUpdates"]["blue"];
    assert_eq!(
        (tg["Place"].as_u64(), tg["InPlaceUpdate"].as_u64()),
        (Some(1), Some(2))
    );
    let count = group(&reply, "blue")["Fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["Name"] == "Count")
        .unwrap()
        .clone();
    assert_eq!(
        count,
        json!({"Type": "Edited", "Name": "Count", "Old": "2", "New": "3", "Annotations": ["forces create"]})
    );

    // None of the plans touched the cluster.
    let after = nomad.live_allocs("hello-service").await;
    let mut after_ids: Vec<&str> = after.iter().map(|a| a["ID"].as_str().unwrap()).collect();
    let mut expect = before_ids.clone();
    after_ids.sort_unstable();
    expect.sort_unstable();
    assert_eq!(after_ids, expect);
    let (_, current) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(current["Version"], 0);

    // Bad requests.
    let (st, text) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/job/other/plan",
            Some(json!({"Job": job})),
        )
        .await;
    assert_eq!((st, text.as_str()), (400, "Job ID does not match"));
    let (st, text) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/job/hello-service/plan",
            Some(json!({})),
        )
        .await;
    assert_eq!((st, text.as_str()), (400, "Job must be specified"));
    nomad.shutdown().await;
}
