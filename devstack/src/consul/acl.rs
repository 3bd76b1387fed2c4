//! Consul ACLs: policies in Consul's rule language, tokens, and the
//! decision for one resource.
//!
//! Policies are parsed from the same HCL an operator gives
//! `consul acl policy create -rules @file`, so what the dev stack enforces
//! is exactly what is shipped. The rule kinds switchyard's clients touch are
//! modelled: `key`/`key_prefix`, `service`/`service_prefix`,
//! `node`/`node_prefix`, `session`/`session_prefix` and
//! `agent`/`agent_prefix`, each with `policy = "read" | "write" | "deny"`
//! (`"list"` too for keys). Anything else (`operator`, `acl`, `event`,
//! `query`, `intentions`, ...) is refused when the policy is loaded, naming
//! the rule, rather than silently ignored.
//!
//! Evaluation follows Consul's `acl` package:
//! - an exact rule (`key "a"`) applies to that name only and wins over any
//!   prefix rule for it;
//! - otherwise the longest matching prefix rule decides (`key_prefix ""`
//!   matches everything);
//! - `write` grants list and read, `list` grants read, `read` grants read,
//!   `deny` grants nothing;
//! - a token's policies are merged before lookup: for the same rule, `deny`
//!   takes precedence over `write`, `write` over `list`, `list` over `read`;
//! - no matching rule falls back to the default policy, `deny`, as
//!   production clusters run (`acl.default_policy = "deny"`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

/// An access level a rule grants (or a request needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Explicitly nothing.
    Deny,
    /// Read.
    Read,
    /// List (keys only): read and list.
    List,
    /// Write: everything.
    Write,
}

impl Access {
    fn parse(s: &str, allow_list: bool) -> Option<Self> {
        match s {
            "deny" => Some(Self::Deny),
            "read" => Some(Self::Read),
            "list" if allow_list => Some(Self::List),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    /// Consul's spelling in error messages (`key:write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Read => "read",
            Self::List => "list",
            Self::Write => "write",
        }
    }

    /// Whether a rule granting `self` allows `needed`.
    fn grants(self, needed: Access) -> bool {
        match self {
            Self::Write => true,
            Self::List => matches!(needed, Self::List | Self::Read),
            Self::Read => needed == Self::Read,
            Self::Deny => false,
        }
    }

    /// Merge precedence: deny, then write, then list, then read.
    fn rank(self) -> u8 {
        match self {
            Self::Deny => 3,
            Self::Write => 2,
            Self::List => 1,
            Self::Read => 0,
        }
    }
}

/// The resources the dev Consul enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// KV keys.
    Key,
    /// Services by name.
    Service,
    /// Nodes by name.
    Node,
    /// Sessions by node name.
    Session,
    /// Agents by node name.
    Agent,
}

impl Resource {
    const ALL: [Resource; 5] = [
        Self::Key,
        Self::Service,
        Self::Node,
        Self::Session,
        Self::Agent,
    ];

    /// Consul's spelling (`key`, `service`, ...), also the rule keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Service => "service",
            Self::Node => "node",
            Self::Session => "session",
            Self::Agent => "agent",
        }
    }
}

/// Exact and prefix rules stored for one name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Leaf {
    exact: Option<Access>,
    prefix: Option<Access>,
}

/// A policy that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("ACL policy {name}: {reason}")]
pub struct PolicyError {
    /// The policy's name (its file name, usually).
    pub name: String,
    /// What is wrong, naming the rule.
    pub reason: String,
}

/// One policy, or the merge of a token's policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsulPolicy {
    rules: BTreeMap<(Resource, String), Leaf>,
    /// The policy's name and ID, as a token's `Policies` links show them
    /// (empty for a merge).
    name: String,
    id: String,
}

impl ConsulPolicy {
    /// Parses rules in Consul's HCL rule syntax. `name` appears in errors.
    pub fn parse(name: &str, rules: &str) -> Result<Self, PolicyError> {
        let fail = |reason: String| PolicyError {
            name: name.to_owned(),
            reason,
        };
        let body = hcl::parse(rules).map_err(|e| fail(format!("syntax: {e}")))?;
        let mut policy = Self::default();
        if let Some(attr) = body.attributes().next() {
            return Err(fail(format!(
                "rule {:?} is not modelled by the dev stack (it enforces key, service, node, session and agent rules)",
                attr.key.as_str()
            )));
        }
        for block in body.blocks() {
            let ident = block.identifier.as_str();
            let (base, prefix) = match ident.strip_suffix("_prefix") {
                Some(base) => (base, true),
                None => (ident, false),
            };
            let Some(resource) = Resource::ALL.into_iter().find(|r| r.as_str() == base) else {
                return Err(fail(format!(
                    "rule {ident:?} is not modelled by the dev stack (it enforces key, service, node, session and agent rules)"
                )));
            };
            let [label] = block.labels.as_slice() else {
                return Err(fail(format!("{ident} needs exactly one name label")));
            };
            let segment = label.as_str().to_owned();
            let mut access = None;
            for attr in block.body.attributes() {
                if attr.key.as_str() != "policy" {
                    return Err(fail(format!(
                        "{ident} {segment:?}: attribute {:?} is not modelled by the dev stack (only policy)",
                        attr.key.as_str()
                    )));
                }
                let value = match &attr.expr {
                    hcl::Expression::String(s) => s.as_str(),
                    _ => {
                        return Err(fail(format!(
                            "{ident} {segment:?}: policy must be a string"
                        )));
                    }
                };
                access = Some(Access::parse(value, resource == Resource::Key).ok_or_else(
                    || fail(format!("{ident} {segment:?}: invalid policy {value:?}")),
                )?);
            }
            if let Some(inner) = block.body.blocks().next() {
                return Err(fail(format!(
                    "{ident} {segment:?}: block {:?} is not modelled by the dev stack",
                    inner.identifier.as_str()
                )));
            }
            let Some(access) = access else {
                return Err(fail(format!("{ident} {segment:?}: policy is missing")));
            };
            policy.insert(resource, segment, prefix, access);
        }
        Ok(policy.named(name))
    }

    /// The same rules under the name the operator gives the policy
    /// (`consul acl policy create -name`); its ID is derived from the name,
    /// shaped as Consul's (random) policy IDs are.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        let digest = crate::blake2b::blake2b_256(&[b"consul policy ", name.as_bytes()]);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        self.id = uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string();
        self
    }

    fn insert(&mut self, resource: Resource, segment: String, prefix: bool, access: Access) {
        let leaf = self.rules.entry((resource, segment)).or_default();
        let slot = if prefix {
            &mut leaf.prefix
        } else {
            &mut leaf.exact
        };
        *slot = Some(match *slot {
            Some(old) if old.rank() >= access.rank() => old,
            _ => access,
        });
    }

    /// The merge of several policies (a token's), rule by rule.
    pub fn merge<'a>(policies: impl IntoIterator<Item = &'a ConsulPolicy>) -> Self {
        let mut merged = Self::default();
        for p in policies {
            for ((resource, segment), leaf) in &p.rules {
                if let Some(a) = leaf.exact {
                    merged.insert(*resource, segment.clone(), false, a);
                }
                if let Some(a) = leaf.prefix {
                    merged.insert(*resource, segment.clone(), true, a);
                }
            }
        }
        merged
    }

    /// The rule that applies to `name`: its exact rule, else the longest
    /// prefix rule; `None` when nothing matches (the default policy).
    fn lookup(&self, resource: Resource, name: &str) -> Option<Access> {
        let mut found = None;
        for ((_, segment), leaf) in self
            .rules
            .range((resource, String::new())..)
            .take_while(|((r, _), _)| *r == resource)
        {
            if !name.starts_with(segment.as_str()) {
                continue;
            }
            if segment == name
                && let Some(exact) = leaf.exact
            {
                return Some(exact);
            }
            // Segments come in lexical order, so a longer matching prefix
            // comes after a shorter one.
            if let Some(p) = leaf.prefix {
                found = Some(p);
            }
        }
        found
    }

    /// Whether `needed` on `name` is allowed (default policy: deny).
    pub fn allows(&self, resource: Resource, name: &str, needed: Access) -> bool {
        self.lookup(resource, name)
            .is_some_and(|rule| rule.grants(needed))
    }

    /// Consul's `KeyWritePrefix`: write on the prefix itself, and no rule
    /// under it that withholds write (a recursive delete touches them all).
    pub fn allows_key_write_prefix(&self, prefix: &str) -> bool {
        if !self.allows(Resource::Key, prefix, Access::Write) {
            return false;
        }
        self.rules
            .iter()
            .filter(|((r, segment), _)| *r == Resource::Key && segment.starts_with(prefix))
            .all(|(_, leaf)| {
                [leaf.exact, leaf.prefix]
                    .into_iter()
                    .flatten()
                    .all(|a| a == Access::Write)
            })
    }
}

/// The anonymous token's AccessorID, as in Consul (its SecretID is `anonymous`).
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// Consul's built-in `global-management` policy, which management tokens hold.
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";

/// A token's link to a policy: the policy's ID and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLink {
    /// The policy's ID.
    pub id: String,
    /// The policy's name.
    pub name: String,
}

/// A token: its AccessorID, and what it may do.
#[derive(Debug, Clone)]
pub struct ConsulToken {
    /// Public ID, shown in denials.
    pub accessor_id: String,
    /// The secret sent in `X-Consul-Token`.
    pub secret_id: String,
    /// A description (`consul acl token read` shows it).
    pub description: String,
    /// `None`: the global-management policy (everything allowed).
    pub policy: Option<Arc<ConsulPolicy>>,
    /// The policies the token holds, as `/v1/acl/token/self` lists them.
    pub policies: Vec<PolicyLink>,
    /// When the token was created.
    pub create_time: std::time::SystemTime,
}

impl ConsulToken {
    /// A token holding the global-management policy.
    pub fn management(accessor_id: String, secret_id: String, description: &str) -> Self {
        Self {
            accessor_id,
            secret_id,
            description: description.to_owned(),
            policy: None,
            policies: vec![PolicyLink {
                id: GLOBAL_MANAGEMENT_ID.to_owned(),
                name: "global-management".to_owned(),
            }],
            create_time: std::time::SystemTime::now(),
        }
    }

    /// A token holding `policies` (merged).
    pub fn with_policies<'a>(
        accessor_id: String,
        secret_id: String,
        description: &str,
        policies: impl IntoIterator<Item = &'a ConsulPolicy>,
    ) -> Self {
        let policies: Vec<&ConsulPolicy> = policies.into_iter().collect();
        Self {
            accessor_id,
            secret_id,
            description: description.to_owned(),
            policy: Some(Arc::new(ConsulPolicy::merge(policies.iter().copied()))),
            policies: policies
                .iter()
                .map(|p| PolicyLink {
                    id: p.id.clone(),
                    name: p.name.clone(),
                })
                .collect(),
            create_time: std::time::SystemTime::now(),
        }
    }
}

/// The ACL system of the dev Consul: its tokens (by SecretID) and the
/// anonymous token, which holds no policy (default deny).
#[derive(Debug, Clone, Default)]
pub struct ConsulAcl {
    tokens: HashMap<String, Arc<ConsulToken>>,
    /// Raft-like index of each token's creation, by SecretID (the order
    /// they were given in, from 1).
    indexes: HashMap<String, u64>,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Anonymous,
    Token(Arc<ConsulToken>),
}

impl ConsulAcl {
    /// An ACL system with these tokens.
    pub fn new(tokens: impl IntoIterator<Item = ConsulToken>) -> Self {
        let tokens: Vec<ConsulToken> = tokens.into_iter().collect();
        Self {
            indexes: (1..)
                .zip(&tokens)
                .map(|(i, t)| (t.secret_id.clone(), i))
                .collect(),
            tokens: tokens
                .into_iter()
                .map(|t| (t.secret_id.clone(), Arc::new(t)))
                .collect(),
        }
    }

    /// `GET /v1/acl/token/self` for `secret`: the token as Consul renders an
    /// `ACLToken`, or `None` (`ACL not found`) when no token has that
    /// secret; the empty secret names none, `anonymous` the anonymous token.
    pub(crate) fn token_self(&self, secret: &str) -> Option<serde_json::Value> {
        if secret == "anonymous" {
            return Some(render_token(
                ANONYMOUS_ACCESSOR,
                "anonymous",
                "Anonymous Token",
                &[],
                SystemTime::UNIX_EPOCH,
                1,
            ));
        }
        let t = self.tokens.get(secret)?;
        let index = self.indexes.get(secret).copied().unwrap_or(1);
        Some(render_token(
            &t.accessor_id,
            &t.secret_id,
            &t.description,
            &t.policies,
            t.create_time,
            index,
        ))
    }

    /// Resolves a SecretID; an empty one is the anonymous token, as is its
    /// SecretID `anonymous`; an unknown one (the anonymous token's
    /// AccessorID among them: Consul looks tokens up by secret) is `None`
    /// (`ACL not found`).
    pub(crate) fn resolve(&self, secret: &str) -> Option<Caller> {
        if secret.is_empty() || secret == "anonymous" {
            return Some(Caller::Anonymous);
        }
        self.tokens.get(secret).cloned().map(Caller::Token)
    }
}

/// A token as Consul's API renders an `ACLToken` (the fields it leaves out
/// when empty left out), `Hash` as Consul's `SetHash` computes it: BLAKE2b-256
/// of the description, `global` (dev tokens are not local) and the policy
/// IDs.
fn render_token(
    accessor: &str,
    secret: &str,
    description: &str,
    policies: &[PolicyLink],
    created: SystemTime,
    index: u64,
) -> serde_json::Value {
    use base64::Engine as _;
    let mut parts: Vec<&[u8]> = vec![description.as_bytes(), b"global"];
    parts.extend(policies.iter().map(|p| p.id.as_bytes()));
    let hash =
        base64::engine::general_purpose::STANDARD.encode(crate::blake2b::blake2b_256(&parts));
    let mut token = serde_json::json!({
        "AccessorID": accessor,
        "SecretID": secret,
        "Description": description,
        "Local": false,
        "CreateTime": crate::nomad::util::rfc3339(created),
        "Hash": hash,
        "CreateIndex": index,
        "ModifyIndex": index,
    });
    if !policies.is_empty()
        && let Some(o) = token.as_object_mut()
    {
        let links: Vec<serde_json::Value> = policies
            .iter()
            .map(|p| serde_json::json!({"ID": p.id, "Name": p.name}))
            .collect();
        o.insert("Policies".into(), serde_json::Value::Array(links));
    }
    token
}

impl Caller {
    pub(crate) fn allows(&self, resource: Resource, name: &str, needed: Access) -> bool {
        match self {
            Self::Anonymous => false,
            Self::Token(t) => match &t.policy {
                None => true,
                Some(p) => p.allows(resource, name, needed),
            },
        }
    }

    pub(crate) fn allows_key_write_prefix(&self, prefix: &str) -> bool {
        match self {
            Self::Anonymous => false,
            Self::Token(t) => match &t.policy {
                None => true,
                Some(p) => p.allows_key_write_prefix(prefix),
            },
        }
    }

    /// Consul's 403 text for a missing permission.
    pub(crate) fn denial(&self, resource: Resource, needed: Access, name: &str) -> String {
        let who = match self {
            Self::Anonymous => "anonymous token".to_owned(),
            Self::Token(t) => format!("token with AccessorID '{}'", t.accessor_id),
        };
        let mut msg = format!(
            "Permission denied: {who} lacks permission '{}:{}'",
            resource.as_str(),
            needed.as_str()
        );
        if !name.is_empty() {
            msg += &format!(" on {name:?}");
        }
        if matches!(self, Self::Anonymous) {
            msg +=
                ". The anonymous token is used implicitly when a request does not specify a token.";
        }
        msg
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(rules: &str) -> ConsulPolicy {
        ConsulPolicy::parse("test", rules).unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let pol = p(r#"
            key_prefix "" { policy = "read" }
            key_prefix "switchyard/" { policy = "write" }
            key_prefix "switchyard/routes/" { policy = "deny" }
        "#);
        assert!(pol.allows(Resource::Key, "other", Access::Read));
        assert!(!pol.allows(Resource::Key, "other", Access::Write));
        assert!(pol.allows(Resource::Key, "switchyard/state/web", Access::Write));
        assert!(!pol.allows(Resource::Key, "switchyard/routes/web", Access::Read));
        // A name shorter than a prefix rule is not under it.
        assert!(!pol.allows(Resource::Key, "switchyard", Access::Write));
        assert!(pol.allows(Resource::Key, "switchyard", Access::Read));
    }

    #[test]
    fn exact_rule_beats_prefix_but_only_for_that_name() {
        let pol = p(r#"
            key_prefix "app/" { policy = "write" }
            key "app/config" { policy = "read" }
        "#);
        assert!(!pol.allows(Resource::Key, "app/config", Access::Write));
        assert!(pol.allows(Resource::Key, "app/config", Access::Read));
        // `key` is not a prefix: a longer name falls to the prefix rule.
        assert!(pol.allows(Resource::Key, "app/config2", Access::Write));
        let exact_only = p(r#"service "web" { policy = "write" }"#);
        assert!(exact_only.allows(Resource::Service, "web", Access::Write));
        assert!(!exact_only.allows(Resource::Service, "web-2", Access::Read));
    }

    #[test]
    fn no_rule_is_deny_and_levels_grant_what_consul_says() {
        let pol = p(r#"
            key_prefix "l/" { policy = "list" }
            key_prefix "r/" { policy = "read" }
            service_prefix "" { policy = "read" }
        "#);
        assert!(!pol.allows(Resource::Key, "x", Access::Read));
        assert!(!pol.allows(Resource::Node, "n", Access::Read));
        assert!(pol.allows(Resource::Key, "l/a", Access::List));
        assert!(pol.allows(Resource::Key, "l/a", Access::Read));
        assert!(!pol.allows(Resource::Key, "l/a", Access::Write));
        assert!(!pol.allows(Resource::Key, "r/a", Access::List));
        assert!(pol.allows(Resource::Service, "any", Access::Read));
        assert!(!pol.allows(Resource::Service, "any", Access::Write));
        // Rules of one resource say nothing about another.
        assert!(!pol.allows(Resource::Session, "l/a", Access::Read));
    }

    #[test]
    fn merging_deny_beats_write_beats_read_for_the_same_rule() {
        let a = p(r#"key_prefix "k/" { policy = "read" }"#);
        let b = p(r#"key_prefix "k/" { policy = "write" }"#);
        let c = p(r#"key_prefix "k/" { policy = "deny" }"#);
        assert!(ConsulPolicy::merge([&a, &b]).allows(Resource::Key, "k/x", Access::Write));
        assert!(!ConsulPolicy::merge([&a, &b, &c]).allows(Resource::Key, "k/x", Access::Read));
        // Merged before lookup: a longer write prefix of one policy still
        // wins over a shorter deny of another.
        let wide_deny = p(r#"key_prefix "" { policy = "deny" }"#);
        let narrow = p(r#"key_prefix "k/" { policy = "write" }"#);
        let m = ConsulPolicy::merge([&wide_deny, &narrow]);
        assert!(m.allows(Resource::Key, "k/x", Access::Write));
        assert!(!m.allows(Resource::Key, "j", Access::Read));
        // Within one policy too.
        let dup = p(r#"
            service "web" { policy = "write" }
            service "web" { policy = "deny" }
        "#);
        assert!(!dup.allows(Resource::Service, "web", Access::Read));
    }

    #[test]
    fn write_prefix_needs_no_weaker_rule_below() {
        let pol = p(r#"
            key_prefix "a/" { policy = "write" }
            key "a/locked" { policy = "read" }
            key_prefix "b/" { policy = "write" }
        "#);
        assert!(!pol.allows_key_write_prefix("a/"));
        assert!(pol.allows_key_write_prefix("b/"));
        assert!(pol.allows_key_write_prefix("a/x/"));
    }

    #[test]
    fn unmodelled_or_invalid_rules_are_refused() {
        for (rules, needle) in [
            (r#"operator = "read""#, "\"operator\" is not modelled"),
            (
                r#"event_prefix "" { policy = "read" }"#,
                "\"event_prefix\" is not modelled",
            ),
            (
                "service \"web\" {\n policy = \"write\"\n intentions = \"read\"\n}",
                "\"intentions\" is not modelled",
            ),
            (
                r#"service "web" { policy = "list" }"#,
                "invalid policy \"list\"",
            ),
            (
                r#"key "k" { policy = "admin" }"#,
                "invalid policy \"admin\"",
            ),
            (r#"key "k" {}"#, "policy is missing"),
            (r#"key { policy = "read" }"#, "one name label"),
            ("key \"k\" { policy = ", "syntax"),
        ] {
            let err = ConsulPolicy::parse("p.hcl", rules).unwrap_err().to_string();
            assert!(err.contains(needle), "{rules}: {err}");
            assert!(err.starts_with("ACL policy p.hcl: "), "{err}");
        }
    }

    #[test]
    fn denials_read_like_consul() {
        let acl = ConsulAcl::new([ConsulToken::with_policies(
            "acc-1".into(),
            "sec-1".into(),
            "proxy",
            [&p(r#"key_prefix "r/" { policy = "read" }"#)],
        )]);
        let Some(tok) = acl.resolve("sec-1") else {
            panic!("token not found")
        };
        assert_eq!(
            tok.denial(Resource::Key, Access::Write, "r/web"),
            "Permission denied: token with AccessorID 'acc-1' lacks permission 'key:write' on \"r/web\""
        );
        assert!(acl.resolve("nope").is_none());
        let anon = acl.resolve("").unwrap();
        assert!(!anon.allows(Resource::Key, "r/web", Access::Read));
        assert!(
            anon.denial(Resource::Key, Access::Read, "r/web")
                .starts_with("Permission denied: anonymous token lacks permission 'key:read' on \"r/web\". The anonymous token")
        );
    }

    #[test]
    fn the_shipped_policies_load() {
        for file in [
            "consul-proxy.hcl",
            "consul-operator.hcl",
            "consul-nomad-agent.hcl",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/acl")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            ConsulPolicy::parse(file, &text).unwrap();
        }
    }
}
