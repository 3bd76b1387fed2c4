//! What this proxy has seen happen to each service: switches, deploys
//! (a colour's version changing) and fail-static episodes, newest last,
//! bounded per service. The status page shows it; it lives in memory and
//! starts empty with the process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::routing::{Router, ServiceRoutes};

/// Events kept per service.
const KEEP: usize = 50;

/// One entry of a service's history.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Event {
    /// When this proxy applied the change (RFC 3339).
    pub at: String,
    /// `serving` (first routing seen), `switch`, `deploy`, `generation`,
    /// `fail_static` or `recovered`.
    pub kind: &'static str,
    /// Route generation after the change.
    pub generation: u64,
    /// Who reports it: `proxy` (observed by this proxy).
    pub source: &'static str,
    /// One line for people.
    pub summary: String,
    /// `switch`: the colour that was active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `switch`: the colour now active; `deploy`: the colour deployed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `deploy`: the colour's previous version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// `deploy`: the colour's new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
}

/// The routing facts history compares between two tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    active: (String, String),
    standby: (String, String),
    generation: u64,
    fail_static: bool,
    /// Last version each colour ran with instances; a pool without
    /// instances has no version worth reporting.
    versions: Vec<(String, String)>,
}

impl Seen {
    fn of(s: &ServiceRoutes, before: &Seen) -> Self {
        let mut versions = before.versions.clone();
        for p in [&s.active, &s.standby] {
            if p.endpoints.is_empty() || p.colour.is_empty() {
                continue;
            }
            match versions.iter_mut().find(|(c, _)| *c == p.colour) {
                Some(v) => v.1.clone_from(&p.version),
                None => versions.push((p.colour.clone(), p.version.clone())),
            }
        }
        Self {
            active: (s.active.colour.clone(), s.active.version.clone()),
            standby: (s.standby.colour.clone(), s.standby.version.clone()),
            generation: s.snapshot.generation,
            fail_static: s.snapshot.fail_static,
            versions,
        }
    }

    fn version_of(&self, colour: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(c, _)| c == colour)
            .map(|(_, v)| v.as_str())
    }
}

/// Per-service event rings.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<HashMap<String, (Seen, VecDeque<Event>)>>,
}

impl History {
    /// The events of one service, oldest first.
    pub fn events(&self, service: &str) -> Vec<Event> {
        self.inner
            .lock()
            .map(|m| {
                m.get(service)
                    .map(|(_, e)| e.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Compares a service's routing with what was seen last and records
    /// what changed.
    pub fn observe(&self, s: &ServiceRoutes) {
        if s.active.colour.is_empty()
            || (s.active.endpoints.is_empty() && s.standby.endpoints.is_empty())
        {
            return; // Nothing discovered yet.
        }
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        let (seen, events) = map.entry(s.name.clone()).or_default();
        let now = Seen::of(s, seen);
        if *seen == now {
            return;
        }
        let new = changes(seen, &now, s);
        for e in new {
            if events.len() == KEEP {
                events.pop_front();
            }
            events.push_back(e);
        }
        *seen = now;
    }
}

/// The events that tell how `s` changed from what was `seen` to what is
/// seen `now`: the first pools served, a switch or a new generation, a new
/// version on a colour, and entering or leaving fail-static.
fn changes(seen: &Seen, now: &Seen, s: &ServiceRoutes) -> Vec<Event> {
    let at = humantime::format_rfc3339_millis(s.applied_at).to_string();
    let event = |kind, summary: String| Event {
        at: at.clone(),
        kind,
        generation: now.generation,
        source: "proxy",
        summary,
        from: None,
        to: None,
        from_version: None,
        to_version: None,
    };
    let mut new = Vec::new();
    if seen.active.0.is_empty() {
        let pool = |p: &crate::routing::Pool| {
            if p.endpoints.is_empty() {
                format!("{} (no instances)", p.colour)
            } else {
                format!("{} {}", p.colour, p.version)
            }
        };
        new.push(event(
            "serving",
            format!("{} active, {} standby", pool(&s.active), pool(&s.standby)),
        ));
    } else {
        if seen.active.0 != now.active.0 {
            new.push(Event {
                from: Some(seen.active.0.clone()),
                to: Some(now.active.0.clone()),
                ..event(
                    "switch",
                    format!(
                        "switched from {} ({}) to {} ({})",
                        seen.active.0, seen.active.1, now.active.0, now.active.1
                    ),
                )
            });
        } else if seen.generation != now.generation {
            new.push(event(
                "generation",
                format!(
                    "generation {} → {}, {} still active",
                    seen.generation, now.generation, now.active.0
                ),
            ));
        }
        for (colour, version) in &now.versions {
            if let Some(before) = seen.version_of(colour)
                && before != version
            {
                new.push(Event {
                    to: Some(colour.clone()),
                    from_version: Some(before.to_owned()),
                    to_version: Some(version.clone()),
                    ..event(
                        "deploy",
                        format!("{colour} now runs {version} (was {before})"),
                    )
                });
            }
        }
    }
    if seen.fail_static != now.fail_static {
        new.push(if now.fail_static {
            event(
                "fail_static",
                format!(
                    "serving last good pools: {}",
                    s.snapshot
                        .fail_static_reason
                        .as_deref()
                        .unwrap_or("Consul unavailable")
                ),
            )
        } else {
            event("recovered", "Consul answers again".to_owned())
        });
    }
    new
}

/// Records every table change until the router goes away.
pub(crate) async fn record(router: Arc<Router>, history: &History) {
    let mut rx = router.subscribe();
    loop {
        for s in router.table_full().services() {
            history.observe(s);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Balance;
    use crate::metrics::Metrics;
    use crate::routing::{InstanceSpec, PoolSpec, ServiceSnapshot};
    use crate::upstream::PoolSettings;

    fn pool(colour: &str, version: &str, port: u16) -> PoolSpec {
        PoolSpec {
            colour: colour.into(),
            version: version.into(),
            instances: vec![InstanceSpec {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                id: None,
                version: Some(version.into()),
            }],
        }
    }

    fn snap(active: PoolSpec, standby: PoolSpec, generation: u64) -> ServiceSnapshot {
        ServiceSnapshot {
            name: "svc".into(),
            active,
            standby,
            generation,
            decided_by: "route-key",
            ..ServiceSnapshot::default()
        }
    }

    #[test]
    fn records_serving_switch_deploy_and_fail_static() {
        let router = Router::new(
            Vec::new(),
            &[("svc".into(), Balance::P2c)],
            PoolSettings::default(),
            Duration::from_secs(30),
            Arc::new(Metrics::new()),
        );
        let h = History::default();
        let observe = |h: &History| {
            for s in router.table_full().services() {
                h.observe(s);
            }
        };
        observe(&h);
        assert!(h.events("svc").is_empty(), "nothing discovered yet");
        let nothing = |colour: &str| PoolSpec {
            colour: colour.into(),
            version: "unknown".into(),
            instances: Vec::new(),
        };
        router.apply(snap(nothing("blue"), nothing("green"), 0));
        observe(&h);
        assert!(h.events("svc").is_empty(), "no instances yet");
        router.apply(snap(pool("blue", "v1", 1), pool("green", "v2", 2), 1));
        observe(&h);
        observe(&h);
        router.apply(snap(pool("green", "v2", 2), pool("blue", "v1", 1), 2));
        observe(&h);
        // blue's v1 instances go before its v3 ones arrive: one deploy.
        let empty = PoolSpec {
            colour: "blue".into(),
            version: "unknown".into(),
            instances: Vec::new(),
        };
        router.apply(snap(pool("green", "v2", 2), empty, 2));
        observe(&h);
        router.apply(snap(pool("green", "v2", 2), pool("blue", "v3", 3), 2));
        observe(&h);
        router.apply(ServiceSnapshot {
            fail_static: true,
            fail_static_reason: Some("health watch: connection refused".into()),
            ..snap(pool("green", "v2", 2), pool("blue", "v3", 3), 2)
        });
        observe(&h);
        let kinds: Vec<_> = h.events("svc").iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["serving", "switch", "deploy", "fail_static"]);
        let e = h.events("svc");
        assert_eq!(e[1].from.as_deref(), Some("blue"));
        assert_eq!(e[1].to.as_deref(), Some("green"));
        assert_eq!(e[1].generation, 2);
        assert_eq!(e[2].to.as_deref(), Some("blue"));
        assert_eq!(e[2].from_version.as_deref(), Some("v1"));
        assert_eq!(e[2].to_version.as_deref(), Some("v3"));
        assert!(
            e[3].summary.contains("connection refused"),
            "{}",
            e[3].summary
        );
    }
}
