//! `status` and `diagnose`, as pure functions of [`Observed`] state.
//!
//! Both produce serialisable documents (`--json`) and a text rendering. `diagnose` attaches
//! a severity and a concrete next command to every finding, because an operator reading it is
//! usually in the middle of an incident.

use std::fmt::Write as _;

use serde::Serialize;

use crate::Settings;
use switchyard_model::DecidedBy;

use crate::observe::{Observed, RouteKey};
use crate::state::Backup;

/// The `status` document.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// Service.
    pub service: String,
    /// Job.
    pub job: String,
    /// The active colour, when known.
    pub active: Option<String>,
    /// `route-key` or `tags`; `None` when unknown.
    pub decided_by: Option<DecidedBy>,
    /// The route key, when it exists.
    pub route: Option<RouteSummary>,
    /// The Nomad job's version, when read.
    pub job_version: Option<u64>,
    /// One entry per colour.
    pub colours: Vec<ColourStatus>,
    /// One entry per proxy.
    pub proxies: Vec<ProxySummary>,
    /// Sources that could not be read (`nomad: ...`, `consul: ...`, `route key: ...`).
    pub errors: Vec<String>,
}

/// The route key.
#[derive(Clone, Debug, Serialize)]
pub struct RouteSummary {
    /// Its ModifyIndex.
    pub modify_index: u64,
    /// Active colour it names.
    pub active: Option<String>,
    /// Generation.
    pub generation: Option<u64>,
    /// When written.
    pub updated_at: Option<String>,
    /// By whom.
    pub updated_by: Option<String>,
    /// Why it is unusable, when it is.
    pub error: Option<String>,
}

/// One colour.
#[derive(Clone, Debug, Serialize)]
pub struct ColourStatus {
    /// Colour tag.
    pub colour: String,
    /// `active` / `standby` per the decision (route key, else tags).
    pub role: Option<String>,
    /// The role tags its instances carry (distinct, sorted).
    pub role_tags: Vec<String>,
    /// Task group.
    pub group: Option<String>,
    /// The group's `meta.version`.
    pub group_version: Option<String>,
    /// The group's count.
    pub group_count: Option<u64>,
    /// The most common `version=` tag.
    pub version: Option<String>,
    /// Instances passing every check.
    pub passing: usize,
    /// Every instance.
    pub instances: Vec<InstanceStatus>,
}

/// One instance.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceStatus {
    /// Consul service ID.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// `passing`, `warning`, `critical`, ...
    pub health: String,
    /// Its `version=` tag.
    pub version_tag: Option<String>,
    /// What it answered on `/version`.
    pub reported_version: Option<String>,
    /// Why it could not be asked.
    pub version_error: Option<String>,
    /// Its role tag.
    pub role_tag: Option<String>,
}

/// One proxy.
#[derive(Clone, Debug, Serialize)]
pub struct ProxySummary {
    /// Admin URL.
    pub url: String,
    /// Whether `/status` answered.
    pub reachable: bool,
    /// Whether it routes this service.
    pub routes_service: bool,
    /// Error, when unreachable.
    pub error: Option<String>,
    /// Generation applied.
    pub generation: Option<u64>,
    /// Colour served.
    pub active: Option<String>,
    /// How it decided.
    pub decided_by: Option<String>,
    /// Fail-static state.
    pub fail_static: bool,
    /// Why.
    pub fail_static_reason: Option<String>,
    /// Whether it has synced with Consul.
    pub synced: Option<bool>,
}

/// Builds the `status` document.
pub fn status_report(obs: &Observed) -> StatusReport {
    let mut errors = Vec::new();
    if let Err(e) = &obs.nomad {
        errors.push(format!("nomad: {e}"));
    }
    if let Err(e) = &obs.instances {
        errors.push(format!("consul: {e}"));
    }
    if let Err(e) = &obs.route {
        errors.push(format!("route key: {e}"));
    }
    let active = obs.active();
    let route = match &obs.route {
        Ok(Some(RouteKey {
            modify_index,
            value,
        })) => Some(match value {
            Ok(v) => RouteSummary {
                modify_index: *modify_index,
                active: Some(v.active.clone()),
                generation: Some(v.generation),
                updated_at: Some(v.updated_at.clone()),
                updated_by: Some(v.updated_by.clone()),
                error: None,
            },
            Err(e) => RouteSummary {
                modify_index: *modify_index,
                active: None,
                generation: None,
                updated_at: None,
                updated_by: None,
                error: Some(e.clone()),
            },
        }),
        _ => None,
    };
    let job = obs.job();
    let colours = (0..2)
        .map(|i| {
            let group = obs.group_of(i);
            let instances = obs.instances_of(i);
            let mut role_tags: Vec<String> = instances
                .iter()
                .filter_map(|x| x.role_tag())
                .map(str::to_owned)
                .collect();
            role_tags.sort();
            role_tags.dedup();
            ColourStatus {
                colour: obs.colours[i].clone(),
                role: active.map(|(a, _)| if a == i { "active" } else { "standby" }.to_owned()),
                role_tags,
                group_version: group
                    .as_deref()
                    .and_then(|g| job?.group_meta(g, "version"))
                    .map(str::to_owned),
                group_count: group.as_deref().and_then(|g| job?.group_count(g)),
                group,
                version: obs.version_of(i),
                passing: obs.passing_count(i),
                instances: instances
                    .iter()
                    .map(|x| InstanceStatus {
                        id: x.id.clone(),
                        address: x.address.clone(),
                        health: x.health.to_string(),
                        version_tag: x.version_tag().map(str::to_owned),
                        reported_version: x.reported().map(str::to_owned),
                        version_error: match &x.reported_version {
                            Some(Err(e)) => Some(e.clone()),
                            _ => None,
                        },
                        role_tag: x.role_tag().map(str::to_owned),
                    })
                    .collect(),
            }
        })
        .collect();
    let proxies = obs
        .proxies
        .iter()
        .map(|p| match &p.status {
            Ok(Some(s)) => ProxySummary {
                url: p.url.clone(),
                reachable: true,
                routes_service: true,
                error: None,
                generation: Some(s.generation),
                active: Some(s.active_colour.clone()),
                decided_by: Some(s.decided_by.clone()),
                fail_static: s.fail_static,
                fail_static_reason: s.fail_static_reason.clone(),
                synced: Some(s.synced),
            },
            other => ProxySummary {
                url: p.url.clone(),
                reachable: other.is_ok(),
                routes_service: false,
                error: other.as_ref().err().cloned(),
                generation: None,
                active: None,
                decided_by: None,
                fail_static: false,
                fail_static_reason: None,
                synced: None,
            },
        })
        .collect();
    StatusReport {
        service: obs.service.clone(),
        job: obs.job_id.clone(),
        active: active.map(|(i, _)| obs.colours[i].clone()),
        decided_by: active.map(|(_, d)| d),
        route,
        job_version: job.map(|j| j.version()),
        colours,
        proxies,
        errors,
    }
}

/// Renders the `status` document as text.
pub fn render_status(r: &StatusReport) -> String {
    let mut out = String::new();
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let _ = writeln!(
        out,
        "service {}  job {} (version {})  active: {} (decided by {})",
        r.service,
        r.job,
        r.job_version.map_or("-".to_owned(), |v| v.to_string()),
        opt(&r.active),
        r.decided_by.map_or("nothing", |d| match d {
            DecidedBy::RouteKey => "route key",
            DecidedBy::Tags => "role tags",
        })
    );
    match &r.route {
        Some(k) if k.error.is_none() => {
            let _ = writeln!(
                out,
                "route key: active {} generation {} written {} by {} (index {})",
                opt(&k.active),
                k.generation.unwrap_or(0),
                opt(&k.updated_at),
                opt(&k.updated_by),
                k.modify_index
            );
        }
        Some(k) => {
            let _ = writeln!(out, "route key: UNUSABLE: {}", opt(&k.error));
        }
        None => {
            let _ = writeln!(out, "route key: absent (role tags decide)");
        }
    }
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<12} {:<8} {:<9} {:<8} {:<10}",
        "COLOUR", "ROLE", "ROLE TAGS", "GROUP", "VERSION", "PASSING", "COUNT"
    );
    for c in &r.colours {
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<12} {:<8} {:<9} {:<8} {:<10}",
            c.colour,
            opt(&c.role),
            if c.role_tags.is_empty() {
                "-".to_owned()
            } else {
                c.role_tags.join(",")
            },
            opt(&c.group),
            opt(&c.version),
            c.passing,
            c.group_count.map_or("-".to_owned(), |n| n.to_string()),
        );
        for i in &c.instances {
            let reported = match (&i.reported_version, &i.version_error) {
                (Some(v), _) => v.clone(),
                (None, Some(e)) => format!("unreachable ({e})"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<22} {:<9} tag {:<8} reports {}",
                i.address,
                i.health,
                opt(&i.version_tag),
                reported
            );
        }
    }
    for p in &r.proxies {
        if let Some(g) = p.generation {
            let _ = writeln!(
                out,
                "proxy {}: serves {} generation {}{}{}",
                p.url,
                opt(&p.active),
                g,
                if p.synced == Some(false) {
                    ", not synced"
                } else {
                    ""
                },
                if p.fail_static {
                    format!(", FAIL-STATIC: {}", opt(&p.fail_static_reason))
                } else {
                    String::new()
                }
            );
        } else if p.reachable {
            let _ = writeln!(out, "proxy {}: does not route {}", p.url, r.service);
        } else {
            let _ = writeln!(out, "proxy {}: unreachable: {}", p.url, opt(&p.error));
        }
    }
    for e in &r.errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Worth fixing; nothing is broken yet.
    Warning,
    /// Broken; `diagnose` exits non-zero.
    Error,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// A stable identifier, e.g. `consul-unreachable`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// The concrete next command.
    pub next: String,
}

/// The `diagnose` document.
#[derive(Clone, Debug, Serialize)]
pub struct DiagnoseReport {
    /// Service.
    pub service: String,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// Number of error findings.
    pub errors: usize,
}

impl DiagnoseReport {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }
}

/// Builds the `diagnose` findings.
pub fn diagnose(obs: &Observed, backups: &[Backup], settings: &Settings) -> DiagnoseReport {
    let mut f = Vec::new();
    let svc = &obs.service;
    let mut add = |severity, code, message: String, next: String| {
        f.push(Finding {
            severity,
            code,
            message,
            next,
        })
    };
    match &obs.nomad {
        Err(e) => add(
            Severity::Error,
            "nomad-unreachable",
            format!("Nomad at {} cannot be read: {e}", settings.nomad.address),
            format!(
                "curl -sS {}/v1/status/leader  (check NOMAD_ADDR / NOMAD_TOKEN)",
                settings.nomad.address
            ),
        ),
        Ok(n) if n.job.is_none() => add(
            Severity::Error,
            "job-missing",
            format!("Nomad has no job {}", obs.job_id),
            "nomad job run config/hello-service.nomad.hcl  (or pass --job)".to_owned(),
        ),
        Ok(_) => {}
    }
    if let Err(e) = &obs.instances {
        add(
            Severity::Error,
            "consul-unreachable",
            format!("Consul at {} cannot be read: {e}", settings.consul.address),
            format!(
                "curl -sS {}/v1/status/leader  (check CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN)",
                settings.consul.address
            ),
        );
    }
    let key = obs.route_key.clone();
    match &obs.route {
        Err(e) => add(
            Severity::Error,
            "route-key-unreadable",
            format!("route key {key} cannot be read: {e}"),
            format!("curl -sS {}/v1/kv/{key}", settings.consul.address),
        ),
        Ok(Some(RouteKey { value: Err(e), .. })) => add(
            Severity::Error,
            "route-key-invalid",
            format!("route key {key} is unusable: {e}"),
            format!("switchyard switch --service {svc} --force  (rewrites it)"),
        ),
        Ok(Some(RouteKey { value: Ok(v), .. })) if obs.colour_index(&v.active).is_none() => add(
            Severity::Error,
            "route-key-invalid",
            format!(
                "route key {key} names {:?}, not one of {:?}",
                v.active, obs.colours
            ),
            format!("switchyard switch --service {svc} --force  (rewrites it)"),
        ),
        _ => {}
    }
    for p in &obs.proxies {
        match &p.status {
            Err(e) => add(
                Severity::Error,
                "proxy-unreachable",
                format!("proxy admin {} cannot be read: {e}", p.url),
                format!(
                    "curl -sS {}/status  (check --proxy / SWITCHYARD_PROXIES)",
                    p.url
                ),
            ),
            Ok(None) => add(
                Severity::Warning,
                "proxy-without-service",
                format!("proxy {} does not route {svc}", p.url),
                format!("curl -sS {}/status", p.url),
            ),
            Ok(Some(s)) => {
                if s.fail_static {
                    add(
                        Severity::Error,
                        "proxy-fail-static",
                        format!(
                            "proxy {} is fail-static for {svc}: {}",
                            p.url,
                            s.fail_static_reason.as_deref().unwrap_or("no reason given")
                        ),
                        format!(
                            "switchyard status --service {svc}  (then fix the Consul data it distrusts)"
                        ),
                    );
                }
                if let Some(v) = obs.route_value() {
                    if !s.active_colour.eq_ignore_ascii_case(&v.active) {
                        add(
                            Severity::Error,
                            "proxy-disagrees",
                            format!(
                                "proxy {} serves {} but the route key names {} (generation {} vs {})",
                                p.url, s.active_colour, v.active, s.generation, v.generation
                            ),
                            format!("curl -sS {}/status  (is its Consul watch stuck?)", p.url),
                        );
                    } else if s.generation < v.generation {
                        add(
                            Severity::Warning,
                            "proxy-behind",
                            format!(
                                "proxy {} is at generation {}, the route key at {}",
                                p.url, s.generation, v.generation
                            ),
                            format!("curl -sS {}/status", p.url),
                        );
                    }
                }
            }
        }
    }
    let active = obs.active();
    if let (Some(job), Ok(_)) = (obs.job(), &obs.instances) {
        for i in 0..2 {
            let colour = &obs.colours[i];
            let is_active = active.is_some_and(|(a, _)| a == i);
            let Some(group) = obs.group_of(i) else {
                add(
                    Severity::Error,
                    "group-missing",
                    format!("job {} has no task group for colour {colour}", obs.job_id),
                    format!("nomad job inspect {}", obs.job_id),
                );
                continue;
            };
            let want = job.group_count(&group).unwrap_or(0);
            let have = obs.instances_of(i).len() as u64;
            let passing = obs.passing_count(i) as u64;
            if have != want {
                add(
                    if is_active && passing == 0 {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    "registration-count",
                    format!(
                        "group {group} wants {want} instance(s); Consul has {have} registered for {colour}"
                    ),
                    format!("nomad job status {}", obs.job_id),
                );
            }
            if is_active && passing == 0 && want > 0 {
                add(
                    Severity::Error,
                    "active-down",
                    format!("the active colour {colour} has no passing instance"),
                    format!(
                        "switchyard rollback --service {svc}  (or switchyard switch --service {svc})"
                    ),
                );
            }
        }
    }
    if let Ok(instances) = &obs.instances {
        for inst in instances {
            let colour = inst.colour.map(|c| obs.colours[c].clone());
            let is_active = matches!((inst.colour, active), (Some(c), Some((a, _))) if c == a);
            if inst.colour.is_none() {
                add(
                    Severity::Warning,
                    "uncoloured-instance",
                    format!(
                        "instance {} ({}) carries both or neither colour tag; it is never routed to",
                        inst.address, inst.id
                    ),
                    format!(
                        "curl -sS {}/v1/health/service/{svc}",
                        settings.consul.address
                    ),
                );
            }
            if !inst.passing() {
                add(
                    if is_active {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    "check-failing",
                    format!(
                        "{} instance {} is {}: {}",
                        colour.as_deref().unwrap_or("uncoloured"),
                        inst.address,
                        inst.health,
                        inst.failing_checks.join("; ")
                    ),
                    format!("curl -sS http://{}/health", inst.address),
                );
            }
            match (&inst.reported_version, inst.version_tag()) {
                (Some(Ok(v)), Some(tag)) if v != tag => add(
                    Severity::Error,
                    "version-mismatch",
                    format!(
                        "instance {} is tagged version={tag} but answers {v:?} on /version",
                        inst.address
                    ),
                    if is_active {
                        format!(
                            "nomad job status {}  (the active colour runs the wrong build)",
                            obs.job_id
                        )
                    } else {
                        format!(
                            "switchyard deploy {tag} --service {svc} --job {}",
                            obs.job_id
                        )
                    },
                ),
                (Some(Err(e)), _) if inst.passing() => add(
                    Severity::Warning,
                    "version-unanswered",
                    format!(
                        "instance {} passes its checks but did not answer /version: {e}",
                        inst.address
                    ),
                    format!("curl -sS http://{}/version", inst.address),
                ),
                _ => {}
            }
        }
    }
    if let Some((a, DecidedBy::RouteKey)) = active {
        for i in 0..2 {
            let want = if i == a { "active" } else { "standby" };
            let wrong = obs
                .instances_of(i)
                .iter()
                .filter(|x| x.role_tag().is_some_and(|r| r != want))
                .count();
            if wrong > 0 {
                add(
                    Severity::Warning,
                    "role-tags-disagree",
                    format!(
                        "the route key makes {} {want}, but {wrong} of its instance(s) carry another role tag",
                        obs.colours[i]
                    ),
                    format!(
                        "nomad job inspect {}  (set the {} group's role tag to {want}; traffic follows the route key meanwhile)",
                        obs.job_id, obs.colours[i]
                    ),
                );
            }
        }
    }
    match backups.last() {
        Some(b) => add(
            Severity::Info,
            "backups",
            format!(
                "{} job backup(s) in {}; latest {} (group {})",
                backups.len(),
                settings.state_dir.join("backups").display(),
                b.path.display(),
                b.group
            ),
            format!(
                "jq '{{Job: .}}' {} | curl -sS -X POST --data-binary @- $NOMAD_ADDR/v1/jobs  (restores it)",
                b.path.display()
            ),
        ),
        None => add(
            Severity::Info,
            "backups",
            format!(
                "no job backup in {}",
                settings.state_dir.join("backups").display()
            ),
            format!(
                "switchyard deploy <version> --service {svc}  (takes one before changing the job)"
            ),
        ),
    }
    f.sort_by_key(|x| std::cmp::Reverse(x.severity));
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    DiagnoseReport {
        service: svc.clone(),
        findings: f,
        errors,
    }
}

/// Renders the findings as text, one per line with its next command.
pub fn render_diagnose(r: &DiagnoseReport) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Info => "info",
            Severity::Warning => "WARN",
            Severity::Error => "ERROR",
        };
        let _ = writeln!(
            out,
            "{sev:<5} [{}] {}\n      next: {}",
            f.code, f.message, f.next
        );
    }
    let _ = writeln!(
        out,
        "{} finding(s), {} error(s)",
        r.findings.len(),
        r.errors
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::observe::{Instance, NomadView, ProxyObservation, ProxyService};
    use serde_json::json;
    use switchyard_hashi::consul::CheckStatus;
    use switchyard_hashi::nomad::Job;
    use switchyard_model::RouteValue;

    fn observed() -> Observed {
        let group = |name: &str, v: &str, role: &str| {
            json!({"Name": name, "Count": 1, "Meta": {"version": v},
                   "Services": [{"Name": "web", "Tags": [name, role, "version=${NOMAD_META_version}"]}]})
        };
        let inst = |c: usize, v: &str, reported: &str, role: &str, health: CheckStatus| Instance {
            id: format!("id-{c}"),
            address: format!("127.0.0.1:{}", 3000 + c),
            tags: vec![
                ["blue", "green"][c].into(),
                role.into(),
                format!("version={v}"),
            ],
            colour: Some(c),
            health,
            failing_checks: if health == CheckStatus::Passing {
                vec![]
            } else {
                vec!["http: critical: 500".into()]
            },
            reported_version: Some(Ok(reported.into())),
        };
        Observed {
            service: "web".into(),
            job_id: "web".into(),
            colours: ["blue".into(), "green".into()],
            route_key: "switchyard/routes/web".into(),
            nomad: Ok(NomadView {
                job: Some(Job(json!({"ID": "web", "Version": 2,
                    "TaskGroups": [group("blue", "v1", "active"), group("green", "v2", "standby")]}))),
                allocations: vec![],
            }),
            instances: Ok(vec![
                inst(0, "v1", "v1", "active", CheckStatus::Passing),
                inst(1, "v2", "v9", "standby", CheckStatus::Critical),
            ]),
            route: Ok(Some(RouteKey {
                modify_index: 12,
                value: Ok(RouteValue::new("green", 3, "t")),
            })),
            proxies: vec![
                ProxyObservation {
                    url: "http://p1".into(),
                    status: Ok(Some(ProxyService {
                        active_colour: "green".into(),
                        standby_colour: "blue".into(),
                        generation: 3,
                        fail_static: true,
                        fail_static_reason: Some("empty".into()),
                        synced: true,
                        ..ProxyService::default()
                    })),
                },
                ProxyObservation {
                    url: "http://p2".into(),
                    status: Err("connection refused".into()),
                },
            ],
            last_switch: None,
        }
    }

    #[test]
    fn status_report_fields() {
        let r = status_report(&observed());
        assert_eq!(r.active.as_deref(), Some("green"));
        assert_eq!(r.decided_by, Some(DecidedBy::RouteKey));
        assert_eq!(r.route.as_ref().unwrap().generation, Some(3));
        assert_eq!(r.job_version, Some(2));
        assert_eq!(r.colours[0].role.as_deref(), Some("standby"));
        assert_eq!(r.colours[0].role_tags, vec!["active"]);
        assert_eq!(r.colours[1].passing, 0);
        assert_eq!(
            r.colours[1].instances[0].reported_version.as_deref(),
            Some("v9")
        );
        assert_eq!(r.colours[1].instances[0].version_tag.as_deref(), Some("v2"));
        assert!(r.proxies[0].fail_static);
        assert!(!r.proxies[1].reachable);
        let text = render_status(&r);
        assert!(text.contains("FAIL-STATIC"), "{text}");
        assert!(text.contains("127.0.0.1:3001"), "{text}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["decided_by"], "route-key");
    }

    #[test]
    fn diagnose_findings() {
        let settings = Settings::from_lookup("web", |_| None);
        let r = diagnose(&observed(), &[], &settings);
        let codes: Vec<&str> = r.findings.iter().map(|f| f.code).collect();
        for want in [
            "proxy-fail-static",
            "proxy-unreachable",
            "version-mismatch",
            "check-failing",
            "role-tags-disagree",
            "active-down",
            "backups",
        ] {
            assert!(codes.contains(&want), "{want} missing from {codes:?}");
        }
        assert!(r.has_errors());
        assert_eq!(r.findings[0].severity, Severity::Error);
        let mismatch = r
            .findings
            .iter()
            .find(|f| f.code == "version-mismatch")
            .unwrap();
        assert_eq!(
            mismatch.next,
            "nomad job status web  (the active colour runs the wrong build)"
        );
        assert!(render_diagnose(&r).contains("next: "));
    }

    #[test]
    fn diagnose_healthy_state_has_no_errors() {
        let mut obs = observed();
        obs.proxies.clear();
        obs.route = Ok(None);
        if let Ok(list) = &mut obs.instances {
            list[1].health = CheckStatus::Passing;
            list[1].failing_checks.clear();
            list[1].reported_version = Some(Ok("v2".into()));
        }
        let settings = Settings::from_lookup("web", |_| None);
        let r = diagnose(&obs, &[], &settings);
        assert!(!r.has_errors(), "{:?}", r.findings);
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    }
}
