//! `switchyard dev --secure`: TLS and ACLs as a production cluster runs
//! them.
//!
//! - A CA is generated into `<data-dir>/tls/` (`ca.pem`) with one server
//!   certificate for `127.0.0.1`, `::1`, `localhost`, `server.dc1.consul`
//!   and `server.global.nomad`; Consul serves HTTPS only (as with
//!   `ports { http = -1, https = 8501 }`), Nomad serves HTTPS on its port.
//! - ACLs with default policy `deny` on both. Tokens, created fresh every
//!   run: a bootstrap management token each (what the dev command itself
//!   uses to bring the demo up), the proxy's (Consul policy
//!   `config/acl/consul-proxy.hcl`), the operator's
//!   (`config/acl/consul-operator.hcl`, `config/acl/nomad-operator.hcl`)
//!   and the dev Nomad's Consul agent token
//!   (`config/acl/consul-nomad-agent.hcl`). The policies are the shipped
//!   files, parsed and enforced; the secrets go to `<data-dir>/acl/*.token`
//!   (mode 0600).
//! - `<data-dir>/dev.env` exports the operator's environment
//!   (`CONSUL_HTTP_ADDR`, `CONSUL_CACERT`, `CONSUL_HTTP_TOKEN`,
//!   `NOMAD_ADDR`, `NOMAD_CACERT`, `NOMAD_TOKEN`, `SWITCHYARD_PROXIES`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use switchyard_devstack::consul::acl::{ConsulAcl, ConsulPolicy, ConsulToken};
use switchyard_devstack::nomad::acl::{NomadAcl, NomadPolicy, NomadToken};
use switchyard_devstack::tls::{DevPki, write_private};

/// The shipped policies, built in so `--secure` works outside the
/// workspace; the workspace's files are preferred (they may have been
/// edited).
const POLICIES: [(&str, &str); 4] = [
    (CONSUL_PROXY, include_str!("../config/acl/consul-proxy.hcl")),
    (
        CONSUL_OPERATOR,
        include_str!("../config/acl/consul-operator.hcl"),
    ),
    (
        CONSUL_NOMAD_AGENT,
        include_str!("../config/acl/consul-nomad-agent.hcl"),
    ),
    (
        NOMAD_OPERATOR,
        include_str!("../config/acl/nomad-operator.hcl"),
    ),
];
const CONSUL_PROXY: &str = "config/acl/consul-proxy.hcl";
const CONSUL_OPERATOR: &str = "config/acl/consul-operator.hcl";
const CONSUL_NOMAD_AGENT: &str = "config/acl/consul-nomad-agent.hcl";
const NOMAD_OPERATOR: &str = "config/acl/nomad-operator.hcl";

/// Names the server certificate carries.
const CERT_NAMES: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "server.dc1.consul",
    "server.global.nomad",
];

/// The operator's environment file, in the data directory.
pub(crate) const DEV_ENV: &str = "dev.env";

/// Secrets of the tokens created for one run.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    pub(crate) consul_management: String,
    pub(crate) consul_proxy: String,
    pub(crate) consul_operator: String,
    pub(crate) consul_nomad_agent: String,
    pub(crate) nomad_management: String,
    pub(crate) nomad_operator: String,
}

/// Everything `--secure` adds to a run.
pub(crate) struct Secure {
    pub(crate) pki: DevPki,
    pub(crate) consul_acl: Arc<ConsulAcl>,
    pub(crate) nomad_acl: Arc<NomadAcl>,
    pub(crate) tokens: Tokens,
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Generates the certificates and tokens and loads the shipped policies.
pub(crate) fn prepare(data_dir: &Path) -> anyhow::Result<Secure> {
    let mut texts = Vec::new();
    for (rel, embedded) in POLICIES {
        let (text, origin) = super::read_source(None, rel)
            .unwrap_or_else(|| Ok((embedded.to_owned(), format!("built-in {rel}"))))
            .with_context(|| format!("reading the ACL policy {rel}"))?;
        texts.push((text, origin));
    }
    let [proxy, operator, agent, nomad] = texts.as_slice() else {
        anyhow::bail!("expected {} ACL policies", POLICIES.len());
    };
    let consul_policy = |(text, origin): &(String, String)| ConsulPolicy::parse(origin, text);
    // Named as the operator's commands in each file's header create them.
    let proxy_policy = consul_policy(proxy)?.named("switchyard-proxy");
    let operator_policy = consul_policy(operator)?.named("switchyard-operator");
    let agent_policy = consul_policy(agent)?.named("nomad-agent");
    let nomad_operator_policy =
        NomadPolicy::parse(&nomad.1, &nomad.0)?.named("switchyard-operator");

    let tokens = Tokens {
        consul_management: uuid(),
        consul_proxy: uuid(),
        consul_operator: uuid(),
        consul_nomad_agent: uuid(),
        nomad_management: uuid(),
        nomad_operator: uuid(),
    };
    let consul_acl = ConsulAcl::new([
        ConsulToken::management(
            uuid(),
            tokens.consul_management.clone(),
            "Bootstrap Token (Global Management)",
        ),
        ConsulToken::with_policies(
            uuid(),
            tokens.consul_proxy.clone(),
            "switchyard proxy",
            [&proxy_policy],
        ),
        ConsulToken::with_policies(
            uuid(),
            tokens.consul_operator.clone(),
            "switchyard operator",
            [&operator_policy],
        ),
        ConsulToken::with_policies(
            uuid(),
            tokens.consul_nomad_agent.clone(),
            "nomad agent",
            [&agent_policy],
        ),
    ]);
    let nomad_acl = NomadAcl::new([
        NomadToken {
            accessor_id: uuid(),
            secret_id: tokens.nomad_management.clone(),
            name: "Bootstrap Token".into(),
            policy: None,
        },
        NomadToken {
            accessor_id: uuid(),
            secret_id: tokens.nomad_operator.clone(),
            name: "switchyard operator".into(),
            policy: Some(Arc::new(nomad_operator_policy)),
        },
    ]);

    let tls_dir = data_dir.join("tls");
    let pki = DevPki::generate(&tls_dir, CERT_NAMES)
        .with_context(|| format!("creating certificates in {}", tls_dir.display()))?;
    let acl_dir = data_dir.join("acl");
    std::fs::create_dir_all(&acl_dir).with_context(|| format!("creating {}", acl_dir.display()))?;
    for (name, secret) in [
        ("consul-management.token", &tokens.consul_management),
        ("consul-proxy.token", &tokens.consul_proxy),
        ("consul-operator.token", &tokens.consul_operator),
        ("consul-nomad-agent.token", &tokens.consul_nomad_agent),
        ("nomad-management.token", &tokens.nomad_management),
        ("nomad-operator.token", &tokens.nomad_operator),
    ] {
        let path = acl_dir.join(name);
        write_private(&path, &format!("{secret}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Secure {
        pki,
        consul_acl: Arc::new(consul_acl),
        nomad_acl: Arc::new(nomad_acl),
        tokens,
    })
}

/// The CA certificate as an absolute path (`dev.env` is sourced from
/// anywhere).
pub(crate) fn ca_path(secure: &Secure) -> PathBuf {
    std::path::absolute(&secure.pki.ca_cert).unwrap_or_else(|_| secure.pki.ca_cert.clone())
}

/// The text of `dev.env`.
pub(crate) fn dev_env(
    secure: &Secure,
    consul_url: &str,
    nomad_url: Option<&str>,
    admin_url: Option<&str>,
) -> String {
    let ca = ca_path(secure);
    let ca = shell_quote(&ca.display().to_string());
    let mut out = String::from(
        "# switchyard dev --secure: the operator's environment (tokens change every run).\n\
         # . .switchyard/dev.env; switchyard status\n",
    );
    out += &format!("export CONSUL_HTTP_ADDR={consul_url}\n");
    out += &format!("export CONSUL_CACERT={ca}\n");
    out += &format!(
        "export CONSUL_HTTP_TOKEN={}\n",
        secure.tokens.consul_operator
    );
    if let Some(n) = nomad_url {
        out += &format!("export NOMAD_ADDR={n}\n");
        out += &format!("export NOMAD_CACERT={ca}\n");
        out += &format!("export NOMAD_TOKEN={}\n", secure.tokens.nomad_operator);
    }
    if let Some(a) = admin_url {
        out += &format!("export SWITCHYARD_PROXIES={a}\n");
    }
    out
}

/// Writes `dev.env` (mode 0600: it holds tokens).
pub(crate) fn write_dev_env(path: &Path, text: &str) -> anyhow::Result<()> {
    write_private(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Single quotes for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn built_in_policies_match_the_workspace_and_parse() {
        for (rel, embedded) in POLICIES {
            let on_disk =
                std::fs::read_to_string(Path::new(super::super::WORKSPACE_DIR).join(rel)).unwrap();
            assert_eq!(on_disk, embedded, "{rel}");
        }
        let tmp = std::env::temp_dir().join(format!("sy-secure-{}", std::process::id()));
        let secure = prepare(&tmp).unwrap();
        assert!(secure.pki.ca_cert.is_file());
        let env = dev_env(
            &secure,
            "https://127.0.0.1:1",
            Some("https://127.0.0.1:2"),
            None,
        );
        for var in [
            "CONSUL_HTTP_ADDR=https://127.0.0.1:1",
            "CONSUL_CACERT=",
            "CONSUL_HTTP_TOKEN=",
            "NOMAD_ADDR=https://127.0.0.1:2",
            "NOMAD_CACERT=",
            "NOMAD_TOKEN=",
        ] {
            assert!(env.contains(&format!("export {var}")), "{var}: {env}");
        }
        assert!(env.contains(&secure.tokens.consul_operator));
        assert!(!env.contains(&secure.tokens.consul_management));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.pem"), "/a/b.pem");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
