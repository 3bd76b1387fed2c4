//! [`Controller`]: the clients and settings every command shares. Each command adds its own
//! methods in its module ([`crate::observe`], [`crate::deploy`], [`crate::switch`],
//! [`crate::rollback`], [`crate::status`], [`crate::diagnose`]).
//!
//! Every write is check-and-set (Nomad `EnforceIndex` / `EnforcePriorVersion`, Consul
//! `?cas=`), so a concurrent operator is detected rather than overwritten. Every outcome is
//! verified from outside: Consul health, each instance's own `GET /version`, each proxy's
//! `GET /status`. Waits poll at [`Settings::poll_interval`] and are bounded by deadlines.

use std::sync::Arc;

use switchyard_hashi::consul::ConsulClient;
use switchyard_hashi::nomad::NomadClient;
use tokio::sync::watch;

use crate::state::StateDir;
use crate::{ControllerError, Settings};

/// Receives progress lines (the binary prints them on stderr).
pub type ProgressSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Runs the commands for one service.
#[derive(Clone)]
pub struct Controller {
    pub(crate) settings: Settings,
    pub(crate) consul: ConsulClient,
    pub(crate) nomad: NomadClient,
    pub(crate) http: reqwest::Client,
    pub(crate) state: StateDir,
    progress: ProgressSink,
    /// Set (with the reason) when the command should stop: SIGINT, SIGTERM, a lost lock.
    interrupt: watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Builds the clients. Makes no request.
    pub fn new(settings: Settings) -> Result<Self, ControllerError> {
        settings.validate()?;
        let consul = ConsulClient::new(settings.consul.clone())
            .map_err(|e| ControllerError::BadInput(format!("Consul address: {e}")))?;
        let nomad = NomadClient::new(settings.nomad.clone())
            .map_err(|e| ControllerError::BadInput(format!("Nomad address: {e}")))?;
        let http = switchyard_hashi::tls::http_client_builder()
            .timeout(settings.http_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ControllerError::BadInput(format!("HTTP client: {e}")))?;
        Ok(Controller {
            state: StateDir::new(settings.state_dir.clone()),
            settings,
            consul,
            nomad,
            http,
            progress: Arc::new(|_| {}),
            interrupt: watch::channel(None).1,
        })
    }

    /// Stops the running command when `interrupt` carries a reason: a deploy reverts the
    /// standby group (its failure path) and fails with [`ControllerError::Interrupted`].
    pub fn with_interrupt(mut self, interrupt: watch::Receiver<Option<String>>) -> Self {
        self.interrupt = interrupt;
        self
    }

    /// Why the command was asked to stop, if it was.
    pub(crate) fn interrupted(&self) -> Option<String> {
        self.interrupt.borrow().clone()
    }

    /// Sleeps for `d`, or less when interrupted.
    pub(crate) async fn pause(&self, d: std::time::Duration) {
        let mut rx = self.interrupt.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = rx.wait_for(Option::is_some) => {}
        }
    }

    /// Sends progress lines to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = sink;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn say(&self, line: &str) {
        tracing::info!(service = %self.settings.service, "{line}");
        (self.progress)(line);
    }
}
