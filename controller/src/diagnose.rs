//! `diagnose`: findings with a severity and a concrete next command ([`diagnose`], a pure
//! function of [`Observed`] state and the backups on disk), their rendering and
//! [`Controller::diagnose`].
//!
//! Every next command runs as printed in a POSIX shell: no placeholders, explanations only
//! after a `#`, and a `switchyard` command is one its planner accepts in the observed state.

use std::fmt::Write as _;

use serde::Serialize;
use switchyard_model::DecidedBy;

use crate::observe::{Observed, RouteKey};
use crate::state::Backup;
use crate::version_check::VersionCheck;
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
    /// The concrete next command; it runs as printed (any explanation follows a `#`).
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

/// `switchyard <command> --service S`, with `--job J` when the job is named otherwise: the
/// start of every `switchyard` hint.
fn switchyard(command: &str, obs: &Observed) -> String {
    let mut out = format!("switchyard {command} --service {}", obs.service);
    if obs.job_id != obs.service {
        out.push_str(&format!(" --job {}", obs.job_id));
    }
    out
}

/// The hint for a standby instance that answers another version than its tag: deploy the
/// same version again with a new meta value, which replaces the group's allocations
/// (`deploy` refuses the same version without a change). The value is the job's current
/// version, which no earlier `redeploy` can have written.
fn redeploy_hint(obs: &Observed, tag: &str) -> String {
    let job_version = obs.job().map_or(0, switchyard_hashi::nomad::Job::version);
    format!(
        "{} --meta redeploy={job_version}  # replaces the standby's allocations; if they still answer wrongly, check the build and the job meta {}",
        switchyard(&format!("deploy {tag}"), obs),
        crate::version_check::VERSION_CHECK_META_KEY
    )
}

/// The hint that puts back what the last deploy replaced: a deploy of the version it replaced,
/// when its colour is still the standby and runs something else now. Re-submitting a backup
/// would change the active group too, so it is never suggested.
fn restore_hint(obs: &Observed) -> Option<String> {
    let history = obs.history.as_ref().ok()?;
    let last = history
        .entries
        .iter()
        .rev()
        .find(|e| e.command == "deploy" && e.outcome == "ok")?;
    let previous = last.from_version.as_deref()?;
    let colour = obs.colour_index(&last.to)?;
    let (active, _) = obs.active()?;
    if colour == active || obs.version_of(colour).as_deref() == Some(previous) {
        return None;
    }
    Some(format!(
        "{}  # puts back {previous}, which {} ran before the last deploy",
        switchyard(&format!("deploy {previous}"), obs),
        last.to
    ))
}

/// The findings gathered so far, in the order the checks add them.
#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, severity: Severity, code: &'static str, message: String, next: String) {
        self.0.push(Finding {
            severity,
            code,
            message,
            next,
        });
    }
}

/// Builds the `diagnose` findings: each check in turn, then worst first (the sort is stable, so
/// findings of one severity keep the order of the checks).
pub fn diagnose(obs: &Observed, backups: &[Backup], settings: &Settings) -> DiagnoseReport {
    let mut f = Findings::default();
    nomad_findings(obs, settings, &mut f);
    consul_findings(obs, settings, &mut f);
    route_findings(obs, settings, &mut f);
    proxy_status_findings(obs, &mut f);
    proxy_health_findings(obs, &mut f);
    group_findings(obs, &mut f);
    version_check_findings(obs, &mut f);
    instance_findings(obs, settings, &mut f);
    role_tag_findings(obs, &mut f);
    backup_findings(obs, backups, settings, &mut f);
    let mut f = f.0;
    f.sort_by_key(|x| std::cmp::Reverse(x.severity));
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    DiagnoseReport {
        service: obs.service.clone(),
        findings: f,
        errors,
    }
}

/// Nomad cannot be read, or has no job of the service.
fn nomad_findings(obs: &Observed, settings: &Settings, f: &mut Findings) {
    match &obs.nomad {
        Err(e) => f.add(
            Severity::Error,
            "nomad-unreachable",
            format!("Nomad at {} cannot be read: {e}", settings.nomad.address),
            format!(
                "curl -sS {}/v1/status/leader  # check NOMAD_ADDR / NOMAD_TOKEN",
                settings.nomad.address
            ),
        ),
        Ok(n) if n.job.is_none() => f.add(
            Severity::Error,
            "job-missing",
            format!("Nomad has no job {}", obs.job_id),
            "nomad job status  # the jobs Nomad runs; name the service's with --job".to_owned(),
        ),
        Ok(_) => {}
    }
}

/// Consul's instances of the service cannot be read.
fn consul_findings(obs: &Observed, settings: &Settings, f: &mut Findings) {
    if let Err(e) = &obs.instances {
        f.add(
            Severity::Error,
            "consul-unreachable",
            format!("Consul at {} cannot be read: {e}", settings.consul.address),
            format!(
                "curl -sS {}/v1/status/leader  # check CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN",
                settings.consul.address
            ),
        );
    }
}

/// The route key cannot be read, does not parse, or names no colour of the service.
fn route_findings(obs: &Observed, settings: &Settings, f: &mut Findings) {
    let key = &obs.route_key;
    match &obs.route {
        Err(e) => f.add(
            Severity::Error,
            "route-key-unreadable",
            format!("route key {key} cannot be read: {e}"),
            format!("curl -sS {}/v1/kv/{key}", settings.consul.address),
        ),
        Ok(Some(RouteKey { value: Err(e), .. })) => f.add(
            Severity::Error,
            "route-key-invalid",
            format!("route key {key} is unusable: {e}"),
            format!("{} --force  # rewrites it", switchyard("switch", obs)),
        ),
        Ok(Some(RouteKey { value: Ok(v), .. })) if obs.colour_index(&v.active).is_none() => f.add(
            Severity::Error,
            "route-key-invalid",
            format!(
                "route key {key} names {:?}, not one of {:?}",
                v.active, obs.colours
            ),
            format!("{} --force  # rewrites it", switchyard("switch", obs)),
        ),
        _ => {}
    }
}

/// What each proxy's admin status says: unreachable, not routing the service, fail-static, or
/// serving another colour or an older generation than the route key.
fn proxy_status_findings(obs: &Observed, f: &mut Findings) {
    let svc = &obs.service;
    for p in &obs.proxies {
        match &p.status {
            Err(e) => f.add(
                Severity::Error,
                "proxy-unreachable",
                format!("proxy admin {} cannot be read: {e}", p.url),
                format!(
                    "curl -sS {}/status  # check --proxy / SWITCHYARD_PROXIES",
                    p.url
                ),
            ),
            Ok(None) => f.add(
                Severity::Warning,
                "proxy-without-service",
                format!("proxy {} does not route {svc}", p.url),
                format!("curl -sS {}/status", p.url),
            ),
            Ok(Some(s)) => {
                if s.fail_static {
                    f.add(
                        Severity::Error,
                        "proxy-fail-static",
                        format!(
                            "proxy {} is fail-static for {svc}: {}",
                            p.url,
                            s.fail_static_reason.as_deref().unwrap_or("no reason given")
                        ),
                        format!(
                            "{}  # then fix the Consul data it distrusts",
                            switchyard("status", obs)
                        ),
                    );
                }
                if let Some(v) = obs.route_value() {
                    if !s.active_colour.eq_ignore_ascii_case(&v.active) {
                        f.add(
                            Severity::Error,
                            "proxy-disagrees",
                            format!(
                                "proxy {} serves {} but the route key names {} (generation {} vs {})",
                                p.url, s.active_colour, v.active, s.generation, v.generation
                            ),
                            format!("curl -sS {}/status  # is its Consul watch stuck?", p.url),
                        );
                    } else if s.generation < v.generation {
                        f.add(
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
}

/// Proxies whose own Consul registration is not passing (`switch` refuses until it is).
fn proxy_health_findings(obs: &Observed, f: &mut Findings) {
    for p in &obs.proxies {
        if let Some(r) = p.not_passing() {
            f.add(
                Severity::Error,
                "proxy-not-passing",
                format!(
                    "proxy {} ({}) on node {} is {} in Consul; switch refuses until it passes (--force overrides)",
                    r.id, p.url, r.node, r.health
                ),
                format!(
                    "curl -sS {}/readyz  # its Consul check; one gone for good: consul services deregister -id={}",
                    p.url, r.id
                ),
            );
        }
    }
}

/// Per colour: a missing task group, a registration count other than the group's, and an
/// active colour without a passing instance.
fn group_findings(obs: &Observed, f: &mut Findings) {
    let (Some(job), Ok(_)) = (obs.job(), &obs.instances) else {
        return;
    };
    let active = obs.active();
    for i in 0..2 {
        let colour = &obs.colours[i];
        let is_active = active.is_some_and(|(a, _)| a == i);
        let Some(group) = obs.group_of(i) else {
            f.add(
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
            f.add(
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
            f.add(
                Severity::Error,
                "active-down",
                format!("the active colour {colour} has no passing instance"),
                format!(
                    "{}  # or: {}",
                    switchyard("rollback", obs),
                    switchyard("switch", obs)
                ),
            );
        }
    }
}

/// The job's version check meta does not parse.
fn version_check_findings(obs: &Observed, f: &mut Findings) {
    if let Err(e) = obs.version_check() {
        f.add(
            Severity::Error,
            "version-check-invalid",
            e,
            format!(
                "nomad job inspect {}  # fix the job meta {} / {}",
                obs.job_id,
                crate::version_check::VERSION_CHECK_META_KEY,
                crate::version_check::VERSION_PATH_META_KEY
            ),
        );
    }
}

/// Per instance: no colour, failing checks, and a version answer that disagrees with its tag
/// or is missing.
fn instance_findings(obs: &Observed, settings: &Settings, f: &mut Findings) {
    let Ok(instances) = &obs.instances else {
        return;
    };
    let svc = &obs.service;
    let active = obs.active();
    let check = obs.version_check().unwrap_or_default();
    let asked = check.describe();
    let path = match &check {
        VersionCheck::Body { path } | VersionCheck::Header { path, .. } => path.as_str(),
        VersionCheck::None => "/",
    };
    for inst in instances {
        let colour = inst.colour.map(|c| obs.colours[c].clone());
        let is_active = matches!((inst.colour, active), (Some(c), Some((a, _))) if c == a);
        if inst.colour.is_none() {
            f.add(
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
            f.add(
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
            (Some(Ok(v)), Some(tag)) if v != tag => f.add(
                Severity::Error,
                "version-mismatch",
                format!(
                    "instance {} is tagged version={tag} but answers {v:?} on {asked}",
                    inst.address
                ),
                if is_active {
                    format!(
                        "nomad job status {}  # the active colour runs the wrong build",
                        obs.job_id
                    )
                } else {
                    redeploy_hint(obs, tag)
                },
            ),
            (Some(Err(e)), _) if inst.passing() => f.add(
                Severity::Warning,
                "version-unanswered",
                format!(
                    "instance {} passes its checks but did not answer {asked}: {e}",
                    inst.address
                ),
                format!("curl -sS -i http://{}{path}", inst.address),
            ),
            _ => {}
        }
    }
}

/// When the route key decides the active colour: instances whose role tag says otherwise.
fn role_tag_findings(obs: &Observed, f: &mut Findings) {
    let Some((a, DecidedBy::RouteKey)) = obs.active() else {
        return;
    };
    for i in 0..2 {
        let want = if i == a { "active" } else { "standby" };
        let wrong = obs
            .instances_of(i)
            .iter()
            .filter(|x| x.role_tag().is_some_and(|r| r != want))
            .count();
        if wrong > 0 {
            f.add(
                Severity::Warning,
                "role-tags-disagree",
                format!(
                    "the route key makes {} {want}, but {wrong} of its instance(s) carry another role tag",
                    obs.colours[i]
                ),
                format!(
                    "nomad job inspect {}  # set the {} group's role tag to {want}; traffic follows the route key meanwhile",
                    obs.job_id, obs.colours[i]
                ),
            );
        }
    }
}

/// The job backups on disk, with the deploy that restores what the last one replaced.
fn backup_findings(obs: &Observed, backups: &[Backup], settings: &Settings, f: &mut Findings) {
    let dir = settings.state_dir.join("backups");
    match backups.last() {
        Some(b) => f.add(
            Severity::Info,
            "backups",
            format!(
                "{} job backup(s) in {}; latest {} (group {})",
                backups.len(),
                dir.display(),
                b.path.display(),
                b.group
            ),
            restore_hint(obs).unwrap_or_else(|| {
                format!(
                    "ls -l {}  # whole-job copies: re-submitting one would change the active group too",
                    dir.display()
                )
            }),
        ),
        None => f.add(
            Severity::Info,
            "backups",
            format!("no job backup in {}", dir.display()),
            "switchyard deploy --help  # a deploy saves the job here before changing it".to_owned(),
        ),
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
            "nomad job status web  # the active colour runs the wrong build"
        );
        assert!(r.findings.iter().all(|f| runs_as_printed(&f.next)));
        assert!(render_diagnose(&r).contains("next: "));
    }

    /// Whether `next` runs as printed: a known program, no placeholder, and any explanation
    /// after a `#`.
    fn runs_as_printed(next: &str) -> bool {
        let command = next.split(" #").next().unwrap_or("");
        let program = command.split_whitespace().next().unwrap_or("");
        ["curl", "nomad", "switchyard", "ls", "consul"].contains(&program)
            && !command.contains(['(', ')', '<', '>'])
    }

    /// `(version, settings)` of a `switchyard deploy` hint, as the command line would parse it.
    fn parse_deploy(next: &str) -> (String, crate::deploy_settings::StandbySettings) {
        let words: Vec<&str> = next
            .split(" #")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(&words[..2], ["switchyard", "deploy"], "{next}");
        let mut settings = crate::deploy_settings::StandbySettings::default();
        let mut it = words[3..].iter();
        while let Some(flag) = it.next() {
            let value = it.next().unwrap();
            match *flag {
                "--meta" => settings
                    .meta
                    .push(crate::deploy_settings::parse_key_value(value).unwrap()),
                "--service" => assert_eq!(*value, "web"),
                other => panic!("unexpected {other} in {next}"),
            }
        }
        (words[2].to_owned(), settings)
    }

    #[test]
    fn every_hint_runs_as_printed() {
        let settings = Settings::from_lookup("web", |_| None);
        let mut obs = observed();
        obs.proxies[1].registration = Some(crate::observe::ProxyRegistration {
            id: "switchyard-proxy-10.0.0.2-8081".into(),
            node: "n2".into(),
            health: CheckStatus::Critical,
        });
        obs.nomad = Err("connection refused".into());
        let mut r = diagnose(&obs, &[], &settings).findings;
        obs.nomad = Ok(crate::observe::NomadView::default());
        obs.instances = Err("timeout".into());
        r.extend(diagnose(&obs, &[], &settings).findings);
        r.extend(diagnose(&observed(), &[], &settings).findings);
        let codes: Vec<&str> = r.iter().map(|f| f.code).collect();
        for want in [
            "proxy-not-passing",
            "nomad-unreachable",
            "consul-unreachable",
            "job-missing",
        ] {
            assert!(codes.contains(&want), "{want} missing from {codes:?}");
        }
        let not_passing = r.iter().find(|f| f.code == "proxy-not-passing").unwrap();
        assert!(
            not_passing
                .message
                .contains("switchyard-proxy-10.0.0.2-8081"),
            "{}",
            not_passing.message
        );
        for f in &r {
            assert!(runs_as_printed(&f.next), "[{}] {}", f.code, f.next);
        }
    }

    /// A standby instance that answers another version: the hint is a deploy the planner
    /// accepts (the plain same-version deploy would be refused as already deployed).
    #[test]
    fn the_standby_mismatch_hint_is_a_deploy_the_planner_accepts() {
        let mut obs = crate::testing::observed();
        if let Ok(list) = &mut obs.instances {
            list[3].reported_version = Some(Ok("v9".into()));
        }
        let settings = Settings::from_lookup("web", |_| None);
        let r = diagnose(&obs, &[], &settings);
        let f = r
            .findings
            .iter()
            .find(|f| f.code == "version-mismatch")
            .unwrap();
        assert!(
            f.next
                .starts_with("switchyard deploy v2 --service web --meta redeploy=4"),
            "{}",
            f.next
        );
        let (version, with) = parse_deploy(&f.next);
        assert!(crate::deploy::plan_deploy(&obs, &version).is_err());
        let plan = crate::deploy::plan_deploy_with(&obs, &version, &with).unwrap();
        assert_eq!(plan.group, "green");
    }

    /// After a deploy, the backup hint deploys the version it replaced (only the standby group
    /// changes), never a re-submission of the whole old job.
    #[test]
    fn the_restore_hint_deploys_the_replaced_version() {
        let mut obs = crate::testing::observed();
        let mut deploy = crate::testing::record("deploy", "green", "green", "v0");
        deploy.to_version = Some("v2".into());
        crate::testing::with_history(&mut obs, vec![deploy]);
        let settings = Settings::from_lookup("web", |_| None);
        let backup = Backup {
            path: "/tmp/web.green.1.json".into(),
            group: "green".into(),
            taken_at_ms: 1,
        };
        let r = diagnose(&obs, std::slice::from_ref(&backup), &settings);
        let f = r.findings.iter().find(|f| f.code == "backups").unwrap();
        assert!(
            f.next.starts_with("switchyard deploy v0 --service web  #"),
            "{}",
            f.next
        );
        let (version, with) = parse_deploy(&f.next);
        let plan = crate::deploy::plan_deploy_with(&obs, &version, &with).unwrap();
        assert_eq!(
            (plan.group.as_str(), plan.to_version.as_str()),
            ("green", "v0")
        );
        // Once green is active (or back on v0) there is nothing to put back on the standby.
        crate::testing::with_route(&mut obs, "green", 1);
        let r = diagnose(&obs, &[backup], &settings);
        let f = r.findings.iter().find(|f| f.code == "backups").unwrap();
        assert!(f.next.starts_with("ls -l "), "{}", f.next);
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
