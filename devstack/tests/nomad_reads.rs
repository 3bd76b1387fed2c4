//! Dev Nomad reads clients rely on: a 404 of a blocking read carries
//! `X-Nomad-Index` and blocks until the object appears, and
//! `/v1/evaluation/:id/allocations` lists what an evaluation placed.

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::time::{Duration, Instant};

use nomad_support::{FakeConsul, Nomad, wait_for};
use serde_json::{Value, json};

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
        let r = reqwest::get(format!("{}{path}", nomad.url)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(index_of(&r) >= 1, "{path} carries X-Nomad-Index");
        assert_eq!(r.headers()["x-nomad-knownleader"], "true");
        assert!(r.text().await.unwrap().ends_with("not found"), "{path}");
    }
    let r = reqwest::get(format!("{}/v1/job/later", nomad.url))
        .await
        .unwrap();
    let index = index_of(&r);
    // A blocking read of the missing job times out with the same index…
    let t = Instant::now();
    let r = reqwest::get(format!(
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
        let r = reqwest::get(url).await.unwrap();
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
    let r = reqwest::get(format!("{}/v1/evaluation/{eval}/allocations", nomad.url))
        .await
        .unwrap();
    assert!(index_of(&r) >= 1);
    let (st, none) = nomad
        .get("/v1/evaluation/00000000-0000-0000-0000-000000000000/allocations")
        .await;
    assert_eq!((st, none), (200, json!([])));
    nomad.shutdown().await;
}
