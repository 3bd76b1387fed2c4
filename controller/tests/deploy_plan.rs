//! `deploy` settings, Nomad's plan before the register and `--dry-run`, against the dev stack
//! (dev Consul, dev Nomad running real `hello-service` processes, a switchyard proxy).
//!
//! The dev Nomad runs `raw_exec` tasks only; Docker tasks are accepted, planned and stored
//! like on a real cluster but their allocations fail with a driver error. So `--image` is
//! checked through the plan, the dry run and the job versions Nomad keeps, not by running
//! containers.
//!
//! Prerequisite: `cargo build -p hello-service` (the binary is looked up in
//! `<workspace>/target/debug`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Stack, alloc_ids, group_mut, workspace_root};
use switchyard_controller::deploy::render_dry_run;
use switchyard_controller::deploy_settings::StandbySettings;
use switchyard_controller::{Controller, ControllerError};
use switchyard_hashi::nomad::Job;

/// Fields Nomad maintains itself; everything else is the submitted spec.
const BOOKKEEPING: &[&str] = &[
    "Version",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
    "Stable",
    "Status",
    "StatusDescription",
    "CreateIndex",
];

/// The job's spec without bookkeeping, with group `group` taken out and returned apart.
fn split(job: &Job, group: &str) -> (Value, Value) {
    let mut v = job.0.clone();
    let m = v.as_object_mut().unwrap();
    for k in BOOKKEEPING {
        m.remove(*k);
    }
    let groups = m["TaskGroups"].as_array_mut().unwrap();
    let i = groups.iter().position(|g| g["Name"] == group).unwrap();
    let g = groups.remove(i);
    (v, g)
}

/// Waits until every colour in `colours` has a passing instance in Consul.
async fn wait_passing(c: &Controller, colours: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let obs = c.observe().await;
        if colours.iter().all(|i| obs.passing_count(*i) >= 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never passing: {:?}",
            obs.instances
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn blue_allocs(c: &Controller) -> Vec<String> {
    alloc_ids(&c.observe().await.nomad.unwrap().allocations, "blue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_settings_and_the_plan_guard_on_the_raw_exec_job() {
    let stack = Stack::start("plan-raw", |_| {}).await;
    let c = stack.controller();
    wait_passing(&c, &[0, 1]).await;
    let before = stack.job().await;
    let versions_before = stack.nomad.versions("hello-service").await.unwrap().len();
    let blue = blue_allocs(&c).await;
    assert_eq!(blue.len(), 1);
    let settings = StandbySettings {
        meta: kv(&[("team", "core")]),
        env: kv(&[("LOG", "debug")]),
        image: None,
    };

    // --dry-run: Nomad's plan, shown per group; nothing is written.
    let dry = c.deploy_dry_run("v4", &settings).await.unwrap();
    assert_eq!(dry.refused, None);
    assert_eq!(dry.nomad_plan.job_modify_index, before.job_modify_index());
    let text = render_dry_run(&dry);
    for want in [
        "group blue (active): 1 in-place update",
        "group green (standby): 1 create/destroy update",
        "green.Meta[version]: \"v2\" => \"v4\"",
        "green.Meta[team]: \"\" => \"core\"",
        "green.hello.Env.LOG: \"\" => \"debug\"",
        "nothing is written",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let after_dry = stack.job().await;
    assert_eq!(
        (
            after_dry.version(),
            after_dry.job_modify_index(),
            after_dry.modify_index()
        ),
        (
            before.version(),
            before.job_modify_index(),
            before.modify_index()
        ),
        "the dry run wrote to the job"
    );
    assert_eq!(
        stack.nomad.versions("hello-service").await.unwrap().len(),
        versions_before
    );

    // --image on a raw_exec task: bad input, exit 2, nothing written.
    let image = StandbySettings {
        image: Some("hello-service:v4".into()),
        ..StandbySettings::default()
    };
    let e = c.deploy_with("v4", &image).await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("\"raw_exec\" driver"), "{e}");
    assert_eq!(stack.job().await.version(), before.version());

    // A job edited by hand in a field the groups share (job-level meta reaches every task):
    // registering it would replace the active group, so the plan is refused with exit 4,
    // nothing is registered and blue keeps its allocation.
    let mut edited = before.clone();
    edited.0["Meta"] = json!({"owner": "ops"});
    let e = c.plan_guarded(&edited, "blue").await.unwrap_err();
    assert!(matches!(e, ControllerError::PlanRefused(_)), "{e}");
    assert_eq!(e.exit_code(), 4);
    let msg = e.to_string();
    assert!(
        msg.contains("active group blue (1 create/destroy update)"),
        "{msg}"
    );
    // The offending field is named (`Meta[owner]` or `Meta.owner`, as the diff nests it).
    assert!(
        msg.contains("job.Meta") && msg.contains("owner") && msg.contains("\"\" => \"ops\""),
        "{msg}"
    );
    let now = stack.job().await;
    assert_eq!(
        (now.version(), now.job_modify_index()),
        (before.version(), before.job_modify_index())
    );
    assert_eq!(
        blue_allocs(&c).await,
        blue,
        "the active allocation was replaced"
    );

    // The deploy itself: exactly the standby's version, meta and env change.
    let outcome = c.deploy_with("v4", &settings).await.unwrap();
    assert_eq!(
        (outcome.colour.as_str(), outcome.version.as_str()),
        ("green", "v4")
    );
    let after = stack.job().await;
    assert_eq!(after.version(), before.version() + 1);
    let (rest_before, mut green_expected) = split(&before, "green");
    let (rest_after, green_after) = split(&after, "green");
    assert_eq!(rest_after, rest_before, "something outside green changed");
    green_expected["Meta"] = json!({"version": "v4", "team": "core"});
    green_expected["Tasks"][0]["Env"] = json!({"LOG": "debug"});
    assert_eq!(green_after, green_expected);
    assert_eq!(
        blue_allocs(&c).await,
        blue,
        "the active allocation was replaced"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_job_file_the_version_picks_the_image_and_image_sets_it() {
    // The standby group runs the Docker job file's task; blue keeps raw_exec so the active
    // colour really serves.
    let hcl =
        std::fs::read_to_string(workspace_root().join("config/hello-service.docker.nomad.hcl"))
            .unwrap();
    let docker = switchyard_jobspec::parse_job(&hcl, None).unwrap();
    let green = docker["TaskGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["Name"] == "green")
        .unwrap()
        .clone();
    assert_eq!(green["Tasks"][0]["Driver"], "docker");
    assert_eq!(
        green["Tasks"][0]["Config"]["image"],
        "hello-service:${NOMAD_META_version}"
    );
    let tasks = green["Tasks"].clone();
    let stack = Stack::start("plan-docker", move |job| {
        group_mut(job, "green")["Tasks"] = tasks;
    })
    .await;
    let c = stack.controller();
    wait_passing(&c, &[0]).await;
    let blue = blue_allocs(&c).await;

    // The plan of `deploy v4` shows the v4 image for the standby's task.
    let dry = c
        .deploy_dry_run("v4", &StandbySettings::default())
        .await
        .unwrap();
    assert_eq!(dry.refused, None);
    assert_eq!(
        dry.images,
        vec![(
            "hello".to_owned(),
            "hello-service:v2".to_owned(),
            "hello-service:v4".to_owned()
        )]
    );
    let text = render_dry_run(&dry);
    assert!(
        text.contains("image of green.hello: hello-service:v2 => hello-service:v4"),
        "{text}"
    );
    assert!(
        text.contains("group blue (active): 1 in-place update"),
        "{text}"
    );

    // The image comes from the version here, so --image is refused (exit 2).
    let image = StandbySettings {
        env: kv(&[("LOG", "debug")]),
        image: Some("registry.example.com/hello-service:v9".into()),
        ..StandbySettings::default()
    };
    let e = c.deploy_with("v4", &image).await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("derives its image"), "{e}");

    // A job whose image is fixed: --image sets it.
    let mut fixed = stack.job().await;
    group_mut(&mut fixed, "green")["Tasks"][0]["Config"]["image"] = json!("hello-service:v2");
    stack.nomad.register(&fixed, None).await.unwrap();
    let before = stack.job().await;
    let dry = c.deploy_dry_run("v4", &image).await.unwrap();
    let text = render_dry_run(&dry);
    assert!(
        text.contains(
            "green.hello.Config.image: \"hello-service:v2\" => \"registry.example.com/hello-service:v9\""
        ),
        "{text}"
    );
    assert_eq!(stack.job().await.version(), before.version());

    // The deploy registers exactly those fields; the dev stack cannot start Docker tasks,
    // so the deploy then fails and reverts. Nomad's version history shows what was registered.
    let mut settings = stack.settings();
    settings.deadline = Duration::from_secs(3);
    let short = Controller::new(settings).unwrap();
    let e = short.deploy_with("v4", &image).await.unwrap_err();
    assert!(matches!(e, ControllerError::Failed(_)), "{e}");
    let versions = stack.nomad.versions("hello-service").await.unwrap();
    let registered = versions
        .iter()
        .find(|v| v.version() == before.version() + 1)
        .unwrap();
    let (rest_before, mut green_expected) = split(&before, "green");
    let (rest_after, green_after) = split(registered, "green");
    assert_eq!(rest_after, rest_before, "something outside green changed");
    green_expected["Meta"]["version"] = json!("v4");
    green_expected["Tasks"][0]["Env"] = json!({"LOG": "debug"});
    green_expected["Tasks"][0]["Config"]["image"] = json!("registry.example.com/hello-service:v9");
    assert_eq!(green_after, green_expected);
    assert_eq!(
        blue_allocs(&c).await,
        blue,
        "the active allocation was replaced"
    );
    stack.shutdown().await;
}
