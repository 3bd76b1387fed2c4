//! The `switchyard` binary: a thin shell over the workspace's libraries.
//!
//! It parses the command line, sets up logging and the runtime, calls one
//! library entry point, and maps errors to exit codes: 0 success, 1 failure
//! at run time, 2 bad input (configuration, arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_proxy::config::{Config, ConfigError, LogFormat};
use tracing_subscriber::EnvFilter;

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
    },
    /// Validate a configuration file and report every problem.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { code: 1, error }
    }
}

fn bad_input(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: error.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("switchyard: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::CheckConfig { file } => {
            let config = Config::load(&file).map_err(bad_input)?;
            println!(
                "{}: ok ({} service(s), {} route(s), listening on {})",
                file.display(),
                config.services.len(),
                config.routes.len(),
                config.listen
            );
            Ok(())
        }
        Command::Proxy { config } => {
            let config = Config::load(&config).map_err(|e| match e {
                e @ ConfigError::Read { .. } => bad_input(e),
                e => bad_input(e),
            })?;
            init_logging(&config.log.level, config.log.format);
            let runtime = runtime(config.worker_threads)?;
            runtime.block_on(async move {
                let proxy = switchyard_proxy::Proxy::new(config.clone())
                    .context("starting the proxy")?;
                let listeners = switchyard_proxy::Listeners::bind(&config)
                    .await
                    .context("binding listeners")?;
                proxy
                    .run(listeners, shutdown_signal())
                    .await
                    .context("running the proxy")?;
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(())
        }
    }
}

fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.build()
        .context("building the async runtime")
        .map_err(Failure::from)
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
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
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
