//! Allocation runner and the local process driver (`raw_exec` semantics).
//!
//! One runner task per allocation owns its lifecycle, like a Nomad client's
//! alloc runner:
//! 1. register the allocation's services in Consul (before the tasks start,
//!    as Nomad does for group services), with `${NOMAD_…}` interpolated;
//! 2. start every task as a child process in its own process group, with the
//!    `NOMAD_*` environment, working directory `<alloc root>/<alloc id>/` and
//!    stdout/stderr written there; supervise it under the restart policy;
//! 3. on an in-place update, re-register the services with the new tags/meta
//!    without touching the processes;
//! 4. on stop: deregister first, wait `shutdown_delay` (so proxies watching
//!    `?passing` drop the instance before it goes away), SIGTERM the process
//!    group, SIGKILL after `kill_timeout`.
//!
//! Every live child PID is recorded in `Inner::procs` (and in the task record
//! file, see `leftovers`), the single place the shutdown path, a restart and
//! tests consult to prove nothing is left behind.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Inner;
use super::consul::{Registration, registration, service_owner};
use super::spec::{GroupSpec, TaskSpec};
use super::state::{Alloc, TaskEvent, TaskState};

/// Commands from the scheduler to a running allocation.
#[derive(Debug)]
pub(crate) enum RunnerCmd {
    /// The allocation moved to a new job version in place: refresh services.
    Update,
    /// Stop the allocation (deregister, shutdown delay, kill).
    Stop,
}

/// Handle kept by `Inner::runners` for each live allocation.
#[derive(Debug)]
pub(crate) struct RunnerHandle {
    pub(crate) tx: mpsc::UnboundedSender<RunnerCmd>,
    pub(crate) join: JoinHandle<()>,
}

/// Starts the runner of an allocation already present in the store.
pub(crate) fn start(inner: Arc<Inner>, alloc_id: String) -> RunnerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let join = tokio::spawn(run(inner, alloc_id, rx));
    RunnerHandle { tx, join }
}

/// Everything a runner needs from the store, read once per (re)configuration.
struct AllocView {
    job: Arc<Value>,
    spec: GroupSpec,
    env: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
    /// A canary registers its services with the `canary_tags`.
    canary: bool,
}

fn view(inner: &Inner, alloc_id: &str) -> Option<AllocView> {
    inner.read(|s| {
        let a = s.allocs.get(alloc_id)?;
        let spec = GroupSpec::from_job(&a.job, &a.group)?;
        let env = base_env(inner, a, &spec);
        Some(AllocView {
            job: a.job.clone(),
            spec,
            env,
            ports: a.ports.clone(),
            canary: a.canary,
        })
    })
}

/// The `NOMAD_*` variables of an allocation (task-specific ones are added per task).
fn base_env(inner: &Inner, a: &Alloc, spec: &GroupSpec) -> BTreeMap<String, String> {
    let ip = inner.cfg.bind_ip.to_string();
    let mut env = BTreeMap::new();
    for (label, host) in &a.ports {
        let to = a.port_to.get(label).copied().unwrap_or(0);
        let port = if to != 0 { to } else { *host };
        env.insert(format!("NOMAD_PORT_{label}"), port.to_string());
        env.insert(format!("NOMAD_HOST_PORT_{label}"), host.to_string());
        env.insert(format!("NOMAD_IP_{label}"), ip.clone());
        env.insert(format!("NOMAD_HOST_IP_{label}"), ip.clone());
        env.insert(format!("NOMAD_ADDR_{label}"), format!("{ip}:{host}"));
        env.insert(format!("NOMAD_HOST_ADDR_{label}"), format!("{ip}:{host}"));
    }
    env.insert("NOMAD_ALLOC_ID".into(), a.id.clone());
    env.insert(
        "NOMAD_SHORT_ALLOC_ID".into(),
        a.id.chars().take(8).collect(),
    );
    env.insert("NOMAD_ALLOC_NAME".into(), a.name.clone());
    env.insert("NOMAD_ALLOC_INDEX".into(), a.index.to_string());
    env.insert("NOMAD_JOB_NAME".into(), a.job_id.clone());
    env.insert("NOMAD_JOB_ID".into(), a.job_id.clone());
    env.insert("NOMAD_GROUP_NAME".into(), a.group.clone());
    env.insert("NOMAD_NAMESPACE".into(), a.namespace.clone());
    env.insert("NOMAD_DC".into(), inner.cfg.datacenter.clone());
    env.insert("NOMAD_REGION".into(), inner.cfg.region.clone());
    let dir = inner.alloc_root.join(&a.id);
    env.insert("NOMAD_ALLOC_DIR".into(), dir.display().to_string());
    add_meta(&mut env, &spec.meta);
    env
}

fn add_meta(env: &mut BTreeMap<String, String>, meta: &BTreeMap<String, String>) {
    for (k, v) in meta {
        env.insert(format!("NOMAD_META_{k}"), v.clone());
        env.insert(format!("NOMAD_META_{}", k.to_ascii_uppercase()), v.clone());
    }
}

/// Replaces `${NAME}` with `env[NAME]`; unknown references are kept verbatim.
pub(crate) fn interpolate(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        match after.find('}') {
            Some(end) => {
                let key = after[..end].trim();
                let key = key.strip_prefix("env.").unwrap_or(key);
                match env.get(key) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("${");
                        out.push_str(&after[..end]);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[pos..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn registrations(inner: &Inner, alloc_id: &str, v: &AllocView) -> Vec<Registration> {
    let ip = inner.cfg.bind_ip.to_string();
    v.spec
        .services
        .iter()
        .filter(|s| s.provider != "nomad")
        .map(|svc| {
            let mut env = v.env.clone();
            if let Some(t) = &svc.task {
                env.insert("NOMAD_TASK_NAME".into(), t.clone());
            }
            let owner = service_owner(&v.spec.name, svc);
            let interp = |s: &str| interpolate(s, &env);
            registration(alloc_id, &owner, svc, &ip, &v.ports, v.canary, &interp)
        })
        .collect()
}

async fn register_all(inner: &Inner, regs: &[Registration]) {
    for reg in regs {
        // A Consul agent that is still starting should not lose the registration.
        let mut delay = Duration::from_millis(100);
        for attempt in 0..5 {
            match inner.consul.register(reg).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(service_id = %reg.id, attempt, error = %err, "consul registration failed");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

async fn deregister_all(inner: &Inner, ids: &[String]) {
    for id in ids {
        if let Err(err) = inner.consul.deregister(id).await {
            tracing::warn!(service_id = %id, error = %err, "consul deregistration failed");
        }
    }
}

fn ids_of(regs: &[Registration]) -> Vec<String> {
    regs.iter().map(|r| r.id.clone()).collect()
}

/// Applies `f` to the allocation and bumps the allocation table index.
pub(crate) fn update_alloc(inner: &Inner, alloc_id: &str, f: impl FnOnce(&mut Alloc)) {
    inner.mutate(|s| {
        let i = s.touch_allocs();
        if let Some(a) = s.allocs.get_mut(alloc_id) {
            f(a);
            a.modify_index = i;
            a.modify_time = SystemTime::now();
        }
    });
}

fn update_task(inner: &Inner, alloc_id: &str, task: &str, f: impl FnOnce(&mut TaskState)) {
    update_alloc(inner, alloc_id, |a| {
        let t = a
            .task_states
            .entry(task.to_string())
            .or_insert_with(TaskState::new);
        f(t);
        if a.client_status == "complete" || a.client_status == "failed" {
            return;
        }
        let any_failed = a.task_states.values().any(|t| t.failed);
        let all_running = a.task_states.values().all(|t| t.state == "running");
        let all_dead = a.task_states.values().all(|t| t.state == "dead");
        (a.client_status, a.client_description) = if any_failed {
            ("failed".into(), "Failed tasks".into())
        } else if all_running {
            ("running".into(), "Tasks are running".into())
        } else if all_dead {
            ("complete".into(), "All tasks have completed".into())
        } else {
            ("pending".into(), "No tasks have started".into())
        };
    });
}

async fn run(inner: Arc<Inner>, alloc_id: String, mut rx: mpsc::UnboundedReceiver<RunnerCmd>) {
    let Some(mut v) = view(&inner, &alloc_id) else {
        return;
    };
    let dir = inner.alloc_root.join(&alloc_id);
    if let Err(err) = std::fs::create_dir_all(&dir) {
        tracing::error!(alloc_id, error = %err, "cannot create allocation directory");
    }
    let mut regs = registrations(&inner, &alloc_id, &v);
    register_all(&inner, &regs).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<bool>();
    let mut supervisors = Vec::new();
    for task in v.spec.tasks.clone() {
        let mut env = v.env.clone();
        env.insert("NOMAD_TASK_NAME".into(), task.name.clone());
        env.insert("NOMAD_TASK_DIR".into(), dir.display().to_string());
        add_meta(&mut env, &task.meta);
        supervisors.push(tokio::spawn(supervise(
            inner.clone(),
            alloc_id.clone(),
            task,
            env,
            dir.clone(),
            stop_rx.clone(),
            exit_tx.clone(),
        )));
    }
    drop(exit_tx);
    let mut failed = false;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(RunnerCmd::Update) => {
                    let Some(nv) = view(&inner, &alloc_id) else { continue };
                    v = nv;
                    if failed {
                        continue;
                    }
                    let new_regs = registrations(&inner, &alloc_id, &v);
                    let gone: Vec<String> = regs
                        .iter()
                        .filter(|r| !new_regs.iter().any(|n| n.id == r.id))
                        .map(|r| r.id.clone())
                        .collect();
                    deregister_all(&inner, &gone).await;
                    // Like Nomad's service sync: only what changed is sent again.
                    let changed: Vec<Registration> = new_regs
                        .iter()
                        .filter(|n| !regs.iter().any(|r| r.id == n.id && r.body == n.body))
                        .cloned()
                        .collect();
                    register_all(&inner, &changed).await;
                    regs = new_regs;
                    tracing::info!(alloc_id, version = ?v.job.get("Version"), "allocation updated in place");
                }
                Some(RunnerCmd::Stop) | None => break,
            },
            exit = exit_rx.recv(), if !failed => match exit {
                Some(true) => {
                    // A task failed beyond its restart policy: the allocation is failed
                    // and must not receive traffic any more.
                    failed = true;
                    deregister_all(&inner, &ids_of(&regs)).await;
                    regs.clear();
                    let _ = stop_tx.send(true);
                    super::sched::reschedule_later(&inner, &alloc_id);
                }
                Some(false) => {}
                None => {
                    failed = true;
                }
            },
        }
    }
    // Stop: deregister, shutdown delay, then signal the tasks.
    let had_services = !regs.is_empty();
    deregister_all(&inner, &ids_of(&regs)).await;
    let any_running = inner.read(|s| {
        s.allocs
            .get(&alloc_id)
            .is_some_and(|a| a.task_states.values().any(|t| t.state == "running"))
    });
    if had_services && any_running && !v.spec.shutdown_delay.is_zero() {
        tokio::time::sleep(v.spec.shutdown_delay).await;
    }
    let _ = stop_tx.send(true);
    for s in supervisors {
        let _ = s.await;
    }
    update_alloc(&inner, &alloc_id, |a| {
        if a.client_status != "failed" {
            a.client_status = "complete".into();
            a.client_description = "All tasks have completed".into();
        }
    });
    inner.lock_runners().remove(&alloc_id);
    tracing::info!(alloc_id, "allocation stopped");
}

/// Resolves a `raw_exec` command: absolute/relative paths as given, bare
/// names through `extra_path` then `PATH`.
fn resolve_command(cmd: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn task_path(extra: &[PathBuf]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let all: Vec<PathBuf> = extra
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .collect();
    std::env::join_paths(all)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn spawn_task(
    inner: &Inner,
    task: &TaskSpec,
    env: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<tokio::process::Child, String> {
    if task.driver != "raw_exec" {
        return Err(format!(
            "driver {:?} is not available on the dev stack: only \"raw_exec\" runs local processes",
            task.driver
        ));
    }
    let cmd = task
        .config
        .get("command")
        .and_then(Value::as_str)
        .ok_or("raw_exec config needs a \"command\"")?;
    let cmd = interpolate(cmd, env);
    let args: Vec<String> = match task.config.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => interpolate(s, env),
                other => other.to_string(),
            })
            .collect(),
        Some(_) => return Err("raw_exec \"args\" must be a list".into()),
    };
    let program = resolve_command(&cmd, &inner.cfg.extra_path)
        .ok_or_else(|| format!("command {cmd:?} not found in PATH"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .map_err(|e| format!("opening {name}: {e}"))
    };
    let stdout = open(&format!("{}.stdout", task.name))?;
    let stderr = open(&format!("{}.stderr", task.name))?;
    let launcher = inner
        .cfg
        .task_launcher
        .as_deref()
        .and_then(<[_]>::split_first);
    let mut command = match launcher {
        Some((launcher, prefix)) => {
            let mut c = tokio::process::Command::new(launcher);
            c.args(prefix)
                .args(super::leftovers::launcher_args(&program, &args));
            c
        }
        _ => {
            let mut c = tokio::process::Command::new(&program);
            c.args(&args);
            c
        }
    };
    command
        .current_dir(dir)
        .env("PATH", task_path(&inner.cfg.extra_path))
        .envs(env)
        .envs(task.env.iter().map(|(k, v)| (k, interpolate(v, env))))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", program.display()))
}

fn signal_group(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), sig);
    }
}

/// SIGTERM, then SIGKILL after `kill_timeout`; reaps the child.
async fn kill_child(child: &mut tokio::process::Child, pid: u32, kill_timeout: Duration) {
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(kill_timeout, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(pid, "task ignored SIGTERM; sending SIGKILL");
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Anything the task left in its process group goes too.
    signal_group(pid, Signal::SIGKILL);
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs one task until stopped, restarting it per its restart policy.
/// Sends `true` on `exits` when the task failed for good.
async fn supervise(
    inner: Arc<Inner>,
    alloc_id: String,
    task: TaskSpec,
    env: BTreeMap<String, String>,
    dir: PathBuf,
    mut stop: watch::Receiver<bool>,
    exits: mpsc::UnboundedSender<bool>,
) {
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let name = task.name.clone();
    update_task(&inner, &alloc_id, &name, |t| {
        t.events
            .push(TaskEvent::new("Task Setup", "Building Task Directory"));
    });
    loop {
        if *stop.borrow() {
            break;
        }
        match spawn_task(&inner, &task, &env, &dir) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                inner.track(pid, format!("{alloc_id}/{name}"));
                update_task(&inner, &alloc_id, &name, |t| {
                    t.state = "running".into();
                    t.started_at = Some(SystemTime::now());
                    t.finished_at = None;
                    t.events
                        .push(TaskEvent::new("Started", "Task started by client"));
                });
                tracing::info!(alloc_id, task = %name, pid, "task started");
                let status = tokio::select! {
                    st = child.wait() => Some(st),
                    () = stopped(&mut stop) => None,
                };
                let Some(status) = status else {
                    kill_child(&mut child, pid, task.kill_timeout).await;
                    inner.untrack(pid);
                    update_task(&inner, &alloc_id, &name, |t| {
                        t.state = "dead".into();
                        t.finished_at = Some(SystemTime::now());
                        t.events
                            .push(TaskEvent::new("Killed", "Task successfully killed"));
                    });
                    return;
                };
                signal_group(pid, Signal::SIGKILL);
                inner.untrack(pid);
                let (code, signal) = match &status {
                    Ok(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        (
                            i64::from(st.code().unwrap_or(-1)),
                            i64::from(st.signal().unwrap_or(0)),
                        )
                    }
                    Err(_) => (-1, 0),
                };
                tracing::warn!(alloc_id, task = %name, pid, code, signal, "task exited");
                update_task(&inner, &alloc_id, &name, |t| {
                    t.state = "pending".into();
                    let mut ev = TaskEvent::new("Terminated", &format!("Exit Code: {code}"));
                    ev.exit_code = code;
                    ev.signal = signal;
                    t.events.push(ev);
                });
            }
            Err(msg) => {
                tracing::error!(alloc_id, task = %name, error = %msg, "task could not start");
                update_task(&inner, &alloc_id, &name, |t| {
                    let mut ev = TaskEvent::new("Driver Failure", &msg);
                    ev.driver_error = msg.clone();
                    t.events.push(ev);
                });
                if task.driver != "raw_exec" {
                    fail_task(&inner, &alloc_id, &name, &msg);
                    let _ = exits.send(true);
                    return;
                }
            }
        }
        // Restart policy: `attempts` restarts within `interval`, `delay` apart.
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > task.restart.interval)
        {
            recent.pop_front();
        }
        let wait = if (recent.len() as u64) < u64::from(task.restart.attempts) {
            recent.push_back(now);
            update_task(&inner, &alloc_id, &name, |t| {
                t.restarts += 1;
                t.last_restart = Some(SystemTime::now());
                t.events.push(TaskEvent::new(
                    "Restarting",
                    "Task restarting in the configured delay",
                ));
            });
            task.restart.delay
        } else if task.restart.mode_delay {
            let oldest = recent.front().copied().unwrap_or(now);
            recent.clear();
            update_task(&inner, &alloc_id, &name, |t| {
                t.events.push(TaskEvent::new(
                    "Restarting",
                    "Exceeded allowed attempts, applying a delay",
                ));
            });
            (oldest + task.restart.interval).saturating_duration_since(now) + task.restart.delay
        } else {
            fail_task(
                &inner,
                &alloc_id,
                &name,
                "Exceeded allowed attempts in interval and policy mode is \"fail\"",
            );
            let _ = exits.send(true);
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopped(&mut stop) => break,
        }
    }
    update_task(&inner, &alloc_id, &name, |t| {
        t.state = "dead".into();
        t.finished_at = Some(SystemTime::now());
    });
}

fn fail_task(inner: &Inner, alloc_id: &str, task: &str, msg: &str) {
    update_task(inner, alloc_id, task, |t| {
        t.state = "dead".into();
        t.failed = true;
        t.finished_at = Some(SystemTime::now());
        let mut ev = TaskEvent::new("Not Restarting", msg);
        ev.fails_task = true;
        t.events.push(ev);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_keeps_unknown_references() {
        let env = BTreeMap::from([
            ("NOMAD_PORT_http".to_string(), "2000".to_string()),
            ("NOMAD_META_version".to_string(), "v2".to_string()),
        ]);
        assert_eq!(interpolate("${NOMAD_PORT_http}", &env), "2000");
        assert_eq!(
            interpolate("version=${NOMAD_META_version}!", &env),
            "version=v2!"
        );
        assert_eq!(
            interpolate("${attr.x} ${NOMAD_META_version}", &env),
            "${attr.x} v2"
        );
        assert_eq!(interpolate("${unterminated", &env), "${unterminated");
    }
}
