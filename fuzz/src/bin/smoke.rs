//! Stable-toolchain fuzzing: feeds every target mutated seeds for a fixed
//! time budget. No coverage feedback (that needs `cargo fuzz` on nightly),
//! but the same target bodies, so a panic found here is a real one.
//!
//! `smoke [seconds-per-target] [target...]` (default 20 s; targets
//! `config`, `consul_json`, `request_path`). On a panic the input is written
//! to `artifacts/smoke-<target>-<hash>` and the process exits with 1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let from_dir = |dir: PathBuf, ext: &str| -> Vec<Vec<u8>> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == ext))
                    .filter_map(|p| std::fs::read(p).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut s = match target {
        "config" => from_dir(root.join("config"), "toml"),
        "request_path" => from_dir(root.join("tests/data/bad_requests"), "http"),
        _ => Vec::new(),
    };
    match target {
        "config" => s.extend([
            b"[[services]]\nname = \"a\"\nstatic = { active = [\"127.0.0.1:1\"] }\n".to_vec(),
            b"[admin]\ntoken = \"0123456789abcdef\"\n[[services]]\nname = \"a\"\nconsul = {}\n[[routes]]\nhost = \"x\"\npath_prefix = \"/api\"\nservice = \"a\"\n[timeouts]\ndrain = \"1s\"\n".to_vec(),
        ]),
        "consul_json" => s.extend([
            br#"{"active":"green","generation":7,"updated_at":"2026-01-01T00:00:00.000Z","updated_by":"x"}"#.to_vec(),
            br#"[{"Node":{"Node":"n","Address":"127.0.0.1"},"Service":{"ID":"a","Service":"s","Tags":["blue","active","version=v1"],"Address":"","Port":8080},"Checks":[{"Status":"passing"}]}]"#.to_vec(),
            br#"[{"CreateIndex":1,"ModifyIndex":2,"LockIndex":0,"Key":"switchyard/routes/s","Flags":0,"Value":"eyJhY3RpdmUiOiJibHVlIn0=","Session":null}]"#.to_vec(),
        ]),
        "request_path" => s.extend([
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
        ]),
        _ => {}
    }
    s
}

/// One random edit (or a few) of a seed.
fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds
        .get(rng.usize(..seeds.len().max(1)))
        .cloned()
        .unwrap_or_default();
    const INTERESTING: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b":",
        b" ",
        b"\"",
        b"=",
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b"chunked",
        b"Content-Length: ",
        b"Transfer-Encoding: ",
        b"HTTP/1.1",
        b"-1",
        b"18446744073709551616",
        b"\xff\xfe",
        b"%00",
        b"999999999",
    ];
    for _ in 0..rng.usize(1..=4) {
        let at = if d.is_empty() {
            0
        } else {
            rng.usize(..=d.len())
        };
        match rng.u8(..6) {
            0 if !d.is_empty() => {
                let i = rng.usize(..d.len());
                d[i] ^= 1 << rng.u8(..8);
            }
            1 if !d.is_empty() => {
                let end = (at + rng.usize(..16)).min(d.len());
                d.drain(at.min(end)..end);
            }
            2 => {
                let t = INTERESTING[rng.usize(..INTERESTING.len())];
                d.splice(at..at, t.iter().copied());
            }
            3 => {
                let n = rng.usize(..32);
                d.splice(at..at, std::iter::repeat_with(|| rng.u8(..)).take(n));
            }
            4 if !seeds.is_empty() => {
                let other = &seeds[rng.usize(..seeds.len())];
                let from = rng.usize(..=other.len());
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
            _ => {
                if !d.is_empty() {
                    let i = rng.usize(..d.len());
                    let n = rng.usize(1..64);
                    let b = d[i];
                    d.splice(i..i, std::iter::repeat_n(b, n));
                }
            }
        }
    }
    d
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget = args
        .first()
        .and_then(|a| a.parse().ok())
        .map_or(Duration::from_secs(20), Duration::from_secs);
    let mut targets: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    if targets.is_empty() {
        targets = vec!["config", "consul_json", "request_path"];
    }
    let seed = std::env::var("SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("smoke: seed {seed}, {budget:?} per target");

    let request_path = targets
        .contains(&"request_path")
        .then(switchyard_fuzz::RequestPath::start);
    for target in targets {
        let seeds = seeds(target);
        let mut rng = fastrand::Rng::with_seed(seed);
        let run = |data: &[u8]| match target {
            "config" => switchyard_fuzz::config(data),
            "consul_json" => switchyard_fuzz::consul_json(data),
            "request_path" => {
                if let Some(p) = &request_path {
                    p.run(data);
                }
            }
            other => panic!("unknown target {other}"),
        };
        let start = Instant::now();
        let mut runs = 0u64;
        // Seeds first, unmodified, then mutations until the budget is spent.
        let mut queue = seeds.clone().into_iter();
        while start.elapsed() < budget {
            let input = queue.next().unwrap_or_else(|| mutate(&mut rng, &seeds));
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&input)));
            runs += 1;
            if result.is_err() {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("smoke-{target}-{:016x}", fxhash(&input)));
                let _ = std::fs::write(&path, &input);
                eprintln!(
                    "smoke: {target} panicked after {runs} runs; input saved to {}",
                    path.display()
                );
                std::process::exit(1);
            }
        }
        println!("smoke: {target}: {runs} runs, no panic");
    }
}

/// A stable hash for artifact names.
fn fxhash(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    })
}
