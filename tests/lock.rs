//! One mutating command per service at a time, and interrupted deploys, with the real binary
//! against `switchyard dev --secure` (every address on port 0, one instance per colour, Consul
//! and Nomad over HTTPS with ACLs enforced): every command gets exactly the operator's
//! environment from `dev.env` (its tokens, the HTTPS addresses, the CA), nothing else.
//!
//! - `concurrent_commands_take_turns_and_a_killed_holders_lock_expires`: a deploy and a switch
//!   started together: exactly one changes anything, the other exits 3 naming the holder;
//!   `--lock-wait` waits for a running deploy and then succeeds; the lock of a SIGKILLed deploy
//!   refuses others until its session's TTL (`SWITCHYARD_LOCK_TTL=10s`, Consul's minimum)
//!   runs out, then a waiting switch takes it.
//! - `sigint_mid_deploy_reverts_and_a_running_nomad_deployment_blocks_the_switch`: SIGINT while
//!   a deploy waits for an instance that never becomes healthy reverts the standby group and
//!   exits 130; `status` shows the interrupted deploy with the command that finishes it; a
//!   Nomad deployment still running (a healthy instance inside its `min_healthy_time`) makes
//!   the switch pre-flight refuse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::ConsulClient;
use switchyard_hashi::nomad::NomadClient;

use crate::support::dev::{SecureDev, TempDir, history, operator_env, start_secure};

const SERVICE: &str = "hello-service";

/// The demo job with one instance per colour and a per-group `delay_ms` meta passed to the
/// demo's `--delay-ms`: a deploy with `--meta delay_ms=3000` gets an instance whose health
/// check (1 s timeout) never passes.
fn test_job(dir: &Path) -> PathBuf {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hello-service.nomad.hcl"),
    )
    .unwrap();
    let mut job = source.replace("count = 2", "count = 1");
    for v in ["v1", "v2"] {
        job = job.replacen(
            &format!("version = \"{v}\"\n"),
            &format!("version = \"{v}\"\n      delay_ms = \"0\"\n"),
            1,
        );
    }
    let args = r#""--version", "${NOMAD_META_version}"]"#;
    assert_eq!(job.matches(args).count(), 2, "the demo job's args changed");
    job = job.replace(
        args,
        r#""--version", "${NOMAD_META_version}", "--delay-ms", "${NOMAD_META_delay_ms}"]"#,
    );
    assert_eq!(job.matches("delay_ms = \"0\"").count(), 2);
    assert_eq!(job.matches("count = 1").count(), 2);
    let path = dir.join("hello-service.nomad.hcl");
    std::fs::write(&path, job).unwrap();
    path
}

/// Field order matters: the dev stack stops before its directory is removed.
struct Stack {
    _dev: SecureDev,
    tmp: TempDir,
    consul: ConsulClient,
    nomad: NomadClient,
    env: BTreeMap<String, String>,
}

/// A controller command running in the background, its output in files.
struct Run {
    child: Child,
    stderr: PathBuf,
    stdout: PathBuf,
}

impl Run {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The last line of stderr (the one-line cause of a failure).
    fn cause(&self) -> String {
        self.stderr().lines().last().unwrap_or_default().to_owned()
    }

    async fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until stderr contains `needle`, failing if the command exits first.
    async fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.stderr().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited ({status}) before printing {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} after {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Stack {
    async fn start(tag: &str) -> Stack {
        let tmp = TempDir::new(tag);
        let job = test_job(&tmp.0);
        let dev = start_secure(&tmp.0, &["--job", job.to_str().unwrap()]).await;
        // The test reads and edits with the management tokens; the commands under test get
        // the operator's environment from `dev.env` and nothing else.
        let mut env = dev.env.clone();
        env.insert("SWITCHYARD_LOCK_TTL".into(), "10s".into());
        env.insert("SWITCHYARD_LOCK_DELAY".into(), "1s".into());
        let stack = Stack {
            consul: dev.consul(Some("consul-management")),
            nomad: dev.nomad(Some("nomad-management")),
            env,
            tmp,
            _dev: dev,
        };
        stack.wait_passing().await;
        stack
    }

    /// Waits until both colours have a passing instance.
    async fn wait_passing(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (entries, _) = self
                .consul
                .health_service(
                    SERVICE,
                    &switchyard_hashi::consul::HealthQuery {
                        passing: true,
                        ..Default::default()
                    },
                    &QueryOptions::default(),
                )
                .await
                .unwrap();
            let colours = |c: &str| {
                entries
                    .iter()
                    .filter(|e| e.service.tags.iter().any(|t| t == c))
                    .count()
            };
            if colours("blue") >= 1 && colours("green") >= 1 {
                return;
            }
            assert!(Instant::now() < deadline, "instances never passed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let stderr = self.tmp.0.join(format!("{}-{n}.err", args[0]));
        let stdout = self.tmp.0.join(format!("{}-{n}.out", args[0]));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(args)
            .arg("--state-dir")
            .arg(self.tmp.0.join("state"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        operator_env(&mut cmd, &self.env);
        Run {
            child: cmd.spawn().unwrap(),
            stderr,
            stdout,
        }
    }

    async fn history(&self) -> Vec<Value> {
        history(&self.consul, SERVICE).await
    }

    async fn lock_session(&self) -> Option<String> {
        let (pair, _) = self
            .consul
            .kv_get(
                &format!("switchyard/locks/{SERVICE}"),
                &QueryOptions::default(),
            )
            .await
            .unwrap();
        pair.and_then(|p| p.session).filter(|s| !s.is_empty())
    }
}

/// The one-line refusal of a command that found the lock held by `command` in process `pid`.
fn assert_locked_by(run: &Run, status: ExitStatus, command: &str, pid: u32) {
    assert_eq!(status.code(), Some(3), "{}", run.stderr());
    let cause = run.cause();
    let expected = format!("switchyard: service {SERVICE} is locked by `{command}` (pid {pid} on ");
    assert!(
        cause.starts_with(&expected),
        "{cause:?} does not start with {expected:?}"
    );
    assert!(cause.contains(", since 20"), "{cause}");
    assert!(cause.contains("--lock-wait"), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_take_turns_and_a_killed_holders_lock_expires() {
    let stack = Stack::start("lock").await;

    // A deploy and a switch started together: one runs, the other is refused at once.
    let mut deploy = stack.run(&["deploy", "v3"]);
    let mut switch = stack.run(&["switch"]);
    let deployed = deploy.wait(Duration::from_secs(120)).await;
    let switched = switch.wait(Duration::from_secs(120)).await;
    let history = stack.history().await;
    assert_eq!(
        history.len(),
        1,
        "exactly one command changed something: {history:?}"
    );
    if deployed.code() == Some(3) {
        assert!(switched.success(), "{}", switch.stderr());
        assert_locked_by(&deploy, deployed, "switch", switch.child.id());
        assert_eq!(history[0]["command"], "switch");
    } else {
        assert!(deployed.success(), "{}", deploy.stderr());
        assert_locked_by(&switch, switched, "deploy v3", deploy.child.id());
        assert_eq!(history[0]["command"], "deploy");
    }
    assert_eq!(history[0]["outcome"], "ok");
    assert_eq!(stack.lock_session().await, None, "released on exit");

    // --lock-wait: a switch started while a deploy holds the lock waits for it, then runs.
    let mut deploy = stack.run(&["deploy", "v4"]);
    deploy
        .wait_for("deploying v4", Duration::from_secs(30))
        .await;
    let mut switch = stack.run(&["switch", "--lock-wait", "2m"]);
    let switched = switch.wait(Duration::from_secs(150)).await;
    assert!(switched.success(), "{}", switch.stderr());
    let deployed = deploy
        .child
        .try_wait()
        .unwrap()
        .expect("the switch finished while the deploy still held the lock");
    assert!(deployed.success(), "{}", deploy.stderr());
    let err = switch.stderr();
    assert!(err.contains("waiting up to"), "{err}");
    assert!(
        err.contains(&format!(
            "is locked by `deploy v4` (pid {}",
            deploy.child.id()
        )),
        "{err}"
    );
    assert!(err.contains("took the lock"), "{err}");
    assert!(
        switch.stdout().contains("now serves"),
        "{}",
        switch.stdout()
    );
    let history = stack.history().await;
    let commands: Vec<&str> = history
        .iter()
        .skip(1)
        .map(|e| e["command"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        commands,
        ["deploy", "switch"],
        "the switch ran after the deploy"
    );

    // A SIGKILLed holder cannot release: its lock refuses others until the session expires.
    let mut deploy = stack.run(&["deploy", "v5"]);
    deploy
        .wait_for("deploying v5", Duration::from_secs(30))
        .await;
    let killed_pid = deploy.child.id();
    deploy.signal("KILL");
    let killed = deploy.wait(Duration::from_secs(10)).await;
    assert_eq!(killed.code(), None, "SIGKILLed");
    let mut refused = stack.run(&["switch"]);
    let status = refused.wait(Duration::from_secs(30)).await;
    assert_locked_by(&refused, status, "deploy v5", killed_pid);
    let started = Instant::now();
    let mut switch = stack.run(&["switch", "--lock-wait", "90s"]);
    let switched = switch.wait(Duration::from_secs(150)).await;
    assert!(switched.success(), "{}", switch.stderr());
    assert!(
        switch.stderr().contains("took the lock"),
        "{}",
        switch.stderr()
    );
    // The lock outlived its holder by at least a TTL (Consul lets it live up to twice that).
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the killed holder's lock expired after only {:?}",
        started.elapsed()
    );
    assert_eq!(stack.lock_session().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_deploy_reverts_and_a_running_nomad_deployment_blocks_the_switch() {
    let stack = Stack::start("interrupt").await;
    let (job, _) = stack
        .nomad
        .job(SERVICE, &QueryOptions::default())
        .await
        .unwrap();
    let before = job.unwrap().version();

    // v3 with a 3 s delay never passes its 1 s health check: the deploy waits, then SIGINT.
    let mut deploy = stack.run(&[
        "deploy",
        "v3",
        "--meta",
        "delay_ms=3000",
        "--deadline",
        "2m",
    ]);
    deploy
        .wait_for("waiting for green", Duration::from_secs(60))
        .await;
    deploy.signal("INT");
    let status = deploy.wait(Duration::from_secs(90)).await;
    assert_eq!(status.code(), Some(130), "{}", deploy.stderr());
    let cause = deploy.cause();
    assert!(
        cause.starts_with("switchyard: deploy of v3 to green interrupted (SIGINT)"),
        "{cause}"
    );
    assert!(cause.contains("green runs v2 again"), "{cause}");

    // The standby group is back: its meta, and its running allocations on the job version
    // registered by the revert.
    let (job, _) = stack
        .nomad
        .job(SERVICE, &QueryOptions::default())
        .await
        .unwrap();
    let job = job.unwrap();
    assert_eq!(job.group_meta("green", "version"), Some("v2"));
    assert_eq!(job.group_meta("green", "delay_ms"), Some("0"));
    assert_eq!(
        job.version(),
        before + 2,
        "the deploy's register, then the revert"
    );
    let (allocs, _) = stack
        .nomad
        .job_allocations(SERVICE, false, &QueryOptions::default())
        .await
        .unwrap();
    let green: Vec<_> = allocs
        .iter()
        .filter(|a| a.task_group == "green" && a.desired_status == "run")
        .collect();
    assert_eq!(green.len(), 1, "{allocs:?}");
    assert_eq!(green[0].client_status, "running");
    assert_eq!(green[0].job_version, job.version());
    assert_eq!(stack.lock_session().await, None, "released on interrupt");

    // The history and `status` show the interrupted deploy and how to finish it.
    let history = stack.history().await;
    let last = history.last().unwrap();
    assert_eq!(last["command"], "deploy");
    assert!(
        last["outcome"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: deploy of v3 to green interrupted (SIGINT)"),
        "{last}"
    );
    let mut status = stack.run(&["status"]);
    assert!(
        status.wait(Duration::from_secs(30)).await.success(),
        "{}",
        status.stderr()
    );
    let text = status.stdout();
    assert!(
        text.contains("interrupted: deploy v3 to green at "),
        "{text}"
    );
    assert!(
        text.contains(&format!("next: switchyard deploy v3 --service {SERVICE}")),
        "{text}"
    );
    let mut json = stack.run(&["status", "--json", "--service", SERVICE]);
    assert!(json.wait(Duration::from_secs(30)).await.success());
    let doc: Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(doc["interrupted"]["entry"]["to_version"], "v3");

    // A register that Nomad is still rolling out: the new green instance passes its checks at
    // once, but the deployment waits 30 s (`min_healthy_time`) before calling it healthy. The
    // switch's pre-flight refuses and writes nothing.
    let (job, _) = stack
        .nomad
        .job(SERVICE, &QueryOptions::default())
        .await
        .unwrap();
    let mut job = job.unwrap();
    job.set_group_meta("green", "rollout", "slow").unwrap();
    let groups = job.0["TaskGroups"].as_array_mut().unwrap();
    let green = groups.iter_mut().find(|g| g["Name"] == "green").unwrap();
    green["Update"]["MinHealthyTime"] = serde_json::json!(30_000_000_000u64);
    stack.nomad.register(&job, None).await.unwrap();
    let route_key = format!("switchyard/routes/{SERVICE}");
    let (route_before, _) = stack
        .consul
        .kv_get(&route_key, &QueryOptions::default())
        .await
        .unwrap();
    // Until the new instance passes, the switch is refused for that; then for the deployment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let cause = loop {
        let mut switch = stack.run(&["switch"]);
        let status = switch.wait(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(1), "{}", switch.stderr());
        let cause = switch.cause();
        if cause.contains("Nomad deployment") || Instant::now() > deadline {
            break cause;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        cause.starts_with("switchyard: refusing to switch: Nomad deployment "),
        "{cause}"
    );
    assert!(cause.contains("is still running"), "{cause}");
    let (route_after, _) = stack
        .consul
        .kv_get(&route_key, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(
        route_before.map(|p| p.modify_index),
        route_after.map(|p| p.modify_index),
        "the refused switch wrote nothing"
    );
}
