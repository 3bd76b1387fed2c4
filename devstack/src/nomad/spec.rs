//! Job specifications: defaults (`Canonicalize`), the typed view the scheduler
//! and driver work from, and the destructive/in-place comparison.
//!
//! Jobs are stored as the API's JSON so that fields the dev stack does not
//! interpret still round-trip to clients unchanged. The typed [`GroupSpec`] is
//! read from that JSON defensively: a malformed field falls back to Nomad's
//! default rather than failing the whole server.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::util::{arr_field, ns_field, str_field};

const SEC: u64 = 1_000_000_000;

/// Fields the server owns: they never make two specs different.
const SERVER_FIELDS: &[&str] = &[
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
];

fn set_default(obj: &mut Map<String, Value>, key: &str, v: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), v);
        }
        Some(_) => {}
    }
}

fn default_update() -> Value {
    json!({
        "Stagger": 30 * SEC, "MaxParallel": 1, "HealthCheck": "checks",
        "MinHealthyTime": 10 * SEC, "HealthyDeadline": 300 * SEC,
        "ProgressDeadline": 600 * SEC, "AutoRevert": false, "AutoPromote": false, "Canary": 0
    })
}

/// Fills the defaults Nomad's API canonicalisation fills (`hashi/tests/fixtures/README.md` §N5 for the
/// update block), so stored jobs and `jobs/parse?Canonicalize` agree.
pub(crate) fn canonicalize(job: &mut Value) {
    let Some(j) = job.as_object_mut() else { return };
    let id = j.get("ID").cloned().unwrap_or(Value::Null);
    set_default(j, "Name", id);
    for (k, v) in [
        ("Region", json!("global")),
        ("Namespace", json!("default")),
        ("Type", json!("service")),
        ("Priority", json!(50)),
        ("AllAtOnce", json!(false)),
        ("NodePool", json!("default")),
        ("ParentID", json!("")),
        ("Dispatched", json!(false)),
        ("Stop", json!(false)),
        ("Stable", json!(false)),
        ("Status", json!("")),
        ("StatusDescription", json!("")),
        ("Version", json!(0)),
        ("CreateIndex", json!(0)),
        ("ModifyIndex", json!(0)),
        ("JobModifyIndex", json!(0)),
    ] {
        set_default(j, k, v);
    }
    for k in [
        "Constraints",
        "Affinities",
        "Spreads",
        "Meta",
        "Periodic",
        "ParameterizedJob",
        "Payload",
        "Multiregion",
        "Reschedule",
        "Migrate",
        "SubmitTime",
    ] {
        j.entry(k.to_string()).or_insert(Value::Null);
    }
    match j.get("Datacenters") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        _ => {
            j.insert("Datacenters".into(), json!(["*"]));
        }
    }
    let is_service = j.get("Type").and_then(Value::as_str) == Some("service");
    let job_update = j.get("Update").filter(|u| u.is_object()).cloned();
    let job_reschedule = j.get("Reschedule").filter(|u| u.is_object()).cloned();
    if let Some(u) = j.get_mut("Update").and_then(Value::as_object_mut) {
        set_default(u, "Stagger", json!(30 * SEC));
        set_default(u, "MaxParallel", json!(1));
        set_default(u, "HealthCheck", json!(""));
        for k in [
            "MinHealthyTime",
            "HealthyDeadline",
            "ProgressDeadline",
            "Canary",
        ] {
            set_default(u, k, json!(0));
        }
        set_default(u, "AutoRevert", json!(false));
        set_default(u, "AutoPromote", json!(false));
    }
    let Some(groups) = j.get_mut("TaskGroups").and_then(Value::as_array_mut) else {
        return;
    };
    for g in groups.iter_mut() {
        let Some(g) = g.as_object_mut() else { continue };
        set_default(g, "Count", json!(1));
        for k in [
            "Constraints",
            "Affinities",
            "Spreads",
            "Meta",
            "Services",
            "Volumes",
            "Scaling",
            "ShutdownDelay",
            "Networks",
        ] {
            g.entry(k.to_string()).or_insert(Value::Null);
        }
        set_default(
            g,
            "EphemeralDisk",
            json!({"Sticky": false, "Migrate": false, "SizeMB": 300}),
        );
        let restart_default = if is_service {
            json!({"Attempts": 2, "Interval": 1800 * SEC, "Delay": 15 * SEC, "Mode": "fail"})
        } else {
            json!({"Attempts": 3, "Interval": 86400 * SEC, "Delay": 15 * SEC, "Mode": "fail"})
        };
        let mut restart = restart_default.clone();
        if let (Some(r), Some(given)) = (
            restart.as_object_mut(),
            g.get("RestartPolicy").and_then(Value::as_object),
        ) {
            for (k, v) in given {
                if !v.is_null() {
                    r.insert(k.clone(), v.clone());
                }
            }
        }
        g.insert("RestartPolicy".into(), restart.clone());
        // Job-level update merged under the group's; the group wins.
        if is_service {
            let mut update = default_update();
            if let Some(u) = update.as_object_mut() {
                for src in [job_update.as_ref(), g.get("Update")].into_iter().flatten() {
                    if let Some(src) = src.as_object() {
                        for (k, v) in src {
                            let zero_dur = matches!(
                                k.as_str(),
                                "MinHealthyTime"
                                    | "HealthyDeadline"
                                    | "ProgressDeadline"
                                    | "Stagger"
                            ) && v.as_u64() == Some(0);
                            let empty = v.as_str() == Some("");
                            if !v.is_null() && !zero_dur && !empty {
                                u.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
            g.insert("Update".into(), update);
            // Reschedule policy: Nomad's service default, then the job's
            // `reschedule`, then the group's.
            let mut resched = super::resched::default_service_policy();
            if let Some(r) = resched.as_object_mut() {
                for src in [job_reschedule.as_ref(), g.get("ReschedulePolicy")]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                {
                    for (k, v) in src {
                        if !v.is_null() {
                            r.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            g.insert("ReschedulePolicy".into(), resched);
        }
        if let Some(nets) = g.get_mut("Networks").and_then(Value::as_array_mut) {
            for n in nets.iter_mut().filter_map(Value::as_object_mut) {
                for (k, v) in [
                    ("Mode", json!("host")),
                    ("Device", json!("")),
                    ("CIDR", json!("")),
                    ("IP", json!("")),
                    ("MBits", json!(0)),
                ] {
                    set_default(n, k, v);
                }
                n.entry("DNS".to_string()).or_insert(Value::Null);
                n.entry("ReservedPorts".to_string()).or_insert(Value::Null);
                n.entry("DynamicPorts".to_string()).or_insert(Value::Null);
                for key in ["DynamicPorts", "ReservedPorts"] {
                    if let Some(ports) = n.get_mut(key).and_then(Value::as_array_mut) {
                        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                            set_default(p, "Value", json!(0));
                            set_default(p, "To", json!(0));
                            set_default(p, "HostNetwork", json!("default"));
                        }
                    }
                }
            }
        }
        if let Some(svcs) = g.get_mut("Services").and_then(Value::as_array_mut) {
            canonicalize_services(svcs);
        }
        if let Some(tasks) = g.get_mut("Tasks").and_then(Value::as_array_mut) {
            for t in tasks.iter_mut().filter_map(Value::as_object_mut) {
                for (k, v) in [
                    ("User", json!("")),
                    ("KillTimeout", json!(5 * SEC)),
                    ("KillSignal", json!("")),
                    ("Leader", json!(false)),
                    ("ShutdownDelay", json!(0)),
                    ("Kind", json!("")),
                    (
                        "LogConfig",
                        json!({"Disabled": false, "MaxFiles": 10, "MaxFileSizeMB": 10}),
                    ),
                ] {
                    set_default(t, k, v);
                }
                for k in [
                    "Config",
                    "Env",
                    "Meta",
                    "Services",
                    "Constraints",
                    "Affinities",
                    "Artifacts",
                    "Templates",
                    "Vault",
                    "VolumeMounts",
                    "Lifecycle",
                    "DispatchPayload",
                ] {
                    t.entry(k.to_string()).or_insert(Value::Null);
                }
                let mut res = json!({"CPU": 100, "Cores": 0, "MemoryMB": 300, "MemoryMaxMB": 0, "DiskMB": 0, "IOPS": 0, "Networks": null, "Devices": null});
                if let (Some(r), Some(given)) = (
                    res.as_object_mut(),
                    t.get("Resources").and_then(Value::as_object),
                ) {
                    for (k, v) in given {
                        if !v.is_null() {
                            r.insert(k.clone(), v.clone());
                        }
                    }
                }
                t.insert("Resources".into(), res);
                set_default(t, "RestartPolicy", restart.clone());
                if let Some(svcs) = t.get_mut("Services").and_then(Value::as_array_mut) {
                    canonicalize_services(svcs);
                }
            }
        }
    }
}

fn canonicalize_services(svcs: &mut [Value]) {
    for s in svcs.iter_mut().filter_map(Value::as_object_mut) {
        for (k, v) in [
            ("Provider", json!("consul")),
            ("AddressMode", json!("auto")),
            ("OnUpdate", json!("require_healthy")),
            ("PortLabel", json!("")),
            ("Address", json!("")),
            ("TaskName", json!("")),
            ("EnableTagOverride", json!(false)),
        ] {
            set_default(s, k, v);
        }
        for k in [
            "Tags",
            "CanaryTags",
            "Meta",
            "CanaryMeta",
            "Checks",
            "Connect",
            "TaggedAddresses",
        ] {
            s.entry(k.to_string()).or_insert(Value::Null);
        }
        if let Some(checks) = s.get_mut("Checks").and_then(Value::as_array_mut) {
            for c in checks.iter_mut().filter_map(Value::as_object_mut) {
                for (k, v) in [
                    ("Name", json!("")),
                    ("Path", json!("")),
                    ("Protocol", json!("")),
                    ("Method", json!("")),
                    ("PortLabel", json!("")),
                    ("InitialStatus", json!("")),
                    ("OnUpdate", json!("require_healthy")),
                    ("Timeout", json!(0)),
                    ("Interval", json!(0)),
                ] {
                    set_default(c, k, v);
                }
            }
        }
    }
}

/// A job spec with the server-owned fields removed, for "did the spec change".
pub(crate) fn spec_only(job: &Value) -> Value {
    let mut j = job.clone();
    if let Some(o) = j.as_object_mut() {
        for k in SERVER_FIELDS {
            o.remove(*k);
        }
    }
    j
}

/// One check of a service, durations resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckSpec {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) path: String,
    pub(crate) protocol: String,
    pub(crate) method: String,
    pub(crate) port_label: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) header: Value,
    /// `initial_status`: the status Consul gives the check until it first runs.
    pub(crate) initial_status: String,
}

/// One `service` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceSpec {
    pub(crate) name: String,
    pub(crate) port_label: String,
    pub(crate) tags: Vec<String>,
    pub(crate) canary_tags: Vec<String>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) checks: Vec<CheckSpec>,
    pub(crate) provider: String,
    /// `Some(task)` for task-level services.
    pub(crate) task: Option<String>,
}

/// Restart policy (digest: attempts within interval, delay between, mode).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RestartSpec {
    pub(crate) attempts: u32,
    pub(crate) interval: Duration,
    pub(crate) delay: Duration,
    pub(crate) mode_delay: bool,
}

/// Group update strategy as the deployment watcher needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpdateSpec {
    pub(crate) max_parallel: u64,
    pub(crate) health_check: String,
    pub(crate) min_healthy_time: Duration,
    pub(crate) healthy_deadline: Duration,
    pub(crate) progress_deadline: Duration,
    pub(crate) auto_revert: bool,
    pub(crate) auto_promote: bool,
    pub(crate) canary: u64,
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskSpec {
    pub(crate) name: String,
    pub(crate) driver: String,
    pub(crate) config: Value,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) kill_timeout: Duration,
    pub(crate) restart: RestartSpec,
}

/// A dynamic or static port of the group network.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PortSpec {
    pub(crate) label: String,
    pub(crate) static_value: Option<u16>,
    pub(crate) to: u16,
}

/// The typed view of one task group of a (canonical) job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupSpec {
    pub(crate) name: String,
    pub(crate) count: u32,
    /// Job meta overlaid with group meta (task meta is per task).
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) ports: Vec<PortSpec>,
    pub(crate) services: Vec<ServiceSpec>,
    pub(crate) update: Option<UpdateSpec>,
    pub(crate) shutdown_delay: Duration,
    pub(crate) tasks: Vec<TaskSpec>,
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn restart_spec(v: &Value) -> RestartSpec {
    RestartSpec {
        attempts: v
            .get("Attempts")
            .and_then(Value::as_u64)
            .map(|a| u32::try_from(a).unwrap_or(u32::MAX))
            .unwrap_or(2),
        interval: ns_field(v, "Interval", Duration::from_secs(1800)),
        delay: ns_field(v, "Delay", Duration::from_secs(15)),
        mode_delay: str_field(v, "Mode") == "delay",
    }
}

fn services(v: &Value, task: Option<&str>) -> Vec<ServiceSpec> {
    arr_field(v, "Services")
        .iter()
        .map(|s| ServiceSpec {
            name: str_field(s, "Name").to_string(),
            port_label: str_field(s, "PortLabel").to_string(),
            tags: strings(s.get("Tags")),
            canary_tags: strings(s.get("CanaryTags")),
            meta: string_map(s.get("Meta")),
            provider: str_field(s, "Provider").to_string(),
            task: task.map(str::to_string),
            checks: arr_field(s, "Checks")
                .iter()
                .map(|c| CheckSpec {
                    name: str_field(c, "Name").to_string(),
                    kind: str_field(c, "Type").to_ascii_lowercase(),
                    path: str_field(c, "Path").to_string(),
                    protocol: str_field(c, "Protocol").to_string(),
                    method: str_field(c, "Method").to_string(),
                    port_label: str_field(c, "PortLabel").to_string(),
                    interval: ns_field(c, "Interval", Duration::from_secs(10)),
                    timeout: ns_field(c, "Timeout", Duration::from_secs(2)),
                    header: c.get("Header").cloned().unwrap_or(Value::Null),
                    initial_status: str_field(c, "InitialStatus").to_string(),
                })
                .collect(),
        })
        .collect()
}

impl GroupSpec {
    /// Reads group `name` of a canonical job; `None` if absent.
    pub(crate) fn from_job(job: &Value, name: &str) -> Option<GroupSpec> {
        let g = arr_field(job, "TaskGroups")
            .iter()
            .find(|g| str_field(g, "Name") == name)?;
        let mut meta = string_map(job.get("Meta"));
        meta.extend(string_map(g.get("Meta")));
        let mut ports = Vec::new();
        for n in arr_field(g, "Networks") {
            for (key, is_static) in [("DynamicPorts", false), ("ReservedPorts", true)] {
                for p in arr_field(n, key) {
                    let num = |k: &str| {
                        p.get(k)
                            .and_then(Value::as_u64)
                            .and_then(|v| u16::try_from(v).ok())
                            .unwrap_or(0)
                    };
                    ports.push(PortSpec {
                        label: str_field(p, "Label").to_string(),
                        static_value: is_static.then(|| num("Value")).filter(|v| *v != 0),
                        to: num("To"),
                    });
                }
            }
        }
        let group_restart = g.get("RestartPolicy").cloned().unwrap_or(Value::Null);
        let mut svcs = services(g, None);
        let tasks = arr_field(g, "Tasks")
            .iter()
            .map(|t| {
                let name = str_field(t, "Name").to_string();
                svcs.extend(services(t, Some(&name)));
                let restart = t
                    .get("RestartPolicy")
                    .filter(|r| r.is_object())
                    .unwrap_or(&group_restart);
                TaskSpec {
                    driver: str_field(t, "Driver").to_string(),
                    config: t.get("Config").cloned().unwrap_or(Value::Null),
                    env: string_map(t.get("Env")),
                    meta: string_map(t.get("Meta")),
                    kill_timeout: ns_field(t, "KillTimeout", Duration::from_secs(5)),
                    restart: restart_spec(restart),
                    name,
                }
            })
            .collect();
        let update = g
            .get("Update")
            .filter(|u| u.is_object())
            .map(|u| UpdateSpec {
                max_parallel: u.get("MaxParallel").and_then(Value::as_u64).unwrap_or(1),
                health_check: match str_field(u, "HealthCheck") {
                    "" => "checks".to_string(),
                    s => s.to_string(),
                },
                min_healthy_time: ns_field(u, "MinHealthyTime", Duration::from_secs(10)),
                healthy_deadline: ns_field(u, "HealthyDeadline", Duration::from_secs(300)),
                progress_deadline: ns_field(u, "ProgressDeadline", Duration::from_secs(600)),
                auto_revert: u
                    .get("AutoRevert")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                auto_promote: u
                    .get("AutoPromote")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                canary: u.get("Canary").and_then(Value::as_u64).unwrap_or(0),
            });
        Some(GroupSpec {
            name: name.to_string(),
            count: g
                .get("Count")
                .and_then(Value::as_u64)
                .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
                .unwrap_or(1),
            meta,
            ports,
            services: svcs,
            update,
            shutdown_delay: ns_field(g, "ShutdownDelay", Duration::ZERO),
            tasks,
        })
    }

    /// Everything whose change needs a new allocation (`hashi/tests/fixtures/README.md` §N3): tasks'
    /// driver/config/env/resources/user, the combined meta, the network.
    pub(crate) fn destructive_fingerprint(job: &Value, name: &str) -> Value {
        let Some(g) = arr_field(job, "TaskGroups")
            .iter()
            .find(|g| str_field(g, "Name") == name)
        else {
            return Value::Null;
        };
        let tasks: Vec<Value> = arr_field(g, "Tasks")
            .iter()
            .map(|t| {
                let mut meta = string_map(job.get("Meta"));
                meta.extend(string_map(g.get("Meta")));
                meta.extend(string_map(t.get("Meta")));
                json!({
                    "Name": t.get("Name"), "Driver": t.get("Driver"), "User": t.get("User"),
                    "Config": t.get("Config"), "Env": t.get("Env"), "Resources": t.get("Resources"),
                    "Meta": meta, "Artifacts": t.get("Artifacts"), "Templates": t.get("Templates"),
                    "Vault": t.get("Vault"), "VolumeMounts": t.get("VolumeMounts"),
                })
            })
            .collect();
        let nets: Vec<Value> =
            arr_field(g, "Networks")
                .iter()
                .map(|n| {
                    let ports =
                        |k: &str| -> Vec<Value> {
                            arr_field(n, k)
                        .iter()
                        .map(|p| {
                            let value = if k == "ReservedPorts" { p.get("Value") } else { None };
                            json!({"Label": p.get("Label"), "To": p.get("To"), "Value": value})
                        })
                        .collect()
                        };
                    json!({"Mode": n.get("Mode"), "MBits": n.get("MBits"),
                       "Dynamic": ports("DynamicPorts"), "Reserved": ports("ReservedPorts")})
                })
                .collect();
        json!({"Tasks": tasks, "Networks": nets, "EphemeralDisk": g.get("EphemeralDisk"), "Volumes": g.get("Volumes")})
    }
}

/// Names of the groups of a job, in order.
pub(crate) fn group_names(job: &Value) -> Vec<String> {
    arr_field(job, "TaskGroups")
        .iter()
        .map(|g| str_field(g, "Name").to_string())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job() -> Value {
        let mut j = json!({
            "ID": "j", "Meta": {"team": "a"},
            "TaskGroups": [{
                "Name": "g", "Count": 2, "Meta": {"version": "v1"},
                "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
                "Services": [{"Name": "s", "PortLabel": "http", "Tags": ["x"],
                    "Checks": [{"Type": "http", "Path": "/health", "Interval": 1_000_000_000u64}]}],
                "Update": {"MaxParallel": 2, "MinHealthyTime": 1_000_000_000u64},
                "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "x"}}]
            }]
        });
        canonicalize(&mut j);
        j
    }

    #[test]
    fn canonical_defaults_and_typed_view() {
        let j = job();
        assert_eq!(j["Region"], "global");
        assert_eq!(j["Priority"], 50);
        let g = &j["TaskGroups"][0];
        assert_eq!(g["Update"]["MaxParallel"], 2);
        assert_eq!(g["Update"]["HealthyDeadline"], 300 * SEC);
        assert_eq!(g["RestartPolicy"]["Mode"], "fail");
        assert_eq!(g["Tasks"][0]["KillTimeout"], 5 * SEC);
        let spec = GroupSpec::from_job(&j, "g").unwrap();
        assert_eq!(spec.count, 2);
        assert_eq!(spec.meta["team"], "a");
        assert_eq!(spec.meta["version"], "v1");
        assert_eq!(spec.ports[0].label, "http");
        assert_eq!(spec.services[0].checks[0].kind, "http");
        assert_eq!(
            spec.update.unwrap().min_healthy_time,
            Duration::from_secs(1)
        );
        // Canonicalising twice changes nothing.
        let mut again = j.clone();
        canonicalize(&mut again);
        assert_eq!(again, j);
    }

    #[test]
    fn tags_are_in_place_meta_is_destructive() {
        let a = job();
        let mut tags = a.clone();
        tags["TaskGroups"][0]["Services"][0]["Tags"] = json!(["y"]);
        assert_eq!(
            GroupSpec::destructive_fingerprint(&a, "g"),
            GroupSpec::destructive_fingerprint(&tags, "g")
        );
        let mut meta = a.clone();
        meta["Meta"]["team"] = json!("b");
        assert_ne!(
            GroupSpec::destructive_fingerprint(&a, "g"),
            GroupSpec::destructive_fingerprint(&meta, "g")
        );
        let mut count = a.clone();
        count["TaskGroups"][0]["Count"] = json!(3);
        assert_eq!(
            GroupSpec::destructive_fingerprint(&a, "g"),
            GroupSpec::destructive_fingerprint(&count, "g")
        );
    }
}
