//! The proxy's own entry in Consul: registered once the admin listener is up, with an HTTP check
//! on `/readyz`, and deregistered at shutdown, so the controller finds every proxy without a
//! hand-kept list (see `docs/config.md`, `[registration]`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use switchyard_hashi::blocking::Backoff;
use switchyard_hashi::consul::{AgentServiceCheck, AgentServiceRegistration, ConsulClient};
use switchyard_hashi::go_duration;

use crate::config::RegistrationConfig;

/// Service meta key holding the proxy's admin base URL (`http://ip:port`) when it is known.
pub const META_ADMIN_URL: &str = "admin_url";
/// How long shutdown waits for Consul to take the registration back.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Service meta key holding the proxy's version.
pub const META_VERSION: &str = "switchyard_version";

/// One proxy's registration.
#[derive(Clone, Debug)]
pub struct Registration {
    client: ConsulClient,
    body: AgentServiceRegistration,
}

impl Registration {
    /// The registration of a proxy whose admin listener is bound to `admin`.
    ///
    /// The registered address is `cfg.address`, else `admin`; when that listens on every
    /// interface (`0.0.0.0`, `::`) the service address is left empty, which Consul reads as
    /// "the node's address", and the agent checks `127.0.0.1`.
    pub fn new(cfg: &RegistrationConfig, client: ConsulClient, admin: SocketAddr) -> Self {
        let advertised = cfg.address.unwrap_or(admin);
        let concrete = !advertised.ip().is_unspecified();
        let check_host = if concrete {
            advertised.ip()
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let check_addr = SocketAddr::new(check_host, advertised.port());
        let mut meta = BTreeMap::new();
        meta.insert(
            META_VERSION.to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        if concrete {
            meta.insert(META_ADMIN_URL.to_owned(), format!("http://{advertised}"));
        }
        let id = format!(
            "{}-{}-{}",
            cfg.service,
            if concrete {
                advertised.ip().to_string().replace(':', "-")
            } else {
                "node".to_owned()
            },
            advertised.port()
        );
        let body = AgentServiceRegistration {
            id: id.clone(),
            name: cfg.service.clone(),
            port: advertised.port(),
            address: if concrete {
                advertised.ip().to_string()
            } else {
                String::new()
            },
            meta,
            check: Some(AgentServiceCheck {
                check_id: format!("{id}-readyz"),
                name: "switchyard proxy ready".to_owned(),
                http: format!("http://{check_addr}/readyz"),
                method: "GET".to_owned(),
                interval: go_duration(cfg.check_interval),
                timeout: go_duration(cfg.check_timeout),
                deregister_critical_service_after: go_duration(cfg.deregister_after),
                ..AgentServiceCheck::default()
            }),
            ..AgentServiceRegistration::default()
        };
        Registration { client, body }
    }

    /// The service ID in Consul.
    pub fn id(&self) -> &str {
        &self.body.id
    }

    /// Registers, retrying with a growing delay (at most 30 s) until the agent accepts it.
    pub async fn register_until_done(self) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            match self.client.agent_service_register(&self.body).await {
                Ok(()) => {
                    tracing::info!(
                        id = %self.body.id,
                        service = %self.body.name,
                        consul = %self.client.address(),
                        "registered in Consul"
                    );
                    return;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        id = %self.body.id,
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot register in Consul"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Removes the registration (and its check). Failures are logged: Consul drops the entry
    /// on its own once the check has been critical for `deregister_after`.
    /// Shutdown waits at most [`DEREGISTER_TIMEOUT`] for it.
    pub async fn deregister(&self) {
        let call = self.client.agent_service_deregister(&self.body.id);
        match tokio::time::timeout(DEREGISTER_TIMEOUT, call).await {
            Ok(Ok(())) => tracing::info!(id = %self.body.id, "deregistered from Consul"),
            Ok(Err(e)) => {
                tracing::warn!(id = %self.body.id, error = %e, "cannot deregister from Consul");
            }
            Err(_) => {
                tracing::warn!(id = %self.body.id, "Consul did not answer the deregistration")
            }
        }
    }
}
