//! The dev stack's Consul on an ephemeral port, and instances registered in it.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_devstack::consul::{ConsulConfig as DevConsulConfig, DevConsul};
use switchyard_hashi::consul::{
    AgentServiceCheck, AgentServiceRegistration, CheckStatus, ConsulClient, ConsulConfig,
};

use crate::serve::Served;

/// Serves a dev Consul with `cfg` on `127.0.0.1:0`; the handle shares its state.
pub async fn serve_dev_consul(cfg: DevConsulConfig) -> (DevConsul, Served<std::io::Result<()>>) {
    let consul = DevConsul::new(cfg).unwrap();
    let server = consul.clone();
    let served = Served::start(move |l, stop| server.serve(l, stop)).await;
    (consul, served)
}

/// A dev Consul (default configuration) serving on an ephemeral port until dropped, with a
/// client of it. Dropping it cuts the server off at once.
pub struct DevConsulServer {
    pub addr: SocketAddr,
    pub client: ConsulClient,
    served: Served<std::io::Result<()>>,
}

impl DevConsulServer {
    pub async fn start() -> Self {
        let (_, served) = serve_dev_consul(DevConsulConfig::default()).await;
        let served = served.abort_on_drop();
        let client = ConsulClient::new(ConsulConfig {
            address: served.url(),
            ..ConsulConfig::default()
        })
        .unwrap();
        Self {
            addr: served.addr,
            client,
            served,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        let _ = self.served.stop(Duration::from_secs(30)).await;
    }
}

/// The tags an instance of a blue/green service carries: `[colour, role, version=<v>]`.
pub fn instance_tags(colour: &str, role: &str, version: &str) -> Vec<String> {
    vec![
        colour.to_owned(),
        role.to_owned(),
        format!("version={version}"),
    ]
}

/// Registers `addr` as an instance of `service` tagged [`instance_tags`] and reports its
/// TTL check passing, so it shows up in `?passing` answers straight away.
pub async fn register(
    client: &ConsulClient,
    service: &str,
    id: &str,
    addr: SocketAddr,
    colour: &str,
    role: &str,
    version: &str,
) {
    register_with_status(
        client,
        service,
        id,
        addr,
        [colour, role, version],
        CheckStatus::Passing,
    )
    .await;
}

/// As [`register`], with the TTL check (`<id>:ttl`) reported in `status`.
pub async fn register_with_status(
    client: &ConsulClient,
    service: &str,
    id: &str,
    addr: SocketAddr,
    [colour, role, version]: [&str; 3],
    status: CheckStatus,
) {
    let check_id = format!("{id}:ttl");
    let reg = AgentServiceRegistration {
        id: id.to_owned(),
        name: service.to_owned(),
        tags: instance_tags(colour, role, version),
        address: addr.ip().to_string(),
        port: addr.port(),
        check: Some(AgentServiceCheck {
            check_id: check_id.clone(),
            name: format!("{id} alive"),
            ttl: "10m".to_owned(),
            status: Some(status),
            ..AgentServiceCheck::default()
        }),
        ..AgentServiceRegistration::default()
    };
    client.agent_service_register(&reg).await.unwrap();
    client
        .agent_check_ttl(&check_id, status, Some("test"))
        .await
        .unwrap();
}
