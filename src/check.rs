//! `switchyard check-config FILE`: validates what `config/` holds.
//!
//! - `*.toml`: a proxy configuration (every problem, with its key path).
//! - `*.hcl`: a blue/green Nomad job. It must parse (`switchyard-jobspec`,
//!   the HCL reader the dev Nomad also uses for `/v1/jobs/parse`), and each colour group must carry
//!   what switchyard relies on: a `meta.version`, and a service whose tags
//!   name its colour, one role (`active` or `standby`) and `version=`.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;
use switchyard_model::{ACTIVE_TAG, DEFAULT_COLOURS, STANDBY_TAG, VERSION_TAG_PREFIX};
use switchyard_proxy::config::Config;

/// Validates one file; returns the one-line summary printed on success.
pub(crate) fn check(file: &Path) -> anyhow::Result<String> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("hcl") => check_job(file),
        _ => {
            let config = Config::load(file)?;
            Ok(format!(
                "{}: ok ({} service(s), {} route(s), listening on {})",
                file.display(),
                config.services.len(),
                config.routes.len(),
                config.listen
            ))
        }
    }
}

fn check_job(file: &Path) -> anyhow::Result<String> {
    let src =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let job = switchyard_jobspec::parse_job(&src, None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let problems = job_problems(&job);
    if !problems.is_empty() {
        bail!(
            "{}: {} problem(s):\n  {}",
            file.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    let id = job.get("ID").and_then(Value::as_str).unwrap_or("?");
    Ok(format!(
        "{}: ok (job {id}, blue/green groups {})",
        file.display(),
        DEFAULT_COLOURS.join(", ")
    ))
}

fn job_problems(job: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let groups = job
        .get("TaskGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut roles = Vec::new();
    for colour in DEFAULT_COLOURS {
        let Some(group) = groups
            .iter()
            .find(|g| g.get("Name").and_then(Value::as_str) == Some(colour))
        else {
            problems.push(format!("no task group named {colour:?}"));
            continue;
        };
        let version = group
            .get("Meta")
            .and_then(|m| m.get("version"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if version.is_empty() {
            problems.push(format!("group {colour:?} has no meta.version"));
        }
        let services: Vec<&Value> = group
            .get("Services")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(
                group
                    .get("Tasks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("Services").and_then(Value::as_array))
                    .flatten(),
            )
            .collect();
        if services.is_empty() {
            problems.push(format!("group {colour:?} registers no service"));
        }
        for svc in services {
            let name = svc.get("Name").and_then(Value::as_str).unwrap_or("?");
            let tags: Vec<&str> = svc
                .get("Tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if switchyard_model::classify(
                &tags,
                &[DEFAULT_COLOURS[0].to_owned(), DEFAULT_COLOURS[1].to_owned()],
            ) != switchyard_model::Classification::Colour(
                DEFAULT_COLOURS
                    .iter()
                    .position(|c| *c == colour)
                    .unwrap_or(0),
            ) {
                problems.push(format!(
                    "group {colour:?} service {name:?}: tags must name colour {colour:?} and not the other"
                ));
            }
            match switchyard_model::role_of(&tags) {
                Some(r) => roles.push(r),
                None => problems.push(format!(
                    "group {colour:?} service {name:?}: tags need exactly one of {ACTIVE_TAG:?} or {STANDBY_TAG:?}"
                )),
            }
            if !tags.iter().any(|t| t.starts_with(VERSION_TAG_PREFIX)) {
                problems.push(format!(
                    "group {colour:?} service {name:?}: no {VERSION_TAG_PREFIX}<v> tag"
                ));
            }
        }
    }
    if roles.len() == 2 && roles[0] == roles[1] {
        problems.push(format!(
            "both colours are tagged {:?}; one must be active and one standby",
            roles[0]
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(name: &str, tags: &[&str], version: &str) -> Value {
        json!({"Name": name, "Meta": {"version": version}, "Services": [{"Name": "hello-service", "Tags": tags}]})
    }

    #[test]
    fn a_good_job_has_no_problems() {
        let job = json!({"ID": "hello", "TaskGroups": [
            group("blue", &["blue", "active", "version=${NOMAD_META_version}"], "v1"),
            group("green", &["green", "standby", "version=${NOMAD_META_version}"], "v2"),
        ]});
        assert!(job_problems(&job).is_empty(), "{:?}", job_problems(&job));
    }

    #[test]
    fn every_problem_is_listed() {
        let job = json!({"ID": "hello", "TaskGroups": [
            group("blue", &["blue", "green", "active"], ""),
        ]});
        let p = job_problems(&job);
        assert!(
            p.iter()
                .any(|m| m.contains("no task group named \"green\"")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("no meta.version")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("must name colour")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("version=<v>")), "{p:?}");
    }

    #[test]
    fn the_shipped_job_files_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for f in ["hello-service.nomad.hcl", "hello-service.docker.nomad.hcl"] {
            if let Err(e) = check(&dir.join(f)) {
                panic!("{f}: {e:#}");
            }
        }
    }
}
