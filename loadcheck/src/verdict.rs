//! Lining requests up against switches.
//!
//! The rule being proved: a request that **started after** switch *k* was
//! acknowledged must be answered by switch *k*'s version. There is one
//! legitimate exception: switch *k+1* may already be under way, so an answer
//! from *k+1*'s version is accepted when the request was still in flight
//! after switch *k+1* was requested (it can only have been routed then).
//! Requests that started before the first logged switch are not judged.
//!
//! A request that started before an acknowledgement may be answered by
//! either colour (it may have been routed before the flip, and draining lets
//! it finish there), so it only counts towards "failed" if it failed.
//!
//! WebSocket samples are never stale by this rule: a connection is pinned to
//! the instance that accepted it, which is exactly the draining behaviour a
//! switch must preserve. They count towards messages and failures only.
//!
//! `grace_ms` widens both windows by that many milliseconds, for clocks that
//! are not the same clock (the load generator and the switch runner in
//! different processes). Zero is right when both read the same system
//! clock: the request start is taken before sending and the
//! acknowledgement after the answer, so both errors point the safe way.

use std::fmt;

use crate::k6::{Kind, Sample};
use crate::switches::Switch;

/// Knobs of [`check`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Options {
    /// Tolerance around switch times, ms.
    pub grace_ms: f64,
}

/// A request answered by a version it should not have seen.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleResponse {
    /// The request.
    pub sample: Sample,
    /// The version that should have answered.
    pub expected: String,
    /// Acknowledgement time of the switch that made `expected` active.
    pub switch_acked_ms: f64,
}

impl fmt::Display for StaleResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = if self.sample.version.is_empty() {
            "(none)"
        } else {
            &self.sample.version
        };
        write!(
            f,
            "request started {:.0} ({:+.0} ms after the switch to {} was acknowledged at {:.0}) answered by {}",
            self.sample.start_ms,
            self.sample.start_ms - self.switch_acked_ms,
            self.expected,
            self.switch_acked_ms,
            version
        )
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// HTTP requests seen (POSTs included).
    pub requests: u64,
    /// Of `requests`, the POSTs with a body (samples of kind `post`).
    pub posts: u64,
    /// Of `failed`, the POSTs.
    pub posts_failed: u64,
    /// HTTP requests and WebSocket echoes that failed.
    pub failed: u64,
    /// HTTP requests answered by the wrong version (see module docs).
    pub stale: u64,
    /// HTTP requests that started before the first logged switch.
    pub unjudged: u64,
    /// HTTP requests judged against a switch (`requests - unjudged`).
    pub judged: u64,
    /// WebSocket echoes seen.
    pub ws_messages: u64,
    /// Switches in the log (including a starting-state line).
    pub switches: u64,
    /// Latency percentiles of the HTTP requests, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest HTTP request, ms.
    pub max_ms: f64,
    /// k6 `checks` that failed (set by the caller from [`crate::K6Run`]).
    pub checks_failed: u64,
    /// k6 `http_req_failed` points (set by the caller from [`crate::K6Run`]).
    pub http_req_failed: u64,
    /// The stale responses, oldest first.
    pub stale_responses: Vec<StaleResponse>,
}

impl Report {
    /// Zero downtime proven: traffic was seen, nothing failed, nothing was
    /// stale.
    pub fn passed(&self) -> bool {
        (self.requests + self.ws_messages) > 0
            && self.failed == 0
            && self.stale == 0
            && self.checks_failed == 0
            && self.http_req_failed == 0
    }

    /// Failures by the strictest of the three counts. One failed request
    /// usually shows up in all three (`sy_req` not ok, a failed check, an
    /// `http_req_failed` point), so they are not added up.
    pub fn failed_overall(&self) -> u64 {
        self.failed
            .max(self.checks_failed)
            .max(self.http_req_failed)
    }

    /// One line, `key=value` pairs, for scripts and READMEs.
    pub fn summary_line(&self) -> String {
        let mut s = format!(
            "requests={} failed={} stale={} p50={:.1}ms p95={:.1}ms p99={:.1}ms",
            self.requests,
            self.failed_overall(),
            self.stale,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms
        );
        if self.posts > 0 {
            s.push_str(&format!(" posts={}", self.posts));
        }
        if self.ws_messages > 0 {
            s.push_str(&format!(" ws_messages={}", self.ws_messages));
        }
        s
    }
}

/// Nearest-rank percentile of sorted values; 0 for an empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied().unwrap_or(0.0)
}

/// Judges `samples` against `switches` (which must be sorted by
/// `acked_ms`, as [`crate::read_switches`] returns them).
pub fn check(samples: &[Sample], switches: &[Switch], opts: &Options) -> Report {
    let mut report = Report {
        switches: switches.len() as u64,
        ..Report::default()
    };
    let mut durations = Vec::new();
    for s in samples {
        if s.kind == Kind::Ws {
            report.ws_messages += 1;
            if !s.ok {
                report.failed += 1;
            }
            continue;
        }
        report.requests += 1;
        let post = s.kind == Kind::Post;
        if post {
            report.posts += 1;
        }
        durations.push(s.duration_ms());
        if !s.ok {
            report.failed += 1;
            if post {
                report.posts_failed += 1;
            }
            continue;
        }
        // The last switch acknowledged strictly before the request started.
        let k = switches.partition_point(|w| w.acked_ms + opts.grace_ms < s.start_ms);
        let Some(current) = k.checked_sub(1).and_then(|k| switches.get(k)) else {
            report.unjudged += 1;
            continue;
        };
        report.judged += 1;
        if s.version == current.active_version {
            continue;
        }
        // Routed while the next switch was under way?
        let next_ok = switches.get(k).is_some_and(|next| {
            let requested = next.requested_ms.unwrap_or(next.acked_ms);
            next.active_version == s.version && s.end_ms + opts.grace_ms >= requested
        });
        if next_ok {
            continue;
        }
        report.stale += 1;
        report.stale_responses.push(StaleResponse {
            sample: s.clone(),
            expected: current.active_version.clone(),
            switch_acked_ms: current.acked_ms,
        });
    }
    durations.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&durations, 50.0);
    report.p95_ms = percentile(&durations, 95.0);
    report.p99_ms = percentile(&durations, 99.0);
    report.max_ms = durations.last().copied().unwrap_or(0.0);
    report
        .stale_responses
        .sort_by(|a, b| a.sample.start_ms.total_cmp(&b.sample.start_ms));
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(start: f64, end: f64, v: &str) -> Sample {
        Sample {
            start_ms: start,
            end_ms: end,
            measured_ms: None,
            version: v.into(),
            ok: true,
            kind: Kind::Http,
        }
    }

    fn sw(requested: Option<f64>, acked: f64, v: &str) -> Switch {
        Switch {
            requested_ms: requested,
            acked_ms: acked,
            active_version: v.into(),
        }
    }

    fn log() -> Vec<Switch> {
        vec![
            sw(None, 1000.0, "v1"),
            sw(Some(1990.0), 2000.0, "v2"),
            sw(Some(2990.0), 3000.0, "v1"),
        ]
    }

    #[test]
    fn clean_run_has_no_stale_answers() {
        let samples = vec![
            req(900.0, 910.0, "v1"),   // before the first line: not judged
            req(1500.0, 1510.0, "v1"), // after v1 ack
            req(2001.0, 2003.0, "v2"), // after v2 ack
            req(3500.0, 3600.0, "v1"),
        ];
        let r = check(&samples, &log(), &Options::default());
        assert_eq!(
            (r.requests, r.judged, r.unjudged, r.stale, r.failed),
            (4, 3, 1, 0, 0)
        );
        assert!(r.passed());
    }

    #[test]
    fn old_colour_after_an_ack_is_stale() {
        let samples = vec![req(2001.0, 2002.0, "v1"), req(2500.0, 2501.0, "v1")];
        let r = check(&samples, &log(), &Options::default());
        assert_eq!(r.stale, 2);
        assert!(!r.passed());
        assert_eq!(r.stale_responses[0].expected, "v2");
        let text = r.stale_responses[0].to_string();
        assert!(text.contains("+1 ms after the switch to v2"), "{text}");
        assert!(text.contains("answered by v1"), "{text}");
    }

    #[test]
    fn a_request_started_at_the_ack_millisecond_is_not_judged_against_it() {
        // Same millisecond: it may have started before the ack.
        let r = check(&[req(2000.0, 2001.0, "v1")], &log(), &Options::default());
        assert_eq!(r.stale, 0);
    }

    #[test]
    fn next_colour_is_fine_only_once_the_next_switch_was_requested() {
        // In flight when the switch to v1 (requested at 2990) began: fine.
        let r = check(&[req(2980.0, 2995.0, "v1")], &log(), &Options::default());
        assert_eq!(r.stale, 0);
        // Finished before that switch was even requested: stale.
        let r = check(&[req(2500.0, 2510.0, "v1")], &log(), &Options::default());
        assert_eq!(r.stale, 1);
        // Without requested_ms the ack time is the bound.
        let log = vec![sw(None, 1000.0, "v1"), sw(None, 2000.0, "v2")];
        let r = check(&[req(1500.0, 1999.0, "v2")], &log, &Options::default());
        assert_eq!(r.stale, 1);
        let r = check(&[req(1500.0, 2000.0, "v2")], &log, &Options::default());
        assert_eq!(r.stale, 0);
    }

    #[test]
    fn grace_widens_the_windows() {
        let opts = Options { grace_ms: 5.0 };
        // 3 ms after the ack is inside the grace window: not judged against it.
        let r = check(&[req(2003.0, 2004.0, "v1")], &log(), &opts);
        assert_eq!(r.stale, 0);
        let r = check(&[req(2006.0, 2007.0, "v1")], &log(), &opts);
        assert_eq!(r.stale, 1);
    }

    #[test]
    fn failures_count_and_fail_the_run_and_missing_versions_are_stale() {
        let mut bad = req(1500.0, 1600.0, "");
        bad.ok = false;
        let r = check(&[bad, req(1500.0, 1501.0, "")], &log(), &Options::default());
        assert_eq!((r.failed, r.stale), (1, 1));
        assert!(!r.passed());
    }

    #[test]
    fn websocket_echoes_are_never_stale_but_can_fail() {
        let mut ws = req(2500.0, 2501.0, "v1");
        ws.kind = Kind::Ws;
        let mut lost = ws.clone();
        lost.ok = false;
        let r = check(&[ws.clone()], &log(), &Options::default());
        assert_eq!((r.ws_messages, r.stale, r.requests), (1, 0, 0));
        assert!(r.passed());
        let r = check(&[ws, lost], &log(), &Options::default());
        assert_eq!(r.failed, 1);
        assert!(!r.passed());
    }

    #[test]
    fn posts_are_counted_judged_and_can_fail() {
        let post = |start: f64, end: f64, v: &str| Sample {
            kind: Kind::Post,
            ..req(start, end, v)
        };
        let mut failed = post(1600.0, 1700.0, "");
        failed.ok = false;
        let samples = vec![
            req(1500.0, 1501.0, "v1"),
            post(1500.0, 1502.0, "v1"),
            post(2500.0, 2502.0, "v1"), // after the ack of v2: stale
            failed,
        ];
        let r = check(&samples, &log(), &Options::default());
        assert_eq!(
            (r.requests, r.posts, r.posts_failed, r.failed, r.stale),
            (4, 3, 1, 1, 1)
        );
        assert_eq!(r.stale_responses[0].sample.kind, Kind::Post);
        assert!(!r.passed());
        assert!(
            r.summary_line().ends_with(" posts=3"),
            "{}",
            r.summary_line()
        );
        let clean = check(&samples[..2], &log(), &Options::default());
        assert!(clean.passed());
        assert_eq!((clean.requests, clean.posts), (2, 1));
    }

    #[test]
    fn no_traffic_is_not_a_pass() {
        assert!(!check(&[], &log(), &Options::default()).passed());
    }

    #[test]
    fn k6_failures_fail_the_run_and_show_in_the_summary() {
        let mut r = check(&[req(1500.0, 1501.0, "v1")], &log(), &Options::default());
        assert!(r.passed());
        r.http_req_failed = 2;
        assert!(!r.passed());
        assert!(
            r.summary_line().contains("failed=2"),
            "{}",
            r.summary_line()
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<_> = (1..=100).map(|i| req(0.0, f64::from(i), "v1")).collect();
        let r = check(&samples, &[], &Options::default());
        assert_eq!(
            (r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(r.unjudged, 100);
        assert_eq!(
            r.summary_line(),
            "requests=100 failed=0 stale=0 p50=50.0ms p95=95.0ms p99=99.0ms"
        );
    }
}
