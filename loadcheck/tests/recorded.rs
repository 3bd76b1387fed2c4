//! `stale-check` end to end on recorded runs: the real binary, real files,
//! exit codes and the summary line scripts parse.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn stale_check(k6: &str, switches: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stale-check"))
        .arg("--k6")
        .arg(data(k6))
        .arg("--switches")
        .arg(data(switches))
        .output()
        .expect("stale-check runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_good_run_passes_with_zero_stale_and_zero_failed() {
    let o = stale_check("good.k6.json", "good.switches.jsonl");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(
        line.starts_with("requests=160 failed=0 stale=0 p50="),
        "{line}"
    );
    assert!(
        stderr(&o).contains("160 judged against 6 switch log lines"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("PASS"));
}

#[test]
fn a_run_with_stale_answers_fails_and_names_them() {
    let o = stale_check("stale.k6.json", "good.switches.jsonl");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("requests=160 failed=0 stale=36 "),
        "{}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("STALE request started"), "{err}");
    assert!(
        err.contains("after the switch to v2 was acknowledged"),
        "{err}"
    );
    assert!(err.contains("FAIL"));
}

#[test]
fn a_run_with_one_failed_request_fails() {
    let o = stale_check("failed.k6.json", "good.switches.jsonl");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("requests=160 failed=1 stale=0 "),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("k6 http_req_failed 1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_same_traffic_against_a_wrong_switch_log_is_stale() {
    // Claim the opposite colour won every switch: the good traffic must now
    // be flagged, which proves the verdict really reads the log.
    let log = std::fs::read_to_string(data("good.switches.jsonl")).unwrap_or_default();
    let flipped: String = log
        .lines()
        .map(|l| {
            let l = if l.contains("\"v1\"") {
                l.replace("\"v1\"", "\"v2\"")
            } else {
                l.replace("\"v2\"", "\"v1\"")
            };
            format!("{l}\n")
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("stale-check-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("flipped.jsonl");
    std::fs::write(&path, flipped).expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_stale-check"))
        .arg("--k6")
        .arg(data("good.k6.json"))
        .arg("--switches")
        .arg(&path)
        .output()
        .expect("stale-check runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1));
    // All but the few that were in flight while the next switch was under
    // way (those may legitimately see the next colour).
    let line = stdout(&o);
    let stale: u64 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("stale="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(stale >= 150, "{line}");
}

#[test]
fn k6_output_on_stdin_works() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stale-check"))
        .args(["--k6", "-", "--switches"])
        .arg(data("good.switches.jsonl"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let input = std::fs::read(data("good.k6.json")).expect("read");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("requests=160 failed=0 stale=0"));
}

#[test]
fn unreadable_inputs_exit_2() {
    let o = stale_check("missing.k6.json", "good.switches.jsonl");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.k6.json"), "{}", stderr(&o));
    // A switch log is not k6 output.
    let o = stale_check("good.switches.jsonl", "good.switches.jsonl");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // k6 output is not a switch log.
    let o = stale_check("good.k6.json", "good.k6.json");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Writes `name` from the recorded run with every `step`-th request
/// relabelled as a POST (`kind` `post`), and returns its path.
fn with_posts(dir: &std::path::Path, name: &str, step: usize) -> PathBuf {
    let text = std::fs::read_to_string(data(name)).expect("recorded run");
    let mut n = 0usize;
    let out: String = text
        .lines()
        .map(|l| {
            let l = if l.contains("\"kind\":\"http\"") {
                n += 1;
                if (n - 1).is_multiple_of(step) {
                    l.replace("\"kind\":\"http\"", "\"kind\":\"post\"")
                } else {
                    l.to_string()
                }
            } else {
                l.to_string()
            };
            format!("{l}\n")
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, out).expect("write");
    path
}

fn stale_check_at(k6: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stale-check"))
        .arg("--k6")
        .arg(k6)
        .arg("--switches")
        .arg(data("good.switches.jsonl"))
        .output()
        .expect("stale-check runs")
}

#[test]
fn posts_are_counted_judged_and_fail_the_run() {
    let dir = std::env::temp_dir().join(format!("stale-check-posts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A quarter of the good run as POSTs: still a pass, and the POSTs show.
    let good = stale_check_at(&with_posts(&dir, "good.k6.json", 4));
    // Every request a POST: the one failed request is a failed POST.
    let failed = stale_check_at(&with_posts(&dir, "failed.k6.json", 1));
    // Stale answers to POSTs are stale like any other.
    let stale = stale_check_at(&with_posts(&dir, "stale.k6.json", 1));
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    let line = stdout(&good);
    assert!(line.starts_with("requests=160 failed=0 stale=0 "), "{line}");
    assert!(line.trim_end().ends_with(" posts=40"), "{line}");
    assert!(
        stderr(&good).contains("40 of the requests were POSTs with a body, 0 of them failed"),
        "{}",
        stderr(&good)
    );

    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stdout(&failed).starts_with("requests=160 failed=1 stale=0 "),
        "{}",
        stdout(&failed)
    );
    assert!(
        stderr(&failed).contains("160 of the requests were POSTs with a body, 1 of them failed"),
        "{}",
        stderr(&failed)
    );

    assert_eq!(stale.status.code(), Some(1));
    assert!(
        stdout(&stale).starts_with("requests=160 failed=0 stale=36 "),
        "{}",
        stdout(&stale)
    );
    assert!(stdout(&stale).trim_end().ends_with(" posts=160"));
}
