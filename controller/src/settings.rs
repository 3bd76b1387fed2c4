//! [`Settings`]: where Consul, Nomad and the proxies are, which service and job to act on, and
//! how long to wait.
//!
//! Addresses and tokens come from the same variables the HashiCorp CLIs read
//! (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_CACERT`, ..., `NOMAD_ADDR`, `NOMAD_TOKEN`,
//! `NOMAD_CACERT`, ...; see [`ConsulConfig::from_lookup`] and [`NomadConfig::from_lookup`]), so
//! an operator's shell that already works with `consul` and `nomad` works with `switchyard` too.

use std::path::PathBuf;
use std::time::Duration;

use switchyard_hashi::consul::ConsulConfig;
use switchyard_hashi::nomad::NomadConfig;

use crate::ControllerError;

/// The proxy admin address used when neither `--proxy` nor `SWITCHYARD_PROXIES` is given.
pub const DEFAULT_PROXY: &str = "http://127.0.0.1:8081";
/// The service acted on when none is given.
pub const DEFAULT_SERVICE: &str = "hello-service";

/// The lock session's TTL when `SWITCHYARD_LOCK_TTL` is not set.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);
/// The lock session's lock delay when `SWITCHYARD_LOCK_DELAY` is not set.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(5);
const LOCK_TTL_MIN: Duration = Duration::from_secs(10);
const LOCK_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
const LOCK_DELAY_MAX: Duration = Duration::from_secs(60);

/// Everything a command needs to know besides its own arguments.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Consul agent.
    pub consul: ConsulConfig,
    /// Nomad agent.
    pub nomad: NomadConfig,
    /// Proxies' admin base URLs (`http://host:port`), besides those registered in Consul.
    pub proxies: Vec<String>,
    /// The Consul service the proxies register under (`SWITCHYARD_PROXY_SERVICE`, default
    /// `switchyard-proxy`); every registered proxy is watched too.
    pub proxy_service: String,
    /// The Consul service name (also the proxies' service name).
    pub service: String,
    /// The Nomad job that runs both colours of the service.
    pub job: String,
    /// The two colour tags (as the proxies' `services.colours`).
    pub colours: [String; 2],
    /// The KV route key the proxies watch (as their `services.consul.route_key`).
    pub route_key: String,
    /// Backups and switch records live here (`<state_dir>/backups`, `<state_dir>/state`).
    pub state_dir: PathBuf,
    /// How long a deploy may take to become healthy (and a revert to settle).
    pub deadline: Duration,
    /// How long a deploy waits for the old active colour's requests to drain.
    pub drain_deadline: Duration,
    /// How long a switch waits for every proxy to serve the new generation.
    pub proxy_deadline: Duration,
    /// Interval of the polling loops.
    pub poll_interval: Duration,
    /// Timeout of each call to a proxy or an instance.
    pub http_timeout: Duration,
    /// Written into the route key's `updated_by`.
    pub operator: String,
    /// TTL of the lock's Consul session (`SWITCHYARD_LOCK_TTL`, default 15s; Consul accepts
    /// 10s to 24h): how long the lock of a holder that died outlives it (up to twice this, as
    /// Consul's servers allow), plus the lock delay.
    pub lock_ttl: Duration,
    /// Lock delay of the lock's session (`SWITCHYARD_LOCK_DELAY`, default 5s, at most 60s):
    /// after the session is invalidated (not after a release) nobody may take the lock for this
    /// long.
    pub lock_delay: Duration,
}

impl Settings {
    /// Settings for `service` (job of the same name) with addresses and tokens from the
    /// environment and default deadlines.
    pub fn from_env(service: &str) -> Self {
        Self::from_lookup(service, |k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) with variables taken from `lookup`.
    pub fn from_lookup(service: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let proxies = lookup("SWITCHYARD_PROXIES")
            .map(|v| parse_proxy_list(&v))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_PROXY.to_owned()]);
        let user = lookup("USER").unwrap_or_else(|| "unknown".to_owned());
        Settings {
            consul: ConsulConfig::from_lookup(&lookup),
            nomad: NomadConfig::from_lookup(&lookup),
            proxies,
            proxy_service: lookup("SWITCHYARD_PROXY_SERVICE")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| switchyard_model::DEFAULT_PROXY_SERVICE.to_owned()),
            service: service.to_owned(),
            job: service.to_owned(),
            colours: switchyard_model::DEFAULT_COLOURS.map(str::to_owned),
            route_key: switchyard_model::route_key(service),
            state_dir: PathBuf::from(".switchyard"),
            deadline: Duration::from_secs(300),
            drain_deadline: Duration::from_secs(30),
            proxy_deadline: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            http_timeout: Duration::from_secs(2),
            operator: format!("switchyard controller ({user})"),
            lock_ttl: env_duration(&lookup, "SWITCHYARD_LOCK_TTL", DEFAULT_LOCK_TTL),
            lock_delay: env_duration(&lookup, "SWITCHYARD_LOCK_DELAY", DEFAULT_LOCK_DELAY),
        }
    }

    /// Checks names that end up in file paths and URLs: service and job names must be
    /// non-empty and made of `A-Z a-z 0-9 . _ -`, and the two colours must differ.
    pub fn validate(&self) -> Result<(), ControllerError> {
        for (what, name) in [("service", &self.service), ("job", &self.job)] {
            if !is_safe_name(name) {
                return Err(ControllerError::BadInput(format!(
                    "invalid {what} name {name:?}: use 1-128 characters from A-Z a-z 0-9 . _ -"
                )));
            }
        }
        if self.colours[0].eq_ignore_ascii_case(&self.colours[1]) {
            return Err(ControllerError::BadInput(
                "the two colours must differ".to_owned(),
            ));
        }
        if self.route_key.is_empty() || self.route_key.starts_with('/') {
            return Err(ControllerError::BadInput(format!(
                "invalid route key {:?}: must be a non-empty KV key without a leading '/'",
                self.route_key
            )));
        }
        if !(LOCK_TTL_MIN..=LOCK_TTL_MAX).contains(&self.lock_ttl) {
            return Err(ControllerError::BadInput(
                "SWITCHYARD_LOCK_TTL must be a duration between 10s and 24h (Consul's session TTL bounds)"
                    .to_owned(),
            ));
        }
        if self.lock_delay > LOCK_DELAY_MAX {
            return Err(ControllerError::BadInput(
                "SWITCHYARD_LOCK_DELAY must be a duration of at most 60s (Consul's maximum lock delay)"
                    .to_owned(),
            ));
        }
        for p in &self.proxies {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                return Err(ControllerError::BadInput(format!(
                    "invalid proxy admin URL {p:?}: expected http://host:port"
                )));
            }
        }
        Ok(())
    }
}

/// Splits `SWITCHYARD_PROXIES` (comma-separated) and normalises each entry to a base URL.
pub fn parse_proxy_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(normalise_url)
        .collect()
}

/// `host:port` → `http://host:port`; a trailing `/` is dropped.
pub fn normalise_url(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    }
}

/// A duration variable; an unreadable value becomes [`Duration::MAX`], which
/// [`Settings::validate`] refuses with the variable's name.
fn env_duration(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: Duration,
) -> Duration {
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => default,
        Some(v) => humantime::parse_duration(v.trim()).unwrap_or(Duration::MAX),
    }
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proxies_from_env_list_and_default() {
        let s = Settings::from_lookup("web", |k| {
            (k == "SWITCHYARD_PROXIES").then(|| " 10.0.0.1:8081, http://p2:9/ ,".to_owned())
        });
        assert_eq!(s.proxies, vec!["http://10.0.0.1:8081", "http://p2:9"]);
        assert_eq!(s.job, "web");
        let s = Settings::from_lookup("web", |_| None);
        assert_eq!(s.proxies, vec![DEFAULT_PROXY]);
        assert_eq!(s.consul.address, "http://127.0.0.1:8500");
        assert_eq!(s.nomad.address, "http://127.0.0.1:4646");
    }

    #[test]
    fn names_that_would_escape_the_state_dir_are_rejected() {
        let mut s = Settings::from_lookup("web", |_| None);
        assert!(s.validate().is_ok());
        s.service = "../etc".into();
        assert_eq!(s.validate().map_err(|e| e.exit_code()), Err(2));
        s.service = "web".into();
        s.job = String::new();
        assert!(s.validate().is_err());
        s.job = "web".into();
        s.proxies = vec!["ftp://x".into()];
        assert!(s.validate().is_err());
    }

    #[test]
    fn lock_timing_from_env_within_consuls_bounds() {
        let s = Settings::from_lookup("web", |_| None);
        assert_eq!(
            (s.lock_ttl, s.lock_delay),
            (DEFAULT_LOCK_TTL, DEFAULT_LOCK_DELAY)
        );
        let with = |ttl: &'static str, delay: &'static str| {
            Settings::from_lookup("web", move |k| match k {
                "SWITCHYARD_LOCK_TTL" => Some(ttl.to_owned()),
                "SWITCHYARD_LOCK_DELAY" => Some(delay.to_owned()),
                _ => None,
            })
        };
        let s = with("10s", "0s");
        assert_eq!(s.lock_ttl, Duration::from_secs(10));
        assert_eq!(s.lock_delay, Duration::ZERO);
        assert!(s.validate().is_ok());
        for (ttl, delay) in [
            ("9s", "1s"),
            ("25h", "1s"),
            ("soon", "1s"),
            ("15s", "61s"),
            ("15s", "x"),
        ] {
            let e = with(ttl, delay).validate().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{ttl} {delay}");
            assert!(e.to_string().contains("SWITCHYARD_LOCK_"), "{e}");
        }
    }
}
