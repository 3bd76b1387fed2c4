//! Rescheduling of failed allocations, as Nomad does it for service jobs:
//! the group's `ReschedulePolicy` (defaults: delay 30s, `exponential`,
//! max delay 1h, unlimited), the delay before the next attempt
//! (`constant`, `exponential`, `fibonacci`, capped at `MaxDelay`, back to
//! `Delay` once the last failure came long after the last reschedule), and
//! the `Attempts`-within-`Interval` limit when not unlimited.
//!
//! A replacement carries the `RescheduleTracker` events of its predecessor
//! plus one for the failed allocation it replaces.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::util::{arr_field, ns_field, str_field};
use crate::consul::duration::format_go as go_string;

const SEC: u64 = 1_000_000_000;

/// Nomad's `DefaultServiceJobReschedulePolicy`.
pub(crate) fn default_service_policy() -> Value {
    json!({
        "Attempts": 0, "Interval": 0, "Delay": 30 * SEC, "DelayFunction": "exponential",
        "MaxDelay": 3600 * SEC, "Unlimited": true
    })
}

/// A group's reschedule policy, typed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    pub(crate) attempts: u32,
    pub(crate) interval: Duration,
    pub(crate) delay: Duration,
    pub(crate) delay_function: String,
    pub(crate) max_delay: Duration,
    pub(crate) unlimited: bool,
}

impl Policy {
    /// The policy of group `group` of a canonical service job; `None` for
    /// other job types or a group without one.
    pub(crate) fn of(job: &Value, group: &str) -> Option<Policy> {
        if str_field(job, "Type") != "service" {
            return None;
        }
        let g = arr_field(job, "TaskGroups")
            .iter()
            .find(|g| str_field(g, "Name") == group)?;
        let p = g.get("ReschedulePolicy").filter(|p| p.is_object())?;
        Some(Policy {
            attempts: p
                .get("Attempts")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            interval: ns_field(p, "Interval", Duration::ZERO),
            delay: ns_field(p, "Delay", Duration::from_secs(30)),
            delay_function: str_field(p, "DelayFunction").to_string(),
            max_delay: ns_field(p, "MaxDelay", Duration::from_secs(3600)),
            unlimited: p.get("Unlimited").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// Nomad's `ReschedulePolicyMinDelay`.
const MIN_DELAY: Duration = Duration::from_secs(5);
/// Nomad's `ReschedulePolicyMinInterval`.
const MIN_INTERVAL: Duration = Duration::from_secs(15);
/// Nomad's `RescheduleDelayFunctions`, as Go's `%q` prints the list.
const DELAY_FUNCTIONS: &str = r#"["constant" "exponential" "fibonacci"]"#;

impl Policy {
    /// What Nomad's `ReschedulePolicy.Validate` refuses, with its texts; a
    /// policy that reschedules nothing (no attempts, not unlimited) passes.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.attempts == 0 && !self.unlimited {
            return errs;
        }
        if self.attempts > 0 {
            if self.interval.is_zero() {
                errs.push("Interval must be a non zero value if Attempts > 0".to_string());
            }
            if self.unlimited {
                errs.push(format!(
                    "Reschedule Policy with Attempts = {}, Interval = {}, and Unlimited = true is ambiguous",
                    self.attempts,
                    go_string(self.interval)
                ));
                errs.push("If Attempts >0, Unlimited cannot also be set to true".to_string());
            }
        }
        let mut pre_check = true;
        if self.delay < MIN_DELAY {
            errs.push(format!(
                "Delay cannot be less than {} (got {})",
                go_string(MIN_DELAY),
                go_string(self.delay)
            ));
            pre_check = false;
        }
        if !["constant", "exponential", "fibonacci"].contains(&self.delay_function.as_str()) {
            errs.push(format!(
                "Invalid delay function {:?}, must be one of {DELAY_FUNCTIONS}",
                self.delay_function
            ));
            pre_check = false;
        }
        if self.delay_function != "constant" {
            if self.max_delay < MIN_DELAY {
                // Nomad prints the delay here, not the max delay.
                errs.push(format!(
                    "Max Delay cannot be less than {} (got {})",
                    go_string(MIN_DELAY),
                    go_string(self.delay)
                ));
                pre_check = false;
            }
            if self.max_delay < self.delay {
                errs.push(format!(
                    "Max Delay cannot be less than Delay {} (got {})",
                    go_string(self.delay),
                    go_string(self.max_delay)
                ));
                pre_check = false;
            }
        }
        if !self.unlimited {
            if self.interval < MIN_INTERVAL {
                errs.push(format!(
                    "Interval cannot be less than {} (got {})",
                    go_string(MIN_INTERVAL),
                    go_string(self.interval)
                ));
            }
            if pre_check && let Some((possible, recommended)) = self.unviable() {
                errs.push(if self.delay_function == "constant" {
                    format!(
                        "Nomad can only make {possible} attempts in {} with initial delay {} and delay function \"constant\"",
                        go_string(self.interval),
                        go_string(self.delay)
                    )
                } else {
                    format!(
                        "Nomad can only make {possible} attempts in {} with initial delay {}, delay function {:?}, and delay ceiling {}",
                        go_string(self.interval),
                        go_string(self.delay),
                        self.delay_function,
                        go_string(self.max_delay)
                    )
                });
                errs.push(format!(
                    "Set the interval to at least {} to accommodate {} attempts",
                    go_string(Duration::from_secs(recommended.as_secs_f64().round() as u64)),
                    self.attempts
                ));
            }
        }
        errs
    }

    /// Nomad's `viableAttempts`: `None` when `attempts` fit in `interval`,
    /// else how many do and the interval that would fit them all.
    fn unviable(&self) -> Option<(u32, Duration)> {
        match self.delay_function.as_str() {
            "constant" => {
                let recommended = self.delay.saturating_mul(self.attempts);
                (self.interval < recommended).then(|| {
                    let possible = self.interval.as_nanos() / self.delay.as_nanos().max(1);
                    (u32::try_from(possible).unwrap_or(u32::MAX), recommended)
                })
            }
            "exponential" => {
                let (mut possible, mut recommended) = (0, Duration::ZERO);
                for i in 0..self.attempts.min(64) {
                    let next = self
                        .delay
                        .saturating_mul(1u32.checked_shl(i).unwrap_or(u32::MAX));
                    if next > self.max_delay {
                        recommended = recommended.saturating_add(self.max_delay);
                    } else {
                        recommended = next;
                    }
                    if recommended < self.interval {
                        possible += 1;
                    }
                }
                (possible < self.attempts).then_some((possible, recommended))
            }
            _ => {
                let mut slots = vec![self.delay, self.delay];
                let mut ceiling = false;
                for i in 2..self.attempts.min(10_000) as usize {
                    let next = if ceiling {
                        slots[i - 1].saturating_add(self.max_delay)
                    } else {
                        let n = slots[i - 1].saturating_add(slots[i - 2]);
                        if n > self.max_delay {
                            ceiling = true;
                            self.max_delay
                        } else {
                            n
                        }
                    };
                    slots.push(next);
                }
                let recommended = slots.last().copied().unwrap_or(self.delay);
                (self.interval < recommended).then(|| {
                    let possible = slots.iter().position(|s| *s > self.interval).unwrap_or(0);
                    (u32::try_from(possible).unwrap_or(u32::MAX), recommended)
                })
            }
        }
    }
}

/// One `RescheduleTracker` event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) time: SystemTime,
    pub(crate) prev_alloc_id: String,
    pub(crate) prev_node_id: String,
    pub(crate) delay: Duration,
}

/// How many past events a replacement keeps when rescheduling is unlimited
/// (Nomad's `maxPastRescheduleEvents`).
const MAX_PAST_EVENTS: usize = 5;

/// The delay before the next reschedule of an allocation that failed at
/// `failed_at` with `events` behind it (Nomad's `NextDelay`).
pub(crate) fn next_delay(p: &Policy, events: &[Event], failed_at: SystemTime) -> Duration {
    let Some(last) = events.last() else {
        return p.delay;
    };
    let delay = match p.delay_function.as_str() {
        "exponential" => last.delay.saturating_mul(2),
        "fibonacci" => match events.len() {
            n if n >= 2 => {
                let before = events[n - 2].delay;
                // A series that was reset after reaching the ceiling starts again.
                if before == p.max_delay && last.delay == p.delay {
                    last.delay
                } else {
                    last.delay.saturating_add(before)
                }
            }
            _ => p.delay,
        },
        _ => return p.delay,
    };
    if p.max_delay > Duration::ZERO && delay > p.max_delay {
        let since_last = failed_at.duration_since(last.time).unwrap_or_default();
        if since_last > p.max_delay {
            return p.delay;
        }
        return p.max_delay;
    }
    delay
}

/// When an allocation that failed at `failed_at` may be replaced, or `None`
/// when the policy allows no more attempts (Nomad's `NextRescheduleTime`).
pub(crate) fn next_time(p: &Policy, events: &[Event], failed_at: SystemTime) -> Option<SystemTime> {
    let delay = next_delay(p, events, failed_at);
    let eligible = if p.attempts > 0 && !events.is_empty() {
        let recent = events
            .iter()
            .filter(|e| failed_at.duration_since(e.time).unwrap_or_default() < p.interval)
            .count();
        recent < p.attempts as usize && delay < p.interval
    } else {
        p.unlimited || p.attempts > 0
    };
    eligible.then(|| failed_at + delay)
}

/// The events a replacement carries: its predecessor's (those within the
/// interval, or the last few when unlimited) and one for the predecessor.
pub(crate) fn carried_events(
    p: &Policy,
    past: &[Event],
    now: SystemTime,
    new: Event,
) -> Vec<Event> {
    let mut out: Vec<Event> = if p.unlimited {
        let skip = past.len().saturating_sub(MAX_PAST_EVENTS - 1);
        past[skip..].to_vec()
    } else {
        past.iter()
            .filter(|e| now.duration_since(e.time).unwrap_or_default() < p.interval)
            .cloned()
            .collect()
    };
    out.push(new);
    out
}

/// `RescheduleTracker` as the API renders it (`null` without events).
pub(crate) fn render_tracker(events: &[Event]) -> Value {
    if events.is_empty() {
        return Value::Null;
    }
    let evs: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "RescheduleTime": super::util::unix_nanos(e.time),
                "PrevAllocID": e.prev_alloc_id,
                "PrevNodeID": e.prev_node_id,
                "Delay": u64::try_from(e.delay.as_nanos()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    json!({ "Events": evs, "LastReschedule": "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(f: &str) -> Policy {
        Policy {
            attempts: 0,
            interval: Duration::ZERO,
            delay: Duration::from_secs(5),
            delay_function: f.into(),
            max_delay: Duration::from_secs(60),
            unlimited: true,
        }
    }

    fn events(t0: SystemTime, delays: &[u64]) -> Vec<Event> {
        delays
            .iter()
            .enumerate()
            .map(|(i, d)| Event {
                time: t0 + Duration::from_secs(10 * i as u64),
                prev_alloc_id: format!("a{i}"),
                prev_node_id: "n".into(),
                delay: Duration::from_secs(*d),
            })
            .collect()
    }

    fn delay_after(p: &Policy, delays: &[u64]) -> u64 {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let evs = events(t0, delays);
        let failed = evs.last().map_or(t0, |e| e.time) + Duration::from_secs(1);
        next_delay(p, &evs, failed).as_secs()
    }

    #[test]
    fn constant_delay_never_grows() {
        let p = policy("constant");
        assert_eq!(delay_after(&p, &[]), 5);
        assert_eq!(delay_after(&p, &[5, 5, 5]), 5);
    }

    #[test]
    fn exponential_delay_doubles_up_to_the_cap() {
        let p = policy("exponential");
        let got: Vec<u64> = [&[][..], &[5], &[5, 10], &[5, 10, 20], &[5, 10, 20, 40]]
            .iter()
            .map(|d| delay_after(&p, d))
            .collect();
        assert_eq!(got, vec![5, 10, 20, 40, 60]);
    }

    #[test]
    fn fibonacci_delay_adds_the_last_two_up_to_the_cap() {
        let p = policy("fibonacci");
        let got: Vec<u64> = [&[][..], &[5], &[5, 5], &[5, 5, 10], &[5, 5, 10, 15]]
            .iter()
            .map(|d| delay_after(&p, d))
            .collect();
        assert_eq!(got, vec![5, 5, 10, 15, 25]);
        assert_eq!(delay_after(&p, &[25, 40]), 60);
        // After a reset to `Delay` at the ceiling, the series starts again.
        assert_eq!(delay_after(&p, &[60, 5]), 5);
    }

    #[test]
    fn capped_delay_resets_when_the_failure_came_long_after_the_last_reschedule() {
        let p = policy("exponential");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let evs = events(t0, &[40]);
        assert_eq!(
            next_delay(&p, &evs, t0 + Duration::from_secs(30)),
            p.max_delay
        );
        assert_eq!(next_delay(&p, &evs, t0 + Duration::from_secs(61)), p.delay);
    }

    #[test]
    fn attempts_within_interval_limit_reschedules() {
        let mut p = policy("constant");
        p.unlimited = false;
        p.attempts = 2;
        p.interval = Duration::from_secs(100);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(next_time(&p, &[], t0), Some(t0 + p.delay));
        let one = events(t0, &[5]);
        assert!(next_time(&p, &one, t0 + Duration::from_secs(20)).is_some());
        let two = events(t0, &[5, 5]);
        assert_eq!(next_time(&p, &two, t0 + Duration::from_secs(20)), None);
        // Once the first attempt is out of the interval, one more is allowed.
        assert!(next_time(&p, &two, t0 + Duration::from_secs(105)).is_some());
        // No attempts and not unlimited: never rescheduled.
        p.attempts = 0;
        assert_eq!(next_time(&p, &[], t0), None);
    }

    #[test]
    fn validation_refuses_what_nomad_refuses() {
        let mut p = policy("exponential");
        p.delay = Duration::from_secs(1);
        p.max_delay = Duration::from_secs(3600);
        assert_eq!(
            p.problems(),
            vec!["Delay cannot be less than 5s (got 1s)".to_string()]
        );
        let mut p = policy("blah");
        p.delay = Duration::from_secs(5);
        assert!(p.problems().iter().any(|e| e
            == r#"Invalid delay function "blah", must be one of ["constant" "exponential" "fibonacci"]"#));
        let mut p = policy("exponential");
        p.delay = Duration::from_secs(15);
        p.max_delay = Duration::from_secs(5);
        assert!(
            p.problems()
                .contains(&"Max Delay cannot be less than Delay 15s (got 5s)".to_string())
        );
        // Limited attempts that cannot fit in the interval.
        let mut p = policy("constant");
        p.unlimited = false;
        p.attempts = 3;
        p.delay = Duration::from_secs(10);
        p.interval = Duration::from_secs(20);
        assert_eq!(
            p.problems(),
            vec![
                "Nomad can only make 2 attempts in 20s with initial delay 10s and delay function \"constant\"".to_string(),
                "Set the interval to at least 30s to accommodate 3 attempts".to_string(),
            ]
        );
        // Attempts with unlimited is ambiguous; a disabled policy passes.
        let mut p = policy("constant");
        p.delay = Duration::from_secs(5);
        p.attempts = 1;
        p.interval = Duration::from_secs(60);
        assert!(p.problems().iter().any(|e| e.ends_with("is ambiguous")));
        let mut p = policy("blah");
        p.unlimited = false;
        p.attempts = 0;
        assert!(p.problems().is_empty());
    }
}
