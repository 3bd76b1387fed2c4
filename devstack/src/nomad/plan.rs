//! `POST /v1/job/:id/plan`: a dry run of a job registration.
//!
//! The scheduler itself answers: the store is cloned, the job is stored as
//! the next version and reconciled on the clone exactly as a register would,
//! and what that reconciliation did is counted per group into Nomad's
//! `Annotations.DesiredTGUpdates` (`Place`, `Stop`, `InPlaceUpdate`,
//! `DestructiveUpdate`, `Ignore`, ...). Nothing of the clone is kept.
//!
//! With `Diff: true` the reply carries a `JobDiff` in Nomad's structure
//! (job → `Fields`/`Objects`/`TaskGroups` → `Tasks`), with the annotations
//! the `nomad` CLI and the Terraform provider read: each task group's
//! `Updates` (`create`, `destroy`, `in-place update`, `create/destroy
//! update`, `ignore`), `forces create`/`forces destroy` on `Count`, and
//! `forces create` / `forces destroy` / `forces in-place update` / `forces
//! create/destroy update` on tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::sched::{check_modelled, reconcile, store_version, validate};
use super::spec::{canonicalize, group_names};
use super::util::str_field;
use super::{ApiError, Inner};

/// Per-group counts of what a registration would do (`DesiredUpdates`).
#[derive(Debug, Default, Clone, Copy)]
struct Desired {
    ignore: u64,
    place: u64,
    stop: u64,
    in_place: u64,
    destructive: u64,
    canary: u64,
}

impl Desired {
    fn to_json(self) -> Value {
        json!({
            "Ignore": self.ignore,
            "Place": self.place,
            "Migrate": 0,
            "Stop": self.stop,
            "InPlaceUpdate": self.in_place,
            "DestructiveUpdate": self.destructive,
            "Canary": self.canary,
            "Preemptions": 0,
        })
    }

    /// The `Updates` map of a task-group diff (non-zero entries only).
    fn updates(self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("ignore", self.ignore),
            ("create", self.place),
            ("destroy", self.stop),
            ("in-place update", self.in_place),
            ("create/destroy update", self.destructive),
            ("canary", self.canary),
        ] {
            if v > 0 {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

/// Runs the plan; `want_diff` fills `Diff`.
pub(crate) fn plan(inner: &Arc<Inner>, mut job: Value, want_diff: bool) -> Result<Value, ApiError> {
    canonicalize(&mut job);
    validate(&job)?;
    check_modelled(&job)?;
    let id = str_field(&job, "ID").to_owned();
    inner.read(|s| {
        let current = s.current_job(&id).cloned();
        let mut dry = s.clone();
        let mut staged = job.clone();
        store_version(&mut dry, &id, &mut staged, current.as_ref());
        let plan = reconcile(inner, &mut dry, &id, "");
        let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
        for g in group_names(&job) {
            desired.entry(g).or_default();
        }
        let group_of = |alloc: &str| {
            dry.allocs
                .get(alloc)
                .map(|a| a.group.clone())
                .unwrap_or_default()
        };
        let mut replaced = BTreeSet::new();
        for a in &plan.start {
            let Some(alloc) = dry.allocs.get(a) else {
                continue;
            };
            let d = desired.entry(alloc.group.clone()).or_default();
            if alloc.canary {
                d.canary += 1;
            } else if alloc.previous_alloc.is_empty() {
                d.place += 1;
            } else {
                d.destructive += 1;
                replaced.insert(alloc.previous_alloc.clone());
            }
        }
        for a in plan.stop.iter().filter(|a| !replaced.contains(*a)) {
            desired.entry(group_of(a)).or_default().stop += 1;
        }
        for a in &plan.update {
            desired.entry(group_of(a)).or_default().in_place += 1;
        }
        let touched: BTreeSet<&String> = plan
            .stop
            .iter()
            .chain(&plan.update)
            .chain(&replaced)
            .collect();
        for a in s.allocs.values() {
            if a.job_id == id && a.is_live() && !touched.contains(&a.id) {
                desired.entry(a.group.clone()).or_default().ignore += 1;
            }
        }
        let diff = want_diff.then(|| job_diff(current.as_ref(), &job, &desired));
        let tg: Map<String, Value> = desired
            .iter()
            .map(|(g, d)| (g.clone(), d.to_json()))
            .collect();
        Ok(json!({
            "Annotations": {"DesiredTGUpdates": tg, "PreemptedAllocs": null},
            "FailedTGAllocs": null,
            "JobModifyIndex": current
                .as_ref()
                .and_then(|c| c.get("JobModifyIndex"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            "CreatedEvals": null,
            "Diff": diff,
            "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
            "Warnings": "",
            "Index": s.index,
        }))
    })
}

/// Keys that are bookkeeping, not part of the submitted spec.
const JOB_SKIP: &[&str] = &[
    "ID",
    "TaskGroups",
    "Version",
    "Status",
    "StatusDescription",
    "Stable",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
];
/// Primitive maps Nomad flattens into `Key[name]` fields.
const FLAT_MAPS: &[&str] = &["Meta"];

fn kind(old: bool, new: bool, changed: bool) -> &'static str {
    match (old, new) {
        (false, true) => "Added",
        (true, false) => "Deleted",
        _ if changed => "Edited",
        _ => "None",
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field(name: &str, old: Option<&str>, new: Option<&str>) -> Option<Value> {
    let (o, n) = (old.unwrap_or(""), new.unwrap_or(""));
    if o == n {
        return None;
    }
    let t = kind(!o.is_empty(), !n.is_empty(), true);
    Some(json!({"Type": t, "Name": name, "Old": o, "New": n, "Annotations": null}))
}

fn singular(key: &str) -> &str {
    key.strip_suffix('s').unwrap_or(key)
}

/// Fields and nested objects of two JSON objects, Nomad-style.
fn diff_body(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    skip: &[&str],
) -> (Vec<Value>, Vec<Value>) {
    let mut fields = Vec::new();
    let mut objects = Vec::new();
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for k in keys {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let (o, n) = (
            old.get(k).unwrap_or(&Value::Null),
            new.get(k).unwrap_or(&Value::Null),
        );
        match (o, n) {
            (Value::Object(om), Value::Object(nm)) if FLAT_MAPS.contains(&k.as_str()) => {
                let sub: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
                for sk in sub {
                    let (ov, nv) = (om.get(sk).and_then(scalar), nm.get(sk).and_then(scalar));
                    fields.extend(field(&format!("{k}[{sk}]"), ov.as_deref(), nv.as_deref()));
                }
            }
            (Value::Object(_) | Value::Null, Value::Object(_) | Value::Null)
                if o.is_object() || n.is_object() =>
            {
                objects.extend(object_diff(k, o, n));
            }
            (Value::Array(_) | Value::Null, Value::Array(_) | Value::Null)
                if o.is_array() || n.is_array() =>
            {
                objects.extend(array_diff(k, o, n));
            }
            _ => {
                let (ov, nv) = (scalar(o), scalar(n));
                if let (Some(ov), Some(nv)) = (ov, nv) {
                    fields.extend(field(k, Some(&ov), Some(&nv)));
                }
            }
        }
    }
    (fields, objects)
}

fn object_diff(name: &str, old: &Value, new: &Value) -> Option<Value> {
    let empty = Map::new();
    let om = old.as_object().unwrap_or(&empty);
    let nm = new.as_object().unwrap_or(&empty);
    let (fields, objects) = diff_body(om, nm, &[]);
    if fields.is_empty() && objects.is_empty() {
        return None;
    }
    let t = kind(old.is_object(), new.is_object(), true);
    Some(json!({"Type": t, "Name": name, "Fields": fields, "Objects": nullable(objects)}))
}

fn nullable(v: Vec<Value>) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::Array(v)
    }
}

/// Lists: primitives become one object of fields named after the list;
/// objects are matched by `Name`/`Label` (else position).
fn array_diff(name: &str, old: &Value, new: &Value) -> Vec<Value> {
    let empty = Vec::new();
    let oa = old.as_array().unwrap_or(&empty);
    let na = new.as_array().unwrap_or(&empty);
    let all_scalar = oa.iter().chain(na).all(|v| scalar(v).is_some());
    if all_scalar {
        let os: BTreeSet<String> = oa.iter().filter_map(scalar).collect();
        let ns: BTreeSet<String> = na.iter().filter_map(scalar).collect();
        let mut fields = Vec::new();
        for v in os.difference(&ns) {
            fields.extend(field(name, Some(v), None));
        }
        for v in ns.difference(&os) {
            fields.extend(field(name, None, Some(v)));
        }
        if fields.is_empty() {
            return Vec::new();
        }
        let t = kind(!oa.is_empty(), !na.is_empty(), true);
        return vec![json!({"Type": t, "Name": name, "Fields": fields, "Objects": null})];
    }
    let key = |v: &Value, i: usize| -> String {
        ["Name", "Label"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| i.to_string())
    };
    let om: BTreeMap<String, &Value> = oa.iter().enumerate().map(|(i, v)| (key(v, i), v)).collect();
    let nm: BTreeMap<String, &Value> = na.iter().enumerate().map(|(i, v)| (key(v, i), v)).collect();
    let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            object_diff(
                singular(name),
                om.get(k).copied().unwrap_or(&Value::Null),
                nm.get(k).copied().unwrap_or(&Value::Null),
            )
        })
        .collect()
}

fn named(list: Option<&Value>) -> BTreeMap<String, &Value> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| (str_field(v, "Name").to_owned(), v))
                .collect()
        })
        .unwrap_or_default()
}

fn job_diff(old: Option<&Value>, new: &Value, desired: &BTreeMap<String, Desired>) -> Value {
    let empty = Map::new();
    let om = old.and_then(Value::as_object).unwrap_or(&empty);
    let nm = new.as_object().unwrap_or(&empty);
    let (fields, objects) = diff_body(om, nm, JOB_SKIP);
    let old_groups = named(om.get("TaskGroups"));
    let new_groups = named(nm.get("TaskGroups"));
    let names: BTreeSet<&String> = old_groups.keys().chain(new_groups.keys()).collect();
    let mut groups = Vec::new();
    for g in names {
        let d = desired.get(g).copied().unwrap_or_default();
        groups.push(group_diff(
            g,
            old_groups.get(g).copied(),
            new_groups.get(g).copied(),
            d,
        ));
    }
    let changed =
        !fields.is_empty() || !objects.is_empty() || groups.iter().any(|g| g["Type"] != "None");
    let t = if old.is_none() {
        "Added"
    } else {
        kind(true, true, changed)
    };
    json!({
        "Type": t,
        "ID": str_field(new, "ID"),
        "Fields": nullable(fields),
        "Objects": nullable(objects),
        "TaskGroups": nullable(groups),
    })
}

fn group_diff(name: &str, old: Option<&Value>, new: Option<&Value>, d: Desired) -> Value {
    let empty = Map::new();
    let om = old.and_then(Value::as_object).unwrap_or(&empty);
    let nm = new.and_then(Value::as_object).unwrap_or(&empty);
    let (mut fields, objects) = diff_body(om, nm, &["Name", "Tasks"]);
    for f in &mut fields {
        if f["Name"] == "Count" {
            let o = f["Old"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let n = f["New"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let note = if n > o {
                "forces create"
            } else {
                "forces destroy"
            };
            f["Annotations"] = json!([note]);
        }
    }
    let old_tasks = named(om.get("Tasks"));
    let new_tasks = named(nm.get("Tasks"));
    let names: BTreeSet<&String> = old_tasks.keys().chain(new_tasks.keys()).collect();
    let mut tasks = Vec::new();
    for t in names {
        let (ot, nt) = (old_tasks.get(t).copied(), new_tasks.get(t).copied());
        let empty_t = Map::new();
        let (tf, to) = diff_body(
            ot.and_then(Value::as_object).unwrap_or(&empty_t),
            nt.and_then(Value::as_object).unwrap_or(&empty_t),
            &["Name"],
        );
        let changed = !tf.is_empty() || !to.is_empty();
        let ty = kind(ot.is_some(), nt.is_some(), changed);
        let note = match ty {
            "Added" => Some("forces create"),
            "Deleted" => Some("forces destroy"),
            "Edited" if d.destructive > 0 => Some("forces create/destroy update"),
            "Edited" => Some("forces in-place update"),
            _ => None,
        };
        if ty != "None" {
            tasks.push(json!({
                "Type": ty, "Name": t, "Fields": nullable(tf), "Objects": nullable(to),
                "Annotations": note.map(|n| json!([n])).unwrap_or(Value::Null),
            }));
        }
    }
    let changed = !fields.is_empty() || !objects.is_empty() || !tasks.is_empty();
    json!({
        "Type": kind(old.is_some(), new.is_some(), changed),
        "Name": name,
        "Fields": nullable(fields),
        "Objects": nullable(objects),
        "Tasks": nullable(tasks),
        "Updates": d.updates(),
    })
}
