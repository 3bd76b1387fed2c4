//! `stale-check`: the verdict of a load test run against blue/green switches.
//!
//! Reads k6's JSON output and the switch log, prints a report on stderr and
//! one summary line on stdout (`requests=N failed=N stale=N p50=… p95=…
//! p99=…`, then `posts=N` when the run had POSTs), and exits 0 when nothing failed and nothing was stale, 1 when
//! something did, 2 when the inputs cannot be read.

use std::fs::File;
use std::io::{BufReader, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_loadcheck::{Options, check, read_k6, read_switches};

/// How many stale responses to list individually.
const SHOW_STALE: usize = 20;

#[derive(Parser, Debug)]
#[command(
    name = "stale-check",
    about = "Report failed and stale responses of a k6 run against a switch log"
)]
struct Args {
    /// k6 JSON output (`k6 run --out json=FILE`); `-` reads stdin.
    #[arg(long)]
    k6: PathBuf,
    /// Switch log: JSON lines `{"requested_ms":…,"acked_ms":…,"active_version":"vN"}`.
    #[arg(long)]
    switches: PathBuf,
    /// Tolerance around switch times, ms (for clocks that differ).
    #[arg(long, default_value_t = 0)]
    grace_ms: u64,
}

fn open(path: &PathBuf) -> Result<Box<dyn std::io::BufRead>, String> {
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err("--k6 - reads stdin, which is a terminal".into());
        }
        return Ok(Box::new(BufReader::new(stdin)));
    }
    File::open(path)
        .map(|f| Box::new(BufReader::with_capacity(1 << 20, f)) as Box<dyn std::io::BufRead>)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let inputs = open(&args.k6).and_then(|k6| {
        let run = read_k6(k6).map_err(|e| format!("{}: {e}", args.k6.display()))?;
        let switches = open(&args.switches).and_then(|s| {
            read_switches(s).map_err(|e| format!("{}: {e}", args.switches.display()))
        })?;
        Ok((run, switches))
    });
    let (run, switches) = match inputs {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stale-check: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = check(
        &run.samples,
        &switches,
        &Options {
            grace_ms: args.grace_ms as f64,
        },
    );
    report.checks_failed = run.checks_failed;
    report.http_req_failed = run.http_req_failed;

    eprintln!(
        "stale-check: {} HTTP requests ({} judged against {} switch log lines, {} before the first), {} WebSocket echoes",
        report.requests, report.judged, report.switches, report.unjudged, report.ws_messages
    );
    eprintln!(
        "stale-check: {} of the requests were POSTs with a body, {} of them failed",
        report.posts, report.posts_failed
    );
    eprintln!(
        "stale-check: failed samples {}, failed k6 checks {} (of {}), k6 http_req_failed {}",
        report.failed,
        run.checks_failed,
        run.checks_passed + run.checks_failed,
        run.http_req_failed
    );
    eprintln!(
        "stale-check: latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.p50_ms, report.p95_ms, report.p99_ms, report.max_ms
    );
    for s in report.stale_responses.iter().take(SHOW_STALE) {
        eprintln!("stale-check: STALE {s}");
    }
    if report.stale_responses.len() > SHOW_STALE {
        eprintln!(
            "stale-check: … and {} more stale responses",
            report.stale_responses.len() - SHOW_STALE
        );
    }
    println!("{}", report.summary_line());
    if report.passed() {
        eprintln!("stale-check: PASS");
        ExitCode::SUCCESS
    } else {
        if report.requests + report.ws_messages == 0 {
            eprintln!("stale-check: no traffic recorded; nothing is proven");
        }
        eprintln!("stale-check: FAIL");
        ExitCode::from(1)
    }
}
