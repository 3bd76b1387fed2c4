//! `switchyard dev`: the whole blue/green system on one machine, in one
//! process, in the spirit of `nomad agent -dev`.
//!
//! Module map, in the order things happen:
//!
//! - [`DevArgs`]: the flags.
//! - [`run`]: binds every listener first (so a busy port fails before
//!   anything starts), builds the dev Consul, the proxy and the dev Nomad,
//!   starts them as a shutdown chain (`Stages`), brings the demo up, writes
//!   `<data-dir>/dev.json`, prints a tour, and on shutdown stops the chain in
//!   order.
//! - `bring_up`: submits the job through the Nomad HTTP API when it is not
//!   registered yet, then waits until its allocations are healthy, Consul
//!   lists the instances as passing and the proxy serves all of them.
//! - Helpers: where the job file, the proxy configuration and the task
//!   binaries come from; `dev.json`; a tiny HTTP probe.
//!
//! Why the components talk HTTP to each other even though they share a
//! process: the dev Nomad registers services through the Consul agent API,
//! the proxy discovers them with blocking queries, and the job goes in
//! through `/v1/jobs/parse` and `/v1/job/:id`, exactly as against a real
//! cluster. What a developer sees here is what production does.
//!
//! Why this shutdown order: the proxy stops first so clients are not sent to
//! instances that are going away; Nomad stops next because stopping an
//! allocation deregisters it from Consul, waits its `shutdown_delay`, then
//! signals the process; Consul stops last, once nobody needs it. Each stage
//! only starts stopping when the one before it has returned, so no task
//! process outlives the command.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use switchyard_devstack::connlimit::{ConnLimit, DEFAULT_MAX_CONNS_PER_CLIENT};
use switchyard_devstack::consul::{ConsulConfig, DevConsul};
use switchyard_devstack::nomad::{DevNomad, NomadConfig};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::blocking::next_index;
use switchyard_hashi::consul::{ConsulClient, HealthQuery};
use switchyard_hashi::nomad::{Job, NomadClient};
use switchyard_proxy::config::{Config, Env, PoolSource};
use switchyard_proxy::routing::Router;
use switchyard_proxy::{Listeners, Proxy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[path = "dev_secure.rs"]
mod secure;

/// The demo job, built in so `switchyard dev` works outside the workspace.
const EMBEDDED_JOB: &str = include_str!("../config/hello-service.nomad.hcl");
/// The dev proxy configuration, built in for the same reason.
const EMBEDDED_PROXY_CONFIG: &str = include_str!("../config/dev.toml");
/// The workspace this binary was built from: its `config/` files are
/// preferred over the built-in copies (they may have been edited), and its
/// `target/` directories hold `hello-service`.
const WORKSPACE_DIR: &str = env!("CARGO_MANIFEST_DIR");
const JOB_FILE: &str = "config/hello-service.nomad.hcl";
const PROXY_CONFIG_FILE: &str = "config/dev.toml";
/// Name of the file, in the data directory, that announces the addresses.
pub(crate) const DEV_JSON: &str = "dev.json";
/// The demo job's `raw_exec` command. The dev stack links it to the running
/// executable, and `switchyard` called by this name serves the demo.
pub(crate) const DEMO_COMMAND: &str = "hello-service";
/// Where, in the data directory, the demo command is linked.
const BIN_DIR: &str = "bin";
/// The access log, in the data directory.
const ACCESS_LOG: &str = "access.log";
/// Size at which the access log is rotated, and how many old files are kept.
const ACCESS_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
const ACCESS_LOG_KEEP: usize = 2;
/// The task record (live task process groups), in the data directory.
const TASK_RECORD: &str = "tasks.json";
/// The hidden subcommand tasks are started through (see `main.rs`).
pub(crate) const LAUNCH_TASK: &str = "launch-task";

/// Sets up logging for `dev`: state changes and warnings on the terminal
/// (`RUST_LOG` overrides the `info` default), and the proxy's per-request
/// lines (target `access`) in `<data-dir>/access.log` only, unless
/// `--no-access-log`. The guard flushes the access log when dropped.
pub(crate) fn init_logging(
    args: &DevArgs,
) -> anyhow::Result<Option<crate::access_log::FlushGuard>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let terminal_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive("access=off".parse()?);
    let terminal = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(terminal_filter);
    let (access, guard) = if args.no_access_log {
        (None, None)
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
        let (writer, guard) = crate::access_log::open(
            &args.data_dir.join(ACCESS_LOG),
            ACCESS_LOG_MAX_BYTES,
            ACCESS_LOG_KEEP,
        )?;
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("access", tracing::Level::INFO),
            );
        (Some(layer), Some(guard))
    };
    tracing_subscriber::registry()
        .with(terminal)
        .with(access)
        .init();
    Ok(guard)
}

/// `switchyard dev`: Consul, Nomad, the demo job and the proxy on this machine.
///
/// Task binaries (the job's `raw_exec` commands) are looked up in
/// `--hello-bin`, then in `<data-dir>/bin`, where `hello-service` (the demo
/// job's command) is a link to this very executable, which serves the demo
/// when called by that name; then next to the running `switchyard`
/// executable, in the workspace's `target/release` and `target/debug`, and
/// on `PATH`. So `cargo run -- dev` needs nothing built beforehand.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
The demo job's command, hello-service, is this executable (linked as <data-dir>/bin/hello-service); \
other task binaries are looked up in --hello-bin, next to this executable, in the workspace's \
target/release and target/debug, then on PATH.
Once ready, <data-dir>/dev.json holds the bound addresses \
({\"consul\",\"nomad\",\"proxy\",\"admin\"}) and a tour is printed on stderr. \
The terminal shows state changes and warnings; one line per request goes to \
<data-dir>/access.log (10 MiB, then rotated; 2 old files kept).
Tasks die with this process, even on kill -9; the next start stops any that an earlier run left \
and removes their Consul registrations before serving.
Ctrl-C stops the proxy, then Nomad and every task it started, then Consul.")]
pub(crate) struct DevArgs {
    /// Dev Consul HTTP API address (port 0 picks a free port) [default:
    /// 127.0.0.1:8500; with --secure, the HTTPS API on 127.0.0.1:8501 and
    /// no plain HTTP port].
    #[arg(long, value_name = "ADDR")]
    consul_addr: Option<SocketAddr>,
    /// TLS and ACLs as in production: Consul and Nomad over HTTPS with a CA
    /// generated into <data-dir>/tls/, ACLs enforced (default deny) with the
    /// policies of config/acl/, a token each for the proxy, the operator and
    /// Nomad; <data-dir>/dev.env exports the operator's variables.
    #[arg(long)]
    secure: bool,
    /// Dev Nomad HTTP API address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4646")]
    nomad_addr: SocketAddr,
    /// Proxy traffic listener (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    proxy_addr: SocketAddr,
    /// Proxy admin listener (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    admin_addr: SocketAddr,
    /// Where Consul (consul/) and Nomad (nomad/) keep state, and where
    /// dev.json announces the bound addresses.
    #[arg(long, value_name = "DIR", default_value = ".switchyard")]
    data_dir: PathBuf,
    /// Keep Consul and Nomad state in memory; allocation directories go to a
    /// temporary directory removed at exit.
    #[arg(long)]
    ephemeral: bool,
    /// Job file submitted at start when its job is not registered yet
    /// [default: config/hello-service.nomad.hcl of the workspace, else a
    /// built-in copy].
    #[arg(long, value_name = "FILE")]
    job: Option<PathBuf>,
    /// Proxy configuration; its listener, admin and Consul addresses are
    /// replaced by the ones above [default: config/dev.toml of the workspace,
    /// else a built-in copy].
    #[arg(long, value_name = "FILE")]
    proxy_config: Option<PathBuf>,
    /// Directory holding task binaries, searched first (a `hello-service`
    /// there replaces the built-in demo).
    #[arg(long, value_name = "DIR")]
    hello_bin: Option<PathBuf>,
    /// Do not write the access log (<data-dir>/access.log).
    #[arg(long)]
    no_access_log: bool,
    /// Do not run the proxy.
    #[arg(long)]
    no_proxy: bool,
    /// Run only Consul: no Nomad, no job, no proxy.
    #[arg(long)]
    no_nomad: bool,
    /// Give up (and stop everything) when not ready after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    ready_timeout: u64,
}

/// Runs the dev stack until `shutdown` resolves (or a component fails), then
/// stops the proxy, Nomad (and with it every task process) and Consul, in
/// that order.
pub(crate) async fn run(args: DevArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let run_nomad = !args.no_nomad;
    let run_proxy = run_nomad && !args.no_proxy;
    if args.no_nomad && !args.no_proxy {
        tracing::info!("--no-nomad runs Consul only; the proxy stays off");
    }
    let dev = Dev::prepare(args)?;
    // Everything the proxy needs is decided before any socket is bound, so
    // a bad configuration fails fast.
    let proxy_config = if run_proxy {
        Some(dev.proxy_config()?)
    } else {
        None
    };
    let bound = dev.bind(run_nomad, proxy_config).await?;
    let consul = dev.start_consul()?;
    let proxy = start_proxy(bound.proxy)?;
    let nomad = dev.start_nomad(bound.nomad, &bound.consul_url)?;
    let mut running = dev.spawn_chain(consul, bound.consul, proxy, nomad);
    let outcome = {
        let ctx = dev.up_context(
            &bound.consul_url,
            running.nomad.as_ref(),
            running.proxy.as_ref(),
        )?;
        dev.serve(
            &ctx,
            bound.consul_addr,
            &bound.consul_url,
            &mut running.failures,
            shutdown,
        )
        .await
    };
    dev.stop(running).await;
    if outcome.is_ok() {
        tracing::info!("switchyard dev: stopped");
    }
    outcome
}

/// What the phases of [`run`] share: the arguments, the files of the data
/// directory and, with `--secure`, the certificates and tokens.
struct Dev {
    args: DevArgs,
    /// `<data-dir>/dev.json`, written once ready.
    dev_json: PathBuf,
    /// `<data-dir>/dev.env`, written once ready with `--secure`.
    dev_env: PathBuf,
    secure: Option<secure::Secure>,
    /// The scheme of the Consul and Nomad APIs.
    scheme: &'static str,
}

/// The sockets, bound before anything runs.
struct Bound {
    consul: TcpListener,
    consul_addr: SocketAddr,
    consul_url: String,
    /// Nomad's listener and the address to connect to.
    nomad: Option<(TcpListener, SocketAddr)>,
    /// The proxy's configuration (with the bound addresses), its listeners,
    /// and the traffic and admin addresses to connect to.
    proxy: Option<(Config, Listeners, SocketAddr, SocketAddr)>,
}

/// The dev Nomad, ready to serve on its bound socket.
struct NomadRun {
    nomad: DevNomad,
    listener: TcpListener,
    /// The address to connect to.
    addr: SocketAddr,
    /// Where task binaries are looked up before `PATH`.
    extra_path: Vec<PathBuf>,
}

/// The started chain of components.
struct Running {
    /// Set to ask every stage to stop.
    stop: watch::Sender<bool>,
    /// Why a component ended on its own.
    failures: mpsc::UnboundedReceiver<String>,
    stages: Vec<(&'static str, JoinHandle<()>)>,
    proxy: Option<ProxyView>,
    nomad: Option<NomadView>,
}

impl Dev {
    /// Creates the data directory, removes the announcements an earlier run
    /// left, and with `--secure` generates the certificates and tokens.
    fn prepare(args: DevArgs) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
        let dev_json = args.data_dir.join(DEV_JSON);
        let dev_env = args.data_dir.join(secure::DEV_ENV);
        // A file left by an earlier run would announce dead addresses.
        remove_if_exists(&dev_json);
        remove_if_exists(&dev_env);
        let secure = if args.secure {
            Some(secure::prepare(&args.data_dir)?)
        } else {
            None
        };
        let scheme = if secure.is_some() { "https" } else { "http" };
        Ok(Self {
            args,
            dev_json,
            dev_env,
            secure,
            scheme,
        })
    }

    /// Reads and parses the proxy configuration.
    fn proxy_config(&self) -> anyhow::Result<Config> {
        let (text, origin) = read_source(self.args.proxy_config.as_deref(), PROXY_CONFIG_FILE)
            .unwrap_or_else(|| Ok((EMBEDDED_PROXY_CONFIG.to_owned(), "built-in dev.toml".into())))
            .context("reading the proxy configuration")?;
        let mut config = Config::parse(&text, Path::new(&origin), &Env::from_process())
            .context("invalid proxy configuration")?;
        if self.args.no_access_log {
            config.log.access_log = false;
        }
        tracing::info!(source = %origin, "proxy configuration");
        Ok(config)
    }

    /// Binds Consul's, Nomad's and the proxy's sockets, so a busy port is
    /// reported before anything runs, and points the proxy configuration at
    /// them.
    async fn bind(&self, run_nomad: bool, proxy_config: Option<Config>) -> anyhow::Result<Bound> {
        let args = &self.args;
        let default_consul = if args.secure {
            "127.0.0.1:8501"
        } else {
            "127.0.0.1:8500"
        };
        let consul_bind = match args.consul_addr {
            Some(a) => a,
            None => default_consul.parse()?,
        };
        let consul = bind(consul_bind, "Consul").await?;
        let consul_addr = connectable(consul.local_addr()?);
        let consul_url = format!("{}://{consul_addr}", self.scheme);
        let nomad = match run_nomad {
            true => {
                let l = bind(args.nomad_addr, "Nomad").await?;
                let addr = connectable(l.local_addr()?);
                Some((l, addr))
            }
            false => None,
        };
        let mut proxy = None;
        if let Some(mut config) = proxy_config {
            let traffic = bind(args.proxy_addr, "the proxy").await?;
            let admin = bind(args.admin_addr, "the proxy admin API").await?;
            let tls = match &config.tls {
                Some(t) => Some(bind(t.listen, "the proxy TLS listener").await?),
                None => None,
            };
            config.listen = traffic.local_addr()?;
            config.admin.listen = Some(admin.local_addr()?);
            config.consul.client.address = consul_url.clone();
            if let Some(s) = &self.secure {
                // The proxy's own least-privilege token, over TLS.
                config.consul.client.token = Some(s.tokens.consul_proxy.clone());
                config.consul.client.token_file = None;
                config.consul.client.tls.ca_cert = Some(secure::ca_path(s));
            }
            let proxy_addr = connectable(config.listen);
            let admin_addr = connectable(admin.local_addr()?);
            let listeners = Listeners {
                traffic,
                tls,
                admin: Some(admin),
            };
            proxy = Some((config, listeners, proxy_addr, admin_addr));
        }
        Ok(Bound {
            consul,
            consul_addr,
            consul_url,
            nomad,
            proxy,
        })
    }

    /// The dev Consul, with its state in `<data-dir>/consul` unless `--ephemeral`.
    fn start_consul(&self) -> anyhow::Result<DevConsul> {
        let consul_data = (!self.args.ephemeral).then(|| self.args.data_dir.join("consul"));
        DevConsul::new(ConsulConfig {
            data_dir: consul_data,
            acl: self.secure.as_ref().map(|s| Arc::clone(&s.consul_acl)),
            ..ConsulConfig::default()
        })
        .context("starting the dev Consul")
    }

    /// The dev Nomad, when its socket is bound, with the directories its tasks'
    /// binaries are looked up in.
    fn start_nomad(
        &self,
        bound: Option<(TcpListener, SocketAddr)>,
        consul_url: &str,
    ) -> anyhow::Result<Option<NomadRun>> {
        let Some((listener, addr)) = bound else {
            return Ok(None);
        };
        let args = &self.args;
        let secure = self.secure.as_ref();
        let exe = std::env::current_exe().context("locating the running executable")?;
        let demo_dir = link_demo(&args.data_dir, &exe)?;
        let extra_path = task_dirs(args.hello_bin.as_deref(), &demo_dir, &exe)?;
        tracing::debug!(dirs = ?extra_path, "task binaries are looked up here, then on PATH");
        let nomad = DevNomad::new(NomadConfig {
            data_dir: (!args.ephemeral).then(|| args.data_dir.join("nomad")),
            consul_addr: consul_url.to_owned(),
            extra_path: extra_path.clone(),
            task_launcher: Some(vec![exe.into_os_string(), LAUNCH_TASK.into()]),
            task_record: Some(args.data_dir.join(TASK_RECORD)),
            consul_token: secure.map(|s| s.tokens.consul_nomad_agent.clone()),
            consul_ca_cert: secure.map(secure::ca_path),
            acl: secure.map(|s| Arc::clone(&s.nomad_acl)),
            ..NomadConfig::default()
        })
        .context("starting the dev Nomad")?;
        Ok(Some(NomadRun {
            nomad,
            listener,
            addr,
            extra_path,
        }))
    }

    /// Starts the chain. Gates: the proxy stops on the shutdown signal, Nomad
    /// when the proxy has returned, Consul when Nomad has returned.
    fn spawn_chain(
        &self,
        consul: DevConsul,
        consul_listener: TcpListener,
        proxy_run: Option<(Proxy, Listeners, ProxyView)>,
        nomad_run: Option<NomadRun>,
    ) -> Running {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (fail_tx, fail_rx) = mpsc::unbounded_channel::<String>();
        let mut stages = Vec::new();
        let mut gate = stop_rx.clone();
        let mut view = None;
        if let Some((proxy, listeners, v)) = proxy_run {
            let g = gate.clone();
            let (done_tx, done_rx) = watch::channel(false);
            stages.push(spawn_stage(
                "proxy",
                async move {
                    proxy
                        .run(listeners, wait_for(g))
                        .await
                        .map_err(anyhow::Error::from)
                },
                done_tx,
                stop_rx.clone(),
                fail_tx.clone(),
            ));
            gate = done_rx;
            view = Some(v);
        }
        let mut nomad_info = None;
        if let Some(NomadRun {
            nomad,
            listener,
            addr,
            extra_path,
        }) = nomad_run
        {
            let g = gate.clone();
            let (done_tx, done_rx) = watch::channel(false);
            let alloc_root = nomad.alloc_dir();
            let tls = self.secure.as_ref().map(|s| s.pki.clone());
            stages.push(spawn_stage(
                "nomad",
                async move {
                    match tls {
                        Some(pki) => nomad.serve(pki.listener(listener, None), wait_for(g)).await,
                        None => nomad.serve(listener, wait_for(g)).await,
                    }
                    .map_err(anyhow::Error::from)
                },
                done_tx,
                stop_rx.clone(),
                fail_tx.clone(),
            ));
            gate = done_rx;
            nomad_info = Some(NomadView {
                addr,
                alloc_root,
                extra_path,
            });
        }
        {
            let g = gate.clone();
            let (done_tx, _) = watch::channel(false);
            let tls = self.secure.as_ref().map(|s| s.pki.clone());
            // Consul's `limits.http_max_conns_per_client`.
            let limit = ConnLimit::new(DEFAULT_MAX_CONNS_PER_CLIENT);
            stages.push(spawn_stage(
                "consul",
                async move {
                    match tls {
                        Some(pki) => {
                            consul
                                .serve(pki.listener(consul_listener, Some(limit)), wait_for(g))
                                .await
                        }
                        None => consul.serve(limit.tcp(consul_listener), wait_for(g)).await,
                    }
                    .map_err(anyhow::Error::from)
                },
                done_tx,
                stop_rx.clone(),
                fail_tx.clone(),
            ));
        }
        Running {
            stop: stop_tx,
            failures: fail_rx,
            stages,
            proxy: view,
            nomad: nomad_info,
        }
    }

    /// What the bring-up needs: clients with the cluster administrator's
    /// (bootstrap) tokens, like an operator setting up a cluster, and the
    /// deadline of `--ready-timeout`.
    fn up_context<'a>(
        &'a self,
        consul_url: &str,
        nomad: Option<&'a NomadView>,
        proxy: Option<&'a ProxyView>,
    ) -> anyhow::Result<UpContext<'a>> {
        let deadline = Instant::now() + Duration::from_secs(self.args.ready_timeout);
        let secure = self.secure.as_ref();
        let tls = switchyard_hashi::tls::TlsConfig {
            ca_cert: secure.map(secure::ca_path),
            ..Default::default()
        };
        Ok(UpContext {
            consul: ConsulClient::new(switchyard_hashi::consul::ConsulConfig {
                address: consul_url.to_owned(),
                token: secure.map(|s| s.tokens.consul_management.clone()),
                tls: tls.clone(),
                ..Default::default()
            })?,
            nomad_auth: (
                self.scheme,
                secure.map(|s| s.tokens.nomad_management.clone()),
                tls,
            ),
            nomad,
            proxy,
            job: self.args.job.as_deref(),
            deadline,
        })
    }

    /// Brings the stack up, announces it, and serves until `shutdown`
    /// resolves or a component fails.
    async fn serve(
        &self,
        ctx: &UpContext<'_>,
        consul_addr: SocketAddr,
        consul_url: &str,
        failures: &mut mpsc::UnboundedReceiver<String>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let up = tokio::select! {
            () = &mut shutdown => None,
            Some(msg) = failures.recv() => Some(Err(anyhow!(msg))),
            r = bring_up(ctx) => Some(r),
        };
        match up {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok(())) => {
                self.announce(ctx, consul_addr, consul_url)?;
                tokio::select! {
                    () = &mut shutdown => Ok(()),
                    Some(msg) = failures.recv() => Err(anyhow!(msg)),
                }
            }
        }
    }

    /// Writes `dev.env` (with `--secure`) and `dev.json`, then prints the tour.
    fn announce(
        &self,
        ctx: &UpContext<'_>,
        consul_addr: SocketAddr,
        consul_url: &str,
    ) -> anyhow::Result<()> {
        let view = ctx.proxy;
        let addrs = Announce {
            consul: consul_addr,
            nomad: ctx.nomad.map(|n| n.addr),
            proxy: view.map(|v| (v.addr, v.admin)),
        };
        let env_written = match &self.secure {
            Some(s) => {
                let nomad_url = addrs.nomad.map(|n| format!("{}://{n}", self.scheme));
                let admin_url = addrs.proxy.map(|(_, a)| format!("http://{a}"));
                secure::write_dev_env(
                    &self.dev_env,
                    &secure::dev_env(s, consul_url, nomad_url.as_deref(), admin_url.as_deref()),
                )
            }
            None => Ok(()),
        };
        env_written.and_then(|()| write_dev_json(&self.dev_json, &addrs))?;
        let access_log = (!self.args.no_access_log && view.is_some())
            .then(|| self.args.data_dir.join(ACCESS_LOG));
        let env = self
            .secure
            .as_ref()
            .map(|s| (self.dev_env.as_path(), secure::ca_path(s)));
        eprintln!(
            "{}",
            tour(
                &addrs,
                view,
                &self.dev_json,
                access_log.as_deref(),
                env.as_ref().map(|(p, ca)| (*p, ca.as_path())),
            )
        );
        Ok(())
    }

    /// Stops the chain in order, waits for every stage, and removes the
    /// announcements (and with `--ephemeral` the allocation directories).
    async fn stop(&self, running: Running) {
        tracing::info!("switchyard dev: stopping");
        running.stop.send_replace(true);
        for (name, handle) in running.stages {
            if let Err(err) = handle.await {
                tracing::error!(stage = name, error = %err, "component ended abnormally");
            }
        }
        remove_if_exists(&self.dev_json);
        remove_if_exists(&self.dev_env);
        if self.args.ephemeral
            && let Some(n) = &running.nomad
        {
            remove_ephemeral_alloc_root(&n.alloc_root);
        }
    }
}

/// The proxy, when its sockets are bound, and what the bring-up and the tour
/// need to know about it.
fn start_proxy(
    bound: Option<(Config, Listeners, SocketAddr, SocketAddr)>,
) -> anyhow::Result<Option<(Proxy, Listeners, ProxyView)>> {
    let Some((config, listeners, proxy_addr, admin_addr)) = bound else {
        return Ok(None);
    };
    let proxy = Proxy::new(config.clone()).context("starting the proxy")?;
    let router = Arc::clone(proxy.router());
    Ok(Some((
        proxy,
        listeners,
        ProxyView {
            config,
            router,
            addr: proxy_addr,
            admin: admin_addr,
        },
    )))
}

/// What the bring-up needs to know about the running Nomad.
struct NomadView {
    addr: SocketAddr,
    alloc_root: PathBuf,
    extra_path: Vec<PathBuf>,
}

/// What the bring-up and the tour need to know about the running proxy.
struct ProxyView {
    config: Config,
    router: Arc<Router>,
    addr: SocketAddr,
    admin: SocketAddr,
}

struct UpContext<'a> {
    consul: ConsulClient,
    /// Scheme, token and TLS of the Nomad API.
    nomad_auth: (
        &'static str,
        Option<String>,
        switchyard_hashi::tls::TlsConfig,
    ),
    nomad: Option<&'a NomadView>,
    proxy: Option<&'a ProxyView>,
    job: Option<&'a Path>,
    deadline: Instant,
}

/// The addresses `dev.json` announces.
struct Announce {
    consul: SocketAddr,
    nomad: Option<SocketAddr>,
    proxy: Option<(SocketAddr, SocketAddr)>,
}

/// Submits the job (if needed) and waits until everything serves.
async fn bring_up(ctx: &UpContext<'_>) -> anyhow::Result<()> {
    // Consul answers as soon as its task runs; wait for it so the first
    // errors are not spurious connection failures.
    wait_until(ctx.deadline, "the dev Consul to answer", async || {
        Ok(!ctx.consul.status_leader().await?.is_empty())
    })
    .await?;
    let Some(nomad_view) = ctx.nomad else {
        return Ok(());
    };
    let (scheme, token, tls) = &ctx.nomad_auth;
    let nomad = NomadClient::new(switchyard_hashi::nomad::NomadConfig {
        address: format!("{scheme}://{}", nomad_view.addr),
        token: token.clone(),
        tls: tls.clone(),
        ..Default::default()
    })?;
    let job = submit_job(&nomad, ctx.job).await?;
    let missing = missing_commands(&job.0, &nomad_view.extra_path);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(task, cmd)| format!("{cmd:?} (task {task})"))
            .collect();
        bail!(
            "cannot find {} in {} or on PATH; install it there or pass --hello-bin DIR",
            list.join(", "),
            nomad_view
                .extra_path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // A job stopped on purpose (`nomad job stop`) stays stopped: there is
    // nothing to wait for, and the proxy serves no instance.
    let stopped = job.0.get("Stop").and_then(Value::as_bool) == Some(true);
    if stopped {
        tracing::warn!(job = %job.id(), "job is stopped; not waiting for its allocations");
    } else {
        wait_allocations(&nomad, &job, nomad_view, ctx.deadline).await?;
    }
    if let Some(proxy) = ctx.proxy {
        wait_proxy(&ctx.consul, proxy, !stopped, ctx.deadline).await?;
    }
    Ok(())
}

/// Registers the job through the Nomad HTTP API unless a job with its ID
/// exists already (state persisted from an earlier run, or a deploy made
/// since): re-submitting the file would undo that deploy. Returns the job
/// that is registered now.
async fn submit_job(nomad: &NomadClient, explicit: Option<&Path>) -> anyhow::Result<Job> {
    let (hcl, origin) = read_source(explicit, JOB_FILE)
        .unwrap_or_else(|| {
            Ok((
                EMBEDDED_JOB.to_owned(),
                "built-in hello-service.nomad.hcl".into(),
            ))
        })
        .context("reading the job file")?;
    let job = wait_nomad(|| nomad.parse(&hcl, true))
        .await
        .with_context(|| format!("parsing {origin}"))?;
    let id = job.id().to_owned();
    if let (Some(existing), _) = nomad.job(&id, &QueryOptions::default()).await? {
        tracing::info!(job = %id, version = existing.version(), "job already registered; leaving it as it is");
        return Ok(existing);
    }
    match nomad.register(&job, Some(0)).await {
        Ok(reply) => {
            tracing::info!(job = %id, source = %origin, eval = %reply.eval_id, "job registered");
            Ok(job)
        }
        // Someone registered it between our read and our write: theirs wins.
        Err(e) if e.is_cas_conflict() => {
            tracing::info!(job = %id, "job registered concurrently; leaving it as it is");
            let (current, _) = nomad.job(&id, &QueryOptions::default()).await?;
            current.ok_or_else(|| anyhow!("job {id} vanished after a register conflict"))
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("registering job {id}"))),
    }
}

/// Retries a Nomad call that failed in transit: the server task may not have
/// been polled yet when the first request goes out.
async fn wait_nomad<T, F, Fut>(mut call: F) -> Result<T, switchyard_hashi::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, switchyard_hashi::Error>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if e.is_transport() && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Waits, with blocking queries on the job's allocations, until as many
/// allocations as the job's groups ask for run and their deployment has
/// judged them healthy. A failed allocation ends the wait with the place of
/// its task logs.
async fn wait_allocations(
    nomad: &NomadClient,
    job: &Job,
    view: &NomadView,
    deadline: Instant,
) -> anyhow::Result<()> {
    let expected: u64 = job
        .group_names()
        .iter()
        .filter_map(|g| job.group_count(g))
        .sum();
    let id = job.id();
    let mut index = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let opts = QueryOptions::blocking(index, left.min(Duration::from_secs(5)));
        let (allocs, meta) = nomad.job_allocations(id, false, &opts).await?;
        index = next_index(index, meta.index);
        let live: Vec<_> = allocs
            .iter()
            .filter(|a| a.desired_status == "run")
            .collect();
        if let Some(bad) = live
            .iter()
            .find(|a| a.client_status == "failed" || a.healthy() == Some(false))
        {
            bail!(
                "allocation {} ({}) failed: {}; task logs are in {}",
                bad.id,
                bad.name,
                if bad.client_description.is_empty() {
                    "unhealthy"
                } else {
                    &bad.client_description
                },
                view.alloc_root.join(&bad.id).display()
            );
        }
        let healthy = live
            .iter()
            .filter(|a| a.client_status == "running" && a.healthy() == Some(true))
            .count() as u64;
        if healthy >= expected && live.len() as u64 == healthy {
            tracing::info!(job = %id, allocations = healthy, "job healthy");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "job {id}: {healthy} of {expected} allocation(s) healthy when the ready timeout ran out; task logs are in {}",
                view.alloc_root.display()
            );
        }
    }
}

/// Waits until the proxy reports ready on its admin API and its routing
/// table holds every passing, coloured instance Consul lists for each
/// Consul-backed service (and, with `expect_instances`, at least one).
async fn wait_proxy(
    consul: &ConsulClient,
    proxy: &ProxyView,
    expect_instances: bool,
    deadline: Instant,
) -> anyhow::Result<()> {
    wait_until(
        deadline,
        "the proxy to serve every passing instance",
        async || {
            if http_status(proxy.admin, "/readyz").await? != 200 {
                return Ok(false);
            }
            for svc in &proxy.config.services {
                let PoolSource::Consul { service, .. } = &svc.source else {
                    continue;
                };
                let query = HealthQuery {
                    passing: true,
                    ..Default::default()
                };
                let (entries, _) = consul
                    .health_service(service, &query, &QueryOptions::default())
                    .await?;
                let coloured = entries
                    .iter()
                    .filter(|e| {
                        e.service
                            .tags
                            .iter()
                            .any(|t| svc.colours.iter().any(|c| c == t))
                    })
                    .count();
                let table = proxy.router.table_full();
                let served = table
                    .service(&svc.name)
                    .map_or(0, |s| s.active.endpoints.len() + s.standby.endpoints.len());
                if (expect_instances && coloured == 0) || served != coloured {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await
}

/// Polls `check` every 100 ms until it answers `true`; errors count as "not
/// yet" until the deadline, when the last one is reported.
async fn wait_until(
    deadline: Instant,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    loop {
        let last = match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return Err(match last {
                Some(e) => e.context(format!("timed out waiting for {what}")),
                None => anyhow!("timed out waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Spawns one component; when it returns, marks it done (which lets the next
/// stage stop) and, unless a stop was asked for, reports the failure.
fn spawn_stage(
    name: &'static str,
    fut: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    done: watch::Sender<bool>,
    stopping: watch::Receiver<bool>,
    failures: mpsc::UnboundedSender<String>,
) -> (&'static str, JoinHandle<()>) {
    let handle = tokio::spawn(async move {
        let result = fut.await;
        done.send_replace(true);
        let asked = *stopping.borrow();
        match result {
            Ok(()) if asked => tracing::info!(component = name, "stopped"),
            Ok(()) => {
                let _ = failures.send(format!("{name} stopped unexpectedly"));
            }
            Err(e) if asked => {
                tracing::error!(component = name, error = %format!("{e:#}"), "stopped with an error")
            }
            Err(e) => {
                let _ = failures.send(format!("{name} failed: {e:#}"));
            }
        }
    });
    (name, handle)
}

/// Resolves once the watched flag is `true` (or its sender is gone, which
/// also means "stop").
async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// A bound address a client on this machine can connect to: a wildcard
/// listener (`0.0.0.0`, `::`) is reached through loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Reads `explicit` when given (an error if unreadable); otherwise the
/// workspace file `rel` from the current directory or from the workspace
/// this binary was built in. `None` when there is no such file: the caller
/// falls back to its built-in copy.
fn read_source(explicit: Option<&Path>, rel: &str) -> Option<anyhow::Result<(String, String)>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|text| (text, p.display().to_string()))
            .with_context(|| format!("cannot read {}", p.display()))
    };
    if let Some(p) = explicit {
        return Some(read(p));
    }
    [
        Path::new(rel).to_path_buf(),
        Path::new(WORKSPACE_DIR).join(rel),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .map(|p| read(&p))
}

/// Links `<data_dir>/bin/hello-service` to `exe` (replacing what was there)
/// and returns that directory, absolute: tasks run in their allocation
/// directory.
fn link_demo(data_dir: &Path, exe: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::path::absolute(data_dir.join(BIN_DIR))
        .with_context(|| format!("{}", data_dir.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(DEMO_COMMAND);
    if std::fs::read_link(&link).ok().as_deref() != Some(exe) {
        remove_if_exists(&link);
        std::os::unix::fs::symlink(exe, &link)
            .with_context(|| format!("linking {} to {}", link.display(), exe.display()))?;
    }
    Ok(dir)
}

/// Directories searched for task binaries before `PATH`: `--hello-bin`, the
/// directory where the demo command is linked to this executable, the
/// running executable's directory, then the workspace's `target/release`
/// and `target/debug`. Made absolute, since tasks run in their allocation
/// directory.
fn task_dirs(
    hello_bin: Option<&Path>,
    demo_dir: &Path,
    exe: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    if let Some(d) = hello_bin {
        let abs = std::path::absolute(d).with_context(|| format!("--hello-bin {}", d.display()))?;
        if !abs.is_dir() {
            bail!("--hello-bin {}: not a directory", d.display());
        }
        dirs.push(abs);
    }
    dirs.push(demo_dir.to_path_buf());
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_path_buf());
    }
    for profile in ["release", "debug"] {
        let d = Path::new(WORKSPACE_DIR).join("target").join(profile);
        if d.is_dir() {
            dirs.push(d);
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    Ok(dirs)
}

/// The `raw_exec` commands of a job (API JSON) that cannot be found in
/// `dirs` or on `PATH`, as `(group/task, command)`. Commands with a path or
/// an interpolation are left to the driver.
fn missing_commands(job: &Value, dirs: &[PathBuf]) -> Vec<(String, String)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let search: Vec<PathBuf> = dirs
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .collect();
    let mut missing = Vec::new();
    let groups = job.get("TaskGroups").and_then(Value::as_array);
    for group in groups.into_iter().flatten() {
        let gname = group.get("Name").and_then(Value::as_str).unwrap_or("?");
        let tasks = group.get("Tasks").and_then(Value::as_array);
        for task in tasks.into_iter().flatten() {
            if task.get("Driver").and_then(Value::as_str) != Some("raw_exec") {
                continue;
            }
            let Some(cmd) = task
                .get("Config")
                .and_then(|c| c.get("command"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            if cmd.contains('/') || cmd.contains("${") {
                continue;
            }
            if !search.iter().any(|d| is_executable(&d.join(cmd))) {
                let tname = task.get("Name").and_then(Value::as_str).unwrap_or("?");
                missing.push((format!("{gname}/{tname}"), cmd.to_owned()));
            }
        }
    }
    missing
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `dev.json` document: `host:port` strings a client can connect to.
fn dev_json(a: &Announce) -> Value {
    let mut doc = serde_json::Map::new();
    doc.insert("consul".into(), Value::String(a.consul.to_string()));
    if let Some(n) = a.nomad {
        doc.insert("nomad".into(), Value::String(n.to_string()));
    }
    if let Some((p, admin)) = a.proxy {
        doc.insert("proxy".into(), Value::String(p.to_string()));
        doc.insert("admin".into(), Value::String(admin.to_string()));
    }
    Value::Object(doc)
}

/// Writes `dev.json` atomically (temporary file, then rename), so a reader
/// polling for it never sees half a document.
fn write_dev_json(path: &Path, a: &Announce) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&dev_json(a))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn remove_if_exists(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

/// In memory mode the dev Nomad puts allocation directories under
/// `<tmp>/switchyard-dev-nomad-<uuid>/allocs`; that whole directory goes.
fn remove_ephemeral_alloc_root(alloc_root: &Path) {
    let Some(parent) = alloc_root.parent() else {
        return;
    };
    let ours = parent
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("switchyard-dev-nomad-"));
    if !ours {
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(parent) {
        tracing::warn!(path = %parent.display(), error = %e, "cannot remove the allocation directories");
    }
}

/// The "you are ready" message with commands that work as printed. With
/// `secure` (`dev.env` and the CA), the Consul and Nomad commands go over
/// HTTPS with the operator's tokens from `dev.env`.
fn tour(
    a: &Announce,
    proxy: Option<&ProxyView>,
    dev_json: &Path,
    access_log: Option<&Path>,
    secure: Option<(&Path, &Path)>,
) -> String {
    let scheme = if secure.is_some() { "https" } else { "http" };
    // What a curl to Consul or Nomad needs besides the URL.
    let (consul_curl, nomad_curl) = match secure {
        Some((_, ca)) => (
            format!(
                "curl -s --cacert {} -H \"X-Consul-Token: $CONSUL_HTTP_TOKEN\"",
                ca.display()
            ),
            format!(
                "curl -s --cacert {} -H \"X-Nomad-Token: $NOMAD_TOKEN\"",
                ca.display()
            ),
        ),
        None => ("curl -s".to_owned(), "curl -s".to_owned()),
    };
    let mut out = String::from("switchyard dev: ready\n\n");
    out += &format!("  Consul  {scheme}://{}\n", a.consul);
    if let Some(n) = a.nomad {
        out += &format!("  Nomad   {scheme}://{n}\n");
    }
    if let Some((env, ca)) = secure {
        out += &format!(
            "  TLS and ACLs on: CA {}, operator tokens in {}\n",
            ca.display(),
            env.display()
        );
    }
    if let Some((p, admin)) = a.proxy {
        out += &format!(
            "  proxy   http://{p}\n  admin   http://{admin}  (open it in a browser: the status page)\n"
        );
    }
    out += &format!("  (also in {})\n", dev_json.display());
    if let Some(log) = access_log {
        out += &format!("  access log: {} (one line per request)\n", log.display());
    }
    out += "\nTry:\n";
    let mut tries: Vec<(String, &str)> = Vec::new();
    if let Some((env, _)) = secure {
        tries.push((
            format!(". {}", env.display()),
            "first: the operator's addresses, CA and tokens",
        ));
        tries.push(("switchyard status".to_owned(), "with the operator's tokens"));
    }
    if let (Some((p, admin)), Some(view)) = (a.proxy, proxy) {
        let prefix = &view.config.preview.path_prefix;
        let header = view.config.preview.header.as_str();
        let service = view
            .config
            .services
            .first()
            .map_or("hello-service", |s| s.name.as_str());
        tries.push((format!("curl -i http://{p}/hello"), "the active colour"));
        tries.push((
            format!("curl -i http://{p}{prefix}/hello"),
            "preview the standby colour",
        ));
        tries.push((
            format!("curl -i -H '{header}: standby' http://{p}/hello"),
            "the same, by header",
        ));
        tries.push((
            format!("curl -s http://{admin}/status"),
            "colours, versions, instances",
        ));
        tries.push((
            format!("curl -X POST 'http://{admin}/switch?service={service}'"),
            "flip active and standby",
        ));
        tries.push((
            format!(
                "{consul_curl} '{scheme}://{}/v1/health/service/{service}?passing'",
                a.consul
            ),
            "what the proxy discovers",
        ));
    } else {
        tries.push((
            format!("{consul_curl} {scheme}://{}/v1/catalog/services", a.consul),
            "registered services",
        ));
    }
    if let Some(n) = a.nomad {
        tries.push((format!("{nomad_curl} {scheme}://{n}/v1/jobs"), "jobs"));
    }
    let width = tries.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (cmd, why) in &tries {
        out += &format!("  {cmd:<width$}   # {why}\n");
    }
    match (secure, a.nomad) {
        (Some(_), _) => {}
        (None, Some(n)) => {
            out += &format!(
                "  export CONSUL_HTTP_ADDR=http://{} NOMAD_ADDR=http://{n}\n",
                a.consul
            );
        }
        (None, None) => out += &format!("  export CONSUL_HTTP_ADDR=http://{}\n", a.consul),
    }
    out += "\nCtrl-C stops everything.";
    out
}

/// `GET path` over HTTP/1.1 and the status code; just enough for a
/// readiness probe without pulling an HTTP client into the binary.
async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .map_err(|_| anyhow!("GET {path} on {addr} timed out"))??;
    parse_status_line(&head).ok_or_else(|| anyhow!("GET {path} on {addr}: not an HTTP answer"))
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_become_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(connectable(a).to_string(), "127.0.0.1:8080");
        let b: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(connectable(b).to_string(), "[::1]:9");
        let c: SocketAddr = "127.0.0.2:1".parse().unwrap();
        assert_eq!(connectable(c), c);
    }

    #[test]
    fn status_line_parsing_rejects_garbage() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 abc\r\n"), None);
    }

    #[test]
    fn dev_json_lists_only_what_runs() {
        let consul: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let only = dev_json(&Announce {
            consul,
            nomad: None,
            proxy: None,
        });
        assert_eq!(only, serde_json::json!({"consul": "127.0.0.1:1"}));
        let all = dev_json(&Announce {
            consul,
            nomad: Some("127.0.0.1:2".parse().unwrap()),
            proxy: Some((
                "127.0.0.1:3".parse().unwrap(),
                "127.0.0.1:4".parse().unwrap(),
            )),
        });
        assert_eq!(
            all,
            serde_json::json!({"consul": "127.0.0.1:1", "nomad": "127.0.0.1:2",
                "proxy": "127.0.0.1:3", "admin": "127.0.0.1:4"})
        );
    }

    #[test]
    fn built_in_files_are_valid() {
        let job = switchyard_devstack::nomad::hcl::parse_job(EMBEDDED_JOB, None).unwrap();
        assert_eq!(job["ID"], "hello-service");
        let config = Config::parse(
            EMBEDDED_PROXY_CONFIG,
            Path::new("dev.toml"),
            &Env::default(),
        )
        .unwrap();
        assert_eq!(config.services.len(), 1);
        assert!(matches!(
            &config.services[0].source,
            PoolSource::Consul { service, .. } if service == "hello-service"
        ));
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin.listen.unwrap().to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn missing_commands_are_named_with_their_task() {
        let job = switchyard_devstack::nomad::hcl::parse_job(EMBEDDED_JOB, None).unwrap();
        let empty = std::env::temp_dir().join(format!("sy-dev-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        // With PATH not containing hello-service and an empty search dir,
        // both groups' tasks are reported.
        let found = missing_commands(&job, std::slice::from_ref(&empty));
        let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| is_executable(&d.join("hello-service")));
        if !on_path {
            assert_eq!(
                found,
                vec![
                    ("blue/hello".to_owned(), "hello-service".to_owned()),
                    ("green/hello".to_owned(), "hello-service".to_owned()),
                ]
            );
        }
        // An executable in a search directory satisfies every task.
        let bin = empty.join("hello-service");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(missing_commands(&job, std::slice::from_ref(&empty)).is_empty());
        // A non-executable file does not.
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
        if !on_path {
            assert_eq!(
                missing_commands(&job, std::slice::from_ref(&empty)).len(),
                2
            );
        }
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn explicit_source_must_exist() {
        let err = read_source(Some(Path::new("/nonexistent/job.hcl")), JOB_FILE)
            .unwrap()
            .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/job.hcl"));
        // The workspace copy is found when no file is named.
        let (text, _) = read_source(None, JOB_FILE).unwrap().unwrap();
        assert_eq!(text, EMBEDDED_JOB);
    }
}
