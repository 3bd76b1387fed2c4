//! `switchyard dev` as a child process for end-to-end tests: every address on port 0, its
//! log in a file, stopped (TERM, then KILL) on drop so no stack outlives a failed test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `switchyard dev` child; stopped (TERM, then KILL) if a test fails
/// half way, so no stack outlives the test run.
pub struct DevChild {
    pub child: Child,
    pub log: PathBuf,
}

impl DevChild {
    /// The child's log, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Sends `sig` (e.g. `TERM`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the child to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for DevChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            if self.wait_exit(Duration::from_secs(20)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Removes `ESC [ ... m` colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An address from `dev.json`.
pub fn addr(doc: &Value, key: &str) -> SocketAddr {
    doc[key]
        .as_str()
        .unwrap_or_else(|| panic!("dev.json has no {key:?}: {doc}"))
        .parse()
        .unwrap()
}

/// Starts `<bin> dev` (the switchyard binary at `bin`) on `data` with every address on
/// port 0 (state persisted, unless `extra` says otherwise), its stderr in `log`.
pub fn spawn_dev(bin: &Path, data: &Path, log: &Path, extra: &[&str]) -> DevChild {
    let child = Command::new(bin)
        .arg("dev")
        .arg("--data-dir")
        .arg(data)
        .args([
            "--consul-addr",
            "127.0.0.1:0",
            "--nomad-addr",
            "127.0.0.1:0",
            "--proxy-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    DevChild {
        child,
        log: log.to_path_buf(),
    }
}

/// Waits (at most `within`) for `dev.json` in `data`, failing the test if
/// the dev stack exits first.
pub async fn wait_dev_json(dev: &mut DevChild, data: &Path, within: Duration) -> Value {
    let dev_json = data.join("dev.json");
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(&dev_json) {
            return serde_json::from_str(&text).unwrap();
        }
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!("switchyard dev exited early ({status}):\n{}", dev.log());
        }
        assert!(
            Instant::now() < deadline,
            "no dev.json after {within:?}:\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The variables the controller reads from the operator's shell (Consul's, Nomad's and
/// switchyard's own): a command run "with only `dev.env`" has every one of these removed
/// before `dev.env`'s are set, so nothing leaks in from the test's environment.
pub const OPERATOR_VARS: &[&str] = &[
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
    "CONSUL_HTTP_SSL_VERIFY",
    "NOMAD_ADDR",
    "NOMAD_TOKEN",
    "NOMAD_REGION",
    "NOMAD_NAMESPACE",
    "NOMAD_CACERT",
    "NOMAD_CAPATH",
    "NOMAD_CLIENT_CERT",
    "NOMAD_CLIENT_KEY",
    "NOMAD_TLS_SERVER_NAME",
    "NOMAD_SKIP_VERIFY",
    "SWITCHYARD_PROXIES",
    "SWITCHYARD_PROXY_SERVICE",
    "SWITCHYARD_CONFIG",
    "SWITCHYARD_ADMIN_TOKEN",
];

/// The `export K=V` lines of a `dev.env` (single quotes removed).
pub fn read_dev_env(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not K=V in {}: {l:?}", path.display()));
            (k.to_owned(), v.trim_matches('\'').to_owned())
        })
        .collect()
}

/// `switchyard dev --secure --ephemeral` on port 0 everywhere (Consul and Nomad over HTTPS
/// with a generated CA, ACLs enforced with the shipped policies), started and ready: its
/// `dev.json`, and the operator's environment from its `dev.env`.
pub struct SecureDev {
    /// The running stack (stopped on drop).
    pub dev: DevChild,
    /// Its `--data-dir`.
    pub data: PathBuf,
    /// `dev.json`.
    pub doc: Value,
    /// `dev.env`: exactly what an operator sources.
    pub env: BTreeMap<String, String>,
}

impl SecureDev {
    /// Starts `<bin> dev --secure --ephemeral <extra>` with its data directory and log in
    /// `dir`, and waits (at most 90 s) until it is ready.
    pub async fn start(bin: &Path, dir: &Path, extra: &[&str]) -> SecureDev {
        let data = dir.join("data");
        let mut args = vec!["--secure", "--ephemeral"];
        args.extend_from_slice(extra);
        let mut dev = spawn_dev(bin, &data, &dir.join("dev.log"), &args);
        let doc = wait_dev_json(&mut dev, &data, Duration::from_secs(90)).await;
        let env = read_dev_env(&data.join("dev.env"));
        SecureDev {
            dev,
            data,
            doc,
            env,
        }
    }

    /// An address from `dev.json` (`consul`, `nomad`, `proxy`, `admin`).
    pub fn addr(&self, key: &str) -> SocketAddr {
        addr(&self.doc, key)
    }

    /// The secret in `<data-dir>/acl/<name>.token` (e.g. `consul-management`,
    /// `consul-proxy`).
    pub fn token(&self, name: &str) -> String {
        let path = self.token_file(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// `<data-dir>/acl/<name>.token`, absolute.
    pub fn token_file(&self, name: &str) -> PathBuf {
        std::path::absolute(self.data.join("acl").join(format!("{name}.token"))).unwrap()
    }

    /// The CA certificate every HTTPS address chains to (`CONSUL_CACERT`).
    pub fn ca_cert(&self) -> PathBuf {
        PathBuf::from(&self.env["CONSUL_CACERT"])
    }

    /// A Consul client configured from `dev.env`, with `token` instead of the operator's when
    /// given (e.g. `consul-management`).
    pub fn consul(&self, token: Option<&str>) -> switchyard_hashi::consul::ConsulClient {
        let mut config =
            switchyard_hashi::consul::ConsulConfig::from_lookup(|k| self.env.get(k).cloned());
        if let Some(name) = token {
            config.token = Some(self.token(name));
        }
        switchyard_hashi::consul::ConsulClient::new(config).unwrap()
    }

    /// A Nomad client configured from `dev.env`, with `token` instead of the operator's when
    /// given (e.g. `nomad-management`).
    pub fn nomad(&self, token: Option<&str>) -> switchyard_hashi::nomad::NomadClient {
        let mut config =
            switchyard_hashi::nomad::NomadConfig::from_lookup(|k| self.env.get(k).cloned());
        if let Some(name) = token {
            config.token = Some(self.token(name));
        }
        switchyard_hashi::nomad::NomadClient::new(config).unwrap()
    }
}
