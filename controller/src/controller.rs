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
        let http = reqwest::Client::builder()
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
        })
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

    pub(crate) fn record_file(&self) -> String {
        self.state
            .root()
            .join("state")
            .join(format!("{}.json", self.settings.service))
            .display()
            .to_string()
    }
}
