//! Reading the switch log.
//!
//! The scenario runner appends one JSON object per acknowledged switch:
//!
//! ```json
//! {"requested_ms": 1700000000000, "acked_ms": 1700000000012, "active_version": "v2"}
//! ```
//!
//! `acked_ms` is when the proxy's `POST /switch` answered 200 (the proxy
//! answers only once it serves the new colour). `requested_ms`, when the
//! call was sent, is optional: it lets the verdict accept an answer from the
//! *next* colour for a request that was in flight while that next switch was
//! under way. A line with only `active_version` and `acked_ms` may also mark
//! the starting state (the runner writes one before the first switch).

use std::io::BufRead;

use serde::Deserialize;

use crate::Error;

/// One acknowledged switch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Switch {
    /// Epoch ms when the switch call was sent.
    #[serde(default)]
    pub requested_ms: Option<f64>,
    /// Epoch ms when the switch call returned success.
    pub acked_ms: f64,
    /// The version serving from then on.
    pub active_version: String,
}

/// Reads a switch log (JSON lines) and returns the switches sorted by
/// acknowledgement time.
pub fn read_switches(reader: impl BufRead) -> Result<Vec<Switch>, Error> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            what: "switch log",
            source,
        })?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let malformed = |reason: String| Error::Malformed {
            what: "switch log",
            line: i + 1,
            reason,
        };
        let s: Switch = serde_json::from_str(trimmed).map_err(|e| malformed(e.to_string()))?;
        if !s.acked_ms.is_finite() || s.requested_ms.is_some_and(|r| !r.is_finite()) {
            return Err(malformed("times must be numbers".into()));
        }
        if s.active_version.is_empty() {
            return Err(malformed("empty active_version".into()));
        }
        out.push(s);
    }
    out.sort_by(|a, b| a.acked_ms.total_cmp(&b.acked_ms));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sorts() {
        let log = "{\"acked_ms\":2000,\"active_version\":\"v1\",\"requested_ms\":1990}\n\n{\"acked_ms\":1000,\"active_version\":\"v2\"}\n";
        let s = read_switches(log.as_bytes()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].active_version, "v2");
        assert_eq!(s[0].requested_ms, None);
        assert_eq!(s[1].requested_ms, Some(1990.0));
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(read_switches("{\"acked_ms\":1}".as_bytes()).is_err());
        assert!(read_switches("{\"acked_ms\":1,\"active_version\":\"\"}".as_bytes()).is_err());
        let err = read_switches("{\"acked_ms\":1,\"active_version\":\"v1\"}\nnope".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
