//! Rescheduling of failed allocations of a service job: a task that exits
//! non-zero past its restart attempts fails its allocation, which is
//! replaced after the group's reschedule delay, with `PreviousAllocation`,
//! `NextAllocation` and `RescheduleTracker` as Nomad sets them, through the
//! evaluations Nomad creates: an `alloc-failure` one that finds the
//! allocation must wait, and a `pending` follow-up (`alloc-reschedule`,
//! `WaitUntil` the reschedule time, the failed allocation's
//! `FollowupEvalID`) that places the replacement and completes.
//!
//! Prerequisite: `cargo build -p hello-service` (see `nomad_support`).

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::time::Duration;

use nomad_support::{FakeConsul, Nomad, wait_for};
use serde_json::{Value, json};

const SEC: u64 = 1_000_000_000;

/// The repository's job with one allocation of one group whose task exits
/// with status 3 at once, no restarts, and `policy` as its reschedule policy.
async fn failing_job(nomad: &Nomad, policy: Value) -> Value {
    let mut job = nomad.parse_job_file().await;
    job["TaskGroups"][0]["Count"] = json!(1);
    job["TaskGroups"][1]["Count"] = json!(0);
    let task = &mut job["TaskGroups"][0]["Tasks"][0];
    task["Config"] = json!({"command": "sh", "args": ["-c", "exit 3"]});
    task["RestartPolicy"] =
        json!({"Attempts": 0, "Interval": 60 * SEC, "Delay": 0, "Mode": "fail"});
    job["TaskGroups"][0]["RestartPolicy"] = task["RestartPolicy"].clone();
    job["TaskGroups"][0]["ReschedulePolicy"] = policy;
    job
}

async fn allocs(nomad: &Nomad) -> Vec<Value> {
    let (st, v) = nomad.get("/v1/job/hello-service/allocations").await;
    assert_eq!(st, 200, "{v}");
    v.as_array().unwrap().clone()
}

async fn alloc(nomad: &Nomad, id: &str) -> Value {
    let (st, v) = nomad.get(&format!("/v1/allocation/{id}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits for a failed allocation of group `blue` not yet replaced.
async fn wait_failed(nomad: &Nomad, not: &[String]) -> Value {
    wait_for(Duration::from_secs(20), || async {
        allocs(nomad).await.into_iter().find(|a| {
            a["TaskGroup"] == "blue"
                && a["ClientStatus"] == "failed"
                && !not.contains(&a["ID"].as_str().unwrap().to_string())
        })
    })
    .await
    .expect("no allocation failed")
}

/// Waits for the allocation that replaces `prev`.
async fn wait_replacement(nomad: &Nomad, prev: &str, within: Duration) -> Option<Value> {
    wait_for(within, || async {
        allocs(nomad)
            .await
            .into_iter()
            .find(|a| a["PreviousAllocation"] == prev)
    })
    .await
}

/// An evaluation by ID.
async fn eval(nomad: &Nomad, id: &str) -> Value {
    let (st, v) = nomad.get(&format!("/v1/evaluation/{id}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Unix nanoseconds of an RFC 3339 time as Nomad renders `WaitUntil`.
fn unix_ns(rfc3339: &Value) -> u64 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(d.as_nanos()).unwrap()
}

/// The follow-up evaluation of the failed allocation `id`, once set.
async fn wait_followup(nomad: &Nomad, id: &str) -> String {
    wait_for(Duration::from_secs(3), || async {
        let a = alloc(nomad, id).await;
        let f = a["FollowupEvalID"].as_str().unwrap().to_string();
        (!f.is_empty()).then_some(f)
    })
    .await
    .expect("the failed allocation never got a FollowupEvalID")
}

/// When the allocation's task failed for good (the "Not Restarting" event), unix ns.
fn failed_at(a: &Value) -> u64 {
    let events = a["TaskStates"]["hello"]["Events"].as_array().unwrap();
    events
        .iter()
        .rev()
        .find(|e| e["FailsTask"] == true)
        .and_then(|e| e["Time"].as_u64())
        .unwrap_or_else(|| panic!("no failing event in {a}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_allocation_is_replaced_after_the_exponential_delay_with_its_history() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let policy = json!({"Delay": 5 * SEC, "DelayFunction": "exponential", "Unlimited": true});
    nomad.register(&failing_job(&nomad, policy).await).await;

    // Canonicalized with Nomad's service defaults for what was not given.
    let (_, job) = nomad.get("/v1/job/hello-service").await;
    let p = &job["TaskGroups"][0]["ReschedulePolicy"];
    assert_eq!(p["MaxDelay"], 3600 * SEC);
    assert_eq!(p["Attempts"], 0);
    assert_eq!(p["Delay"], 5 * SEC);
    assert_eq!(p["DelayFunction"], "exponential");

    let a = wait_failed(&nomad, &[]).await;
    let a_id = a["ID"].as_str().unwrap().to_string();
    assert_eq!(a["RescheduleTracker"], Value::Null);

    // The delayed reschedule waits in a pending follow-up evaluation.
    let followup = wait_followup(&nomad, &a_id).await;
    let f = eval(&nomad, &followup).await;
    assert_eq!(f["Status"], "pending", "{f}");
    assert_eq!(f["TriggeredBy"], "alloc-reschedule");
    assert_eq!(f["StatusDescription"], "created for delayed rescheduling");
    assert_eq!(f["JobID"], "hello-service");
    assert_eq!(f["Type"], "service");
    let a = alloc(&nomad, &a_id).await;
    // The reschedule time: the allocation's last event (its task's
    // `FinishedAt`) plus the delay.
    let wait_until = unix_ns(&f["WaitUntil"]);
    let finished = unix_ns(&a["TaskStates"]["hello"]["FinishedAt"]);
    assert_eq!(wait_until, finished + 5 * SEC, "{f}");
    let failure = eval(&nomad, f["PreviousEval"].as_str().unwrap()).await;
    assert_eq!(failure["TriggeredBy"], "alloc-failure");
    assert_eq!(failure["Status"], "complete");
    assert_eq!(failure["NextEval"], followup);
    // Listed as pending with the job's evaluations and with all of them.
    for path in ["/v1/evaluations", "/v1/job/hello-service/evaluations"] {
        let (st, list) = nomad.get(path).await;
        assert_eq!(st, 200, "{list}");
        let listed = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["ID"] == followup)
            .unwrap_or_else(|| panic!("{path} lacks the follow-up evaluation: {list}"));
        assert_eq!(listed["Status"], "pending");
        assert_eq!(listed["WaitUntil"], f["WaitUntil"]);
    }

    let b = wait_replacement(&nomad, &a_id, Duration::from_secs(15))
        .await
        .expect("the failed allocation was never replaced");
    let b_id = b["ID"].as_str().unwrap().to_string();
    // Not before the delay (5 s, Nomad's minimum) after the failure, placed
    // by the follow-up evaluation, which is now complete.
    let a = alloc(&nomad, &a_id).await;
    assert!(b["CreateTime"].as_u64().unwrap() >= failed_at(&a) + 5 * SEC);
    assert!(b["CreateTime"].as_u64().unwrap() >= wait_until);
    assert_eq!(b["EvalID"], followup);
    assert_eq!(a["FollowupEvalID"], followup);
    let f = eval(&nomad, &followup).await;
    assert_eq!(f["Status"], "complete", "{f}");
    assert!(f["ModifyIndex"].as_u64().unwrap() > f["CreateIndex"].as_u64().unwrap());
    assert_eq!(a["NextAllocation"], b_id);
    assert_eq!(a["DesiredStatus"], "stop");
    assert_eq!(
        a["DesiredDescription"],
        "alloc was rescheduled because it failed"
    );
    assert_eq!(b["Name"], a["Name"]);
    let events = b["RescheduleTracker"]["Events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["PrevAllocID"], a_id);
    assert_eq!(events[0]["PrevNodeID"], a["NodeID"]);
    assert_eq!(events[0]["Delay"], 5 * SEC);

    // The replacement fails too: the next delay doubles (10 s).
    let b = wait_failed(&nomad, std::slice::from_ref(&a_id)).await;
    assert_eq!(b["ID"], b_id);
    let c = wait_replacement(&nomad, &b_id, Duration::from_secs(20))
        .await
        .expect("the second failure was never replaced");
    let b = alloc(&nomad, &b_id).await;
    assert!(c["CreateTime"].as_u64().unwrap() >= failed_at(&b) + 10 * SEC);
    let second = b["FollowupEvalID"].as_str().unwrap();
    assert_ne!(
        second, followup,
        "each delayed reschedule has its own evaluation"
    );
    assert_eq!(c["EvalID"], second);
    let f2 = eval(&nomad, second).await;
    assert_eq!(f2["Status"], "complete");
    assert_eq!(
        unix_ns(&f2["WaitUntil"]),
        unix_ns(&b["TaskStates"]["hello"]["FinishedAt"]) + 10 * SEC
    );
    let events = c["RescheduleTracker"]["Events"].as_array().unwrap();
    let delays: Vec<u64> = events
        .iter()
        .map(|e| e["Delay"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, vec![5 * SEC, 10 * SEC]);
    assert_eq!(events[1]["PrevAllocID"], b_id);
    nomad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_within_interval_limit_reschedules() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let policy = json!({
        "Attempts": 1, "Interval": 3600 * SEC, "Delay": 5 * SEC,
        "DelayFunction": "constant", "Unlimited": false
    });
    nomad.register(&failing_job(&nomad, policy).await).await;
    let a = wait_failed(&nomad, &[]).await;
    let a_id = a["ID"].as_str().unwrap().to_string();
    let b = wait_replacement(&nomad, &a_id, Duration::from_secs(15))
        .await
        .expect("the first failure was never replaced");
    let b_id = b["ID"].as_str().unwrap().to_string();
    wait_failed(&nomad, std::slice::from_ref(&a_id)).await;
    // One attempt in the interval is used: the second failure stays, for
    // well past the 5 s delay.
    assert!(
        wait_replacement(&nomad, &b_id, Duration::from_secs(7))
            .await
            .is_none(),
        "rescheduled beyond the policy's attempts"
    );
    let b = alloc(&nomad, &b_id).await;
    assert_eq!(b["ClientStatus"], "failed");
    assert_eq!(b["DesiredStatus"], "run");
    assert_eq!(b["NextAllocation"], "");
    // Not eligible: no follow-up evaluation.
    assert_eq!(b["FollowupEvalID"], "");
    nomad.shutdown().await;
}

/// A policy Nomad's validation refuses is refused, with Nomad's texts, and
/// nothing is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_policy_nomad_refuses_is_refused() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let policy = json!({"Delay": SEC, "DelayFunction": "linear", "Unlimited": true});
    let job = failing_job(&nomad, policy).await;
    let (st, text) = nomad
        .send(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(json!({ "Job": job })),
        )
        .await;
    assert_eq!(st, 500, "{text}");
    assert!(
        text.contains("Task group blue validation failed: Delay cannot be less than 5s (got 1s)"),
        "{text}"
    );
    assert!(
        text.contains(r#"Invalid delay function "linear", must be one of ["constant" "exponential" "fibonacci"]"#),
        "{text}"
    );
    let (st, _) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(st, 404);
    nomad.shutdown().await;
}

/// Batch (and system) jobs are not run by the dev Nomad: registering one is
/// refused with a 400 naming the job type, and a type Nomad does not know
/// gets Nomad's validation error; nothing is registered either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_types_other_than_service_are_refused() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let mut job = failing_job(&nomad, Value::Null).await;
    for (kind, status, text) in [
        (
            "batch",
            400,
            r#"job uses settings the dev Nomad does not model: job: type "batch" (the dev stack runs service jobs only)"#,
        ),
        (
            "sysbatch",
            400,
            r#"job uses settings the dev Nomad does not model: job: type "sysbatch" (the dev stack runs service jobs only)"#,
        ),
        (
            "cron",
            500,
            "1 error occurred:\n\t* Invalid job type: \"cron\"\n",
        ),
    ] {
        job["Type"] = json!(kind);
        let (st, body) = nomad
            .send(
                reqwest::Method::POST,
                "/v1/jobs",
                Some(json!({ "Job": job })),
            )
            .await;
        assert_eq!((st, body.as_str()), (status, text), "{kind}");
    }
    let (st, _) = nomad.get("/v1/job/hello-service").await;
    assert_eq!(st, 404);
    nomad.shutdown().await;
}
