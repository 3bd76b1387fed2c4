//! The route key flip: the one check-and-set write that moves traffic, shared by the proxy's
//! admin `POST /switch` and the controller's `switch` / `rollback`.
//!
//! 1. Read the key (its value and `ModifyIndex`).
//! 2. When the caller planned from an earlier read (`based_on`), a key that moved since is a
//!    lost race: nothing is written.
//! 3. A key that already names the target is not written again ([`Flipped::AlreadyActive`]).
//! 4. A key naming a colour other than the one the caller saw active is refused; an unusable
//!    key (unparseable, or naming neither colour) is refused unless the caller overwrites it.
//! 5. Write `{active: to, generation: g + 1}` with `?cas=<ModifyIndex>` (0 when absent), where
//!    `g` is the key's generation, or the caller's when the key is absent or unusable.
//! 6. A write whose answer is lost (timeout, connection reset) is re-read: if the key holds
//!    exactly the value sent, the flip happened; otherwise it is reported as failed, with
//!    what the key holds now.

use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{ConsulClient, KvWrite};

use crate::RouteValue;
use crate::active::colour_index;

/// What to flip.
#[derive(Clone, Debug)]
pub struct FlipRequest<'a> {
    /// The KV route key.
    pub key: &'a str,
    /// The service's two colours.
    pub colours: &'a [String; 2],
    /// The colour the caller saw active.
    pub from: &'a str,
    /// The colour to make active.
    pub to: &'a str,
    /// The `ModifyIndex` the caller planned from (0 = the key was absent); `None` to accept
    /// whatever the fresh read finds, as long as it names `from`.
    pub based_on: Option<u64>,
    /// The generation to build on when the key is absent or unusable.
    pub generation_floor: u64,
    /// Overwrite a key that does not parse or names neither colour.
    pub overwrite_unusable: bool,
    /// Written into `updated_by`.
    pub by: &'a str,
}

/// A flip that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flipped {
    /// The key was written with this value.
    Written(RouteValue),
    /// The key already named the target; nothing was written.
    AlreadyActive(RouteValue),
}

/// Why a flip failed. Only [`FlipError::Unconfirmed`] can leave the key changed.
#[derive(Debug, thiserror::Error)]
pub enum FlipError {
    /// The key could not be read; nothing was written.
    #[error("reading {key} from Consul: {error}")]
    Read {
        /// The key.
        key: String,
        /// The client error.
        error: switchyard_hashi::Error,
    },
    /// The key changed since the caller read it, or a concurrent write won the check-and-set;
    /// nothing was written by this call.
    #[error(
        "{key} changed since it was read (another switch won); nothing was changed by this call"
    )]
    Lost {
        /// The key.
        key: String,
    },
    /// The key names a colour other than the one the caller saw active.
    #[error("{key} names {active} active (generation {generation}), not {expected}")]
    Moved {
        /// The key.
        key: String,
        /// What it names.
        active: String,
        /// Its generation.
        generation: u64,
        /// What the caller expected.
        expected: String,
    },
    /// The key exists but is unusable and the caller did not ask to overwrite it.
    #[error("{key} is unusable ({reason})")]
    Unusable {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The write failed, or its answer was lost and the re-read does not show the value sent.
    #[error("writing {key} to Consul: {error}; {now}")]
    Unconfirmed {
        /// The key.
        key: String,
        /// The write's error.
        error: switchyard_hashi::Error,
        /// What a re-read found, as a phrase.
        now: String,
    },
}

/// The state of a key as one read found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// `ModifyIndex`, 0 when absent.
    pub modify_index: u64,
    /// `None` when absent; else the parsed value or why it is unusable.
    pub value: Option<Result<RouteValue, String>>,
}

/// What [`plan_flip`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlipStep {
    /// Write this value with `?cas=`.
    Write {
        /// The check-and-set index.
        cas: u64,
        /// The value.
        value: RouteValue,
    },
    /// Nothing to write: the key already names the target.
    AlreadyActive(RouteValue),
}

/// The pure half of the flip: what to do with the key as read. `Err` carries a refusal that
/// writes nothing.
pub fn plan_flip(req: &FlipRequest<'_>, key: &KeyState) -> Result<FlipStep, FlipError> {
    if req.based_on.is_some_and(|i| i != key.modify_index) {
        return Err(FlipError::Lost {
            key: req.key.to_owned(),
        });
    }
    let generation = match &key.value {
        None => req.generation_floor,
        Some(Ok(v)) => match colour_index(req.colours, &v.active) {
            Some(i) if req.colours[i].eq_ignore_ascii_case(req.to) => {
                return Ok(FlipStep::AlreadyActive(v.clone()));
            }
            Some(i) if req.colours[i].eq_ignore_ascii_case(req.from) => v.generation,
            Some(_) => {
                return Err(FlipError::Moved {
                    key: req.key.to_owned(),
                    active: v.active.clone(),
                    generation: v.generation,
                    expected: req.from.to_owned(),
                });
            }
            None if req.overwrite_unusable => v.generation.max(req.generation_floor),
            None => {
                return Err(FlipError::Unusable {
                    key: req.key.to_owned(),
                    reason: format!(
                        "it names {:?}, which is not one of {:?}",
                        v.active, req.colours
                    ),
                });
            }
        },
        Some(Err(_)) if req.overwrite_unusable => req.generation_floor,
        Some(Err(e)) => {
            return Err(FlipError::Unusable {
                key: req.key.to_owned(),
                reason: e.clone(),
            });
        }
    };
    Ok(FlipStep::Write {
        cas: key.modify_index,
        value: RouteValue::new(req.to, generation + 1, req.by),
    })
}

/// Reads a route key.
pub async fn read_key(
    client: &ConsulClient,
    key: &str,
) -> Result<KeyState, switchyard_hashi::Error> {
    let (pair, _) = client.kv_get(key, &QueryOptions::default()).await?;
    Ok(match pair {
        None => KeyState {
            modify_index: 0,
            value: None,
        },
        Some(p) => KeyState {
            modify_index: p.modify_index,
            value: Some(match p.value.as_deref() {
                Some(bytes) => RouteValue::parse(bytes).map_err(|e| e.to_string()),
                None => Err("the key has no value".to_owned()),
            }),
        },
    })
}

/// Carries out a flip against Consul (see the module documentation).
pub async fn flip(client: &ConsulClient, req: &FlipRequest<'_>) -> Result<Flipped, FlipError> {
    let state = read_key(client, req.key)
        .await
        .map_err(|error| FlipError::Read {
            key: req.key.to_owned(),
            error,
        })?;
    let (cas, value) = match plan_flip(req, &state)? {
        FlipStep::AlreadyActive(v) => return Ok(Flipped::AlreadyActive(v)),
        FlipStep::Write { cas, value } => (cas, value),
    };
    let write = KvWrite {
        cas: Some(cas),
        flags: None,
    };
    match client.kv_put(req.key, &value.to_bytes(), &write).await {
        Ok(true) => Ok(Flipped::Written(value)),
        Ok(false) => Err(FlipError::Lost {
            key: req.key.to_owned(),
        }),
        Err(error) => {
            // The answer may be lost while the write went through: look before deciding.
            let now = match read_key(client, req.key).await {
                Ok(KeyState {
                    value: Some(Ok(v)), ..
                }) if v == value => return Ok(Flipped::Written(value)),
                Ok(KeyState {
                    value: Some(Ok(v)), ..
                }) => format!(
                    "the key now names {} (generation {}), not the value sent",
                    v.active, v.generation
                ),
                Ok(_) => "the key does not hold the value sent".to_owned(),
                Err(e) => format!("re-reading it failed too ({e}), so the outcome is unknown"),
            };
            Err(FlipError::Unconfirmed {
                key: req.key.to_owned(),
                error,
                now,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn colours() -> [String; 2] {
        ["blue".into(), "green".into()]
    }

    fn req<'a>(c: &'a [String; 2], based_on: Option<u64>, overwrite: bool) -> FlipRequest<'a> {
        FlipRequest {
            key: "switchyard/routes/web",
            colours: c,
            from: "blue",
            to: "green",
            based_on,
            generation_floor: 4,
            overwrite_unusable: overwrite,
            by: "test",
        }
    }

    fn key(index: u64, value: Option<Result<RouteValue, String>>) -> KeyState {
        KeyState {
            modify_index: index,
            value,
        }
    }

    fn named(active: &str, generation: u64) -> Option<Result<RouteValue, String>> {
        Some(Ok(RouteValue::new(active, generation, "x")))
    }

    fn written(step: Result<FlipStep, FlipError>) -> (u64, String, u64) {
        match step {
            Ok(FlipStep::Write { cas, value }) => (cas, value.active, value.generation),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn flip_decisions() {
        let c = colours();
        // Absent key: create it (cas 0) on top of the caller's generation.
        assert_eq!(
            written(plan_flip(&req(&c, None, false), &key(0, None))),
            (0, "green".into(), 5)
        );
        // Key names the source colour (any case): next generation, cas on its index.
        assert_eq!(
            written(plan_flip(
                &req(&c, Some(9), false),
                &key(9, named("Blue", 7))
            )),
            (9, "green".into(), 8)
        );
        // Already names the target: nothing to write.
        assert!(matches!(
            plan_flip(&req(&c, None, false), &key(9, named("GREEN", 7))),
            Ok(FlipStep::AlreadyActive(v)) if v.generation == 7
        ));
        // Moved since the caller planned.
        assert!(matches!(
            plan_flip(&req(&c, Some(8), false), &key(9, named("blue", 7))),
            Err(FlipError::Lost { .. })
        ));
        // Names a third colour: refused unless overwriting; then builds on the higher generation.
        assert!(matches!(
            plan_flip(&req(&c, None, false), &key(9, named("red", 7))),
            Err(FlipError::Unusable { .. })
        ));
        assert_eq!(
            written(plan_flip(&req(&c, None, true), &key(9, named("red", 7)))),
            (9, "green".into(), 8)
        );
        // Garbage: refused unless overwriting.
        let garbage = Some(Err("not JSON".to_owned()));
        assert!(matches!(
            plan_flip(&req(&c, None, false), &key(3, garbage.clone())),
            Err(FlipError::Unusable { .. })
        ));
        assert_eq!(
            written(plan_flip(&req(&c, None, true), &key(3, garbage))),
            (3, "green".into(), 5)
        );
        // With three colours in play, a key naming a colour other than `from` is a move.
        let c2: [String; 2] = ["green".into(), "blue".into()];
        let r = FlipRequest {
            from: "green",
            to: "blue",
            ..req(&c2, None, false)
        };
        assert!(matches!(
            plan_flip(&r, &key(1, named("blue", 2))),
            Ok(FlipStep::AlreadyActive(_))
        ));
    }
}
