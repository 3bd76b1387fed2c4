//! Which colour is active: the one rule the proxy and the controller share.
//!
//! 1. The route key, when it exists, parses and names one of the two colours
//!    (matched case-insensitively, as tags are), decides.
//! 2. Otherwise the role tags of the **passing** instances decide: the colour
//!    with more instances tagged `active` wins ([`active_by_tags`]).
//! 3. On a tie (including no tag at all) the previous decision is kept; with
//!    none, the first colour.
//!
//! "Previous" is what the caller last served: a proxy passes its own last
//! decision, the controller passes the colour the proxies report serving, so
//! both land on the same colour even when nothing but history says which.

use serde::Serialize;

use crate::{ACTIVE_TAG, Classification, RouteValue, active_by_tags, classify, role_of};

/// How the active colour was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedBy {
    /// The route key names it.
    RouteKey,
    /// The passing instances' role tags (or, on a tie, the previous decision).
    Tags,
}

impl DecidedBy {
    /// The name shown in `/status` and reports: `route-key` or `tags`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::RouteKey => "route-key",
            DecidedBy::Tags => "tags",
        }
    }
}

/// The result of [`decide_active`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    /// Index of the active colour; the standby is `1 - index`.
    pub index: usize,
    /// What decided it.
    pub decided_by: DecidedBy,
    /// The route key exists but names neither colour (so the tags decided).
    pub unknown_route_colour: bool,
}

/// The index of `name` among `colours`, case-insensitively.
pub fn colour_index(colours: &[String; 2], name: &str) -> Option<usize> {
    colours.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// Counts, per colour, the instances tagged `active`. Pass only the passing
/// instances: a failing instance never decides which colour serves.
pub fn count_active_tagged<'a, S, I>(passing_tags: I, colours: &[String; 2]) -> [usize; 2]
where
    S: AsRef<str> + 'a,
    I: IntoIterator<Item = &'a [S]>,
{
    let mut counts = [0usize; 2];
    for tags in passing_tags {
        if let Classification::Colour(c) = classify(tags, colours)
            && role_of(tags) == Some(ACTIVE_TAG)
        {
            counts[c] += 1;
        }
    }
    counts
}

/// Decides the active colour (see the module documentation for the rule).
/// `route` is the parsed route key, `None` when it is absent or unusable.
pub fn decide_active(
    colours: &[String; 2],
    route: Option<&RouteValue>,
    active_tagged: [usize; 2],
    previous: Option<usize>,
) -> Active {
    if let Some(v) = route
        && let Some(index) = colour_index(colours, &v.active)
    {
        return Active {
            index,
            decided_by: DecidedBy::RouteKey,
            unknown_route_colour: false,
        };
    }
    Active {
        index: active_by_tags(active_tagged, previous.filter(|p| *p < 2)),
        decided_by: DecidedBy::Tags,
        unknown_route_colour: route.is_some(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn colours() -> [String; 2] {
        ["blue".into(), "green".into()]
    }

    fn route(active: &str) -> RouteValue {
        RouteValue::new(active, 3, "test")
    }

    /// The rule, case by case: (route key colour, active-tagged passing counts, previous) ->
    /// (active index, decided by).
    #[test]
    fn the_active_colour_rule() {
        use DecidedBy::{RouteKey, Tags};
        type Case = (
            Option<&'static str>,
            [usize; 2],
            Option<usize>,
            usize,
            DecidedBy,
        );
        let cases: &[Case] = &[
            // The route key wins over tags, whatever its case.
            (Some("green"), [3, 0], None, 1, RouteKey),
            (Some("Green"), [3, 0], None, 1, RouteKey),
            (Some("BLUE"), [0, 3], Some(1), 0, RouteKey),
            // A route key naming neither colour falls back to tags.
            (Some("red"), [0, 2], None, 1, Tags),
            (Some("red"), [1, 1], Some(1), 1, Tags),
            // No route key: more active-tagged passing instances win.
            (None, [2, 1], Some(1), 0, Tags),
            (None, [0, 1], Some(0), 1, Tags),
            // Ties keep the previous decision, else the first colour.
            (None, [1, 1], Some(1), 1, Tags),
            (None, [0, 0], Some(1), 1, Tags),
            (None, [0, 0], None, 0, Tags),
            (None, [2, 2], None, 0, Tags),
            // A previous index out of range is ignored.
            (None, [0, 0], Some(7), 0, Tags),
        ];
        for (i, (key, tagged, previous, index, by)) in cases.iter().enumerate() {
            let r = key.map(route);
            let got = decide_active(&colours(), r.as_ref(), *tagged, *previous);
            assert_eq!(
                (got.index, got.decided_by),
                (*index, *by),
                "case {i}: {key:?} {tagged:?} {previous:?}"
            );
            assert_eq!(
                got.unknown_route_colour,
                key.is_some() && *by == Tags,
                "case {i}"
            );
        }
    }

    #[test]
    fn only_coloured_active_tags_count() {
        let tags: Vec<Vec<&str>> = vec![
            vec!["blue", "active"],
            vec!["BLUE", "Active"],
            vec!["green", "standby"],
            vec!["green", "active", "standby"],
            vec!["blue", "green", "active"],
            vec!["active"],
            vec!["green", "active"],
        ];
        let counts = count_active_tagged(tags.iter().map(Vec::as_slice), &colours());
        assert_eq!(counts, [2, 1]);
        assert_eq!(colour_index(&colours(), "GREEN"), Some(1));
        assert_eq!(colour_index(&colours(), "red"), None);
    }
}
