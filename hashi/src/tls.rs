//! TLS for `https://` agents: CA files or directories, client certificates (mTLS), a server name
//! override and skip-verify, read the way the Consul and Nomad CLIs read them. rustls with the
//! `ring` provider; without a CA the operating system's roots are trusted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// How to verify an `https://` agent and how to identify to it. All paths are PEM files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificate(s) to trust instead of the system roots (`CONSUL_CACERT`, `NOMAD_CACERT`).
    /// Wins over `ca_path`.
    pub ca_cert: Option<PathBuf>,
    /// A directory of CA certificates to trust instead of the system roots (`CONSUL_CAPATH`,
    /// `NOMAD_CAPATH`).
    pub ca_path: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (`CONSUL_CLIENT_CERT`, `NOMAD_CLIENT_CERT`).
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (`CONSUL_CLIENT_KEY`, `NOMAD_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
    /// The name the agent's certificate must carry, when it differs from the address's host
    /// (`CONSUL_TLS_SERVER_NAME`, `NOMAD_TLS_SERVER_NAME`), e.g. `server.dc1.consul`.
    pub server_name: Option<String>,
    /// Accept any certificate (`CONSUL_HTTP_SSL_VERIFY=false`, `NOMAD_SKIP_VERIFY=true`).
    /// For tests and emergencies only: anyone on the path can read the token.
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// The rustls client configuration; `product` names the API in errors.
    pub(crate) fn client_config(&self, product: &str) -> Result<rustls::ClientConfig, Error> {
        let fail = |what: String| Error::Config(format!("{product} TLS: {what}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify {
            Arc::new(AcceptAny(provider.clone()))
        } else {
            let inner: Arc<dyn ServerCertVerifier> = match (&self.ca_cert, &self.ca_path) {
                (Some(file), _) => webpki(
                    load_roots(std::slice::from_ref(file), &fail)?,
                    &provider,
                    &fail,
                )?,
                (None, Some(dir)) => webpki(
                    load_roots(&ca_dir_files(dir, &fail)?, &fail)?,
                    &provider,
                    &fail,
                )?,
                (None, None) => Arc::new(
                    rustls_platform_verifier::Verifier::new(provider.clone())
                        .map_err(|e| fail(format!("cannot load the system's CA roots: {e}")))?,
                ),
            };
            match &self.server_name {
                Some(name) => {
                    let name = ServerName::try_from(name.clone())
                        .map_err(|_| fail(format!("{name:?} is not a valid server name")))?;
                    Arc::new(ServerNameOverride { inner, name })
                }
                None => inner,
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, &fail)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| fail(format!("client key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| fail(format!("client certificate and key: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(fail(
                    "a client certificate needs both the certificate and the key".to_owned(),
                ));
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
    fail: &impl Fn(String) -> Error,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    Ok(verifier)
}

fn read_certs(
    file: &Path,
    fail: &impl Fn(String) -> Error,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(format!("{}: {e}", file.display())))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "{}: no PEM certificate in it",
            file.display()
        )));
    }
    Ok(certs)
}

/// Every file in a CA directory (not recursing), in name order.
fn ca_dir_files(dir: &Path, fail: &impl Fn(String) -> Error) -> Result<Vec<PathBuf>, Error> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| fail(format!("CA path {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| fail(format!("CA path {}: {e}", dir.display())))?
            .path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(fail(format!("CA path {}: no files in it", dir.display())));
    }
    Ok(files)
}

fn load_roots(files: &[PathBuf], fail: &impl Fn(String) -> Error) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for file in files {
        for cert in read_certs(file, fail)? {
            roots
                .add(cert)
                .map_err(|e| fail(format!("{}: {e}", file.display())))?;
        }
    }
    Ok(roots)
}

/// Verifies the certificate against a configured name instead of the address's host.
struct ServerNameOverride {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl fmt::Debug for ServerNameOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerNameOverride")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerNameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Skip-verify: any certificate is accepted, but the handshake signatures are still checked
/// (the peer must hold the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Go's `strconv.ParseBool`, which both CLIs use for their boolean variables.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A `reqwest` client builder with rustls on the `ring` provider, trusting the system's roots.
///
/// reqwest is built without a default crypto provider (no OpenSSL, no aws-lc), so a client built
/// from `reqwest::Client::builder()` alone panics; every HTTP client in the workspace starts
/// here instead.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(system_roots_config())
}

/// A `reqwest` client builder that verifies `https://` servers as `tls` says (CA file or
/// directory, client certificate, server name, skip-verify); `product` names the API in errors.
/// For HTTP clients outside [`crate::consul`] and [`crate::nomad`] that talk to an agent with
/// the same TLS settings.
pub fn http_client_builder_with(
    tls: &TlsConfig,
    product: &str,
) -> Result<reqwest::ClientBuilder, Error> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls.client_config(product)?))
}

/// rustls with `ring` and the system's roots; with no roots to be found, a configuration that
/// trusts nothing (plain `http://` still works, every `https://` fails verification).
fn system_roots_config() -> rustls::ClientConfig {
    TlsConfig::default()
        .client_config("HTTP")
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system CA roots; https:// will not verify");
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring offers TLS 1.2 and 1.3")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
        })
}
