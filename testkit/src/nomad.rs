//! The dev stack's Nomad on an ephemeral port.

use switchyard_devstack::nomad::{DevNomad, NomadConfig};

use crate::serve::Served;

/// Serves a dev Nomad with `cfg` on `127.0.0.1:0`; the handle shares its state. Stopping the
/// server stops every allocation's process before the task ends.
pub async fn serve_dev_nomad(cfg: NomadConfig) -> (DevNomad, Served<std::io::Result<()>>) {
    let nomad = DevNomad::new(cfg).unwrap();
    let server = nomad.clone();
    let served = Served::start(move |l, stop| server.serve(l, stop)).await;
    (nomad, served)
}
