//! `rollback`: the planner ([`plan_rollback`]: back to the colour that was active before the
//! last recorded switch, provided it still runs what it ran then) and its executor, which is
//! the switch's.

use crate::observe::Observed;
use crate::refusal::{Refusal, check_route};
use crate::switch::{SwitchOutcome, SwitchPlan, plan_switch};
use crate::{Controller, ControllerError};

/// Plans `rollback`: a switch back to the colour that was active before the last recorded
/// switch, provided it still runs the version it served then.
pub fn plan_rollback(obs: &Observed, job: &str, state_file: &str) -> Result<SwitchPlan, Refusal> {
    let record = obs
        .last_switch
        .as_ref()
        .ok_or_else(|| Refusal::NoPreviousSwitch {
            service: obs.service.clone(),
            state_file: state_file.to_owned(),
        })?;
    check_route(obs)?;
    let (active, _) = obs.active().ok_or_else(|| Refusal::NoActiveColour {
        service: obs.service.clone(),
    })?;
    if obs.colours[active].eq_ignore_ascii_case(&record.from) {
        return Err(Refusal::AlreadyActive {
            service: obs.service.clone(),
            colour: record.from.clone(),
        });
    }
    let standby = 1 - active;
    if let Some(expected) = &record.from_version {
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
    plan_switch(obs, false)
}

impl Controller {
    pub async fn rollback(&self) -> Result<SwitchOutcome, ControllerError> {
        let obs = self.observe().await;
        let plan = plan_rollback(&obs, &self.settings.job, &self.record_file())?;
        self.execute_switch(plan).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn rollback_plans() {
        let mut obs = observed();
        assert!(matches!(
            plan_rollback(&obs, "web", "s").unwrap_err(),
            Refusal::NoPreviousSwitch { .. }
        ));
        // After blue -> green: green active per route key, blue standby still on v1.
        with_route(&mut obs, "green", 1);
        obs.last_switch = Some(record("blue", "green", "v1"));
        let p = plan_rollback(&obs, "web", "s").unwrap();
        assert_eq!((p.from.as_str(), p.to.as_str()), ("green", "blue"));
        assert_eq!(p.generation, 2);
        // Blue redeployed meanwhile: refuse and name the deploy that restores it.
        obs.last_switch = Some(record("blue", "green", "v0"));
        let r = plan_rollback(&obs, "web", "s").unwrap_err();
        match &r {
            Refusal::RollbackTargetChanged {
                command, current, ..
            } => {
                assert_eq!(command, "switchyard deploy v0 --service web --job web");
                assert_eq!(current, "v1");
            }
            other => panic!("unexpected {other}"),
        }
        // Already rolled back.
        with_route(&mut obs, "blue", 2);
        assert!(matches!(
            plan_rollback(&obs, "web", "s").unwrap_err(),
            Refusal::AlreadyActive { .. }
        ));
    }
}
