//! The monitoring files in `deploy/` against the real tools (Debian's
//! `prometheus` package, which brings `promtool`; CI installs it):
//!
//! - `deploy_prometheus_files_pass_promtool`: `promtool check config`,
//!   `check rules` and `test rules` (a unit test for every alert);
//! - `metrics_exposition_passes_promtool`: `GET /metrics` of a running
//!   proxy through `promtool check metrics`, with the `process_*` metrics
//!   and `switchyard_build_info`;
//! - `prometheus_answers_every_dashboard_query_from_a_live_proxy`: a real
//!   Prometheus scrapes a proxy under load through a switch, loads the
//!   alert rules, and answers every PromQL expression of
//!   `deploy/grafana/switchyard.json` with finite values; the panels are
//!   then drawn from the same queries (`query_range`) and photographed in
//!   headless Chromium to `target/screenshots/dashboard.png`. Set
//!   `SWITCHYARD_DASHBOARD_SECONDS` to record longer before and after the
//!   switch (the README's picture used 60).
//!
//! A missing tool fails these tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::browser::{Browser, screenshot_dir};
use crate::support::dev::TempDir;
use crate::support::{ProxyHandle, Upstream, client, get_text, static_config};

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: apt-get install prometheus (as .ci/run does)")
        })
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn deploy_prometheus_files_pass_promtool() {
    let promtool = tool("promtool");
    let out = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(deploy("prometheus/prometheus.yml")));
    assert!(out.contains("5 rules found"), "{out}");
    run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml")));
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    for a in &alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "alert {a} has no unit test in alerts.test.yml"
        );
    }
    let out = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(deploy("prometheus/alerts.test.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A static proxy with a blue (active) and a green (standby) upstream.
async fn proxy() -> (ProxyHandle, Upstream, Upstream) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = ProxyHandle::start(&static_config(&[blue.addr], &[green.addr], "")).await;
    (p, blue, green)
}

#[tokio::test]
async fn metrics_exposition_passes_promtool() {
    let promtool = tool("promtool");
    let (p, _blue, _green) = proxy().await;
    let http = client();
    for path in ["/", "/status/503", "/"] {
        http.get(p.url(path)).send().await.unwrap();
    }
    let text = get_text(&http, &p.admin_url("/metrics")).await;
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "switchyard_build_info{",
        "switchyard_passing_instances{role=\"active\",service=\"svc\"} 1",
        "switchyard_requests_total{",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}"
    );
}

/// Every PromQL expression of the dashboard (panel targets and
/// annotations), with Grafana's variables replaced by what a user picking
/// "All" over the last five minutes gets.
fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy("grafana/switchyard.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fill(e: &str) -> String {
    // Grafana's $__rate_interval for a 1 s scrape interval is 4 s.
    e.replace("$service", ".+")
        .replace("$job", "switchyard")
        .replace("$__rate_interval", "5s")
        .replace("$__range", "5m")
}

fn dashboard_queries() -> Vec<(String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap();
            out.push((title.to_owned(), fill(t["expr"].as_str().unwrap())));
        }
    }
    for a in dash["annotations"]["list"].as_array().unwrap() {
        if let Some(e) = a["expr"].as_str() {
            out.push((a["name"].as_str().unwrap().to_owned(), fill(e)));
        }
    }
    out
}

/// A Prometheus child scraping `targets` every second; stopped on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let bin = tool("prometheus");
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [\"{target}\"]\n",
                deploy("prometheus/alerts.yml").display()
            ),
        )
        .unwrap();
        // Prometheus cannot report a port it picked itself: take a free one.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let log = dir.0.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut p = Self {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client().get(p.url("/-/ready")).send().await
                && r.status() == 200
            {
                break;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A query API call; panics unless Prometheus answers `success`.
    async fn api(&self, path: &str, params: &[(&str, String)]) -> Vec<Value> {
        let v: Value = client()
            .get(self.url(path))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{path} {params:?}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query (one-second steps) from `start` (Unix seconds) to now.
    async fn query_range(&self, q: &str, start: f64) -> Vec<Value> {
        let params = [
            ("query", q.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{:.3}", unix_now())),
            ("step", "1".to_owned()),
        ];
        self.api("/api/v1/query_range", &params).await
    }

    /// An instant query.
    async fn query(&self, q: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", q.to_owned())]).await
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `{{colour}} {{version}}` with a series' labels.
fn legend(format: &str, metric: &Value) -> String {
    let mut out = format.to_owned();
    if let Some(labels) = metric.as_object() {
        for (k, v) in labels {
            out = out.replace(&format!("{{{{{k}}}}}"), v.as_str().unwrap_or_default());
        }
    }
    // A label the series lacks (the empty pool a service has before its
    // first sync carries no colour) reads as a dash.
    while let (Some(a), Some(b)) = (out.find("{{"), out.find("}}")) {
        if b < a {
            break;
        }
        out.replace_range(a..b + 2, "–");
    }
    out
}

/// Draws every panel of the dashboard from `query_range` answers (a
/// stand-in for Grafana, which no registry here ships) and photographs it.
async fn render_dashboard(prom: &Prometheus, since: f64) -> PathBuf {
    let dash = dashboard();
    let mut panels = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let mut series = Vec::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            for s in prom
                .query_range(&fill(t["expr"].as_str().unwrap()), since)
                .await
            {
                let points: Vec<(f64, f64)> = s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|v| Some((v[0].as_f64()?, v[1].as_str()?.parse().ok()?)))
                    .collect();
                let name = legend(t["legendFormat"].as_str().unwrap_or_default(), &s["metric"]);
                series.push(serde_json::json!({ "name": name, "points": points }));
            }
        }
        panels.push(serde_json::json!({
            "type": p["type"], "title": p["title"], "unit": p["fieldConfig"]["defaults"]["unit"],
            "w": p["gridPos"]["w"], "series": series,
        }));
    }
    let data = serde_json::json!({
        "title": format!("{} — panels drawn from Prometheus query_range", dash["title"].as_str().unwrap()),
        "panels": panels,
    });
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dashboard-render.html"),
    )
    .unwrap();
    let data = data.to_string().replace("</", "<\\/");
    let html = template.replacen(
        "<script>\n\"use strict\";",
        &format!("<script>window.DATA = {data};</script>\n<script>\n\"use strict\";"),
        1,
    );
    let dir = TempDir::new("dashboard");
    let file = dir.0.join("dashboard.html");
    std::fs::write(&file, html).unwrap();
    let mut b = Browser::start(1400, 900).await;
    b.navigate(&format!("file://{}", file.display())).await;
    let drawn = b.eval("window.__rendered").await;
    assert_eq!(
        drawn.as_u64(),
        Some(panels.len() as u64),
        "{:?}",
        b.exceptions
    );
    assert!(b.exceptions.is_empty(), "{:?}", b.exceptions);
    let png = screenshot_dir().join("dashboard.png");
    b.screenshot(&png).await;
    png
}

/// The finite sample values of a vector result.
fn finite(result: &[Value]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_every_dashboard_query_from_a_live_proxy() {
    let (p, _blue, _green) = proxy().await;
    let prom = Prometheus::start(p.admin.unwrap()).await;
    let since = unix_now();
    let record = Duration::from_secs(
        std::env::var("SWITCHYARD_DASHBOARD_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    ) / 2;

    let url = p.url("/");
    let load = tokio::spawn(async move {
        let http = client();
        let mut n = 0u64;
        loop {
            // Active: 3 of 4 requests, one in ten a 500; standby preview: 1 of 4.
            let path = if n.is_multiple_of(10) {
                "status/500"
            } else {
                ""
            };
            let mut req = http.get(format!("{url}{path}"));
            if n % 4 == 3 {
                req = req.header("x-switchyard-pool", "standby");
            }
            let _ = req.send().await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // Scraped at least twice before the switch, so increases see it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while finite(
        &prom
            .query(r#"count_over_time(up{job="switchyard"}[1m]) >= 3"#)
            .await,
    )
    .is_empty()
    {
        assert!(Instant::now() < deadline, "no scrapes:\n{}", prom.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(record).await;
    let r = client()
        .post(p.admin_url("/switch?service=svc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Every query answers with data once a few scrapes follow the switch.
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut missing;
    loop {
        missing = Vec::new();
        for (title, q) in &queries {
            if finite(&prom.query(q).await).is_empty() {
                missing.push(format!("{title}: {q}"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without data:\n{}",
        missing.join("\n")
    );
    // The data means what the panels say.
    let per_colour = prom
        .query(r#"sum by (colour) (increase(switchyard_requests_total{class="5xx"}[5m]))"#)
        .await;
    assert!(
        per_colour.iter().any(|s| s["metric"]["colour"] == "blue"),
        "{per_colour:?}"
    );
    let generation = finite(
        &prom
            .query(r#"switchyard_route_generation{service="svc"}"#)
            .await,
    );
    assert_eq!(generation, [2.0]);
    let cutovers = finite(
        &prom
            .query("sum(increase(switchyard_cutover_delay_seconds_count[5m]))")
            .await,
    );
    assert!(cutovers.first().is_some_and(|c| *c > 0.5), "{cutovers:?}");

    // The alert rules loaded and evaluate.
    let rules: Value = client()
        .get(prom.url("/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: Vec<(String, String)> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(loaded.len(), 5, "{loaded:?}");
    assert!(loaded.iter().all(|(_, h)| h == "ok"), "{loaded:?}");
    tokio::time::sleep(record).await;
    load.abort();
    let png = render_dashboard(&prom, since).await;
    println!("screenshot: {}", png.display());
}
