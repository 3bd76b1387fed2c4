//! What `deploy` may change in the standby group besides its version: extra `meta`, task `env`
//! and the Docker `image` of its tasks ([`StandbySettings`]), checked and applied to the job
//! before anything is planned or written.

use serde::Serialize;
use serde_json::Value;
use switchyard_hashi::nomad::Job;

use crate::refusal::Refusal;

/// The meta key `deploy`'s version argument owns.
pub const VERSION_META_KEY: &str = "version";

/// The runtime variable through which a job derives something (its image) from the version.
pub const VERSION_INTERPOLATION: &str = "${NOMAD_META_version}";

/// Explicit settings for the standby group, applied in order after its `meta.version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StandbySettings {
    /// `--meta KEY=VALUE`: the group's `Meta`.
    pub meta: Vec<(String, String)>,
    /// `--env KEY=VALUE`: the `Env` of every task of the group.
    pub env: Vec<(String, String)>,
    /// `--image REF`: `Config.image` of every (Docker) task of the group.
    pub image: Option<String>,
}

impl StandbySettings {
    /// Whether nothing beyond the version is asked for.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty() && self.env.is_empty() && self.image.is_none()
    }
}

/// Parses a command-line `KEY=VALUE` (for `--meta` and `--env`). The key must be a name Nomad
/// accepts both as a map key and, for meta, as the `NOMAD_META_<key>` variable it exports:
/// letters, digits and `_`, not starting with a digit; `.` and `-` are allowed after the first
/// character (Nomad exports them with `_`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    validate_key(key)?;
    if value.chars().any(char::is_control) {
        return Err(format!("the value of {key} contains a control character"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn validate_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    };
    if ok && key.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid key {key:?}: use 1-128 characters from A-Z a-z 0-9 _ . -, starting with a letter or _"
        ))
    }
}

/// Parses `--image REF`: `name[:tag][@digest]`, no whitespace, no `${...}` interpolation.
pub fn parse_image(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 512
        && !s.starts_with([':', '@', '/'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid image reference {s:?}: use name[:tag][@digest] with A-Z a-z 0-9 . _ - / : @"
        ))
    }
}

/// Applies `settings` to group `group` of `job` (which already carries the new version).
/// Refuses, before anything is written, a meta key the version argument owns, a group without
/// tasks, and `--image` on a task that is not Docker or whose image is derived from the version.
pub fn apply(job: &mut Job, group: &str, settings: &StandbySettings) -> Result<(), Refusal> {
    let bad = |m: String| Refusal::BadSetting(m);
    let tasks = job
        .group_tasks(group)
        .ok_or_else(|| bad(format!("job {} has no task group {group}", job.id())))?;
    for (key, value) in &settings.meta {
        validate_key(key).map_err(bad)?;
        if key == VERSION_META_KEY {
            return Err(bad(format!(
                "--meta {VERSION_META_KEY}=... is what the version argument sets; pass the version instead"
            )));
        }
        job.set_group_meta(group, key, value)
            .map_err(|e| bad(e.to_string()))?;
    }
    if (!settings.env.is_empty() || settings.image.is_some()) && tasks.is_empty() {
        return Err(bad(format!(
            "group {group} has no task to set --env or --image on"
        )));
    }
    for (task, driver, config) in &tasks {
        for (key, value) in &settings.env {
            validate_key(key).map_err(bad)?;
            job.set_task_entry(group, task, "Env", key, Value::String(value.clone()))
                .map_err(|e| bad(e.to_string()))?;
        }
        let Some(image) = &settings.image else {
            continue;
        };
        if driver != "docker" {
            return Err(bad(format!(
                "--image applies to Docker tasks: task {task} of group {group} uses the {driver:?} driver"
            )));
        }
        let current = config.get("image").and_then(Value::as_str).unwrap_or("");
        if current.contains(VERSION_INTERPOLATION) {
            return Err(bad(format!(
                "task {task} of group {group} derives its image from the version ({current}); the version argument picks the image"
            )));
        }
        job.set_task_entry(group, task, "Config", "image", Value::String(image.clone()))
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// The image each Docker task of `group` runs, with `${NOMAD_META_<key>}` resolved from the
/// group's (and the task's) meta as Nomad does at run time: `(task, image)`.
pub fn resolved_images(job: &Job, group: &str) -> Vec<(String, String)> {
    let Some(tasks) = job.group_tasks(group) else {
        return Vec::new();
    };
    let group_meta = job
        .0
        .get("TaskGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|g| g.get("Name").and_then(Value::as_str) == Some(group))
        .and_then(|g| g.get("Meta"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    tasks
        .into_iter()
        .filter(|(_, driver, _)| driver == "docker")
        .filter_map(|(task, _, config)| {
            let mut image = config.get("image")?.as_str()?.to_owned();
            for (k, v) in &group_meta {
                if let Some(v) = v.as_str() {
                    image = image.replace(&format!("${{NOMAD_META_{k}}}"), v);
                }
            }
            Some((task, image))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docker_job(image: &str) -> Job {
        Job(json!({"ID": "web", "TaskGroups": [
            {"Name": "blue", "Meta": {"version": "v1"},
             "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": image}}]},
            {"Name": "green", "Meta": {"version": "v2"},
             "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": image}, "Env": null}]},
        ]}))
    }

    #[test]
    fn key_values_and_images_are_checked() {
        assert_eq!(
            parse_key_value("A_B=x=y").unwrap(),
            ("A_B".to_owned(), "x=y".to_owned())
        );
        assert_eq!(parse_key_value("team.owner=").unwrap().1, "");
        for bad in ["noequals", "=v", "1A=v", "A B=v", "A$=v", "A=\u{7}"] {
            assert!(parse_key_value(bad).is_err(), "{bad}");
        }
        assert!(parse_image("registry.example.com:5000/app:v4").is_ok());
        assert!(parse_image("app@sha256:abc").is_ok());
        for bad in ["", "app:${NOMAD_META_version}", "a b", ":v1"] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_change_only_the_named_group() {
        let mut job = docker_job("app:v1");
        let before = job.clone();
        let s = StandbySettings {
            meta: vec![("team".into(), "core".into())],
            env: vec![("LOG".into(), "debug".into())],
            image: Some("app:v9".into()),
        };
        apply(&mut job, "green", &s).unwrap();
        assert_eq!(job.0["TaskGroups"][0], before.0["TaskGroups"][0]);
        let g = &job.0["TaskGroups"][1];
        assert_eq!(g["Meta"], json!({"version": "v2", "team": "core"}));
        assert_eq!(g["Tasks"][0]["Env"], json!({"LOG": "debug"}));
        assert_eq!(g["Tasks"][0]["Config"]["image"], "app:v9");
    }

    #[test]
    fn settings_refusals() {
        let image = StandbySettings {
            image: Some("app:v9".into()),
            ..StandbySettings::default()
        };
        let mut derived = docker_job("app:${NOMAD_META_version}");
        let r = apply(&mut derived, "green", &image).unwrap_err();
        assert!(r.to_string().contains("derives its image"), "{r}");
        assert!(r.is_bad_input());

        let mut raw = Job(json!({"ID": "web", "TaskGroups": [
            {"Name": "green", "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {}}]}]}));
        let r = apply(&mut raw, "green", &image).unwrap_err();
        assert!(r.to_string().contains("\"raw_exec\" driver"), "{r}");

        let version = StandbySettings {
            meta: vec![("version".into(), "v5".into())],
            ..StandbySettings::default()
        };
        assert!(apply(&mut docker_job("a"), "green", &version).is_err());
        assert!(apply(&mut docker_job("a"), "purple", &image).is_err());
    }

    #[test]
    fn images_resolve_meta_like_nomad() {
        let job = docker_job("repo/app:${NOMAD_META_version}");
        assert_eq!(
            resolved_images(&job, "green"),
            vec![("t".to_owned(), "repo/app:v2".to_owned())]
        );
        assert!(resolved_images(&job, "purple").is_empty());
    }
}
