//! How the controller proves which version an instance runs ([`VersionCheck`]), set per service
//! in the job's own `meta` (so every operator and every command uses the same proof):
//!
//! - `switchyard_version_check = "body"` (the default): `GET <path>` on each instance; the
//!   trimmed body is the version.
//! - `switchyard_version_check = "header:<Name>"`: `GET <path>`; the response header `<Name>`
//!   carries the version.
//! - `switchyard_version_check = "none"`: no request to the instances; the proof is Nomad's
//!   ([`nomad_proof`]): the group's allocations run the registered job version, whose group
//!   `meta.version` is the expected one.
//!
//! `switchyard_version_path` is the path asked (default `/version`).

use serde::Serialize;
use switchyard_hashi::nomad::{AllocationListStub, Job};

use crate::deploy_settings::VERSION_META_KEY;

/// The job meta key that chooses the check.
pub const VERSION_CHECK_META_KEY: &str = "switchyard_version_check";
/// The job meta key that sets the path asked.
pub const VERSION_PATH_META_KEY: &str = "switchyard_version_path";
/// The check used when the job does not choose one.
pub const DEFAULT_VERSION_CHECK: &str = "body";
/// The path asked when the job does not set one.
pub const DEFAULT_VERSION_PATH: &str = "/version";

/// Where an instance's version is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum VersionCheck {
    /// `GET path`: the trimmed body.
    Body {
        /// The path asked.
        path: String,
    },
    /// `GET path`: the value of a response header.
    Header {
        /// The path asked.
        path: String,
        /// The header's name.
        header: String,
    },
    /// No request: Nomad's record of the allocations is the proof.
    None,
}

impl Default for VersionCheck {
    fn default() -> Self {
        VersionCheck::Body {
            path: DEFAULT_VERSION_PATH.to_owned(),
        }
    }
}

impl VersionCheck {
    /// The check `job`'s meta chooses. A value that cannot be used is an error naming the key.
    pub fn from_job(job: &Job) -> Result<Self, String> {
        let meta = job.0.get("Meta");
        let get = |k: &str| meta.and_then(|m| m.get(k)).and_then(|v| v.as_str());
        Self::parse(get(VERSION_CHECK_META_KEY), get(VERSION_PATH_META_KEY))
            .map_err(|e| format!("job {} meta: {e}", job.id()))
    }

    /// The check from the two meta values (`None`: not set).
    pub fn parse(check: Option<&str>, path: Option<&str>) -> Result<Self, String> {
        let path = match path.map(str::trim) {
            None | Some("") => DEFAULT_VERSION_PATH.to_owned(),
            Some(p) => {
                let ok = p.starts_with('/')
                    && p.len() <= 256
                    && p.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
                if !ok {
                    return Err(format!(
                        "{VERSION_PATH_META_KEY} = {p:?}: expected a path such as \"/version\" (starting with /, no spaces)"
                    ));
                }
                p.to_owned()
            }
        };
        let check = check.map(str::trim).unwrap_or(DEFAULT_VERSION_CHECK);
        if check.eq_ignore_ascii_case("body") || check.is_empty() {
            return Ok(VersionCheck::Body { path });
        }
        if check.eq_ignore_ascii_case("none") {
            return Ok(VersionCheck::None);
        }
        if let Some((kind, name)) = check.split_once(':')
            && kind.trim().eq_ignore_ascii_case("header")
        {
            let name = name.trim();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok() {
                return Ok(VersionCheck::Header {
                    path,
                    header: name.to_owned(),
                });
            }
            return Err(format!(
                "{VERSION_CHECK_META_KEY} = {check:?}: {name:?} is not a header name"
            ));
        }
        Err(format!(
            "{VERSION_CHECK_META_KEY} = {check:?}: expected \"body\", \"header:<Name>\" or \"none\""
        ))
    }

    /// What is asked, for messages: `GET /version`, `header X-App-Version of GET /`, `Nomad's
    /// record`.
    pub fn describe(&self) -> String {
        match self {
            VersionCheck::Body { path } => format!("GET {path}"),
            VersionCheck::Header { path, header } => format!("header {header} of GET {path}"),
            VersionCheck::None => "Nomad's record".to_owned(),
        }
    }

    /// The instance's version from its answer to `GET path`, or why there is none.
    pub fn read(&self, headers: &reqwest::header::HeaderMap, body: &str) -> Result<String, String> {
        let v = match self {
            VersionCheck::Body { .. } => body.trim(),
            VersionCheck::Header { header, .. } => headers
                .get(header.as_str())
                .ok_or_else(|| format!("the answer has no {header} header"))?
                .to_str()
                .map_err(|_| format!("the {header} header is not text"))?
                .trim(),
            VersionCheck::None => return Err("no request is made".to_owned()),
        };
        if v.len() > 128 {
            return Err("the answer is too long to be a version".to_owned());
        }
        Ok(v.to_owned())
    }
}

/// Nomad's proof that group `group` runs `version`: the registered job's group `meta.version`
/// is `version` and every allocation of the group meant to run is running the registered job
/// version (at least one is). Returns how many allocations prove it.
pub fn nomad_proof(
    job: &Job,
    allocations: &[AllocationListStub],
    group: &str,
    version: &str,
) -> Result<usize, String> {
    let registered = job.group_meta(group, VERSION_META_KEY);
    if registered != Some(version) {
        return Err(format!(
            "job {} (version {}) registers meta.version {} for group {group}, not {version:?}",
            job.id(),
            job.version(),
            registered.map_or_else(|| "unset".to_owned(), |v| format!("{v:?}"))
        ));
    }
    let live: Vec<&AllocationListStub> = allocations
        .iter()
        .filter(|a| a.task_group == group && a.desired_status == "run")
        .collect();
    let wrong: Vec<String> = live
        .iter()
        .filter(|a| a.client_status != "running" || a.job_version != job.version())
        .map(|a| {
            format!(
                "allocation {} is {} at job version {}",
                a.id.get(..8).unwrap_or(&a.id),
                a.client_status,
                a.job_version
            )
        })
        .collect();
    if live.is_empty() {
        return Err(format!("no allocation of group {group} is meant to run"));
    }
    if !wrong.is_empty() {
        return Err(format!(
            "group {group} does not all run job version {} ({})",
            job.version(),
            wrong.join("; ")
        ));
    }
    Ok(live.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_parse_from_meta() {
        assert_eq!(
            VersionCheck::parse(None, None).unwrap(),
            VersionCheck::default()
        );
        assert_eq!(
            VersionCheck::parse(Some("header:X-App-Version"), Some("/")).unwrap(),
            VersionCheck::Header {
                path: "/".into(),
                header: "X-App-Version".into()
            }
        );
        assert_eq!(
            VersionCheck::parse(Some("body"), Some("/build")).unwrap(),
            VersionCheck::Body {
                path: "/build".into()
            }
        );
        assert_eq!(
            VersionCheck::parse(Some("NONE"), None).unwrap(),
            VersionCheck::None
        );
        for (check, path) in [
            (Some("header:"), None),
            (Some("header:bad name"), None),
            (Some("json"), None),
            (None, Some("version")),
            (None, Some("/a b")),
        ] {
            let e = VersionCheck::parse(check, path).unwrap_err();
            assert!(e.contains("switchyard_version"), "{e}");
        }
        let job = Job(json!({"ID": "web", "Meta": {"switchyard_version_check": "nope"}}));
        let e = VersionCheck::from_job(&job).unwrap_err();
        assert!(
            e.starts_with("job web meta: switchyard_version_check"),
            "{e}"
        );
        let job = Job(json!({"ID": "web", "Meta": null}));
        assert_eq!(
            VersionCheck::from_job(&job).unwrap(),
            VersionCheck::default()
        );
    }

    #[test]
    fn answers_are_read_from_body_or_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-app-version", "v3".parse().unwrap());
        let header = VersionCheck::parse(Some("header:X-App-Version"), None).unwrap();
        assert_eq!(header.read(&headers, "hello").unwrap(), "v3");
        let e = header
            .read(&reqwest::header::HeaderMap::new(), "v3")
            .unwrap_err();
        assert!(e.contains("no X-App-Version header"), "{e}");
        assert_eq!(
            VersionCheck::default().read(&headers, " v4\n").unwrap(),
            "v4"
        );
        assert!(
            VersionCheck::default()
                .read(&headers, &"x".repeat(200))
                .is_err()
        );
    }

    /// docs/config.md documents each meta key with its default, and documents no other
    /// `switchyard_version_*` key.
    #[test]
    fn docs_state_the_keys_and_defaults_the_code_uses() {
        let docs = include_str!("../../docs/config.md");
        let documented: Vec<(String, String)> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("- `switchyard_version_"))
            .map(|rest| {
                let (key, rest) = rest.split_once('`').unwrap();
                let default = rest
                    .split_once("(default `")
                    .and_then(|(_, d)| d.split_once('`'))
                    .map(|(d, _)| d.trim_matches('"').to_owned())
                    .unwrap_or_default();
                (format!("switchyard_version_{key}"), default)
            })
            .collect();
        let code = vec![
            (
                VERSION_CHECK_META_KEY.to_owned(),
                DEFAULT_VERSION_CHECK.to_owned(),
            ),
            (
                VERSION_PATH_META_KEY.to_owned(),
                DEFAULT_VERSION_PATH.to_owned(),
            ),
        ];
        assert_eq!(documented, code, "docs/config.md, version verification");
        // Every form the docs name parses.
        for form in ["body", "header:X-App-Version", "none"] {
            assert!(docs.contains(&format!("`\"{}", form.split(':').next().unwrap())));
            assert!(VersionCheck::parse(Some(form), None).is_ok(), "{form}");
        }
    }

    fn alloc(group: &str, client: &str, version: u64) -> AllocationListStub {
        serde_json::from_value(json!({
            "ID": format!("{group}-{client}-{version}-0000"), "TaskGroup": group,
            "DesiredStatus": "run", "ClientStatus": client, "JobVersion": version
        }))
        .unwrap()
    }

    #[test]
    fn nomad_proves_a_version_by_meta_and_job_version() {
        let job = Job(json!({"ID": "web", "Version": 5,
            "TaskGroups": [{"Name": "green", "Meta": {"version": "v3"}}]}));
        let good = [alloc("green", "running", 5), alloc("blue", "running", 2)];
        assert_eq!(nomad_proof(&job, &good, "green", "v3"), Ok(1));
        let e = nomad_proof(&job, &good, "green", "v4").unwrap_err();
        assert!(e.contains("registers meta.version \"v3\""), "{e}");
        let stale = [alloc("green", "running", 5), alloc("green", "running", 4)];
        let e = nomad_proof(&job, &stale, "green", "v3").unwrap_err();
        assert!(e.contains("at job version 4"), "{e}");
        let pending = [alloc("green", "pending", 5)];
        assert!(nomad_proof(&job, &pending, "green", "v3").is_err());
        assert!(nomad_proof(&job, &[], "green", "v3").is_err());
    }
}
