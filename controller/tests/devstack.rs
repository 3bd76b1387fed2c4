//! The controller against the dev stack: a dev Consul, a dev Nomad running real
//! `hello-service` processes, and a switchyard proxy discovering through the dev Consul, all
//! on 127.0.0.1 ephemeral ports.
//!
//! Prerequisite: `cargo build -p hello-service` (the binary is looked up in
//! `<workspace>/target/debug`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Load, Stack, alloc_ids, failing_health_args, set_task_args, version_served};
use switchyard_controller::Refusal;
use switchyard_controller::deploy::plan_deploy;
use switchyard_controller::{Controller, ControllerError};

/// The pause between two requests of the load loop.
const LOAD_PAUSE: Duration = Duration::from_millis(5);

impl Stack {
    /// Waits until Consul shows `n` passing instances per colour (and every registered proxy
    /// passing) and the proxy serves `active`.
    async fn wait_ready(&self, active: &str, active_version: &str) {
        let c = self.controller();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let obs = c.observe().await;
            // Every registered proxy passes too: a switch refuses otherwise.
            let ok = obs.passing_count(0) >= 1
                && obs.passing_count(1) >= 1
                && obs.proxies.iter().all(|p| p.not_passing().is_none())
                && matches!(&obs.proxies[0].status, Ok(Some(p)) if p.active_colour == active);
            let served = version_served(&self.proxy_url).await;
            if ok && served.as_deref() == Some(active_version) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stack not ready: {:?} / {:?} / served {served:?}",
                obs.instances,
                obs.proxies
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_under_load_then_switch_status_diagnose_and_rollback() {
    let stack = Stack::start("roundtrip", |_| {}).await;
    stack.wait_ready("blue", "v1").await;
    let c = stack.controller();
    let blue_before = alloc_ids(&c.observe().await.nomad.unwrap().allocations, "blue");
    assert_eq!(blue_before.len(), 1);

    // Deploy v3 to the standby (green) while users hit the active colour.
    let load = Load::start(&stack.proxy_url, LOAD_PAUSE);
    let outcome = c.deploy("v3").await.unwrap();
    let (ok, failed, versions) = load.finish().await;
    assert_eq!(failed, 0, "requests failed during the deploy");
    assert!(ok > 10, "too few requests: {ok}");
    assert_eq!(
        versions,
        vec!["v1".to_owned()],
        "only the active colour serves"
    );
    assert_eq!(outcome.colour, "green");
    assert_eq!(outcome.version, "v3");
    assert_eq!(outcome.previous_version.as_deref(), Some("v2"));
    assert!(Path::new(&outcome.backup).exists());
    let backup: Value = serde_json::from_slice(&std::fs::read(&outcome.backup).unwrap()).unwrap();
    assert_eq!(backup["TaskGroups"][1]["Meta"]["version"], "v2");
    let job = stack.job().await;
    assert_eq!(job.group_meta("green", "version"), Some("v3"));
    assert_eq!(job.group_meta("blue", "version"), Some("v1"));
    let blue_after = alloc_ids(&c.observe().await.nomad.unwrap().allocations, "blue");
    assert_eq!(blue_before, blue_after, "the active group was not touched");

    // status --json, field by field.
    let status: Value =
        serde_json::from_str(&switchyard_controller::to_json(&c.status().await)).unwrap();
    assert_eq!(status["service"], "hello-service");
    assert_eq!(status["active"], "blue");
    assert_eq!(status["decided_by"], "tags");
    assert_eq!(status["route"], Value::Null);
    assert_eq!(status["colours"][0]["colour"], "blue");
    assert_eq!(status["colours"][0]["role"], "active");
    assert_eq!(status["colours"][0]["version"], "v1");
    assert_eq!(status["colours"][1]["role"], "standby");
    assert_eq!(status["colours"][1]["group_version"], "v3");
    assert_eq!(status["colours"][1]["passing"], 1);
    let inst = &status["colours"][1]["instances"][0];
    assert_eq!(inst["health"], "passing");
    assert_eq!(inst["version_tag"], "v3");
    assert_eq!(inst["reported_version"], "v3");
    assert!(inst["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(status["proxies"][0]["url"], stack.admin_url.as_str());
    assert_eq!(status["proxies"][0]["active"], "blue");
    assert_eq!(status["proxies"][0]["fail_static"], false);
    assert_eq!(status["errors"], json!([]));

    // Switch: the route key is written and the proxy serves v3.
    let load = Load::start(&stack.proxy_url, LOAD_PAUSE);
    let sw = c.switch(false, None).await.unwrap();
    assert_eq!(
        (sw.plan.from.as_str(), sw.plan.to.as_str()),
        ("blue", "green")
    );
    assert_eq!(sw.plan.generation, 1);
    assert_eq!(sw.proxies_confirmed, vec![stack.admin_url.clone()]);
    assert!(sw.tags_updated);
    assert!(sw.cutover_ms < 10_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, failed, _) = load.finish().await;
    assert_eq!(failed, 0, "requests failed during the switch");
    assert_eq!(
        version_served(&stack.proxy_url).await.as_deref(),
        Some("v3")
    );
    let job = stack.job().await;
    assert!(
        job.group_service_tags("green", "hello-service")
            .unwrap()
            .contains(&"active".to_owned())
    );
    assert!(
        job.group_service_tags("blue", "hello-service")
            .unwrap()
            .contains(&"standby".to_owned())
    );

    // diagnose --json: consistent state once the in-place tag update reaches Consul.
    let deadline = Instant::now() + Duration::from_secs(20);
    let diag = loop {
        let d: Value =
            serde_json::from_str(&switchyard_controller::to_json(&c.diagnose().await)).unwrap();
        if d["errors"] == 0 && !d.to_string().contains("role-tags-disagree") {
            break d;
        }
        assert!(Instant::now() < deadline, "diagnose never clean: {d:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(diag["service"], "hello-service");
    let backups = diag["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "backups")
        .unwrap();
    assert_eq!(backups["severity"], "info");
    assert!(
        backups["message"]
            .as_str()
            .unwrap()
            .starts_with("1 job backup(s)")
    );
    // Green (the deployed colour) is active: nothing to put back on the standby, so the hint
    // lists the backups rather than re-submitting a whole old job.
    let next = backups["next"].as_str().unwrap();
    assert!(
        next.starts_with("ls -l ") && next.contains("backups"),
        "{next}"
    );

    // Rollback: blue (still v1) is active again.
    let rb = c.rollback().await.unwrap();
    assert_eq!(
        (rb.plan.from.as_str(), rb.plan.to.as_str()),
        ("green", "blue")
    );
    assert_eq!(rb.plan.generation, 2);
    // Green is the standby again and runs v3: the backup hint puts back what the deploy
    // replaced, on the standby only.
    let diag = c.diagnose().await;
    let backups = diag.findings.iter().find(|f| f.code == "backups").unwrap();
    assert!(
        backups
            .next
            .starts_with("switchyard deploy v2 --service hello-service  #"),
        "{}",
        backups.next
    );
    assert_eq!(
        version_served(&stack.proxy_url).await.as_deref(),
        Some("v1")
    );
    // The history in Consul records the deploy, the switch and the rollback, in order.
    let consul = switchyard_hashi::consul::ConsulClient::new(c.settings().consul.clone()).unwrap();
    let (history, _) = switchyard_controller::history::read(&consul, "hello-service")
        .await
        .unwrap();
    let summary: Vec<(&str, &str, &str, &str)> = history
        .entries
        .iter()
        .map(|e| {
            (
                e.command.as_str(),
                e.from.as_str(),
                e.to.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("deploy", "green", "green", "ok"),
            ("switch", "blue", "green", "ok"),
            ("rollback", "green", "blue", "ok"),
        ]
    );
    assert_eq!(history.entries[0].revert_to_job_version, Some(0));
    assert_eq!(history.entries[2].from_version.as_deref(), Some("v3"));
    assert_eq!(history.entries[2].generation, 2);

    // A second rollback changes nothing and succeeds, saying so.
    let again = c.rollback().await.unwrap();
    assert!(
        again
            .unchanged
            .as_deref()
            .unwrap()
            .contains("already a rollback"),
        "{again:?}"
    );
    assert_eq!(c.observe().await.route_value().unwrap().generation, 2);

    // switch --to: the first moves traffic, the second (and one to the active colour) does
    // nothing and succeeds.
    let to_blue = c.switch(false, Some("blue")).await.unwrap();
    assert!(to_blue.unchanged.is_some(), "{to_blue:?}");
    let first = c.switch(false, Some("green")).await.unwrap();
    assert_eq!(first.unchanged, None);
    assert_eq!(first.plan.generation, 3);
    let second = c.switch(false, Some("GREEN")).await.unwrap();
    assert!(
        second
            .unchanged
            .as_deref()
            .unwrap()
            .contains("already serves green"),
        "{second:?}"
    );
    assert_eq!(c.observe().await.route_value().unwrap().generation, 3);
    let (history, _) = switchyard_controller::history::read(&consul, "hello-service")
        .await
        .unwrap();
    assert_eq!(history.entries.len(), 4, "{history:?}");
    assert!(matches!(
        c.switch(false, Some("purple")).await.unwrap_err(),
        ControllerError::Refused(Refusal::UnknownColour { .. })
    ));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_answering_the_wrong_version_is_reverted() {
    // The green task is told to report a version other than its tag.
    let stack = Stack::start("wrong", |job| {
        set_task_args(
            job,
            "green",
            json!(["--port", "${NOMAD_PORT_http}", "--version", "imposter"]),
        );
    })
    .await;
    stack.wait_ready("blue", "v1").await;
    let c = stack.controller();
    let before = stack.job().await.version();
    let err = c.deploy("v3").await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 1);
    assert!(matches!(err, ControllerError::Failed(_)), "{msg}");
    assert!(msg.contains("answered version \"imposter\""), "{msg}");
    assert!(
        msg.contains(&format!("reverted to version {before}")),
        "{msg}"
    );
    let job = stack.job().await;
    assert_eq!(job.group_meta("green", "version"), Some("v2"));
    assert_eq!(job.version(), before + 2, "deploy + revert");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_healthy_deploy_is_reverted_and_switch_is_refused() {
    let stack = Stack::start("unhealthy", |job| {
        set_task_args(job, "green", failing_health_args());
    })
    .await;
    let c = stack.controller();
    // Blue serves; green never passes.
    stack.wait_serving("blue", "v1").await;
    let r = c.switch(false, None).await.unwrap_err();
    assert!(
        matches!(&r, ControllerError::Refused(Refusal::StandbyUnhealthy { colour }) if colour == "green"),
        "{r}"
    );
    assert_eq!(r.exit_code(), 1);
    let obs = c.observe().await;
    assert!(
        matches!(obs.route, Ok(None)),
        "a refused switch writes nothing"
    );

    let mut settings = stack.settings();
    settings.deadline = Duration::from_secs(6);
    let short = Controller::new(settings).unwrap();
    let before = stack.job().await.version();
    let err = short.deploy("v3").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("never healthy"), "{msg}");
    assert!(
        msg.contains(&format!("reverted to version {before}")),
        "{msg}"
    );
    let job = stack.job().await;
    assert_eq!(job.group_meta("green", "version"), Some("v2"));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_one_wins_the_other_fails_cleanly() {
    let stack = Stack::start("concurrent", |_| {}).await;
    stack.wait_ready("blue", "v1").await;
    let c = stack.controller();
    // Both plans come from the same observation, as two operators reading at once would.
    let obs = c.observe().await;
    let p3 = plan_deploy(&obs, "v3").unwrap();
    let p4 = plan_deploy(&obs, "v4").unwrap();
    let (a, b) = tokio::join!(
        c.execute_deploy(p3, Instant::now()),
        c.execute_deploy(p4, Instant::now())
    );
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (a, b) => panic!("expected exactly one winner: {a:?} / {b:?}"),
    };
    assert!(matches!(loser, ControllerError::Conflict(_)), "{loser}");
    assert!(loser.to_string().contains("nothing was changed"), "{loser}");
    let job = stack.job().await;
    assert_eq!(
        job.group_meta("green", "version"),
        Some(winner.version.as_str())
    );
    stack.shutdown().await;
}
