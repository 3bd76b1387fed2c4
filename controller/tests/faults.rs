//! Nomad faults during a deploy, on the dev stack (dev Consul, dev Nomad running real
//! `hello-service` processes, a switchyard proxy discovering through the dev Consul).
//!
//! The controller reaches Nomad through [`support::Gate`], a TCP relay that can be switched
//! off: while it is down, connects are refused and open connections are cut, exactly what a
//! Nomad agent whose HTTP listener went away looks like, while the allocations keep running
//! (the dev Nomad itself keeps scheduling and health-checking them). Every case asserts the
//! same contract:
//!
//! - the job ends at a version the error or outcome names (deployed or reverted);
//! - the active colour is untouched: its allocation IDs are unchanged and it answered every
//!   request made through the proxy during the deploy;
//! - a failure comes back as one clear error;
//! - the backup of the job taken before the register is on disk.
//!
//! Prerequisite: `cargo build -p hello-service` (looked up in `<workspace>/target/debug`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Load, Stack, alloc_ids, failing_health_args, set_task_args, version_served};
use switchyard_controller::{Controller, ControllerError};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::nomad::Job;

/// The pause between two requests of the users' load loop.
const USERS_PAUSE: Duration = Duration::from_millis(20);

/// The gated stack with the demo job, `green_args` replacing the green task's arguments when
/// given, once blue serves v1.
async fn start(name: &str, green_args: Option<serde_json::Value>) -> Stack {
    let stack = Stack::start_gated(name, |job| {
        if let Some(args) = green_args {
            set_task_args(job, "green", args);
        }
    })
    .await;
    stack.wait_serving("blue", "v1").await;
    stack
}

impl Stack {
    /// A controller that reaches Nomad through the gate.
    fn gated_controller(&self, deadline: Duration) -> Controller {
        let mut s = self.settings();
        s.deadline = deadline;
        s.http_timeout = Duration::from_secs(1);
        Controller::new(s).unwrap()
    }

    /// IDs of the running allocations of `group`.
    async fn allocs(&self, group: &str) -> Vec<String> {
        let (allocs, _) = self
            .nomad
            .job_allocations("hello-service", false, &QueryOptions::default())
            .await
            .unwrap();
        alloc_ids(&allocs, group)
    }

    /// Waits until the job's version is `v` (the deploy registered).
    async fn wait_job_version(&self, v: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.job().await.version() < v {
            assert!(Instant::now() < deadline, "job never reached version {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn backups(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state_dir.join("backups"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// Users hitting the proxy during the deploy: every answer must come from the active colour.
fn users(stack: &Stack) -> Load {
    Load::start(&stack.proxy_url, USERS_PAUSE)
}

/// Stops the users and asserts that every request was answered, by blue v1.
async fn assert_users_served_by_blue(users: Load) {
    let (answers, failed, versions) = users.finish().await;
    assert_eq!(failed, 0, "requests failed during the deploy");
    assert_eq!(
        versions,
        vec!["v1".to_owned()],
        "answers not from blue v1: {versions:?}"
    );
    assert!(answers > 10, "too few requests: {answers}");
}

/// Asserts the invariants every case shares.
async fn assert_active_untouched(stack: &Stack, blue_before: &[String]) {
    assert_eq!(
        stack.allocs("blue").await,
        blue_before,
        "blue allocations changed"
    );
    let job = stack.job().await;
    assert_eq!(job.group_meta("blue", "version"), Some("v1"));
    assert_eq!(
        version_served(&stack.proxy_url).await.as_deref(),
        Some("v1")
    );
    let backups = stack.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup: Job = serde_json::from_slice(&std::fs::read(&backups[0]).unwrap()).unwrap();
    assert_eq!(backup.group_meta("green", "version"), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_down_for_a_while_mid_deploy_then_back_the_deploy_completes() {
    let mut stack = start("blip", None).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = users(&stack);
    let c = stack.gated_controller(Duration::from_secs(60));
    let deploy = tokio::spawn(async move { c.deploy("v3").await });
    stack.wait_job_version(before + 1).await;
    stack.gate().down().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.gate().up().await;
    let outcome = deploy.await.unwrap().unwrap();
    assert_users_served_by_blue(users).await;
    assert_eq!(outcome.job_version, before + 1);
    assert_eq!(outcome.version, "v3");
    let job = stack.job().await;
    assert_eq!(job.version(), before + 1, "deployed, nothing reverted");
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert!(Path::new(&outcome.backup).exists());
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_down_until_the_deadline_fails_clearly_and_leaves_the_deployed_version() {
    let mut stack = start("down", None).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = users(&stack);
    let c = stack.gated_controller(Duration::from_secs(8));
    let deploy = tokio::spawn(async move { c.deploy("v3").await });
    stack.wait_job_version(before + 1).await;
    stack.gate().down().await;
    let err = deploy.await.unwrap().unwrap_err();
    assert_users_served_by_blue(users).await;
    let msg = err.to_string();
    println!("error: {msg}");
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert_eq!(err.exit_code(), 1);
    assert!(msg.contains("Nomad API was unreachable"), "{msg}");
    assert!(
        msg.contains(&format!(
            "reverting job hello-service to version {before} FAILED"
        )),
        "{msg}"
    );
    assert!(msg.contains("restore it from the backup"), "{msg}");
    let backups = stack.backups();
    assert!(msg.contains(&backups[0].display().to_string()), "{msg}");
    // Nothing could be undone: the job is at the deployed version, as the message says.
    let job = stack.job().await;
    assert_eq!(job.version(), before + 1);
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_never_healthy_are_reverted_and_the_active_colour_is_untouched() {
    let stack = start("unhealthy", Some(failing_health_args())).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = users(&stack);
    let err = stack
        .gated_controller(Duration::from_secs(6))
        .deploy("v3")
        .await
        .unwrap_err();
    assert_users_served_by_blue(users).await;
    let msg = err.to_string();
    println!("error: {msg}");
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert!(msg.contains("never healthy"), "{msg}");
    assert!(
        msg.contains(&format!("reverted to version {before}")),
        "{msg}"
    );
    let job = stack.job().await;
    assert_eq!(
        job.version(),
        before + 2,
        "deploy, then revert as a new version"
    );
    assert_eq!(job.group_meta("green", "version"), Some("v2"));
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_changed_concurrently_during_the_deploy_is_not_overwritten_by_the_revert() {
    let stack = start("concurrent", Some(failing_health_args())).await;
    let before = stack.job().await.version();
    let blue = stack.allocs("blue").await;
    let users = users(&stack);
    let c = stack.gated_controller(Duration::from_secs(6));
    let deploy = tokio::spawn(async move { c.deploy("v3").await });
    stack.wait_job_version(before + 1).await;
    // Another operator changes the job (an in-place change) while the deploy waits.
    let mut job = stack.job().await;
    job.0["Priority"] = json!(70);
    stack
        .nomad
        .register(&job, Some(job.job_modify_index()))
        .await
        .unwrap();
    let err = deploy.await.unwrap().unwrap_err();
    assert_users_served_by_blue(users).await;
    let msg = err.to_string();
    println!("error: {msg}");
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert!(msg.contains("never healthy"), "{msg}");
    // The revert is check-and-set against the version the deploy made, so the other
    // operator's change wins and the error says what to do.
    assert!(
        msg.contains(&format!(
            "reverting job hello-service to version {before} FAILED"
        )),
        "{msg}"
    );
    assert!(msg.contains("restore it from the backup"), "{msg}");
    let job = stack.job().await;
    assert_eq!(
        job.version(),
        before + 2,
        "the concurrent change is the current version"
    );
    assert_eq!(job.0["Priority"], json!(70));
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert_active_untouched(&stack, &blue).await;
    stack.shutdown().await;
}
