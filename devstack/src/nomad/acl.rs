//! Nomad ACLs: namespace policies in Nomad's rule language, tokens, and the
//! enforcement in front of every dev Nomad endpoint.
//!
//! Policies are parsed from the HCL an operator gives `nomad acl policy
//! apply`. The dev stack models `namespace "<name or glob>" { policy =
//! "deny|read|write|scale", capabilities = [...] }`; other rules (`node`,
//! `agent`, `operator`, `quota`, `host_volume`, `plugin`, variables, ...)
//! are refused when the policy is loaded, naming the rule.
//!
//! Evaluation follows Nomad's `acl` package: `policy` expands to its
//! capability list and is unioned with `capabilities`; a token's policies
//! are unioned per namespace rule; `deny` among the capabilities wins over
//! everything; an exact namespace rule wins over globs, and among globs the
//! closest match (fewest characters left to the wildcards) decides.
//!
//! Requests: the token comes from `X-Nomad-Token`, else `Authorization:
//! Bearer`; an unknown one is `403 ACL token not found`, a missing
//! capability `403 Permission denied` (no token: the anonymous policy, which
//! grants nothing). `/v1/status/*` needs no token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{Value, json};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::ApiError;

const READ: &[&str] = &[
    "list-jobs",
    "parse-job",
    "read-job",
    "csi-list-volume",
    "csi-read-volume",
    "read-job-scaling",
    "list-scaling-policies",
    "read-scaling-policy",
    "host-volume-read",
];
const WRITE_EXTRA: &[&str] = &[
    "scale-job",
    "submit-job",
    "dispatch-job",
    "read-logs",
    "read-fs",
    "alloc-exec",
    "alloc-lifecycle",
    "csi-mount-volume",
    "csi-write-volume",
    "submit-recommendation",
    "host-volume-create",
];
const SCALE: &[&str] = &[
    "list-scaling-policies",
    "read-scaling-policy",
    "read-job-scaling",
    "scale-job",
    "read-job",
    "submit-recommendation",
];
/// Every namespace capability Nomad accepts in `capabilities`.
const VALID: &[&str] = &[
    "deny",
    "list-jobs",
    "parse-job",
    "read-job",
    "submit-job",
    "dispatch-job",
    "read-logs",
    "read-fs",
    "alloc-exec",
    "alloc-node-exec",
    "alloc-lifecycle",
    "sentinel-override",
    "csi-register-plugin",
    "csi-write-volume",
    "csi-read-volume",
    "csi-list-volume",
    "csi-mount-volume",
    "host-volume-create",
    "host-volume-register",
    "host-volume-read",
    "host-volume-write",
    "host-volume-delete",
    "list-scaling-policies",
    "read-scaling-policy",
    "read-job-scaling",
    "scale-job",
    "submit-recommendation",
    "register-job",
    "revert-job",
    "deregister-job",
    "purge-job",
    "evaluate-job",
    "plan-job",
    "tag-job-version",
    "stable-job",
    "fail-deployment",
    "pause-deployment",
    "promote-deployment",
    "unblock-deployment",
    "cancel-deployment",
    "set-alloc-health-deployment",
    "gc-allocation",
    "pause-allocation",
    "force-periodic-job",
    "delete-service-registration",
];

/// A policy that cannot be loaded: the same error as a Consul policy's.
pub use crate::consul::acl::PolicyError;

/// Namespace rules: capabilities per namespace name or glob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NomadPolicy {
    namespaces: BTreeMap<String, BTreeSet<String>>,
    /// The names of the policies merged here, as a token lists them.
    names: Vec<String>,
}

impl NomadPolicy {
    /// Parses rules in Nomad's HCL policy syntax. `name` appears in errors.
    pub fn parse(name: &str, rules: &str) -> Result<Self, PolicyError> {
        let fail = |reason: String| PolicyError {
            name: name.to_owned(),
            reason,
        };
        let body = hcl::parse(rules).map_err(|e| fail(format!("syntax: {e}")))?;
        if let Some(attr) = body.attributes().next() {
            return Err(fail(format!(
                "rule {:?} is not modelled by the dev stack (it enforces namespace rules)",
                attr.key.as_str()
            )));
        }
        let mut policy = Self::default();
        for block in body.blocks() {
            let ident = block.identifier.as_str();
            if ident != "namespace" {
                return Err(fail(format!(
                    "rule {ident:?} is not modelled by the dev stack (it enforces namespace rules)"
                )));
            }
            let [label] = block.labels.as_slice() else {
                return Err(fail("namespace needs exactly one name label".to_owned()));
            };
            let ns = label.as_str().to_owned();
            let valid_name = !ns.is_empty()
                && ns.len() <= 128
                && ns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*');
            if !valid_name {
                return Err(fail(format!("invalid namespace name {ns:?}")));
            }
            let caps = policy.namespaces.entry(ns.clone()).or_default();
            for attr in block.body.attributes() {
                match (attr.key.as_str(), &attr.expr) {
                    ("policy", hcl::Expression::String(p)) => {
                        let expanded: Vec<&str> = match p.as_str() {
                            "deny" => vec!["deny"],
                            "read" => READ.to_vec(),
                            "write" => READ.iter().chain(WRITE_EXTRA).copied().collect(),
                            "scale" => SCALE.to_vec(),
                            other => {
                                return Err(fail(format!(
                                    "namespace {ns:?}: invalid policy {other:?}"
                                )));
                            }
                        };
                        caps.extend(expanded.into_iter().map(str::to_owned));
                    }
                    ("capabilities", hcl::Expression::Array(items)) => {
                        for item in items {
                            let hcl::Expression::String(cap) = item else {
                                return Err(fail(format!(
                                    "namespace {ns:?}: capabilities must be strings"
                                )));
                            };
                            if !VALID.contains(&cap.as_str()) {
                                return Err(fail(format!(
                                    "namespace {ns:?}: invalid capability {cap:?}"
                                )));
                            }
                            caps.insert(cap.clone());
                        }
                    }
                    (key @ ("policy" | "capabilities"), _) => {
                        return Err(fail(format!("namespace {ns:?}: {key} has the wrong type")));
                    }
                    (other, _) => {
                        return Err(fail(format!(
                            "namespace {ns:?}: attribute {other:?} is not modelled by the dev stack (policy, capabilities)"
                        )));
                    }
                }
            }
            if let Some(inner) = block.body.blocks().next() {
                return Err(fail(format!(
                    "namespace {ns:?}: block {:?} is not modelled by the dev stack",
                    inner.identifier.as_str()
                )));
            }
        }
        Ok(policy.named(name))
    }

    /// The same rules under the name the operator gives the policy (`nomad
    /// acl policy apply <name>`).
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.names = vec![name.to_owned()];
        self
    }

    /// The union of several policies (a token's).
    pub fn merge<'a>(policies: impl IntoIterator<Item = &'a NomadPolicy>) -> Self {
        let mut merged = Self::default();
        for p in policies {
            merged.names.extend(p.names.iter().cloned());
            for (ns, caps) in &p.namespaces {
                merged
                    .namespaces
                    .entry(ns.clone())
                    .or_default()
                    .extend(caps.iter().cloned());
            }
        }
        merged
    }

    /// The capabilities that apply to namespace `ns`.
    fn capabilities(&self, ns: &str) -> Option<&BTreeSet<String>> {
        if let Some(exact) = self.namespaces.get(ns) {
            return Some(exact);
        }
        self.namespaces
            .iter()
            .filter(|(pattern, _)| pattern.contains('*') && glob_match(pattern, ns))
            .min_by_key(|(pattern, _)| ns.len().saturating_sub(pattern.replace('*', "").len()))
            .map(|(_, caps)| caps)
    }

    /// Whether any of `ops` is allowed in namespace `ns`.
    pub fn allows_any(&self, ns: &str, ops: &[&str]) -> bool {
        match self.capabilities(ns) {
            Some(caps) if !caps.contains("deny") => ops.iter().any(|op| caps.contains(*op)),
            _ => false,
        }
    }
}

/// `*` matches any run of characters, everything else itself.
fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return pattern == s;
    };
    if parts.len() == 1 {
        return pattern == s;
    }
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A Nomad ACL token.
#[derive(Debug, Clone)]
pub struct NomadToken {
    /// Public ID.
    pub accessor_id: String,
    /// The secret sent in `X-Nomad-Token`.
    pub secret_id: String,
    /// The token's name.
    pub name: String,
    /// `None`: a management token (everything allowed).
    pub policy: Option<Arc<NomadPolicy>>,
}

/// The ACL system of the dev Nomad: its tokens by SecretID.
#[derive(Debug, Clone, Default)]
pub struct NomadAcl {
    tokens: HashMap<String, Arc<NomadToken>>,
    /// Raft-like index of each token's creation, by SecretID (the order
    /// they were given in, from 1).
    indexes: HashMap<String, u64>,
    /// When the tokens were created (the ACL system's start).
    created: Option<SystemTime>,
}

impl NomadAcl {
    /// An ACL system with these tokens.
    pub fn new(tokens: impl IntoIterator<Item = NomadToken>) -> Self {
        let tokens: Vec<NomadToken> = tokens.into_iter().collect();
        Self {
            indexes: (1..)
                .zip(&tokens)
                .map(|(i, t)| (t.secret_id.clone(), i))
                .collect(),
            tokens: tokens
                .into_iter()
                .map(|t| (t.secret_id.clone(), Arc::new(t)))
                .collect(),
            created: Some(SystemTime::now()),
        }
    }
}

/// `GET /v1/acl/token/self` as Nomad answers it (`ACL.WhoAmI`): the token
/// the request carries; no token is the anonymous token; an unknown one is
/// `403 Permission denied`; with ACLs off, Nomad's `acls-disabled` token.
/// The body and the index of the answer.
pub(crate) fn token_self(acl: Option<&NomadAcl>, req: &Request) -> Result<(u64, Value), ApiError> {
    let zero_time = "0001-01-01T00:00:00Z";
    let pseudo = |accessor: &str, name: &str, policies: Value| {
        json!({
            "AccessorID": accessor, "SecretID": "", "Name": name, "Type": "client",
            "Policies": policies, "Roles": null, "Global": false, "Hash": null,
            "CreateTime": zero_time, "ExpirationTime": null, "ExpirationTTL": 0,
            "CreateIndex": 0, "ModifyIndex": 0,
        })
    };
    let Some(acl) = acl else {
        return Ok((
            1,
            pseudo("acls-disabled", "ACLs disabled token", Value::Null),
        ));
    };
    let Some(secret) = request_token(req) else {
        return Ok((
            1,
            pseudo("anonymous", "Anonymous Token", json!(["anonymous"])),
        ));
    };
    let Some(token) = acl.tokens.get(&secret) else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Permission denied"));
    };
    let (kind, policies, global) = match &token.policy {
        None => ("management", Vec::new(), true),
        Some(p) => ("client", p.names.clone(), false),
    };
    // Nomad's `ACLToken.SetHash`: BLAKE2b-256 of the name, the type, the
    // policy names and `global`/`local`.
    let mut parts: Vec<&[u8]> = vec![token.name.as_bytes(), kind.as_bytes()];
    parts.extend(policies.iter().map(|p| p.as_bytes()));
    parts.push(if global { b"global" } else { b"local" });
    let hash =
        base64::engine::general_purpose::STANDARD.encode(crate::blake2b::blake2b_256(&parts));
    let index = acl.indexes.get(&secret).copied().unwrap_or(1);
    let created = acl.created.unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((
        index,
        json!({
            "AccessorID": token.accessor_id,
            "SecretID": token.secret_id,
            "Name": token.name,
            "Type": kind,
            "Policies": if policies.is_empty() { Value::Null } else { json!(policies) },
            "Roles": null,
            "Global": global,
            "Hash": hash,
            "CreateTime": super::util::rfc3339(created),
            "ExpirationTime": null,
            "ExpirationTTL": 0,
            "CreateIndex": index,
            "ModifyIndex": index,
        }),
    ))
}

/// The capabilities (any of) a request needs in its namespace; `None`: no
/// ACL check (status endpoints, unknown routes).
fn required(method: &Method, path: &str) -> Option<&'static [&'static str]> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = method == Method::GET;
    Some(match segments.as_slice() {
        ["v1", "status", ..] => return None,
        ["v1", "jobs"] if read => &["list-jobs"],
        ["v1", "jobs"] => &["submit-job", "register-job"],
        ["v1", "jobs", "parse"] => &["parse-job", "submit-job"],
        ["v1", "job", _] if read => &["read-job"],
        ["v1", "job", _] if method == Method::DELETE => {
            &["submit-job", "purge-job", "deregister-job"]
        }
        ["v1", "job", _] => &["submit-job", "register-job"],
        ["v1", "job", _, "revert"] => &["submit-job", "revert-job"],
        ["v1", "job", _, "plan"] => &["submit-job", "plan-job"],
        ["v1", "job", _, _] => &["read-job"],
        ["v1", "deployment", "promote", _] => &["submit-job", "promote-deployment"],
        ["v1", "deployment", "fail", _] => &["submit-job", "fail-deployment"],
        [
            "v1",
            "deployments" | "deployment" | "allocations" | "allocation" | "evaluations"
            | "evaluation",
            ..,
        ] => &["read-job"],
        _ => return None,
    })
}

/// The token a request carries, as Nomad's HTTP layer reads it.
fn request_token(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(t) = headers
        .get("X-Nomad-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some(t.to_owned());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, value) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    value
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .filter(|t| !t.is_empty())
}

fn namespace_of(req: &Request) -> String {
    req.uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("namespace="))
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_owned()
}

pub(crate) async fn enforce(
    State(acl): State<Arc<NomadAcl>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(ops) = required(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let policy = match request_token(&req) {
        None => None,
        Some(secret) => match acl.tokens.get(&secret) {
            None => {
                return ApiError::new(StatusCode::FORBIDDEN, "ACL token not found").into_response();
            }
            Some(token) => match &token.policy {
                None => return next.run(req).await,
                Some(p) => Some(Arc::clone(p)),
            },
        },
    };
    let ns = namespace_of(&req);
    if policy.is_some_and(|p| p.allows_any(&ns, ops)) {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "Permission denied").into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(rules: &str) -> NomadPolicy {
        NomadPolicy::parse("test", rules).unwrap()
    }

    #[test]
    fn policies_expand_and_union_with_capabilities() {
        let pol =
            p("namespace \"default\" {\n policy = \"read\"\n capabilities = [\"submit-job\"]\n}");
        assert!(pol.allows_any("default", &["read-job"]));
        assert!(pol.allows_any("default", &["submit-job"]));
        assert!(!pol.allows_any("default", &["alloc-exec"]));
        assert!(!pol.allows_any("other", &["read-job"]));
        let w = p(r#"namespace "default" { policy = "write" }"#);
        assert!(w.allows_any("default", &["submit-job"]));
        assert!(w.allows_any("default", &["list-jobs"]));
    }

    #[test]
    fn deny_wins_and_exact_beats_globs_closest_glob_next() {
        let pol = p(r#"
            namespace "*" { policy = "read" }
            namespace "prod-*" { policy = "write" }
            namespace "prod-secret" { policy = "deny" }
        "#);
        assert!(pol.allows_any("dev", &["read-job"]));
        assert!(!pol.allows_any("dev", &["submit-job"]));
        assert!(pol.allows_any("prod-web", &["submit-job"]));
        assert!(!pol.allows_any("prod-secret", &["read-job"]));
        let merged = NomadPolicy::merge([
            &p(r#"namespace "default" { policy = "write" }"#),
            &p(r#"namespace "default" { capabilities = ["deny"] }"#),
        ]);
        assert!(!merged.allows_any("default", &["read-job"]));
    }

    #[test]
    fn unmodelled_or_invalid_rules_are_refused() {
        for (rules, needle) in [
            (r#"node { policy = "read" }"#, "\"node\" is not modelled"),
            (r#"agent { policy = "read" }"#, "\"agent\" is not modelled"),
            (
                r#"namespace "default" { policy = "admin" }"#,
                "invalid policy \"admin\"",
            ),
            (
                r#"namespace "default" { capabilities = ["fly"] }"#,
                "invalid capability \"fly\"",
            ),
            (
                "namespace \"default\" {\n variables {\n  path \"*\" {\n   capabilities = [\"read\"]\n  }\n }\n}",
                "block \"variables\" is not modelled",
            ),
            (
                r#"namespace "a b" { policy = "read" }"#,
                "invalid namespace name",
            ),
        ] {
            let err = NomadPolicy::parse("n.hcl", rules).unwrap_err().to_string();
            assert!(err.contains(needle), "{rules}: {err}");
        }
    }

    #[test]
    fn routes_need_the_capabilities_nomad_checks() {
        assert_eq!(required(&Method::GET, "/v1/status/leader"), None);
        assert_eq!(required(&Method::GET, "/v1/jobs"), Some(&["list-jobs"][..]));
        assert_eq!(
            required(&Method::POST, "/v1/job/web/plan"),
            Some(&["submit-job", "plan-job"][..])
        );
        assert_eq!(
            required(&Method::GET, "/v1/job/web/allocations"),
            Some(&["read-job"][..])
        );
        assert_eq!(
            required(&Method::POST, "/v1/deployment/promote/x"),
            Some(&["submit-job", "promote-deployment"][..])
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("prod-*", "prod-web"));
        assert!(!glob_match("prod-*", "dev-web"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "ab"));
    }

    #[test]
    fn the_shipped_policy_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/acl/nomad-operator.hcl");
        let pol = NomadPolicy::parse(
            "nomad-operator.hcl",
            &std::fs::read_to_string(path).unwrap(),
        )
        .unwrap();
        for op in ["list-jobs", "read-job", "parse-job", "submit-job"] {
            assert!(pol.allows_any("default", &[op]), "{op}");
        }
        assert!(!pol.allows_any("default", &["alloc-exec"]));
    }
}
