//! `status`: the report ([`status_report`], a pure function of [`Observed`] state), its text
//! rendering and [`Controller::status`].

use std::fmt::Write as _;

use serde::Serialize;
use switchyard_model::DecidedBy;

use crate::Controller;
use crate::history::HistoryEntry;
use crate::observe::{Instance, Observed, ProxyObservation, RouteKey};

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
    /// The last deploy, when SIGINT or SIGTERM stopped it, with the command that finishes it.
    pub interrupted: Option<InterruptedDeploy>,
    /// Sources that could not be read (`nomad: ...`, `consul: ...`, `route key: ...`).
    pub errors: Vec<String>,
}

/// A deploy that SIGINT or SIGTERM stopped.
#[derive(Clone, Debug, Serialize)]
pub struct InterruptedDeploy {
    /// Its history entry (`outcome` says what was undone).
    pub entry: HistoryEntry,
    /// The command that finishes it (or, when its revert did not complete, undoes it).
    pub next: String,
}

/// What to run after an interrupted deploy: the same deploy again finishes it; when its revert
/// did not bring the standby back, reverting the job undoes it.
pub fn after_interrupted_deploy(e: &HistoryEntry, service: &str, job: &str) -> String {
    let again = format!(
        "switchyard deploy {} --service {service}",
        e.to_version.as_deref().unwrap_or("<version>")
    );
    let settled = e.outcome.contains("nothing was changed") || e.outcome.contains(" again");
    match e.revert_to_job_version {
        Some(v) if !settled => {
            format!("nomad job revert {job} {v} (undo), or {again} (finish)")
        }
        _ => again,
    }
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
    /// `passing`, `warning`, `critical`, ..., or `node failed` when its node's `serfHealth`
    /// check is critical (Consul keeps such registrations for up to 72 h).
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
    /// Its Consul service ID, when registered (a proxy given only with `--proxy` has none).
    pub registered_id: Option<String>,
    /// The status of its Consul checks, when registered (`passing`, `critical`, ...).
    pub consul_health: Option<String>,
}

/// Builds the `status` document.
pub fn status_report(obs: &Observed) -> StatusReport {
    let active = obs.active();
    let job = obs.job();
    StatusReport {
        service: obs.service.clone(),
        job: obs.job_id.clone(),
        active: active.map(|(i, _)| obs.colours[i].clone()),
        decided_by: active.map(|(_, d)| d),
        route: route_summary(&obs.route),
        job_version: job.map(|j| j.version()),
        colours: (0..2)
            .map(|i| colour_status(obs, i, active.map(|(a, _)| a)))
            .collect(),
        proxies: obs.proxies.iter().map(proxy_summary).collect(),
        interrupted: obs
            .history
            .as_ref()
            .ok()
            .and_then(|h| h.interrupted_deploy())
            .map(|e| InterruptedDeploy {
                next: after_interrupted_deploy(e, &obs.service, &obs.job_id),
                entry: e.clone(),
            }),
        errors: unread_sources(obs),
    }
}

/// The sources that could not be read, each named.
fn unread_sources(obs: &Observed) -> Vec<String> {
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
    errors
}

/// The route key, when it exists (a read error is among the report's errors).
fn route_summary(route: &Result<Option<RouteKey>, String>) -> Option<RouteSummary> {
    let Ok(Some(RouteKey {
        modify_index,
        value,
    })) = route
    else {
        return None;
    };
    Some(match value {
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
    })
}

/// Colour `i`: its role (when the active colour, `active`, is known), its group and its
/// instances.
fn colour_status(obs: &Observed, i: usize, active: Option<usize>) -> ColourStatus {
    let job = obs.job();
    let group = obs.group_of(i);
    let instances = obs.registered_of(i);
    let mut role_tags: Vec<String> = instances
        .iter()
        .filter_map(|x| x.role_tag())
        .map(str::to_owned)
        .collect();
    role_tags.sort();
    role_tags.dedup();
    ColourStatus {
        colour: obs.colours[i].clone(),
        role: active.map(|a| if a == i { "active" } else { "standby" }.to_owned()),
        role_tags,
        group_version: group
            .as_deref()
            .and_then(|g| job?.group_meta(g, "version"))
            .map(str::to_owned),
        group_count: group.as_deref().and_then(|g| job?.group_count(g)),
        group,
        version: obs.version_of(i),
        passing: obs.passing_count(i),
        instances: instances.into_iter().map(instance_status).collect(),
    }
}

/// One registered instance.
fn instance_status(x: &Instance) -> InstanceStatus {
    InstanceStatus {
        id: x.id.clone(),
        address: x.address.clone(),
        health: if x.node_failed {
            "node failed".to_owned()
        } else {
            x.health.to_string()
        },
        version_tag: x.version_tag().map(str::to_owned),
        reported_version: x.reported().map(str::to_owned),
        version_error: match &x.reported_version {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        },
        role_tag: x.role_tag().map(str::to_owned),
    }
}

/// One proxy: what it serves when it routes the service.
fn proxy_summary(p: &ProxyObservation) -> ProxySummary {
    let reg = p.registration.as_ref();
    match &p.status {
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
            registered_id: reg.map(|r| r.id.clone()),
            consul_health: reg.map(|r| r.health.to_string()),
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
            registered_id: reg.map(|r| r.id.clone()),
            consul_health: reg.map(|r| r.health.to_string()),
        },
    }
}

/// `-` for what is unknown.
fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".to_owned())
}

/// Renders the `status` document as text.
pub fn render_status(r: &StatusReport) -> String {
    let mut out = String::new();
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
    let _ = writeln!(out, "{}", route_line(r.route.as_ref()));
    render_colours(&mut out, &r.colours);
    for p in &r.proxies {
        let _ = writeln!(out, "{}", proxy_line(p, &r.service));
    }
    if let Some(i) = &r.interrupted {
        let _ = writeln!(
            out,
            "interrupted: deploy {} to {} at {} by {}: {}",
            opt(&i.entry.to_version),
            i.entry.to,
            i.entry.at,
            i.entry.who,
            i.entry
                .outcome
                .strip_prefix(crate::history::INTERRUPTED)
                .unwrap_or(&i.entry.outcome)
        );
        let _ = writeln!(out, "next: {}", i.next);
    }
    for e in &r.errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// The route key's line.
fn route_line(route: Option<&RouteSummary>) -> String {
    match route {
        Some(k) if k.error.is_none() => format!(
            "route key: active {} generation {} written {} by {} (index {})",
            opt(&k.active),
            k.generation.unwrap_or(0),
            opt(&k.updated_at),
            opt(&k.updated_by),
            k.modify_index
        ),
        Some(k) => format!("route key: UNUSABLE: {}", opt(&k.error)),
        None => "route key: absent (role tags decide)".to_owned(),
    }
}

/// The table of colours, each followed by its instances.
fn render_colours(out: &mut String, colours: &[ColourStatus]) {
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<12} {:<8} {:<9} {:<8} {:<10}",
        "COLOUR", "ROLE", "ROLE TAGS", "GROUP", "VERSION", "PASSING", "COUNT"
    );
    for c in colours {
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
                "    {:<22} {:<11} tag {:<8} reports {}",
                i.address,
                i.health,
                opt(&i.version_tag),
                reported
            );
        }
    }
}

/// A proxy's line: what it serves, that it does not route `service`, or why it could not be
/// asked.
fn proxy_line(p: &ProxySummary, service: &str) -> String {
    let consul = match &p.consul_health {
        Some(h) if h != "passing" => format!(" [{h} in Consul]"),
        _ => String::new(),
    };
    if let Some(g) = p.generation {
        format!(
            "proxy {}{consul}: serves {} generation {}{}{}",
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
        )
    } else if p.reachable {
        format!("proxy {}{consul}: does not route {service}", p.url)
    } else {
        format!("proxy {}{consul}: unreachable: {}", p.url, opt(&p.error))
    }
}

impl Controller {
    /// `status`.
    pub async fn status(&self) -> StatusReport {
        status_report(&self.observe().await)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::report_observed as observed;

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
        assert!(r.interrupted.is_none());
        assert!(!text.contains("interrupted"), "{text}");
    }

    #[test]
    fn an_interrupted_deploy_is_shown_with_the_command_that_finishes_or_undoes_it() {
        let entry = |outcome: &str| HistoryEntry {
            command: "deploy".into(),
            who: "ops".into(),
            at: "2026-01-01T00:00:00Z".into(),
            from: "blue".into(),
            to: "blue".into(),
            from_version: Some("v2".into()),
            to_version: Some("v3".into()),
            generation: 0,
            revert_to_job_version: Some(4),
            outcome: format!("{}{outcome}", crate::history::INTERRUPTED),
        };
        let mut obs = observed();
        let reverted = entry(
            "deploy of v3 to blue interrupted (SIGINT); job web reverted to version 4; blue runs v2 again",
        );
        obs.history = Ok(crate::history::History {
            entries: vec![reverted.clone()],
        });
        let r = status_report(&obs);
        let i = r.interrupted.as_ref().unwrap();
        assert_eq!(i.entry, reverted);
        assert_eq!(
            i.next,
            format!("switchyard deploy v3 --service {}", obs.service)
        );
        let text = render_status(&r);
        assert!(
            text.contains(
                "interrupted: deploy v3 to blue at 2026-01-01T00:00:00Z by ops: deploy of v3"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "next: switchyard deploy v3 --service {}",
                obs.service
            )),
            "{text}"
        );

        let stuck = entry(
            "deploy of v3 to blue interrupted (SIGTERM); reverting job web to version 4 FAILED (boom)",
        );
        assert_eq!(
            after_interrupted_deploy(&stuck, "web", "webjob"),
            "nomad job revert webjob 4 (undo), or switchyard deploy v3 --service web (finish)"
        );
    }
}
