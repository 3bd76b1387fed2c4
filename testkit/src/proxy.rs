//! A switchyard proxy in process, its listeners on ephemeral ports.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use switchyard_proxy::config::{Config, Env};
use switchyard_proxy::{Listeners, Proxy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running proxy; shut down (and its task aborted) on drop.
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub router: Arc<switchyard_proxy::routing::Router>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl ProxyHandle {
    /// Starts a proxy from TOML text (listener addresses in it are ignored:
    /// listeners are bound to 127.0.0.1:0).
    pub async fn start(toml: &str) -> Self {
        Self::start_env(toml, &Env::default()).await
    }

    pub async fn start_env(toml: &str, env: &Env) -> Self {
        let config = Config::parse(toml, Path::new("test.toml"), env).unwrap();
        let traffic = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = match &config.tls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let addr = traffic.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let proxy = Proxy::new(config).unwrap();
        let router = Arc::clone(proxy.router());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            proxy
                .run(
                    Listeners {
                        traffic,
                        tls,
                        admin: Some(admin),
                    },
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        Self {
            addr,
            admin: Some(admin_addr),
            router,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.unwrap(), path)
    }

    /// Signals shutdown and returns the task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A proxy configuration discovering `hello-service` from the Consul at `consul` with 2 s
/// blocking queries; `extra` goes at the end of the `[consul]` table (more keys, or more
/// tables).
pub fn consul_config(consul: &str, extra: &str) -> String {
    consul_config_waiting(consul, "2s", extra)
}

/// As [`consul_config`], with blocking queries of `wait`.
pub fn consul_config_waiting(consul: &str, wait: &str, extra: &str) -> String {
    format!(
        r#"
[log]
access_log = false
[consul]
address = "{consul}"
wait = "{wait}"
min_interval = "5ms"
{extra}
[[services]]
name = "hello-service"
consul = {{}}
"#
    )
}
