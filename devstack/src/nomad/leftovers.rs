//! Tasks never outlive their dev Nomad, and a restart starts clean.
//!
//! A real Nomad client re-attaches to its running tasks after a restart and
//! never reports a task it no longer knows. The dev Nomad keeps no
//! allocations across restarts (it re-places them from the persisted jobs),
//! so the equivalent here is: tasks die with the process that started them,
//! and on start whatever an earlier run left is stopped and its Consul
//! registrations removed before anything new is placed.
//!
//! Three mechanisms, each covering what the one before it cannot:
//! 1. The launcher ([`exec_task`]): with [`NomadConfig::task_launcher`] set,
//!    every task is started through a small program (in `switchyard`, a
//!    hidden subcommand) that asks the kernel to SIGKILL it when its parent
//!    dies (`PR_SET_PDEATHSIG`, kept across `execve`), checks the parent is
//!    still the one that started it, then executes the task in place (same
//!    PID, same process group). Even `kill -9` of the dev stack takes its
//!    tasks along.
//! 2. The task record: every live task process group is written, with the
//!    process's start time, to a JSON file ([`NomadConfig::task_record`]).
//!    On start, [`reap`] kills the groups it lists that are still the same
//!    processes (a PID reused by something else is left alone).
//! 3. The service sweep: like a Nomad client's Consul sync, which removes
//!    `_nomad-`-prefixed services it does not own, [`reap`] deregisters every
//!    `_nomad-task-` service on the agent before the restored allocations
//!    register theirs, so Consul never lists an instance of a dead run.
//!
//! [`NomadConfig::task_launcher`]: super::NomadConfig::task_launcher
//! [`NomadConfig::task_record`]: super::NomadConfig::task_record

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::Inner;

/// Prefix of the service IDs the dev Nomad registers for allocations.
const TASK_SERVICE_PREFIX: &str = "_nomad-task-";

/// One task process group, as the record file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// PID of the task, which is also its process group ID.
    pid: u32,
    /// Start time of the process (`/proc/<pid>/stat`, clock ticks since
    /// boot): tells the task apart from a later process with the same PID.
    start: u64,
    /// `alloc_id/task`.
    task: String,
}

/// The start time of a live (non-zombie) process, from `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state is field 3 of stat(5), starttime field 22.
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Inner {
    /// Records a task process that just started.
    pub(crate) fn track(&self, pid: u32, task: String) {
        self.lock_procs().insert(pid, task);
        self.write_record();
    }

    /// Forgets a task process that has exited (or been killed).
    pub(crate) fn untrack(&self, pid: u32) {
        self.lock_procs().remove(&pid);
        self.write_record();
    }

    /// Rewrites the record file (temporary file, then rename) from `procs`.
    fn write_record(&self) {
        let Some(path) = &self.task_record else {
            return;
        };
        let _guard = super::relock(&self.record_lock);
        let entries: Vec<Entry> = self
            .lock_procs()
            .iter()
            .filter_map(|(pid, task)| {
                Some(Entry {
                    pid: *pid,
                    start: start_time(*pid)?,
                    task: task.clone(),
                })
            })
            .collect();
        if let Err(err) = write_atomically(path, &entries) {
            tracing::warn!(path = %path.display(), error = %err, "cannot write the task record");
        }
    }
}

fn write_atomically(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(entries).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Before serving: stops the task process groups an earlier run recorded and
/// that still run, then removes every allocation service registration left
/// on the Consul agent.
pub(crate) async fn reap(inner: &Inner) {
    if let Some(path) = &inner.task_record {
        kill_recorded(path).await;
    }
    sweep_services(inner).await;
}

async fn kill_recorded(path: &Path) {
    let entries: Vec<Entry> = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
            tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable task record");
            Vec::new()
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read the task record");
            Vec::new()
        }
    };
    let alive: Vec<&Entry> = entries
        .iter()
        .filter(|e| start_time(e.pid) == Some(e.start))
        .collect();
    for e in &alive {
        tracing::warn!(pid = e.pid, task = %e.task, "stopping a task left running by an earlier run");
        if let Ok(raw) = i32::try_from(e.pid) {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
    // They are not our children: wait until the kernel has them gone (their
    // new parent reaps them), so their ports are free for the new tasks.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive.iter().any(|e| start_time(e.pid) == Some(e.start)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove the task record");
    }
}

/// Deregisters every `_nomad-task-` service on the agent. Called before any
/// allocation of this run registers, so each one belongs to a dead run.
async fn sweep_services(inner: &Inner) {
    // The agent may still be starting (the dev stack starts both at once).
    let mut ids = None;
    for _ in 0..30 {
        match inner.consul.service_ids().await {
            Ok(list) => {
                ids = Some(list);
                break;
            }
            Err(super::ConsulError::Transport(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the Consul agent's services");
                return;
            }
        }
    }
    let Some(ids) = ids else {
        tracing::warn!("Consul agent unreachable; stale allocation services are not removed");
        return;
    };
    for id in ids.iter().filter(|id| id.starts_with(TASK_SERVICE_PREFIX)) {
        match inner.consul.deregister(id).await {
            Ok(()) => {
                tracing::info!(service_id = %id, "removed a service registration left by an earlier run")
            }
            Err(err) => {
                tracing::warn!(service_id = %id, error = %err, "cannot remove a stale service registration")
            }
        }
    }
}

/// The task launcher: `<parent pid> <program> [args...]`. Asks the kernel to
/// SIGKILL this process when its parent dies, makes sure the parent is still
/// `<parent pid>` (it may have died before the request took effect), then
/// replaces this process with `program`. Returns only on failure.
///
/// The parent-death signal is tied to the *thread* that forked: the dev Nomad
/// starts tasks from its runtime's worker threads, which live as long as the
/// runtime, never from short-lived blocking-pool threads.
pub fn exec_task(args: Vec<OsString>) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let mut it = args.into_iter();
    let parent: Option<i32> = it.next().and_then(|p| p.to_str()?.parse().ok());
    let (Some(parent), Some(program)) = (parent, it.next()) else {
        return std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "usage: <parent pid> <program> [args...]",
        );
    };
    if let Err(errno) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return std::io::Error::from(errno);
    }
    if nix::unistd::getppid() != Pid::from_raw(parent) {
        return std::io::Error::other(format!(
            "the dev stack (pid {parent}) is gone; not starting {}",
            program.to_string_lossy()
        ));
    }
    std::process::Command::new(&program).args(it).exec()
}

/// The launcher's arguments for one task, after the configured prefix.
pub(crate) fn launcher_args(program: &Path, args: &[String]) -> Vec<OsString> {
    let mut out = vec![
        OsString::from(std::process::id().to_string()),
        program.as_os_str().to_owned(),
    ];
    out.extend(args.iter().map(OsString::from));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_stable_and_dead_pids_have_none() {
        let me = std::process::id();
        let a = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(a));
        // PID 0 never names a process in /proc.
        assert_eq!(start_time(0), None);
    }

    #[tokio::test]
    async fn reap_kills_recorded_groups_that_still_run_and_spares_reused_pids() {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-reap-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join("tasks.json");
        use std::os::unix::process::CommandExt as _;
        let mut victim = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut bystander = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let entries = vec![
            Entry {
                pid: victim.id(),
                start: start_time(victim.id()).unwrap(),
                task: "a/t".into(),
            },
            // Same PID, other start time: a different process now.
            Entry {
                pid: bystander.id(),
                start: start_time(bystander.id()).unwrap() + 1,
                task: "b/t".into(),
            },
        ];
        write_atomically(&record, &entries).unwrap();
        kill_recorded(&record).await;
        let status = victim.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9));
        assert!(bystander.try_wait().unwrap().is_none(), "bystander killed");
        assert!(!record.exists(), "record must be consumed");
        bystander.kill().unwrap();
        bystander.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn launcher_rejects_missing_arguments() {
        assert_eq!(exec_task(vec![]).kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(
            exec_task(vec!["x".into(), "true".into()]).kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}
