//! `rollback`: the planner ([`plan_rollback`]: back to the colour that was active before the
//! last switch, as the history in Consul records it, provided that colour still runs what it
//! ran then) and its executor, which is the switch's.
//!
//! Rollback is idempotent: when the last recorded change was already a rollback, or the colour
//! it would go back to is already active, it changes nothing and succeeds saying so.

use crate::history::history_key;
use crate::observe::Observed;
use crate::refusal::{Refusal, check_route};
use crate::switch::{Planned, SwitchOutcome, Unchanged, plan_switch};
use crate::{Controller, ControllerError};

/// Plans `rollback`.
pub fn plan_rollback(obs: &Observed, job: &str) -> Result<Planned, Refusal> {
    let history = obs.history.as_ref().map_err(|e| Refusal::Unobservable {
        what: "the switch history",
        reason: e.clone(),
    })?;
    let last = history
        .last_switch()
        .ok_or_else(|| Refusal::NoPreviousSwitch {
            service: obs.service.clone(),
            key: history_key(&obs.service),
        })?;
    check_route(obs)?;
    let (active, _) = obs.active().ok_or_else(|| Refusal::NoActiveColour {
        service: obs.service.clone(),
    })?;
    let unchanged = |reason: String| {
        Ok(Planned::Unchanged(Unchanged {
            service: obs.service.clone(),
            active: obs.colours[active].clone(),
            generation: obs.route_value().map_or(0, |v| v.generation),
            reason,
        }))
    };
    if last.command == "rollback" {
        return unchanged(format!(
            "the last change of {} was already a rollback (to {} at {}); nothing changed",
            obs.service, last.to, last.at
        ));
    }
    if obs.colours[active].eq_ignore_ascii_case(&last.from) {
        return unchanged(format!(
            "{} already serves {}, the colour active before the last switch; nothing changed",
            obs.service, obs.colours[active]
        ));
    }
    let standby = 1 - active;
    if let Some(expected) = &last.from_version {
        let current = obs.version_of(standby);
        if current.as_deref() != Some(expected.as_str()) {
            return Err(Refusal::RollbackTargetChanged {
                colour: obs.colours[standby].clone(),
                expected: expected.clone(),
                current: current.unwrap_or_else(|| "no known version".to_owned()),
                command: format!(
                    "switchyard deploy {expected} --service {} --job {job}",
                    obs.service
                ),
            });
        }
    }
    plan_switch(obs, false, Some(&last.from))
}

impl Controller {
    /// `rollback`: back to the colour that was active before the last switch.
    pub async fn rollback(&self) -> Result<SwitchOutcome, ControllerError> {
        let obs = self.observe().await;
        let planned = plan_rollback(&obs, &self.settings.job)?;
        self.execute_switch(planned, "rollback").await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn reason(p: Result<Planned, Refusal>) -> String {
        match p {
            Ok(Planned::Unchanged(u)) => u.reason,
            other => panic!("expected no change, got {other:?}"),
        }
    }

    #[test]
    fn rollback_plans() {
        let mut obs = observed();
        assert!(matches!(
            plan_rollback(&obs, "web").unwrap_err(),
            Refusal::NoPreviousSwitch { .. }
        ));
        // After blue -> green: green active per route key, blue standby still on v1.
        with_route(&mut obs, "green", 1);
        with_history(&mut obs, vec![record("switch", "blue", "green", "v1")]);
        let p = switching(plan_rollback(&obs, "web"));
        assert_eq!((p.from.as_str(), p.to.as_str()), ("green", "blue"));
        assert_eq!(p.generation, 2);
        // Blue redeployed meanwhile: refuse and name the deploy that restores it.
        with_history(&mut obs, vec![record("switch", "blue", "green", "v0")]);
        let r = plan_rollback(&obs, "web").unwrap_err();
        match &r {
            Refusal::RollbackTargetChanged {
                command, current, ..
            } => {
                assert_eq!(command, "switchyard deploy v0 --service web --job web");
                assert_eq!(current, "v1");
            }
            other => panic!("unexpected {other}"),
        }
        // Blue is active again (by some other switch): nothing to do, and it is a success.
        with_history(&mut obs, vec![record("switch", "blue", "green", "v1")]);
        with_route(&mut obs, "blue", 2);
        assert!(reason(plan_rollback(&obs, "web")).contains("already serves blue"));
        // The last change was a rollback: a second one changes nothing, even though the
        // colour it came from is standby now.
        with_history(
            &mut obs,
            vec![
                record("switch", "blue", "green", "v1"),
                record("deploy", "green", "green", "v2"),
                record("rollback", "green", "blue", "v2"),
            ],
        );
        assert!(reason(plan_rollback(&obs, "web")).contains("already a rollback"));
        // An unreadable history is refused, not guessed.
        obs.history = Err("connection refused".into());
        assert!(matches!(
            plan_rollback(&obs, "web").unwrap_err(),
            Refusal::Unobservable { .. }
        ));
    }
}
