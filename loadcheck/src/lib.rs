//! Verdicts for switchyard's load tests: did any request fail, and did any
//! request see a stale colour?
//!
//! A blue/green switch is only zero-downtime if two things hold while
//! traffic flows: no request fails, and once the proxy has acknowledged a
//! switch, every request that *starts* afterwards is answered by the new
//! colour. The first is easy to measure (k6 counts it); the second needs
//! the request timeline lined up against the switch timeline, which is what
//! this crate does.
//!
//! Module map:
//! - [`k6`]: reads `k6 run --out json=FILE` output and keeps the per-request
//!   samples the scenarios emit (the `sy_req` metric: value = start time in
//!   epoch ms, tags `version`, `end_ms`, `ok`, `kind`), plus k6's own
//!   `checks` and `http_req_failed` points.
//! - [`switches`]: reads the switch log the scenario runner writes, one JSON
//!   object per acknowledged switch
//!   (`{"requested_ms":…, "acked_ms":…, "active_version":"v2"}`).
//! - [`verdict`]: lines the two up and produces a [`Report`]: totals,
//!   latency percentiles, and every stale response with the reason.
//!
//! The `stale-check` binary is a thin command-line shell over these.

pub mod k6;
pub mod switches;
pub mod verdict;

pub use k6::{K6Run, Kind, Sample, read_k6};
pub use switches::{Switch, read_switches};
pub use verdict::{Options, Report, StaleResponse, check};

/// Why an input file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading failed.
    #[error("reading {what}: {source}")]
    Io {
        /// Which input.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not what the format requires.
    #[error("{what} line {line}: {reason}")]
    Malformed {
        /// Which input.
        what: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}
