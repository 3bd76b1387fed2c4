//! Reading k6's JSON output (`k6 run --out json=FILE`).
//!
//! k6 writes one JSON object per line: `Metric` lines declare a metric,
//! `Point` lines carry one sample with its tags. The scenarios under `k6/`
//! emit one `sy_req` point per request (or per WebSocket echo) whose value
//! is the start time in epoch milliseconds and whose tags carry the rest:
//!
//! | tag | meaning |
//! | --- | --- |
//! | `version` | the `X-App-Version` that answered (or the echo's prefix) |
//! | `end_ms` | epoch ms when the answer was complete |
//! | `dur_ms` | optional: k6's own (sub-ms) duration of the exchange, used for percentiles |
//! | `ok` | `"true"` when status and body checks passed |
//! | `kind` | `ws` for a WebSocket echo; `post` for a POST with a body (judged like any HTTP request, and counted on its own); anything else (`http`, `ws_open`) is judged as an HTTP request |
//!
//! Tag values are always strings in k6, hence the string parsing. Only the
//! lines that matter are decoded: a run produces many other points, and a
//! cheap substring test skips them before any JSON parsing.

use std::io::BufRead;

use serde::Deserialize;

use crate::Error;

/// Name of the per-request metric the scenarios emit.
pub const SAMPLE_METRIC: &str = "sy_req";

/// What a sample measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One HTTP request.
    Http,
    /// One POST with a body: judged like [`Kind::Http`], and counted on its
    /// own so a run can prove that non-idempotent traffic went through.
    Post,
    /// One WebSocket message and its echo, on a connection that may have
    /// been opened before a switch (so it may legitimately stay on the old
    /// colour).
    Ws,
}

/// One request as the load generator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the request started, epoch ms.
    pub start_ms: f64,
    /// When the answer was complete, epoch ms.
    pub end_ms: f64,
    /// k6's measured duration, ms, when the sample carries one; more precise
    /// than `end_ms - start_ms` (whole milliseconds).
    pub measured_ms: Option<f64>,
    /// The version that answered; empty when unknown (failed requests).
    pub version: String,
    /// Whether the status and the body were what the scenario expects.
    pub ok: bool,
    /// HTTP request or WebSocket echo.
    pub kind: Kind,
}

impl Sample {
    /// Duration in milliseconds (never negative): k6's measure when
    /// present, else the wall-clock difference.
    pub fn duration_ms(&self) -> f64 {
        self.measured_ms
            .unwrap_or(self.end_ms - self.start_ms)
            .max(0.0)
    }
}

/// Everything [`read_k6`] keeps from one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct K6Run {
    /// The `sy_req` samples, in file order.
    pub samples: Vec<Sample>,
    /// `checks` points with value 1.
    pub checks_passed: u64,
    /// `checks` points with value 0.
    pub checks_failed: u64,
    /// `http_req_failed` points with a non-zero value (k6's own failure
    /// classification: transport errors and status >= 400).
    pub http_req_failed: u64,
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    metric: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PointData {
    value: f64,
    #[serde(default)]
    tags: Option<serde_json::Map<String, serde_json::Value>>,
}

fn tag<'a>(
    tags: Option<&'a serde_json::Map<String, serde_json::Value>>,
    name: &str,
) -> Option<&'a str> {
    tags?.get(name)?.as_str()
}

/// Reads a k6 JSON output stream. Lines that are not JSON, or `sy_req`
/// points without a usable `end_ms` tag, are errors: a truncated or foreign
/// file must not pass as a clean run.
pub fn read_k6(reader: impl BufRead) -> Result<K6Run, Error> {
    let mut run = K6Run::default();
    let mut k6_lines = 0usize;
    let mut last_line = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            what: "k6 output",
            source,
        })?;
        let lineno = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        last_line = lineno;
        if trimmed.contains("\"metric\"") {
            k6_lines += 1;
        }
        let interesting = trimmed.contains(SAMPLE_METRIC)
            || trimmed.contains("\"checks\"")
            || trimmed.contains("\"http_req_failed\"");
        if !interesting {
            // Still make sure it is a JSON object line, cheaply.
            if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
                return Err(malformed(
                    lineno,
                    "not a JSON object (truncated or not k6 --out json output?)",
                ));
            }
            continue;
        }
        let parsed: Line = serde_json::from_str(trimmed)
            .map_err(|e| malformed(lineno, &format!("invalid JSON: {e}")))?;
        if parsed.kind != "Point" {
            continue;
        }
        let data: PointData = parsed
            .data
            .ok_or_else(|| malformed(lineno, "Point without data"))
            .and_then(|d| {
                serde_json::from_value(d)
                    .map_err(|e| malformed(lineno, &format!("bad Point data: {e}")))
            })?;
        match parsed.metric.as_str() {
            SAMPLE_METRIC => {
                let tags = data.tags.as_ref();
                let end_ms = tag(tags, "end_ms")
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        malformed(lineno, "sy_req point without a numeric end_ms tag")
                    })?;
                if !data.value.is_finite() {
                    return Err(malformed(lineno, "sy_req value is not a number"));
                }
                let kind = match tag(tags, "kind") {
                    Some("ws") => Kind::Ws,
                    Some("post") => Kind::Post,
                    _ => Kind::Http,
                };
                let measured_ms = tag(tags, "dur_ms")
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite());
                run.samples.push(Sample {
                    start_ms: data.value,
                    end_ms,
                    measured_ms,
                    version: tag(tags, "version").unwrap_or_default().to_owned(),
                    ok: tag(tags, "ok") == Some("true"),
                    kind,
                });
            }
            "checks" => {
                if data.value > 0.0 {
                    run.checks_passed += 1;
                } else {
                    run.checks_failed += 1;
                }
            }
            "http_req_failed" if data.value > 0.0 => run.http_req_failed += 1,
            _ => {}
        }
    }
    if last_line > 0 && k6_lines == 0 {
        return Err(malformed(
            last_line,
            "no k6 metric lines at all (is this k6 --out json output?)",
        ));
    }
    Ok(run)
}

fn malformed(line: usize, reason: &str) -> Error {
    Error::Malformed {
        what: "k6 output",
        line,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RUN: &str = r#"{"type":"Metric","data":{"name":"sy_req","type":"trend","contains":"default","thresholds":[],"submetrics":null},"metric":"sy_req"}
{"metric":"http_reqs","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":1,"tags":{"status":"200"}}}
{"metric":"http_req_failed","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":0,"tags":{"status":"200"}}}
{"metric":"checks","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":1,"tags":{"check":"status is 200"}}}
{"metric":"sy_req","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":1000,"tags":{"version":"v1","end_ms":"1004","dur_ms":"3.250","ok":"true","kind":"http"}}}
{"metric":"http_req_failed","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":1,"tags":{"status":"502"}}}
{"metric":"checks","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":0,"tags":{"check":"status is 200"}}}
{"metric":"sy_req","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":1001,"tags":{"version":"","end_ms":"1010","ok":"false"}}}
{"metric":"sy_req","type":"Point","data":{"time":"2025-01-01T00:00:00Z","value":1002,"tags":{"version":"v2","end_ms":"1003","ok":"true","kind":"ws"}}}
"#;

    #[test]
    fn keeps_samples_checks_and_failures() {
        let run = read_k6(RUN.as_bytes()).unwrap();
        assert_eq!(run.samples.len(), 3);
        assert_eq!(
            run.samples[0],
            Sample {
                start_ms: 1000.0,
                end_ms: 1004.0,
                measured_ms: Some(3.25),
                version: "v1".into(),
                ok: true,
                kind: Kind::Http
            }
        );
        assert!(!run.samples[1].ok);
        assert_eq!(run.samples[1].kind, Kind::Http, "kind defaults to http");
        assert_eq!(run.samples[2].kind, Kind::Ws);
        assert_eq!(
            (run.checks_passed, run.checks_failed, run.http_req_failed),
            (1, 1, 1)
        );
        assert_eq!(run.samples[0].duration_ms(), 3.25, "k6's measure wins");
        assert_eq!(run.samples[1].duration_ms(), 9.0, "else end - start");
    }

    #[test]
    fn truncated_output_is_an_error() {
        let cut = format!("{}{{\"metric\":\"sy_req\",\"type\":\"Po", RUN);
        let err = read_k6(cut.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 10"), "{err}");
        let foreign = "hello\n";
        assert!(read_k6(foreign.as_bytes()).is_err());
        let other_json = "{\"acked_ms\":1,\"active_version\":\"v1\"}\n";
        let err = read_k6(other_json.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("no k6 metric lines"), "{err}");
        assert_eq!(
            read_k6("".as_bytes()).unwrap(),
            K6Run::default(),
            "empty is empty, not an error"
        );
    }

    #[test]
    fn sample_without_end_is_an_error() {
        let bad = r#"{"metric":"sy_req","type":"Point","data":{"time":"t","value":5,"tags":{"version":"v1"}}}"#;
        let err = read_k6(bad.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("end_ms"), "{err}");
    }
}
