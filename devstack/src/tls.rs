//! HTTPS for the dev stack: a CA generated per run, a server certificate it
//! signs, and a listener that serves the APIs over TLS.
//!
//! The certificate names what clients connect to: `127.0.0.1`, `::1` and
//! `localhost`, plus the names Consul and Nomad agents carry in production
//! (`server.<dc>.consul`, `server.<region>.nomad`), so
//! `CONSUL_TLS_SERVER_NAME` / `NOMAD_TLS_SERVER_NAME` work as against a
//! real cluster.
//!
//! Plain HTTP sent to the HTTPS port gets what Go's HTTP server (and so
//! Consul and Nomad) answers: `400 Bad Request` with `Client sent an HTTP
//! request to an HTTPS server.`, then the connection closes. Anything else
//! that is not a TLS handshake is closed.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::connlimit::{ConnLimit, Counted};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What Go's `net/http` writes to a plain HTTP request on a TLS port.
const HTTP_ON_HTTPS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Failures creating the certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Writing a PEM file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Generating or signing a key or certificate.
    #[error("generating certificates: {0}")]
    Generate(String),
}

/// A CA and the server certificate it signed, on disk and loaded.
#[derive(Clone)]
pub struct DevPki {
    /// The CA certificate (PEM): what clients trust (`CONSUL_CACERT`).
    pub ca_cert: PathBuf,
    /// The server certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM, mode 0600).
    pub server_key: PathBuf,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki")
            .field("ca_cert", &self.ca_cert)
            .finish_non_exhaustive()
    }
}

impl DevPki {
    /// Generates a CA and a server certificate for `names` (IP addresses and
    /// DNS names) into `dir` (`ca.pem`, `server.pem`, `server-key.pem`),
    /// replacing what was there.
    pub fn generate(dir: &Path, names: &[&str]) -> Result<Self, TlsError> {
        let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "switchyard dev CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(gen_err)?)
            .map_err(gen_err)?;
        let key = KeyPair::generate().map_err(gen_err)?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(gen_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard dev server");
        let cert = params.signed_by(&key, &ca).map_err(gen_err)?;

        let ca_cert = dir.join("ca.pem");
        let server_cert = dir.join("server.pem");
        let server_key = dir.join("server-key.pem");
        std::fs::write(&ca_cert, ca.pem()).map_err(io_err(&ca_cert))?;
        std::fs::write(&server_cert, cert.pem()).map_err(io_err(&server_cert))?;
        write_private(&server_key, &key.serialize_pem()).map_err(io_err(&server_key))?;

        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_cert,
            server_cert,
            server_key,
            config: Arc::new(config),
        })
    }

    /// Serves TLS with the server certificate on `listener`; with `limit`,
    /// connections over the per-client limit are closed before the
    /// handshake.
    pub fn listener(&self, listener: TcpListener, limit: Option<Arc<ConnLimit>>) -> TlsListener {
        TlsListener::new(listener, Arc::clone(&self.config), limit)
    }
}

/// Writes a secret readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// A TLS listener for `axum::serve`: connections are accepted and their
/// handshakes run concurrently, so one slow client does not hold up others.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<Counted<TcpStream>>, SocketAddr)>,
    local: io::Result<SocketAddr>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Wraps a bound TCP listener; must be called on a Tokio runtime.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        limit: Option<Arc<ConnLimit>>,
    ) -> Self {
        let local = listener.local_addr();
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::debug!(error = %e, "tls: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let admitted = match &limit {
                    Some(l) => match l.admit(peer) {
                        Some(a) => Some(a),
                        // Over the limit: closed, as the agent's 10 ms write
                        // through a TLS connection ends.
                        None => continue,
                    },
                    None => None,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(tls) = handshake(&acceptor, stream, peer, admitted).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Self {
            rx,
            local,
            accept_task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Option<crate::connlimit::Admitted>,
) -> Option<TlsStream<Counted<TcpStream>>> {
    let mut head = [0u8; 5];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut head))
        .await
        .ok()?
        .ok()?;
    if looks_like_http(head.get(..peeked).unwrap_or_default()) {
        let mut stream = stream;
        let _ = stream.write_all(HTTP_ON_HTTPS).await;
        let _ = stream.shutdown().await;
        return None;
    }
    let stream = Counted::new(stream, admitted);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls: handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls: handshake timed out");
            None
        }
    }
}

/// Go's `tlsRecordHeaderLooksLikeHTTP`: the first five bytes of a request
/// line where a TLS record header was expected.
fn looks_like_http(head: &[u8]) -> bool {
    matches!(head, b"GET /" | b"HEAD " | b"POST " | b"PUT /" | b"OPTIO")
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Counted<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(pair) => pair,
            // The accept loop is gone (aborted on drop): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_are_recognised() {
        assert!(looks_like_http(b"GET /"));
        assert!(looks_like_http(b"PUT /"));
        assert!(looks_like_http(b"OPTIO"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x00, 0xa5]));
        assert!(!looks_like_http(b"GET"));
    }
}
