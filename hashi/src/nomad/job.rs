//! [`Job`]: a Nomad job kept as JSON, with typed accessors for the fields this project edits.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::types::UpdateStrategy;
use crate::Error;

/// A job as Nomad returns it, kept as JSON so that fields this crate does not model survive a
/// read-modify-write (`job` → edit → `register`).
///
/// Accessors read the `api.Job` JSON (`ID`, `TaskGroups[].Name`, ...) and treat a missing or
/// `null` field as absent; the setters create `null` maps and lists as needed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Job(pub Value);

impl Job {
    /// `ID` (`""` when absent).
    pub fn id(&self) -> &str {
        self.0.get("ID").and_then(Value::as_str).unwrap_or("")
    }

    /// `Name` (`""` when absent).
    pub fn name(&self) -> &str {
        self.0.get("Name").and_then(Value::as_str).unwrap_or("")
    }

    /// `Version`: 0 for the first registration, +1 for every spec change and every revert.
    pub fn version(&self) -> u64 {
        self.u64_field("Version")
    }

    /// `JobModifyIndex`: changes only when the spec changes. The value `register`'s
    /// `enforce_index` is checked against.
    pub fn job_modify_index(&self) -> u64 {
        self.u64_field("JobModifyIndex")
    }

    /// `ModifyIndex`: changes on any change to the job (status, stability, ...).
    pub fn modify_index(&self) -> u64 {
        self.u64_field("ModifyIndex")
    }

    /// `Stable`: set when a deployment of this version succeeded (or by `/stable`).
    pub fn stable(&self) -> bool {
        self.0
            .get("Stable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The task group names, in job order.
    pub fn group_names(&self) -> Vec<String> {
        self.groups()
            .filter_map(|g| g.get("Name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    /// `TaskGroups[name].Meta[key]`.
    pub fn group_meta(&self, group: &str, key: &str) -> Option<&str> {
        self.group(group)?.get("Meta")?.get(key)?.as_str()
    }

    /// Sets `TaskGroups[name].Meta[key] = value`, creating `Meta` when it is `null`.
    ///
    /// Nomad treats any `meta` change as destructive: registering the result replaces the
    /// group's allocations (subject to `update`/`canary`).
    pub fn set_group_meta(&mut self, group: &str, key: &str, value: &str) -> Result<(), Error> {
        let job_id = self.id().to_owned();
        let g = self.group_mut(group)?;
        let meta = g
            .entry("Meta")
            .and_modify(|m| {
                if m.is_null() {
                    *m = Value::Object(Map::new());
                }
            })
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(meta) = meta.as_object_mut() else {
            return Err(Error::InvalidArgument(format!(
                "job {job_id:?} group {group:?}: Meta is not an object"
            )));
        };
        meta.insert(key.to_owned(), Value::String(value.to_owned()));
        Ok(())
    }

    /// `TaskGroups[name].Count` (`None` when the group is missing or its count unset).
    pub fn group_count(&self, group: &str) -> Option<u64> {
        self.group(group)?.get("Count")?.as_u64()
    }

    /// The `Tags` of the first service named `service_name` in the group: group-level
    /// `Services` first, then each task's. `None` when there is no such service.
    pub fn group_service_tags(&self, group: &str, service_name: &str) -> Option<Vec<String>> {
        let group = self.group(group)?;
        let service = services(group).find(|s| is_named(s, service_name))?;
        let tags = service
            .get("Tags")
            .and_then(Value::as_array)
            .map(|tags| {
                tags.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some(tags)
    }

    /// Sets `Tags` on **every** service named `service_name` in the group, group-level and
    /// task-level alike. Fails when the group or the service does not exist.
    ///
    /// A tags-only change is an in-place update in Nomad: allocations keep running (and keep
    /// their ports) and their Consul registrations are updated.
    pub fn set_group_service_tags(
        &mut self,
        group: &str,
        service_name: &str,
        tags: &[String],
    ) -> Result<(), Error> {
        let job_id = self.id().to_owned();
        let g = self.group_mut(group)?;
        let new_tags = || Value::Array(tags.iter().cloned().map(Value::String).collect());
        let mut updated = 0;
        if let Some(list) = g.get_mut("Services").and_then(Value::as_array_mut) {
            updated += set_tags(list, service_name, &new_tags);
        }
        if let Some(tasks) = g.get_mut("Tasks").and_then(Value::as_array_mut) {
            for task in tasks {
                if let Some(list) = task.get_mut("Services").and_then(Value::as_array_mut) {
                    updated += set_tags(list, service_name, &new_tags);
                }
            }
        }
        if updated == 0 {
            return Err(Error::InvalidArgument(format!(
                "job {job_id:?} group {group:?} has no service named {service_name:?}"
            )));
        }
        Ok(())
    }

    /// The group's tasks as `(Name, Driver, Config)`, in job order (`None` when the group is
    /// missing). A missing `Config` is `null`.
    pub fn group_tasks(&self, group: &str) -> Option<Vec<(String, String, Value)>> {
        let g = self.group(group)?;
        let tasks = g
            .get("Tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        Some(
            tasks
                .map(|t| {
                    let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    let config = t.get("Config").cloned().unwrap_or(Value::Null);
                    (s("Name"), s("Driver"), config)
                })
                .collect(),
        )
    }

    /// Sets `TaskGroups[group].Tasks[task].<block>[key] = value` for a string map such as `Env`
    /// or a field of `Config`, creating the map when it is missing or `null`.
    pub fn set_task_entry(
        &mut self,
        group: &str,
        task: &str,
        block: &str,
        key: &str,
        value: Value,
    ) -> Result<(), Error> {
        let job_id = self.id().to_owned();
        let g = self.group_mut(group)?;
        let t = g
            .get_mut("Tasks")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
            .find(|t| t.get("Name").and_then(Value::as_str) == Some(task))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "job {job_id:?} group {group:?} has no task {task:?}"
                ))
            })?;
        let map = t
            .entry(block)
            .and_modify(|m| {
                if m.is_null() {
                    *m = Value::Object(Map::new());
                }
            })
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(map) = map.as_object_mut() else {
            return Err(Error::InvalidArgument(format!(
                "job {job_id:?} group {group:?} task {task:?}: {block} is not an object"
            )));
        };
        map.insert(key.to_owned(), value);
        Ok(())
    }

    /// `TaskGroups[name].Update` as Nomad's canonical job carries it (the job-level `update`
    /// merged under the group's), falling back to the job-level `Update`; `None` when neither is
    /// set (the group has no update strategy, so no deployment tracks it).
    pub fn group_update(&self, group: &str) -> Option<UpdateStrategy> {
        let own = self.group(group)?.get("Update").filter(|u| u.is_object());
        let update = own.or_else(|| self.0.get("Update").filter(|u| u.is_object()))?;
        serde_json::from_value(update.clone()).ok()
    }

    /// The job without `VersionTag`: a version's tag names that version only, and Nomad refuses
    /// to register a job whose tag another version already carries, so a job read back is
    /// re-registered without it.
    pub fn without_version_tag(&self) -> Job {
        let mut copy = self.clone();
        if let Some(fields) = copy.0.as_object_mut() {
            fields.remove("VersionTag");
        }
        copy
    }

    fn u64_field(&self, name: &str) -> u64 {
        self.0.get(name).and_then(Value::as_u64).unwrap_or(0)
    }

    fn groups(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.0
            .get("TaskGroups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    }

    fn group(&self, name: &str) -> Option<&Map<String, Value>> {
        self.groups()
            .find(|g| g.get("Name").and_then(Value::as_str) == Some(name))
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut Map<String, Value>, Error> {
        let job_id = self.id().to_owned();
        self.0
            .get_mut("TaskGroups")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
            .find(|g| g.get("Name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("job {job_id:?} has no task group {name:?}"))
            })
    }
}

/// The group's own services followed by each task's.
fn services(group: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    let own = group
        .get("Services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let tasks = group
        .get("Tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|task| {
            task.get("Services")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        });
    own.chain(tasks)
}

fn is_named(service: &Value, name: &str) -> bool {
    service.get("Name").and_then(Value::as_str) == Some(name)
}

fn set_tags(services: &mut [Value], name: &str, tags: &impl Fn() -> Value) -> usize {
    let mut updated = 0;
    for service in services.iter_mut().filter(|s| is_named(s, name)) {
        if let Some(service) = service.as_object_mut() {
            service.insert("Tags".to_owned(), tags());
            updated += 1;
        }
    }
    updated
}
