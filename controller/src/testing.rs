//! Hand-built observed states the planners' and reports' unit tests share.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use switchyard_hashi::consul::CheckStatus;
use switchyard_hashi::nomad::Job;
use switchyard_model::RouteValue;

use crate::history::{History, HistoryEntry};
use crate::observe::{Instance, NomadView, Observed, ProxyObservation, ProxyService, RouteKey};
use crate::refusal::Refusal;
use crate::switch::{Planned, SwitchPlan};

pub(crate) fn group(name: &str, version: &str, role: &str) -> serde_json::Value {
    json!({
        "Name": name, "Count": 2, "Meta": {"version": version},
        "Services": [{"Name": "web", "Tags": [name, role, "version=${NOMAD_META_version}"]}],
        "Tasks": [{"Name": "app", "Config": {"args": ["--version", "${NOMAD_META_version}"]}}]
    })
}

pub(crate) fn job() -> Job {
    Job(json!({
        "ID": "web", "Version": 4, "JobModifyIndex": 40, "Meta": {"team": "a"},
        "TaskGroups": [group("blue", "v1", "active"), group("green", "v2", "standby")]
    }))
}

pub(crate) fn inst(colour: usize, n: u16, version: &str, role: &str, passing: bool) -> Instance {
    let c = ["blue", "green"][colour];
    Instance {
        id: format!("{c}-{n}"),
        address: format!(
            "127.0.0.1:{}",
            20000 + u16::try_from(colour).unwrap() * 100 + n
        ),
        tags: vec![c.into(), role.into(), format!("version={version}")],
        colour: Some(colour),
        health: if passing {
            CheckStatus::Passing
        } else {
            CheckStatus::Critical
        },
        failing_checks: vec![],
        node_failed: false,
        reported_version: Some(Ok(version.into())),
    }
}

pub(crate) fn observed() -> Observed {
    Observed {
        service: "web".into(),
        job_id: "web".into(),
        colours: ["blue".into(), "green".into()],
        route_key: "switchyard/routes/web".into(),
        nomad: Ok(NomadView {
            job: Some(job()),
            allocations: vec![],
            deployment: None,
        }),
        instances: Ok(vec![
            inst(0, 1, "v1", "active", true),
            inst(0, 2, "v1", "active", true),
            inst(1, 1, "v2", "standby", true),
            inst(1, 2, "v2", "standby", true),
        ]),
        route: Ok(None),
        proxies: vec![],
        history: Ok(History::default()),
    }
}

pub(crate) fn with_route(obs: &mut Observed, active: &str, generation: u64) {
    obs.route = Ok(Some(RouteKey {
        modify_index: 77,
        value: Ok(RouteValue::new(active, generation, "test")),
    }));
}

pub(crate) fn serving(colour: &str) -> ProxyObservation {
    ProxyObservation {
        url: format!("http://proxy-{colour}"),
        status: Ok(Some(ProxyService {
            active_colour: colour.into(),
            ..ProxyService::default()
        })),
        registration: None,
    }
}

/// A history entry of `command` moving traffic from `from` (then on `from_version`) to `to`.
pub(crate) fn record(command: &str, from: &str, to: &str, from_version: &str) -> HistoryEntry {
    HistoryEntry {
        command: command.into(),
        who: "test".into(),
        at: "2026-01-01T00:00:00Z".into(),
        from: from.into(),
        to: to.into(),
        from_version: Some(from_version.into()),
        to_version: None,
        generation: 1,
        revert_to_job_version: None,
        outcome: "ok".into(),
    }
}

/// Sets the history to these entries, oldest first.
pub(crate) fn with_history(obs: &mut Observed, entries: Vec<HistoryEntry>) {
    obs.history = Ok(History { entries });
}

/// The switch plan of a planner's answer; panics on a refusal or an unchanged answer.
pub(crate) fn switching(planned: Result<Planned, Refusal>) -> SwitchPlan {
    match planned {
        Ok(Planned::Switch(p)) => p,
        other => panic!("expected a switch, got {other:?}"),
    }
}

/// The state the `status` and `diagnose` tests start from.
pub(crate) fn report_observed() -> Observed {
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
        node_failed: false,
        reported_version: Some(Ok(reported.into())),
    };
    Observed {
        nomad: Ok(NomadView {
            job: Some(Job(json!({"ID": "web", "Version": 2,
                "TaskGroups": [group("blue", "v1", "active"), group("green", "v2", "standby")]}))),
            allocations: vec![],
            deployment: None,
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
                registration: None,
            },
            ProxyObservation {
                url: "http://p2".into(),
                status: Err("connection refused".into()),
                registration: None,
            },
        ],
        ..observed()
    }
}
