//! The plan before every register: Nomad's `POST /v1/job/:id/plan` says what registering a job
//! would do to each group's allocations. [`check_plan`] refuses any plan that would create,
//! destroy, migrate or destructively update allocations of the active group (only in-place
//! updates and no-ops are allowed there); [`render_plan`] shows a plan to the operator.

use switchyard_hashi::nomad::{
    DesiredUpdates, FieldDiff, Job, JobDiff, JobPlanResponse, ObjectDiff,
};

use crate::{Controller, ControllerError};

/// Why a plan may not be registered: the active group's offending counts and the changed
/// fields that cause them.
pub fn check_plan(job_id: &str, plan: &JobPlanResponse, active_group: &str) -> Result<(), String> {
    let d = plan
        .annotations
        .as_ref()
        .and_then(|a| a.desired_tg_updates.get(active_group))
        .copied()
        .unwrap_or_default();
    let mut offending: Vec<String> = [
        ("create", d.place + d.canary),
        ("destroy", d.stop),
        ("migrate", d.migrate),
        ("create/destroy update", d.destructive_update),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} {what}"))
    .collect();
    let deleted = plan.diff.as_ref().is_some_and(|diff| {
        diff.task_groups
            .iter()
            .any(|g| g.name == active_group && g.diff_type == "Deleted")
    });
    if deleted {
        offending.push("group deleted".to_owned());
    }
    if offending.is_empty() {
        return Ok(());
    }
    let fields = plan
        .diff
        .as_ref()
        .map(|d| culprits(d, active_group))
        .unwrap_or_default();
    Err(format!(
        "refusing to register job {job_id}: Nomad's plan would replace allocations of the active group {active_group} ({}){}; nothing was registered",
        offending.join(", "),
        if fields.is_empty() {
            String::new()
        } else {
            format!("; changed: {}", fields.join("; "))
        }
    ))
}

/// The changed fields that can touch `group`: job-level fields and the group's own.
fn culprits(diff: &JobDiff, group: &str) -> Vec<String> {
    let mut out = Vec::new();
    flatten("job", &diff.fields, &diff.objects, &mut out);
    for g in diff.task_groups.iter().filter(|g| g.name == group) {
        flatten(&g.name, &g.fields, &g.objects, &mut out);
        for t in &g.tasks {
            flatten(
                &format!("{}.{}", g.name, t.name),
                &t.fields,
                &t.objects,
                &mut out,
            );
        }
    }
    out
}

/// `path.Name: "old" => "new"` for every changed field below `fields` and `objects`.
fn flatten(path: &str, fields: &[FieldDiff], objects: &[ObjectDiff], out: &mut Vec<String>) {
    for f in fields.iter().filter(|f| f.diff_type != "None") {
        out.push(format!("{path}.{}: {:?} => {:?}", f.name, f.old, f.new));
    }
    for o in objects.iter().filter(|o| o.diff_type != "None") {
        flatten(&format!("{path}.{}", o.name), &o.fields, &o.objects, out);
    }
}

/// What the plan does to one group, as `1 create/destroy update, 1 ignore` (`no change` when
/// nothing).
fn counts(d: &DesiredUpdates) -> String {
    let parts: Vec<String> = [
        ("in-place update", d.in_place_update),
        ("create/destroy update", d.destructive_update),
        ("create", d.place),
        ("destroy", d.stop),
        ("migrate", d.migrate),
        ("canary", d.canary),
        ("ignore", d.ignore),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The plan in a readable form: per group its allocation counts (`role` names the active and
/// standby groups) and its changed fields, then the job-level changes.
pub fn render_plan(
    job_id: &str,
    plan: &JobPlanResponse,
    role: impl Fn(&str) -> &'static str,
) -> String {
    let mut out = format!(
        "plan for job {job_id} (JobModifyIndex {}):\n",
        plan.job_modify_index
    );
    let empty = Default::default();
    let desired = plan
        .annotations
        .as_ref()
        .map(|a| &a.desired_tg_updates)
        .unwrap_or(&empty);
    let mut job_fields = Vec::new();
    if let Some(d) = &plan.diff {
        flatten("job", &d.fields, &d.objects, &mut job_fields);
    }
    let groups: std::collections::BTreeSet<&String> = desired
        .keys()
        .chain(
            plan.diff
                .iter()
                .flat_map(|d| d.task_groups.iter().map(|g| &g.name)),
        )
        .collect();
    for g in groups {
        let d = desired.get(g).copied().unwrap_or_default();
        out.push_str(&format!("  group {g} ({}): {}\n", role(g), counts(&d)));
        let mut lines = Vec::new();
        for gd in plan
            .diff
            .iter()
            .flat_map(|d| &d.task_groups)
            .filter(|gd| &gd.name == g)
        {
            flatten(g, &gd.fields, &gd.objects, &mut lines);
            for t in &gd.tasks {
                let before = lines.len();
                flatten(
                    &format!("{g}.{}", t.name),
                    &t.fields,
                    &t.objects,
                    &mut lines,
                );
                if !t.annotations.is_empty() && lines.len() > before {
                    lines.push(format!("{g}.{} ({})", t.name, t.annotations.join(", ")));
                }
            }
        }
        for l in lines {
            out.push_str(&format!("    {l}\n"));
        }
    }
    for l in job_fields {
        out.push_str(&format!("  {l}\n"));
    }
    if !plan.warnings.is_empty() {
        out.push_str(&format!("  warnings: {}\n", plan.warnings.trim()));
    }
    out
}

impl Controller {
    /// Asks Nomad to plan registering `job` (with the diff) and refuses, with
    /// [`ControllerError::PlanRefused`], a plan that would create, destroy or replace
    /// allocations of `active_group`. A job Nomad rejects (HTTP 400) is bad input.
    pub async fn plan_guarded(
        &self,
        job: &Job,
        active_group: &str,
    ) -> Result<JobPlanResponse, ControllerError> {
        let plan = self.nomad_plan(job).await?;
        check_plan(job.id(), &plan, active_group).map_err(ControllerError::PlanRefused)?;
        Ok(plan)
    }

    /// Nomad's plan of registering `job`, with the diff. A job Nomad rejects (HTTP 400) is bad
    /// input.
    pub async fn nomad_plan(&self, job: &Job) -> Result<JobPlanResponse, ControllerError> {
        self.nomad.plan(job, true).await.map_err(|e| {
            if e.status() == Some(400) {
                ControllerError::BadInput(format!("Nomad rejects job {}: {e}", job.id()))
            } else {
                ControllerError::hashi(format!("planning job {}", job.id()), e)
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(active: serde_json::Value, diff: serde_json::Value) -> JobPlanResponse {
        serde_json::from_value(json!({
            "JobModifyIndex": 40,
            "Annotations": {"DesiredTGUpdates": {
                "blue": active,
                "green": {"DestructiveUpdate": 1, "Ignore": 0},
            }},
            "Diff": diff,
        }))
        .unwrap()
    }

    fn diff() -> serde_json::Value {
        json!({"Type": "Edited", "ID": "web",
            "Fields": null,
            "Objects": [{"Type": "Edited", "Name": "Update", "Objects": null,
                "Fields": [{"Type": "Edited", "Name": "MaxParallel", "Old": "1", "New": "2"}]}],
            "TaskGroups": [
                {"Type": "None", "Name": "blue", "Updates": {"create/destroy update": 1}},
                {"Type": "Edited", "Name": "green", "Updates": {"create/destroy update": 1},
                 "Fields": [{"Type": "Edited", "Name": "Meta[version]", "Old": "v2", "New": "v4"}],
                 "Tasks": [{"Type": "Edited", "Name": "t", "Annotations": ["forces create/destroy update"],
                    "Objects": [{"Type": "Added", "Name": "Env", "Fields": [
                        {"Type": "Added", "Name": "LOG", "Old": "", "New": "debug"}]}]}]}]})
    }

    #[test]
    fn only_in_place_and_no_ops_pass_on_the_active_group() {
        for ok in [json!({"Ignore": 2}), json!({"InPlaceUpdate": 2}), json!({})] {
            assert!(check_plan("web", &plan(ok, diff()), "blue").is_ok());
        }
        for (bad, word) in [
            (json!({"DestructiveUpdate": 2}), "2 create/destroy update"),
            (json!({"Place": 1, "Ignore": 1}), "1 create"),
            (json!({"Stop": 1}), "1 destroy"),
            (json!({"Migrate": 1}), "1 migrate"),
            (json!({"Canary": 1}), "1 create"),
        ] {
            let e = check_plan("web", &plan(bad, diff()), "blue").unwrap_err();
            assert!(e.contains(word), "{e}");
            assert!(e.contains("active group blue"), "{e}");
            // The shared field that causes it is named; the standby's own are not.
            assert!(e.contains("job.Update.MaxParallel: \"1\" => \"2\""), "{e}");
            assert!(!e.contains("Meta[version]"), "{e}");
        }
    }

    #[test]
    fn render_names_counts_and_fields_per_group() {
        let p = plan(json!({"Ignore": 2}), diff());
        let text = render_plan(
            "web",
            &p,
            |g| if g == "blue" { "active" } else { "standby" },
        );
        assert!(
            text.contains("plan for job web (JobModifyIndex 40)"),
            "{text}"
        );
        assert!(text.contains("group blue (active): 2 ignore"), "{text}");
        assert!(
            text.contains("group green (standby): 1 create/destroy update"),
            "{text}"
        );
        assert!(
            text.contains("green.Meta[version]: \"v2\" => \"v4\""),
            "{text}"
        );
        assert!(
            text.contains("green.t.Env.LOG: \"\" => \"debug\""),
            "{text}"
        );
        assert!(
            text.contains("green.t (forces create/destroy update)"),
            "{text}"
        );
        assert!(text.contains("job.Update.MaxParallel"), "{text}");
    }
}
