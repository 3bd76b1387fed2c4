//! The clients against a real rustls HTTPS server (and a Unix socket) with certificates from a
//! CA generated per test: CA files and directories, mutual TLS, server name override,
//! skip-verify, token files, and 403 answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use switchyard_hashi::Error;
use switchyard_hashi::consul::{ConsulClient, ConsulConfig, KvWrite};
use switchyard_hashi::nomad::{Job, NomadClient, NomadConfig};
use switchyard_hashi::tls::TlsConfig;

use crate::support::{Listen, MockServer, Reply};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hashi-tls-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, and certificates it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM and DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server presenting `leaf`; with `client_ca`, it requires a client certificate from it.
fn server_config(leaf: &Leaf, client_ca: Option<&Pki>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(pki) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(
        builder
            .with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der.clone_key())
            .unwrap(),
    )
}

/// An HTTPS Consul stand-in answering `/v1/status/leader`.
async fn https_server(config: Arc<rustls::ServerConfig>) -> MockServer {
    MockServer::start_on(Listen::Tls(config), |_| {
        Reply::json("\"10.0.0.1:8300\"").header("X-Consul-Index", 1)
    })
    .await
}

fn consul(address: String, tls: TlsConfig) -> Result<ConsulClient, Error> {
    ConsulClient::new(ConsulConfig {
        address,
        tls,
        ..ConsulConfig::default()
    })
}

fn ca_file(scratch: &Scratch, pki: &Pki) -> PathBuf {
    scratch.write("ca.pem", &pki.ca_pem())
}

#[tokio::test]
async fn the_agent_certificate_must_chain_to_the_configured_ca() {
    let scratch = Scratch::new();
    let pki = Pki::new("switchyard test CA");
    let server = https_server(server_config(&pki.leaf(&["127.0.0.1"]), None)).await;

    // Trusted through the CA file.
    let trusted = TlsConfig {
        ca_cert: Some(ca_file(&scratch, &pki)),
        ..TlsConfig::default()
    };
    let leader = consul(server.https_url(), trusted)
        .unwrap()
        .status_leader()
        .await
        .unwrap();
    assert_eq!(leader, "10.0.0.1:8300");
    assert!(
        consul(server.https_url(), TlsConfig::default())
            .unwrap()
            .address()
            .starts_with("https://")
    );

    // Trusted through a CA directory.
    let dir = Scratch::new();
    dir.write("consul-agent-ca.pem", &pki.ca_pem());
    let by_dir = TlsConfig {
        ca_path: Some(dir.0.clone()),
        ..TlsConfig::default()
    };
    consul(server.https_url(), by_dir)
        .unwrap()
        .status_leader()
        .await
        .unwrap();

    // Another CA: the handshake fails, as a transport error.
    let other = Pki::new("someone else");
    let wrong = TlsConfig {
        ca_cert: Some(scratch.write("other.pem", &other.ca_pem())),
        ..TlsConfig::default()
    };
    let err = consul(server.https_url(), wrong)
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    let text = err.to_string();
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // The system's roots do not know this CA either.
    let err = consul(server.https_url(), TlsConfig::default())
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    // Only the requests that completed a handshake reached the server.
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn skip_verify_accepts_any_certificate() {
    let pki = Pki::new("unknown CA");
    let server = https_server(server_config(&pki.leaf(&["elsewhere.example"]), None)).await;
    let tls = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    let leader = consul(server.https_url(), tls)
        .unwrap()
        .status_leader()
        .await
        .unwrap();
    assert_eq!(leader, "10.0.0.1:8300");
}

#[tokio::test]
async fn the_server_name_override_is_what_the_certificate_must_carry() {
    let scratch = Scratch::new();
    let pki = Pki::new("dc1 CA");
    // Like a Consul server certificate: a name, no IP.
    let server = https_server(server_config(&pki.leaf(&["server.dc1.consul"]), None)).await;
    let base = TlsConfig {
        ca_cert: Some(ca_file(&scratch, &pki)),
        ..TlsConfig::default()
    };

    let err = consul(server.https_url(), base.clone())
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    let named = TlsConfig {
        server_name: Some("server.dc1.consul".into()),
        ..base.clone()
    };
    consul(server.https_url(), named)
        .unwrap()
        .status_leader()
        .await
        .unwrap();

    let wrong_name = TlsConfig {
        server_name: Some("server.dc2.consul".into()),
        ..base
    };
    let err = consul(server.https_url(), wrong_name)
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");
}

#[tokio::test]
async fn mutual_tls_sends_the_client_certificate() {
    let scratch = Scratch::new();
    let pki = Pki::new("agents CA");
    let server = https_server(server_config(&pki.leaf(&["127.0.0.1"]), Some(&pki))).await;
    let base = TlsConfig {
        ca_cert: Some(ca_file(&scratch, &pki)),
        ..TlsConfig::default()
    };

    // verify_incoming: no client certificate, no answer.
    let err = consul(server.https_url(), base.clone())
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    let client = pki.leaf(&["client.dc1.consul"]);
    let with_cert = TlsConfig {
        client_cert: Some(scratch.write("client.pem", &client.cert_pem)),
        client_key: Some(scratch.write("client-key.pem", &client.key_pem)),
        ..base.clone()
    };
    let nomad = NomadClient::new(NomadConfig {
        address: server.https_url(),
        tls: with_cert.clone(),
        ..NomadConfig::default()
    })
    .unwrap();
    assert_eq!(nomad.status_leader().await.unwrap(), "10.0.0.1:8300");

    // A certificate from another CA is refused by the server.
    let stranger = Pki::new("stranger").leaf(&["client.dc1.consul"]);
    let foreign = TlsConfig {
        client_cert: Some(scratch.write("stranger.pem", &stranger.cert_pem)),
        client_key: Some(scratch.write("stranger-key.pem", &stranger.key_pem)),
        ..base.clone()
    };
    let err = consul(server.https_url(), foreign)
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    // A certificate without its key is a setup error, before any request.
    let half = TlsConfig {
        client_cert: with_cert.client_cert.clone(),
        ..base
    };
    let err = consul(server.https_url(), half).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("Consul TLS"), "{err}");
}

#[tokio::test]
async fn unreadable_tls_files_fail_when_the_client_is_built() {
    let scratch = Scratch::new();
    let missing = scratch.0.join("missing.pem");
    let not_pem = scratch.write("not.pem", "hello");
    for (tls, want) in [
        (
            TlsConfig {
                ca_cert: Some(missing.clone()),
                ..TlsConfig::default()
            },
            "missing.pem",
        ),
        (
            TlsConfig {
                ca_cert: Some(not_pem.clone()),
                ..TlsConfig::default()
            },
            "no PEM certificate",
        ),
        (
            TlsConfig {
                ca_path: Some(missing.clone()),
                ..TlsConfig::default()
            },
            "CA path",
        ),
    ] {
        let err = consul("https://127.0.0.1:8501".into(), tls).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err}");
    }
    // Plain HTTP never reads them.
    consul(
        "http://127.0.0.1:8500".into(),
        TlsConfig {
            ca_cert: Some(missing),
            ..TlsConfig::default()
        },
    )
    .unwrap();
}

#[tokio::test]
async fn the_token_file_wins_over_the_token() {
    let scratch = Scratch::new();
    let pki = Pki::new("CA");
    let server = MockServer::start_on(
        Listen::Tls(server_config(&pki.leaf(&["127.0.0.1"]), None)),
        |_| Reply::json("true"),
    )
    .await;
    let file = scratch.write("token", "  file-token\n");
    let client = ConsulClient::new(ConsulConfig {
        address: server.https_url(),
        token: Some("env-token".into()),
        token_file: Some(file),
        tls: TlsConfig {
            ca_cert: Some(ca_file(&scratch, &pki)),
            ..TlsConfig::default()
        },
        ..ConsulConfig::default()
    })
    .unwrap();
    assert!(client.kv_put("k", b"v", &KvWrite::default()).await.unwrap());
    assert_eq!(server.single().header("X-Consul-Token"), Some("file-token"));

    // An empty file leaves the token in place; a missing one is a setup error.
    let empty = scratch.write("empty", "\n");
    let config = ConsulConfig {
        token: Some("env-token".into()),
        token_file: Some(empty),
        ..ConsulConfig::default()
    };
    assert_eq!(
        config.effective_token().unwrap().as_deref(),
        Some("env-token")
    );
    let err = ConsulClient::new(ConsulConfig {
        token_file: Some(scratch.0.join("nope")),
        ..ConsulConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("token file"), "{err}");
}

#[tokio::test]
async fn a_403_is_one_line_naming_api_request_and_permission() {
    let consul_body = "Permission denied: token with AccessorID '7ba2a2e1-3c5f-4d5a-9e0c-1f2d3c4b5a69' lacks permission 'key:write' on \"switchyard/routes/web\"";
    let server = MockServer::always(Reply::new(403, consul_body)).await;
    let client = ConsulClient::new(ConsulConfig {
        address: server.url(),
        token: Some("reader".into()),
        ..ConsulConfig::default()
    })
    .unwrap();
    let err = client
        .kv_put(
            "switchyard/routes/web",
            b"{}",
            &KvWrite {
                cas: Some(7),
                flags: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(
        err.to_string(),
        "Consul refused PUT /v1/kv/switchyard/routes/web (403 Permission denied): the token lacks permission key:write on \"switchyard/routes/web\""
    );

    // Nomad names no permission; without a token the message says which variable sets one.
    let server = MockServer::always(Reply::new(403, "Permission denied\n")).await;
    let nomad = NomadClient::new(NomadConfig {
        address: server.url(),
        ..NomadConfig::default()
    })
    .unwrap();
    let job = Job(serde_json::json!({"ID": "web", "Name": "web"}));
    let err = nomad.register(&job, None).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "Nomad refused POST /v1/job/web (403 Permission denied): \"Permission denied\": the token lacks a permission this call needs; no token was sent (set NOMAD_TOKEN)"
    );
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn nomad_sends_the_jobs_consul_token_like_the_cli() {
    let server = MockServer::always(Reply::json(
        r#"{"EvalID":"e","EvalCreateIndex":5,"JobModifyIndex":5,"Index":5}"#,
    ))
    .await;
    let nomad = NomadClient::new(NomadConfig {
        address: server.url(),
        region: Some("eu".into()),
        namespace: Some("apps".into()),
        consul_token: Some("consul-secret".into()),
        ..NomadConfig::default()
    })
    .unwrap();
    let job = Job(serde_json::json!({"ID": "web", "Name": "web", "Version": 3}));
    nomad.register(&job, Some(4)).await.unwrap();
    nomad.revert("web", 2, Some(3)).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let register = &requests[0];
    assert_eq!(register.target(), "/v1/job/web?region=eu&namespace=apps");
    assert_eq!(register.json()["Job"]["ConsulToken"], "consul-secret");
    assert_eq!(register.json()["Job"]["Version"], 3);
    let revert = &requests[1];
    assert_eq!(
        revert.target(),
        "/v1/job/web/revert?region=eu&namespace=apps"
    );
    assert_eq!(revert.json()["ConsulToken"], "consul-secret");
    assert_eq!(revert.json()["EnforcePriorVersion"], 3);

    // Without one, neither carries the field.
    let plain = NomadClient::new(NomadConfig {
        address: server.url(),
        ..NomadConfig::default()
    })
    .unwrap();
    plain.register(&job, None).await.unwrap();
    let sent = server.requests().pop().unwrap();
    assert!(
        sent.json()["Job"].get("ConsulToken").is_none(),
        "{:?}",
        sent.json()
    );
}

#[tokio::test]
async fn unix_socket_addresses() {
    let scratch = Scratch::new();
    let socket: &Path = &scratch.0.join("consul.sock");
    let server = MockServer::start_on(Listen::Unix(socket.to_owned()), |_| {
        Reply::json(r#"{"web":["blue"]}"#).header("X-Consul-Index", 9)
    })
    .await;
    let client = ConsulClient::new(ConsulConfig {
        address: format!("unix://{}", socket.display()),
        ..ConsulConfig::default()
    })
    .unwrap();
    assert_eq!(client.address(), "http://localhost");
    let (services, meta) = client
        .catalog_services(&switchyard_hashi::QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(services["web"], vec!["blue".to_owned()]);
    assert_eq!(meta.index, 9);
    let request = server.single();
    assert_eq!(request.target(), "/v1/catalog/services");
    assert_eq!(request.header("host"), Some("localhost"));
}
