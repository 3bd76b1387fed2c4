//! The status page on the admin port, in a real browser.
//!
//! - `status_page_follows_a_switch_in_a_real_browser`: headless Chromium
//!   (over the DevTools protocol) against a running `switchyard dev` under
//!   light load: the page shows blue active v1 and green standby v2 with
//!   live rates; after `switchyard switch` it shows green active without a
//!   reload within a second; keyboard-only use, text contrast and a phone
//!   viewport are checked; screenshots land in `target/screenshots/`.
//! - `status_page_switches_with_an_admin_token`: with a token configured the
//!   page asks for it; a wrong token is refused (403 shown, nothing
//!   switched), the right one switches after a confirmation naming both
//!   colours.
//! - `status_page_is_self_contained_and_refuses_foreign_origins`: the page
//!   loads nothing from elsewhere (CSP, no external references); `/status`
//!   carries what the page needs; a cross-origin `POST /switch` is refused.
//!
//! Any uncaught JavaScript exception fails the browser tests.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::discovery::status;
use crate::support::browser::{Browser, screenshot_dir};
use crate::support::dev::{TempDir, addr, spawn_dev, wait_dev_json};
use crate::support::{ProxyHandle, Upstream, client, static_config};

/// True once the page shows `active` and `standby` colours with versions.
fn shows(service: &str, active: (&str, &str), standby: (&str, &str)) -> String {
    format!(
        r#"(() => {{
  const card = document.querySelector('[data-service="{service}"]');
  if (!card) return false;
  const a = card.querySelector('[data-role="active"]'), s = card.querySelector('[data-role="standby"]');
  return !!a && !!s && a.dataset.colour === "{}" && a.querySelector(".version").textContent === "{}"
    && s.dataset.colour === "{}" && s.querySelector(".version").textContent === "{}";
}})()"#,
        active.0, active.1, standby.0, standby.1
    )
}

/// Fails on uncaught exceptions and on errors the page reported itself.
async fn assert_no_js_errors(b: &mut Browser) {
    let own = b.eval("window.__switchyardErrors").await;
    assert!(
        b.exceptions.is_empty() && own == Value::Array(Vec::new()),
        "JavaScript errors: {:?} / page: {own}",
        b.exceptions
    );
}

async fn page_text(b: &mut Browser) -> String {
    b.eval("document.body.innerText").await.to_string()
}

async fn key(b: &mut Browser, key: &str, code: u32) {
    for kind in ["keyDown", "keyUp"] {
        let mut ev = serde_json::json!({
            "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
        });
        if key == "Enter" && kind == "keyDown" {
            ev["text"] = "\r".into();
        }
        b.call("Input.dispatchKeyEvent", ev).await;
    }
}

/// The lowest WCAG contrast ratio among visible text on the page, with
/// the element it belongs to.
const MIN_CONTRAST: &str = r#"(() => {
  const rgb = (s) => { const m = s.match(/[\d.]+/g) || []; return m.map(Number); };
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (e) => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c; } return [255, 255, 255]; };
  let worst = [99, ""];
  for (const e of document.querySelectorAll("body *")) {
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !e.getClientRects().length) continue;
    const s = getComputedStyle(e);
    if (s.visibility === "hidden" || e.closest("[hidden]") || e.closest(".sr-only")) continue;
    const a = lum(rgb(s.color)), b = lum(bg(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst[0]) worst = [ratio, e.tagName + "." + e.className + ": " + e.textContent.slice(0, 40)];
  }
  return worst;
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_follows_a_switch_in_a_real_browser() {
    let tmp = TempDir::new("status-page");
    let data = tmp.0.join("data");
    let mut dev = spawn_dev(&data, &tmp.0.join("dev.log"), &["--ephemeral"]);
    let doc = wait_dev_json(&mut dev, &data, Duration::from_secs(90)).await;
    let (proxy, admin) = (addr(&doc, "proxy"), addr(&doc, "admin"));

    // Light load on both colours, so the page has rates to show.
    let load = tokio::spawn(async move {
        let http = client();
        let mut n = 0u64;
        loop {
            let path = if n.is_multiple_of(4) {
                "/standby/hello"
            } else {
                "/hello"
            };
            let _ = http.get(format!("http://{proxy}{path}")).send().await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut b = Browser::start(1200, 900).await;
    b.navigate(&format!("http://{admin}/")).await;
    if b.wait_for(
        &shows("hello-service", ("blue", "v1"), ("green", "v2")),
        Duration::from_secs(10),
    )
    .await
    .is_none()
    {
        panic!(
            "the page never showed blue active v1 / green standby v2:\n{}\n{:?}\n{}",
            page_text(&mut b).await,
            b.exceptions,
            dev.log()
        );
    }
    assert_no_js_errors(&mut b).await;
    let passing = b
        .eval(r#"[...document.querySelectorAll('[data-colour]')].map((c) => c.querySelectorAll("td.health-passing").length)"#)
        .await;
    assert_eq!(
        passing,
        serde_json::json!([2, 2]),
        "passing instances per colour"
    );
    let text = page_text(&mut b).await;
    assert!(text.contains("decided by"), "{text}");
    // Rates need two readings; a number (not a dash) appears for both colours.
    let rated = b
        .wait_for(
            r#"[...document.querySelectorAll(".rps")].every((e) => /\d/.test(e.textContent) && Number(e.textContent) > 0)
               && [...document.querySelectorAll(".p99")].every((e) => /ms|s$/.test(e.textContent))"#,
            Duration::from_secs(5),
        )
        .await;
    assert!(
        rated.is_some(),
        "no live rates: {}",
        page_text(&mut b).await
    );

    // Keyboard only: Tab reaches the switch button, Enter opens the
    // confirmation (focus on Cancel), Escape closes it.
    let mut reached = false;
    for _ in 0..15 {
        key(&mut b, "Tab", 9).await;
        if b.eval(r#"document.activeElement.matches("button.switch")"#)
            .await
            == true
        {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab never reached the switch button");
    key(&mut b, "Enter", 13).await;
    assert!(
        b.wait_for(r#"document.getElementById("confirm").open && document.activeElement.id === "confirm-cancel""#, Duration::from_secs(2))
            .await
            .is_some(),
        "Enter did not open the confirmation with focus on Cancel"
    );
    let confirm = b
        .eval(r#"document.getElementById("confirm").innerText"#)
        .await;
    let confirm = confirm.as_str().unwrap_or_default();
    assert!(
        confirm.contains("blue") && confirm.contains("green"),
        "{confirm}"
    );
    key(&mut b, "Escape", 27).await;
    assert!(
        b.wait_for(
            r#"!document.getElementById("confirm").open"#,
            Duration::from_secs(2)
        )
        .await
        .is_some(),
        "Escape did not close the confirmation"
    );

    let (worst, what) = {
        let v = b.eval(MIN_CONTRAST).await;
        (v[0].as_f64().unwrap(), v[1].to_string())
    };
    assert!(worst >= 4.5, "text contrast {worst:.2} < 4.5: {what}");
    println!("lowest text contrast (light): {worst:.2} ({what})");

    // The same in dark mode.
    b.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    let v = b.eval(MIN_CONTRAST).await;
    let dark = v[0].as_f64().unwrap();
    assert!(
        dark >= 4.5,
        "dark mode text contrast {dark:.2} < 4.5: {}",
        v[1]
    );
    println!("lowest text contrast (dark): {dark:.2} ({})", v[1]);
    assert_ne!(
        b.eval("getComputedStyle(document.body).backgroundColor")
            .await,
        "rgb(255, 255, 255)",
        "dark mode not applied"
    );
    b.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({ "features": [{ "name": "prefers-color-scheme", "value": "light" }] }),
    )
    .await;

    let dir = screenshot_dir();
    let before = dir.join("status-page-blue.png");
    b.screenshot(&before).await;

    // A reload would lose this marker.
    b.eval("window.__noReload = 42").await;
    let state = tmp.0.join("state");
    let switch = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["switch", "--state-dir"])
        .arg(&state)
        .env(
            "CONSUL_HTTP_ADDR",
            format!("http://{}", addr(&doc, "consul")),
        )
        .env("NOMAD_ADDR", format!("http://{}", addr(&doc, "nomad")))
        .env("SWITCHYARD_PROXIES", format!("http://{admin}"))
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), switch)
        .await
        .expect("switchyard switch hung")
        .unwrap();
    assert!(
        out.status.success(),
        "switchyard switch failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let switched = Instant::now();
    let took = b
        .wait_for(
            &shows("hello-service", ("green", "v2"), ("blue", "v1")),
            Duration::from_secs(1),
        )
        .await;
    let Some(took) = took else {
        panic!(
            "the page did not show green active within 1 s of the switch:\n{}",
            page_text(&mut b).await
        );
    };
    println!("status page showed the switch {took:?} after `switchyard switch` returned");
    assert!(switched.elapsed() < Duration::from_secs(2));
    assert_eq!(b.eval("window.__noReload").await, 42, "the page reloaded");
    assert!(
        b.wait_for(
            r#"!!document.querySelector('[data-kind="switch"]')"#,
            Duration::from_secs(1)
        )
        .await
        .is_some(),
        "the switch is missing from the history: {}",
        page_text(&mut b).await
    );
    assert_no_js_errors(&mut b).await;
    let after = dir.join("status-page-green.png");
    b.screenshot(&after).await;

    // A phone: nothing wider than the screen.
    b.viewport(390, 844, true).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let widths = b
        .eval("[document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "horizontal overflow on a phone: {widths}"
    );
    let phone = dir.join("status-page-phone.png");
    b.screenshot(&phone).await;
    assert_no_js_errors(&mut b).await;
    for p in [before, after, phone] {
        println!("screenshot: {}", p.display());
    }
    load.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_switches_with_an_admin_token() {
    const TOKEN: &str = "status-page-token-4d1e";
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = ProxyHandle::start(&static_config(
        &[blue.addr],
        &[green.addr],
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
    ))
    .await;
    let mut b = Browser::start(1000, 800).await;
    b.navigate(&p.admin_url("/")).await;
    assert!(
        b.wait_for(
            &shows("svc", ("blue", "v1"), ("green", "v2")),
            Duration::from_secs(5)
        )
        .await
        .is_some(),
        "{}",
        page_text(&mut b).await
    );
    // The page asks for the token; until then it offers no switch.
    assert_eq!(
        b.eval(r#"[!document.getElementById("token-form").hidden, document.querySelector("button.switch").disabled]"#)
            .await,
        serde_json::json!([true, true])
    );

    let use_token = |t: &str| {
        format!(
            r#"(() => {{ document.getElementById("token").value = "{t}";
                document.getElementById("token-form").requestSubmit(); return true; }})()"#
        )
    };
    let switch_and_confirm = r#"(async () => {
        const b = document.querySelector("button.switch");
        if (b.disabled) return "disabled";
        b.click();
        const text = document.getElementById("confirm-text").textContent;
        document.getElementById("confirm-switch").click();
        return text;
    })()"#;

    b.eval(&use_token("wrong-token")).await;
    let confirm = b.eval(switch_and_confirm).await;
    let confirm = confirm.as_str().unwrap_or_default().to_owned();
    assert!(
        confirm.contains("blue (v1)") && confirm.contains("green (v2)"),
        "the confirmation must name both colours: {confirm}"
    );
    assert!(
        b.wait_for(
            r#"document.getElementById("result").textContent.includes("403")"#,
            Duration::from_secs(5)
        )
        .await
        .is_some(),
        "a wrong token must show the refusal: {}",
        page_text(&mut b).await
    );
    let st = status(&p).await;
    assert_eq!(st["services"][0]["active"]["colour"], "blue");

    b.eval(&use_token(TOKEN)).await;
    b.eval(switch_and_confirm).await;
    assert!(
        b.wait_for(
            &shows("svc", ("green", "v2"), ("blue", "v1")),
            Duration::from_secs(2)
        )
        .await
        .is_some(),
        "{}",
        page_text(&mut b).await
    );
    let result = b
        .eval(r#"document.getElementById("result").textContent"#)
        .await;
    assert!(
        result.as_str().unwrap_or_default().contains("green active"),
        "{result}"
    );
    let st = status(&p).await;
    assert_eq!(st["services"][0]["active"]["colour"], "green");
    assert_eq!(st["admin"]["token_required"], true);
    assert_no_js_errors(&mut b).await;
}

#[tokio::test]
async fn status_page_is_self_contained_and_refuses_foreign_origins() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = ProxyHandle::start(&static_config(&[blue.addr], &[green.addr], "")).await;
    let http = client();
    for _ in 0..3 {
        http.get(p.url("/")).send().await.unwrap();
    }

    let page = http.get(p.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("fetch(\"/status\""), "the page reads /status");
    for external in ["://", " src=", "@import", "url("] {
        assert!(!html.contains(external), "the page refers to {external:?}");
    }
    let wrong = http.post(p.admin_url("/")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);

    let st = status(&p).await;
    assert_eq!(st["admin"]["token_required"], false);
    assert_eq!(st["admin"]["loopback"], true);
    let svc = &st["services"][0];
    assert_eq!(svc["traffic"]["blue"]["requests"], 3, "{svc:#}");
    assert_eq!(svc["traffic"]["blue"]["errors"], 0);
    assert_eq!(svc["history"][0]["kind"], "serving", "{svc:#}");
    assert_eq!(svc["active"]["draining_connections"], 0);

    // A page elsewhere cannot make a local browser switch.
    let foreign = http
        .post(p.admin_url("/switch?service=svc"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let body = foreign.text().await.unwrap();
    assert!(body.contains("cross-origin"), "{body}");
    let same = http
        .post(p.admin_url("/switch?service=svc"))
        .header("Origin", format!("http://{}", p.admin.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200, "{}", same.text().await.unwrap());
}
