//! switchyard's shared vocabulary, used by the proxy and the controller alike.
//!
//! - **Colour**: one of a service's two groups (`blue`, `green` by default).
//!   Every instance carries its colour as a Consul tag.
//! - **Role**: `active` (serving users) or `standby` (the next version).
//!   Instances carry a role tag, but tags change one instance at a time and
//!   lag behind; the **route key** is the authority when present.
//! - **Route key**: the Consul KV key `switchyard/routes/<service>`, whose
//!   JSON value ([`RouteValue`]) names the active colour, a generation that
//!   grows by one per switch, and who wrote it when. It is only ever written
//!   with check-and-set.
//! - **Version**: the `version=<v>` tag an instance claims.
//!
//! How instances are sorted into colours ([`classify`]): an instance belongs
//! to a colour when its tags name exactly one of the two colours. An
//! instance tagged with both or neither belongs to no pool; it is reported,
//! never routed to. Role tags never move an instance between pools.
//!
//! Which colour is active ([`active::decide_active`]) and how the route key
//! is flipped ([`flip::flip`]) are decided here once, for the proxy and the
//! controller alike.

pub mod active;
pub mod flip;

pub use active::{Active, DecidedBy, colour_index, count_active_tagged, decide_active};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Prefix of every route key.
pub const ROUTE_KEY_PREFIX: &str = "switchyard/routes/";
/// Tag prefix carrying an instance's version.
pub const VERSION_TAG_PREFIX: &str = "version=";
/// Role tag of the serving colour.
pub const ACTIVE_TAG: &str = "active";
/// Role tag of the preview colour.
pub const STANDBY_TAG: &str = "standby";
/// Default colours.
pub const DEFAULT_COLOURS: [&str; 2] = ["blue", "green"];

/// The route key of a service.
pub fn route_key(service: &str) -> String {
    format!("{ROUTE_KEY_PREFIX}{service}")
}

/// The JSON value of a route key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteValue {
    /// The active colour.
    pub active: String,
    /// Grows by one with every switch; lets proxies and controllers tell
    /// which decision they are looking at.
    pub generation: u64,
    /// When it was written, RFC 3339 in UTC with milliseconds.
    pub updated_at: String,
    /// Who wrote it (e.g. `switchyard switch (alice@host)`).
    pub updated_by: String,
}

/// Why a route key's value was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RouteValueError {
    /// Not JSON of the expected shape.
    #[error("route key value is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// The active colour is empty.
    #[error("route key names no active colour")]
    EmptyColour,
    /// `updated_at` is not an RFC 3339 time.
    #[error("route key updated_at {0:?} is not an RFC 3339 time")]
    Time(String),
}

impl RouteValue {
    /// A value written now.
    pub fn new(active: &str, generation: u64, updated_by: &str) -> Self {
        Self {
            active: active.to_owned(),
            generation,
            updated_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            updated_by: updated_by.to_owned(),
        }
    }

    /// Parses and checks a value read from Consul.
    pub fn parse(bytes: &[u8]) -> Result<Self, RouteValueError> {
        let v: RouteValue = serde_json::from_slice(bytes)?;
        if v.active.trim().is_empty() {
            return Err(RouteValueError::EmptyColour);
        }
        if humantime::parse_rfc3339_weak(&v.updated_at).is_err() {
            return Err(RouteValueError::Time(v.updated_at));
        }
        Ok(v)
    }

    /// The JSON bytes to write.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// When it was written.
    pub fn written_at(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.updated_at).ok()
    }

    /// Milliseconds since the Unix epoch of the write, for display.
    pub fn written_at_ms(&self) -> Option<u128> {
        self.written_at()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d: Duration| d.as_millis())
    }
}

/// Where an instance belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    /// Tagged with exactly one colour: index into the colour pair.
    Colour(usize),
    /// Tagged with both colours.
    Ambiguous,
    /// Tagged with neither colour.
    Uncoloured,
}

/// Sorts an instance into a colour by its tags (case-insensitive, as Consul
/// matches tags).
pub fn classify<S: AsRef<str>>(tags: &[S], colours: &[String; 2]) -> Classification {
    let has = |c: &str| tags.iter().any(|t| t.as_ref().eq_ignore_ascii_case(c));
    match (has(&colours[0]), has(&colours[1])) {
        (true, false) => Classification::Colour(0),
        (false, true) => Classification::Colour(1),
        (true, true) => Classification::Ambiguous,
        (false, false) => Classification::Uncoloured,
    }
}

/// The `version=` tag's value, if any.
pub fn version_of<S: AsRef<str>>(tags: &[S]) -> Option<&str> {
    tags.iter()
        .find_map(|t| t.as_ref().strip_prefix(VERSION_TAG_PREFIX))
        .filter(|v| !v.is_empty())
}

/// The role an instance's tags claim.
pub fn role_of<S: AsRef<str>>(tags: &[S]) -> Option<&'static str> {
    let has = |r: &str| tags.iter().any(|t| t.as_ref().eq_ignore_ascii_case(r));
    match (has(ACTIVE_TAG), has(STANDBY_TAG)) {
        (true, false) => Some(ACTIVE_TAG),
        (false, true) => Some(STANDBY_TAG),
        _ => None,
    }
}

/// Decides the active colour from role tags when there is no route key:
/// the colour with more instances tagged `active` (and not `standby`) wins;
/// on a tie, `previous` is kept, else the first colour. Returns the index.
pub fn active_by_tags(active_tagged: [usize; 2], previous: Option<usize>) -> usize {
    match active_tagged[0].cmp(&active_tagged[1]) {
        std::cmp::Ordering::Greater => 0,
        std::cmp::Ordering::Less => 1,
        std::cmp::Ordering::Equal => previous.unwrap_or(0),
    }
}

/// The most common value, ties broken by the smallest: used for a pool's
/// version label when instances disagree.
pub fn most_common<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(k, _)| *k == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| k)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn colours() -> [String; 2] {
        ["blue".into(), "green".into()]
    }

    #[test]
    fn classification_rule() {
        assert_eq!(
            classify(&["blue", "active"], &colours()),
            Classification::Colour(0)
        );
        assert_eq!(classify(&["GREEN"], &colours()), Classification::Colour(1));
        assert_eq!(
            classify(&["blue", "green"], &colours()),
            Classification::Ambiguous
        );
        assert_eq!(
            classify(&["active"], &colours()),
            Classification::Uncoloured
        );
    }

    #[test]
    fn tags() {
        assert_eq!(version_of(&["blue", "version=v2"]), Some("v2"));
        assert_eq!(version_of(&["version="]), None);
        assert_eq!(role_of(&["active"]), Some("active"));
        assert_eq!(role_of(&["active", "standby"]), None);
        assert_eq!(active_by_tags([2, 0], None), 0);
        assert_eq!(active_by_tags([1, 2], Some(0)), 1);
        assert_eq!(active_by_tags([1, 1], Some(1)), 1);
        assert_eq!(most_common(["v1", "v2", "v2"]), Some("v2"));
        assert_eq!(most_common(["v2", "v1"]), Some("v1"));
    }

    #[test]
    fn route_value_round_trip_and_rejections() {
        let v = RouteValue::new("green", 3, "test");
        let back = RouteValue::parse(&v.to_bytes()).unwrap();
        assert_eq!(back, v);
        assert!(back.written_at().is_some());
        assert!(RouteValue::parse(b"{\"active\":\"\",\"generation\":1,\"updated_at\":\"2026-01-01T00:00:00Z\",\"updated_by\":\"x\"}").is_err());
        assert!(RouteValue::parse(b"garbage").is_err());
        assert!(RouteValue::parse(b"{\"active\":\"blue\",\"generation\":1,\"updated_at\":\"yesterday\",\"updated_by\":\"x\"}").is_err());
    }
}
