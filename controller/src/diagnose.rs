//! `diagnose`: findings with a severity and a concrete next command ([`diagnose`], a pure
//! function of [`Observed`] state and the backups on disk), their rendering and
//! [`Controller::diagnose`].

use std::fmt::Write as _;

use serde::Serialize;
use switchyard_model::DecidedBy;

use crate::observe::{Observed, RouteKey};
use crate::state::Backup;
use crate::{Controller, Settings};

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

impl Controller {
    /// `diagnose`.
    pub async fn diagnose(&self) -> DiagnoseReport {
        let obs = self.observe().await;
        let backups = self.state.backups(&self.settings.job);
        diagnose(&obs, &backups, &self.settings)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::report_observed as observed;
    use switchyard_hashi::consul::CheckStatus;

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
