//! A third-party client against the dev Nomad: `tests/compat/nomad_client.py`
//! drives python-nomad (parse, plan with diff, register, job, versions,
//! summary, evaluation allocations, allocations, deployments, stop) against a
//! real dev Nomad. CI installs python-nomad; a missing interpreter or module
//! fails the test with the reason.

#![allow(clippy::unwrap_used)]

mod nomad_support;

use std::process::Command;

use nomad_support::{FakeConsul, Nomad, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_nomad_talks_to_the_dev_nomad() {
    let consul = FakeConsul::start().await;
    let mut nomad = Nomad::start(&consul.url(), None).await;
    let addr = nomad.url.trim_start_matches("http://").to_owned();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let root = workspace_root();
    let script = root.join("tests/compat/nomad_client.py");
    let job = root.join("config/hello-service.nomad.hcl");
    let (host, port) = (host.to_owned(), port.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(host)
            .arg(port)
            .arg(job)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 must be installed (CI installs it with python-nomad)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("python-nomad compat: ok"),
        "python-nomad run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    nomad.shutdown().await;
}
