//! A proxy registers itself in the dev stack's Consul (service, admin address, `/readyz`
//! check) and deregisters on shutdown; the controller's lookup finds it.

use std::time::Duration;

use switchyard_hashi::consul::CheckStatus;
use switchyard_testkit::DevConsulServer;

use crate::discovery::eventually;
use crate::support::*;

#[tokio::test]
async fn a_proxy_registers_in_consul_and_leaves_on_shutdown() {
    let consul = DevConsulServer::start().await;
    let consul_addr = consul.addr;
    let client = &consul.client;

    let mut proxy = ProxyHandle::start(&format!(
        r#"
[log]
access_log = false
[consul]
address = "http://{consul_addr}"
wait = "2s"
[registration]
service = "edge-proxies"
check_interval = "1s"
check_timeout = "1s"
[shutdown]
deregister_delay = "3s"
[[services]]
name = "hello-service"
consul = {{}}
"#
    ))
    .await;
    let admin = proxy.admin.unwrap();

    // Registered with its admin address, and Consul's check on /readyz passes.
    let found = eventually(Duration::from_secs(10), async || {
        client
            .service_instances("edge-proxies")
            .await
            .is_ok_and(|list| list.len() == 1 && list[0].status == CheckStatus::Passing)
    })
    .await;
    let list = client.service_instances("edge-proxies").await.unwrap();
    assert!(found, "the proxy never became a passing instance: {list:?}");
    let me = &list[0];
    assert_eq!(me.address, admin.to_string());
    assert_eq!(me.meta["admin_url"], format!("http://{admin}"));
    assert_eq!(me.id, format!("edge-proxies-127.0.0.1-{}", admin.port()));
    let services = client.agent_services().await.unwrap();
    assert_eq!(services[&me.id].service, "edge-proxies");

    // The controller watches it without being told: the built-in default proxy address gives way
    // to the registered one, and an explicit --proxy is kept next to it.
    let mut settings = switchyard_controller::Settings::from_lookup("hello-service", |name| {
        (name == "SWITCHYARD_PROXY_SERVICE").then(|| "edge-proxies".to_owned())
    });
    settings.consul.address = format!("http://{consul_addr}");
    settings.nomad.address = format!("http://{}", dead_addr().await);
    let observed = |settings: switchyard_controller::Settings| async move {
        let controller = switchyard_controller::Controller::new(settings).unwrap();
        let proxies = controller.observe().await.proxies;
        proxies.into_iter().map(|p| p.url).collect::<Vec<_>>()
    };
    assert_eq!(
        observed(settings.clone()).await,
        vec![format!("http://{admin}")]
    );
    let extra = format!("http://{}", dead_addr().await);
    settings.proxies = vec![extra.clone(), format!("http://{admin}")];
    assert_eq!(
        observed(settings).await,
        vec![extra, format!("http://{admin}")]
    );

    // Shutdown takes it back out first, while the proxy still accepts (the deregister delay).
    let stopping = proxy.begin_shutdown();
    let left = eventually(Duration::from_secs(2), async || {
        client
            .service_instances("edge-proxies")
            .await
            .is_ok_and(|list| list.is_empty())
    })
    .await;
    let list = client.service_instances("edge-proxies").await.unwrap();
    assert!(left, "still registered after shutdown began: {list:?}");
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_ok(),
        "stopped accepting before the deregister delay was over"
    );
    stopping.await.unwrap();
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());

    consul.stop().await;
}

#[tokio::test]
async fn registration_can_be_turned_off() {
    let consul = DevConsulServer::start().await;
    let consul_addr = consul.addr;
    let proxy = ProxyHandle::start(&format!(
        "[consul]\naddress = \"http://{consul_addr}\"\n[registration]\nenabled = false\n[[services]]\nname = \"hello-service\"\nconsul = {{}}\n"
    ))
    .await;
    let client = &consul.client;
    // The proxy is up and has read Consul; it registered nothing.
    let ready = eventually(Duration::from_secs(5), async || {
        client_get_status(&proxy).await == Some(200)
    })
    .await;
    assert!(ready);
    assert!(client.agent_services().await.unwrap().is_empty());
    drop(proxy);
    consul.stop().await;
}

async fn client_get_status(proxy: &ProxyHandle) -> Option<u16> {
    client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}
