//! The `switchyard` binary: a thin shell over the workspace's libraries.
//!
//! It parses the command line, sets up logging and the runtime, calls one
//! library entry point, and maps errors to exit codes: 0 success, 1 failure
//! at run time, 2 bad input (configuration, arguments), 3 another command
//! holds the service's lock, 4 a register refused because Nomad's plan would
//! replace the active group, 130 interrupted by SIGINT or SIGTERM.

#[cfg(feature = "dev")]
mod access_log;
mod check;
#[cfg(feature = "dev")]
mod dev;

#[cfg(feature = "dev")]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use switchyard_controller::{Controller, ControllerError, Settings};
use switchyard_proxy::Stop;
use switchyard_proxy::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc with its background thread: the proxy allocates small,
/// short-lived buffers per request, which jemalloc's thread caches serve
/// about as cheaply as mimalloc did (benches/instructions.sh), and memory
/// freed when connections close goes back to the system on jemalloc's
/// decay timer, even while the proxy allocates nothing; mimalloc only
/// returned it from its allocation slow path, so an idle proxy kept it
/// (benches/idle.py). The `system-allocator` feature (heap profiling
/// builds only) leaves it out.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Zero-downtime blue/green deployments on Consul + Nomad"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Proxy {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from the proxy running on `upgrade.socket`, which
        /// then stops accepting, drains and exits (a binary upgrade without refused connections).
        #[arg(long)]
        upgrade: bool,
    },
    /// Run Consul, Nomad, the demo job and the proxy on this machine.
    #[cfg(feature = "dev")]
    Dev(dev::DevArgs),
    /// Serve the blue/green demo (what the demo job's tasks run); `demo --help` lists its flags.
    #[cfg(feature = "dev")]
    #[command(disable_help_flag = true)]
    Demo {
        /// `--port N --version vN [--listen IP] [--fail-health] [--delay-ms MS]`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start a dev-stack task tied to the life of its parent (internal).
    #[cfg(feature = "dev")]
    #[command(hide = true)]
    LaunchTask {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Validate a proxy configuration (.toml) or a blue/green job file (.hcl); report every problem.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Deploy a version to the standby colour and verify it (reverted on failure).
    Deploy {
        /// The version to deploy (`[A-Za-z0-9._-]{1,64}`).
        version: String,
        /// How long the new instances may take to become healthy.
        #[arg(long, default_value = "5m", value_parser = switchyard_controller::parse_duration)]
        deadline: Duration,
        /// How long to wait for the standby colour's in-flight requests to finish first.
        #[arg(long, default_value = "30s", value_parser = switchyard_controller::parse_duration)]
        drain_deadline: Duration,
        /// Set `KEY=VALUE` in the standby group's meta (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = switchyard_controller::deploy_settings::parse_key_value)]
        meta: Vec<(String, String)>,
        /// Set `KEY=VALUE` in the environment of the standby group's tasks (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = switchyard_controller::deploy_settings::parse_key_value)]
        env: Vec<(String, String)>,
        /// The Docker image of the standby group's tasks, for jobs that do not derive it from the version.
        #[arg(long, value_name = "REF", value_parser = switchyard_controller::deploy_settings::parse_image)]
        image: Option<String>,
        /// Print Nomad's plan of the change and write nothing (exit 4 if it would be refused).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Make a colour active (route key check-and-set), then verify every proxy. Running it
    /// again when that colour is already active changes nothing and succeeds.
    Switch {
        /// The colour to make active; default: the standby colour (printed).
        #[arg(long)]
        to: Option<String>,
        /// Skip the pre-flight checks (standby health, instance counts, versions, Nomad
        /// deployments).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Switch back to the colour that was active before the last switch (from the history in
    /// Consul); a second rollback changes nothing and succeeds.
    Rollback {
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Show colours, roles, versions, instances and proxies of a service; without `--service`,
    /// of every service the proxies route.
    Status {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Check Consul, Nomad, proxies and their agreement; suggest the next command.
    Diagnose {
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// The service lock of the commands that change something.
#[derive(Args, Debug)]
struct LockArgs {
    /// When another command holds the service's lock, wait up to this long for it (e.g. `2m`)
    /// instead of exiting with status 3 at once.
    #[arg(long, value_name = "DURATION", value_parser = switchyard_controller::parse_duration)]
    lock_wait: Option<Duration>,
}

/// Options shared by the controller commands.
#[derive(Args, Debug)]
struct CommonArgs {
    /// The Consul service (and proxy service) name [default: hello-service; `status`: every
    /// service the proxies route].
    #[arg(long)]
    service: Option<String>,
    /// The Nomad job; defaults to the service name.
    #[arg(long)]
    job: Option<String>,
    /// A proxy admin URL (repeatable); defaults to $SWITCHYARD_PROXIES, else http://127.0.0.1:8081.
    #[arg(long = "proxy")]
    proxies: Vec<String>,
    /// Where job backups are kept (the history lives in Consul).
    #[arg(long, default_value = ".switchyard")]
    state_dir: PathBuf,
    /// The proxies' configuration file: the service's route key and colours are read from it,
    /// so the controller writes the key the proxies watch.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable output (JSON on stdout).
    #[arg(long)]
    json: bool,
}

impl CommonArgs {
    fn controller(&self, tune: impl FnOnce(&mut Settings)) -> Result<Controller, Failure> {
        let service = self
            .service
            .as_deref()
            .unwrap_or(switchyard_controller::settings::DEFAULT_SERVICE);
        self.controller_for(service, tune)
    }

    fn controller_for(
        &self,
        service: &str,
        tune: impl FnOnce(&mut Settings),
    ) -> Result<Controller, Failure> {
        let mut settings = Settings::from_env(service);
        if let Some(job) = &self.job {
            settings.job.clone_from(job);
        }
        if !self.proxies.is_empty() {
            settings.proxies = self
                .proxies
                .iter()
                .map(|p| switchyard_controller::settings::normalise_url(p))
                .collect();
        }
        settings.state_dir.clone_from(&self.state_dir);
        if let Some(path) = &self.config {
            let config = Config::load(path).map_err(bad_input)?;
            follow_proxy_config(&mut settings, &config, path).map_err(bad_input)?;
        }
        tune(&mut settings);
        let controller = Controller::new(settings).map_err(controller_failure)?;
        Ok(controller.with_progress(Arc::new(|line: &str| eprintln!("{line}"))))
    }
}

/// Takes the service's colours and route key from the proxies' configuration.
fn follow_proxy_config(
    settings: &mut Settings,
    config: &Config,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let service = config
        .services
        .iter()
        .find(|s| s.name == settings.service)
        .with_context(|| format!("{} has no service {:?}", path.display(), settings.service))?;
    let switchyard_proxy::config::PoolSource::Consul {
        service: consul_service,
        route_key,
    } = &service.source
    else {
        anyhow::bail!(
            "service {:?} in {} has static pools; the controller needs Consul discovery",
            settings.service,
            path.display()
        );
    };
    if consul_service != &settings.service {
        anyhow::bail!(
            "service {:?} in {} discovers Consul service {consul_service:?}; the controller needs both names to be the same",
            settings.service,
            path.display()
        );
    }
    settings.colours.clone_from(&service.colours);
    settings.route_key.clone_from(route_key);
    Ok(())
}

fn controller_failure(e: ControllerError) -> Failure {
    Failure {
        code: e.exit_code(),
        error: e.into(),
        reported: false,
    }
}

fn print_json(text: String) -> Result<(), Failure> {
    println!("{text}");
    Ok(())
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
    /// The command already printed its `--json` document (a report that lists the errors).
    reported: bool,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: 1,
            error,
            reported: false,
        }
    }
}

fn bad_input(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: error.into(),
        reported: false,
    }
}

impl Command {
    /// Whether the command was asked for `--json` output.
    fn json(&self) -> bool {
        match self {
            Command::Deploy { common, .. }
            | Command::Switch { common, .. }
            | Command::Rollback { common, .. }
            | Command::Status { common }
            | Command::Diagnose { common } => common.json,
            Command::Proxy { .. } | Command::CheckConfig { .. } => false,
            #[cfg(feature = "dev")]
            Command::Dev(_) | Command::Demo { .. } | Command::LaunchTask { .. } => false,
        }
    }
}

fn main() -> ExitCode {
    // Called as `hello-service` (the name the demo job's tasks run, which the
    // dev stack links to this executable): be the demo.
    #[cfg(feature = "dev")]
    {
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_default();
        if Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(dev::DEMO_COMMAND)) {
            return hello_service::run(args.map(|a| a.to_string_lossy().into_owned()));
        }
    }
    let cli = Cli::parse();
    #[cfg(feature = "dev")]
    if let Command::Demo { args } = &cli.command {
        return hello_service::run(args.iter().cloned());
    }
    let json = cli.command.json();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json && !f.reported {
                println!(
                    "{}",
                    serde_json::json!({"error": format!("{:#}", f.error), "exit_code": f.code})
                );
            }
            eprintln!("switchyard: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Deploy {
            version,
            deadline,
            drain_deadline,
            meta,
            env,
            image,
            dry_run,
            lock,
            common,
        } => {
            let controller = common.controller(|s| {
                s.deadline = deadline;
                s.drain_deadline = drain_deadline;
            })?;
            let settings =
                switchyard_controller::deploy_settings::StandbySettings { meta, env, image };
            if dry_run {
                deploy_dry_run(&controller, &version, &settings, common.json)
            } else {
                deploy(controller, version, settings, &lock, common.json)
            }
        }
        Command::Switch {
            to,
            force,
            lock,
            common,
        } => {
            let controller = common.controller(|_| {})?;
            let command = match &to {
                Some(colour) => format!("switch --to {colour}"),
                None => "switch".to_owned(),
            };
            let outcome = locked(
                controller,
                &command,
                &lock,
                Interrupt::Abort,
                |c| async move { c.switch(force, to.as_deref()).await },
            )?;
            print_switch(&outcome, common.json)
        }
        Command::Rollback { lock, common } => {
            let controller = common.controller(|_| {})?;
            let outcome = locked(
                controller,
                "rollback",
                &lock,
                Interrupt::Abort,
                |c| async move { c.rollback().await },
            )?;
            print_switch(&outcome, common.json)
        }
        Command::Status { common } if common.service.is_none() => status_all(&common),
        Command::Status { common } => status_one(&common),
        Command::Diagnose { common } => diagnose(&common),
        #[cfg(feature = "dev")]
        Command::Dev(args) => {
            let _flush_access_log = dev::init_logging(&args).map_err(bad_input)?;
            runtime(None)?.block_on(dev::run(args, shutdown_signal()))?;
            Ok(())
        }
        // `main` runs the demo: it has its own exit codes and messages.
        #[cfg(feature = "dev")]
        Command::Demo { .. } => Ok(()),
        #[cfg(feature = "dev")]
        Command::LaunchTask { args } => {
            // Replaces this process with the task; returns only on failure.
            let err = switchyard_devstack::nomad::exec_task(args);
            Err(anyhow::Error::from(err).context("launch-task").into())
        }
        Command::CheckConfig { file } => {
            println!("{}", check::check(&file).map_err(bad_input)?);
            Ok(())
        }
        Command::Proxy {
            config: path,
            upgrade,
        } => {
            let config = Config::load(&path).map_err(bad_input)?;
            let log = init_logging(&config.log.level, config.log.format);
            let runtime = runtime(config.worker_threads)?;
            runtime.block_on(run_proxy(config, path, upgrade, log))?;
            Ok(())
        }
    }
}

/// `deploy --dry-run`: prints Nomad's plan of the change; a plan that would be refused fails
/// with exit status 4.
fn deploy_dry_run(
    controller: &Controller,
    version: &str,
    settings: &switchyard_controller::deploy_settings::StandbySettings,
    json: bool,
) -> Result<(), Failure> {
    let dry = controller_runtime()?
        .block_on(controller.deploy_dry_run(version, settings))
        .map_err(controller_failure)?;
    if json {
        print_json(switchyard_controller::to_json(&dry))?;
    } else {
        print!("{}", switchyard_controller::deploy::render_dry_run(&dry));
    }
    match dry.refused {
        Some(why) => Err(controller_failure(ControllerError::PlanRefused(why))),
        None => Ok(()),
    }
}

/// `deploy <version>` under the service's lock.
fn deploy(
    controller: Controller,
    version: String,
    settings: switchyard_controller::deploy_settings::StandbySettings,
    lock: &LockArgs,
    json: bool,
) -> Result<(), Failure> {
    // Bad input is refused before the lock is taken.
    switchyard_controller::refusal::validate_version(&version)
        .map_err(|r| controller_failure(r.into()))?;
    let outcome = locked(
        controller,
        &format!("deploy {version}"),
        lock,
        Interrupt::Cooperative,
        |c| async move { c.deploy_with(&version, &settings).await },
    )?;
    if json {
        print_json(switchyard_controller::to_json(&outcome))?;
    } else {
        println!("{}", switchyard_controller::deploy::render_deploy(&outcome));
    }
    Ok(())
}

/// `status --service S`: the report of one service.
fn status_one(common: &CommonArgs) -> Result<(), Failure> {
    let controller = common.controller(|_| {})?;
    let report = controller_runtime()?.block_on(controller.status());
    if common.json {
        print_json(switchyard_controller::to_json(&report))?;
    } else {
        print!("{}", switchyard_controller::status::render_status(&report));
    }
    match report.errors.first() {
        Some(e) => Err(Failure {
            reported: common.json,
            ..anyhow::anyhow!("cannot read everything: {e}").into()
        }),
        None => Ok(()),
    }
}

/// `diagnose`: fails when a finding is an error.
fn diagnose(common: &CommonArgs) -> Result<(), Failure> {
    let controller = common.controller(|_| {})?;
    let report = controller_runtime()?.block_on(controller.diagnose());
    if common.json {
        print_json(switchyard_controller::to_json(&report))?;
    } else {
        print!(
            "{}",
            switchyard_controller::diagnose::render_diagnose(&report)
        );
    }
    if report.has_errors() {
        let first = report
            .findings
            .first()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        return Err(Failure {
            reported: common.json,
            ..anyhow::anyhow!("{} error finding(s); first: {first}", report.errors).into()
        });
    }
    Ok(())
}

/// `status` without `--service`: the report of every service the proxies route (a JSON array
/// with `--json`).
fn status_all(common: &CommonArgs) -> Result<(), Failure> {
    let runtime = controller_runtime()?;
    let finder = common.controller(|_| {})?;
    let services = runtime
        .block_on(finder.routed_services())
        .map_err(|e| anyhow::anyhow!("cannot list the routed services: {e}"))?;
    if services.is_empty() {
        return Err(anyhow::anyhow!(
            "the proxies route no service yet; pass --service to show one anyway"
        )
        .into());
    }
    let mut reports = Vec::new();
    for service in &services {
        let controller = common.controller_for(service, |_| {})?;
        reports.push(runtime.block_on(controller.status()));
    }
    if common.json {
        print_json(switchyard_controller::to_json(&reports))?;
    } else {
        let texts: Vec<String> = reports
            .iter()
            .map(switchyard_controller::status::render_status)
            .collect();
        print!("{}", texts.join("\n"));
    }
    let errors: Vec<String> = reports
        .iter()
        .flat_map(|r| r.errors.iter().map(move |e| format!("{}: {e}", r.service)))
        .collect();
    match errors.first() {
        Some(e) => Err(Failure {
            reported: common.json,
            ..anyhow::anyhow!("cannot read everything: {e}").into()
        }),
        None => Ok(()),
    }
}

/// `switchyard proxy`: binds (or, with `--upgrade`, takes over) the listeners, serves the
/// upgrade socket, reloads the file on SIGHUP, and runs until SIGTERM/SIGINT or until a new
/// process took the listeners.
async fn run_proxy(
    config: Config,
    path: PathBuf,
    upgrade: bool,
    log: LogLevel,
) -> anyhow::Result<()> {
    use switchyard_proxy::upgrade::{self, Handover, UpgradeSocket};
    let proxy = switchyard_proxy::Proxy::new(config.clone()).context("starting the proxy")?;
    let reloading = tokio::spawn(reload_on_sighup(path, proxy.reloader(), log));
    let socket = &config.upgrade.socket;
    let (listeners, upgrade_socket) = if upgrade {
        let (listeners, confirmation) = upgrade::take_over(&config)
            .await
            .context("taking the listeners over")?;
        // Everything that can fail before the old process stops accepting.
        let upgrade_socket = UpgradeSocket::bind(socket, true)?;
        confirmation
            .send()
            .await
            .context("confirming the handover")?;
        (listeners, upgrade_socket)
    } else {
        // Refuse before binding: a proxy serving the socket holds the ports too.
        let upgrade_socket = UpgradeSocket::bind(socket, false)?;
        let listeners = switchyard_proxy::Listeners::bind(&config)
            .await
            .context("binding listeners")?;
        (listeners, upgrade_socket)
    };
    let handover = Handover::of(&listeners).context("duplicating the listeners")?;
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => Stop::Terminate,
            () = upgrade_socket.handed_over(handover) => Stop::HandedOver,
        }
    };
    let stopped = proxy.run_until(listeners, stop).await;
    reloading.abort();
    stopped.context("running the proxy")?;
    Ok(())
}

/// Reloads the configuration file on every SIGHUP: a valid file is applied (see
/// [`switchyard_proxy::Reloader`]) and the log level follows it; an invalid one is reported with
/// every problem, as `check-config` does, and the running configuration stays.
async fn reload_on_sighup(path: PathBuf, reloader: switchyard_proxy::Reloader, log: LogLevel) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload is off");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
        let next = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    error = %format!("{:#}", anyhow::Error::from(e)),
                    "configuration reload refused: the running configuration stays"
                );
                continue;
            }
        };
        let level = next.log.level.clone();
        match reloader.apply(next) {
            Ok(done) => {
                if let Err(e) = log.modify(|f| *f = log_filter(&level)) {
                    tracing::warn!(error = %e, "cannot change the log level");
                }
                tracing::info!(
                    pools = ?done.pools,
                    routes_changed = done.routes,
                    "configuration reloaded"
                );
                if !done.restart_only.is_empty() {
                    tracing::warn!(
                        keys = ?done.restart_only,
                        "changed keys that apply only after a restart or `proxy --upgrade`"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "configuration reload refused"),
        }
    }
}

/// How a command under the lock reacts to SIGINT or SIGTERM.
enum Interrupt {
    /// The command watches for it and undoes its change itself (a deploy reverts the standby).
    Cooperative,
    /// The command is abandoned where it stands.
    Abort,
}

/// Runs a command that changes something: takes the service's lock (or fails with exit status
/// 3, or waits `--lock-wait`), runs `command` with SIGINT/SIGTERM and the loss of the lock
/// delivered as an interrupt, and releases the lock whatever the outcome. The one place the
/// lock is taken.
fn locked<T, F, Fut>(
    controller: Controller,
    command: &str,
    lock: &LockArgs,
    interrupt: Interrupt,
    run: F,
) -> Result<T, Failure>
where
    F: FnOnce(Controller) -> Fut,
    Fut: std::future::Future<Output = Result<T, ControllerError>>,
{
    controller_runtime()?.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(None::<String>);
        let tx = Arc::new(tx);
        let signals = {
            let tx = Arc::clone(&tx);
            tokio::spawn(async move {
                loop {
                    let name = signal_name().await;
                    tx.send_replace(Some(name.to_owned()));
                }
            })
        };
        let mut waiting = rx.clone();
        let held = tokio::select! {
            held = controller.lock(command, lock.lock_wait) => held.map_err(controller_failure)?,
            _ = waiting.wait_for(Option::is_some) => {
                signals.abort();
                return Err(controller_failure(ControllerError::Interrupted(format!(
                    "{command} interrupted while waiting for the lock; nothing was changed"
                ))));
            }
        };
        let lost = {
            let tx = Arc::clone(&tx);
            let mut lost = held.lost_watch();
            tokio::spawn(async move {
                if let Ok(why) = lost.wait_for(Option::is_some).await
                    && let Some(why) = why.clone()
                {
                    tx.send_replace(Some(why));
                }
            })
        };
        let c = controller.clone().with_interrupt(rx.clone());
        let result = match interrupt {
            Interrupt::Cooperative => run(c).await,
            Interrupt::Abort => {
                let mut stop = rx.clone();
                tokio::select! {
                    r = run(c) => r,
                    why = stop.wait_for(Option::is_some) => {
                        let why = why.ok().and_then(|w| w.clone()).unwrap_or_default();
                        Err(ControllerError::Interrupted(format!(
                            "{command} interrupted ({why}); run `switchyard status --service {}` to see where traffic goes",
                            controller.settings().service
                        )))
                    }
                }
            }
        };
        lost.abort();
        signals.abort();
        if let Err(e) = held.release().await {
            eprintln!("switchyard: warning: the lock was not released ({e}); it expires with its session");
        }
        result.map_err(controller_failure)
    })
}

fn print_switch(o: &switchyard_controller::SwitchOutcome, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(switchyard_controller::to_json(o));
    }
    println!("{}", switchyard_controller::switch::render_switch(o));
    Ok(())
}

/// A small runtime for the controller commands, with warnings-only logging on stderr (progress
/// lines are printed separately).
fn controller_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    init_logging("warn", LogFormat::Text);
    runtime(Some(2))
}

fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    // Unset: one worker per CPU this process may run on. The standard
    // library counts those from the affinity mask and the cgroup CPU quota
    // (so `taskset -c 1` or a one-CPU container gives 1), not from the CPUs
    // the machine has.
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One worker: a current-thread runtime does the same work without the
    // work-stealing scheduler's cross-thread bookkeeping.
    let mut b = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all();
    b.build()
        .context("building the async runtime")
        .map_err(Failure::from)
}

/// Changes the log filter of a running process.
type LogLevel = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The log filter: `RUST_LOG` when set, else `level`.
fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn init_logging(level: &str, format: LogFormat) -> LogLevel {
    use tracing_subscriber::prelude::*;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(level));
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Json => output.json().boxed(),
        LogFormat::Text => output.boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    handle
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let name = signal_name().await;
    tracing::info!("{name} received");
}

/// Waits for SIGINT or SIGTERM and names it.
async fn signal_name() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = term => "SIGTERM",
    }
}
