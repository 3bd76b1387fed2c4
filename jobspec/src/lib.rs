//! HCL job specifications to the Nomad API's JSON `Job` shape.
//!
//! Its own crate so that `switchyard check-config` validates job files with
//! the reader the dev Nomad uses for `/v1/jobs/parse`, without the binary
//! carrying the dev stack.
//!
//! `POST /v1/jobs/parse` has to hand back exactly what a real Nomad would, so a
//! client can parse a job file once and register the result against either
//! the dev stack or a real cluster. This module walks the `hcl-rs` syntax tree
//! (not a serde mapping) because Nomad's HCL is block-oriented (`group "x" {}`,
//! repeated `service {}` blocks, labelled `port "http" {}`) and the JSON field
//! names differ from the HCL ones (`max_parallel` → `MaxParallel`, durations
//! become integer nanoseconds).
//!
//! Runtime interpolations such as `${NOMAD_META_version}` are kept verbatim:
//! they are resolved per allocation by the driver, as on a Nomad client.
//! `var.<name>` references are resolved from `variable` blocks and the
//! request's `Variables`.

use std::collections::BTreeMap;

use hcl::{Block, Body, Expression, ObjectKey, TemplateExpr, TraversalOperator};
use serde_json::{Map, Value, json};

use std::time::Duration;

/// Why a job file could not be turned into a job.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not valid HCL.
    #[error("{0}")]
    Syntax(String),
    /// Valid HCL that is not a valid job specification.
    #[error("{0}")]
    Spec(String),
}

fn spec_err(msg: impl Into<String>) -> ParseError {
    ParseError::Spec(msg.into())
}

/// Parses one job file; `variables` is optional HCL text of `name = value`
/// assignments overriding `variable` defaults (the API's `Variables` field).
pub fn parse_job(src: &str, variables: Option<&str>) -> Result<Value, ParseError> {
    let body = hcl::parse(src).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let mut vars: BTreeMap<String, Value> = BTreeMap::new();
    for block in body
        .blocks()
        .filter(|b| b.identifier.as_str() == "variable")
    {
        let name = label(block, 0).ok_or_else(|| spec_err("variable block needs a name"))?;
        if let Some(attr) = block
            .body
            .attributes()
            .find(|a| a.key.as_str() == "default")
        {
            let v = eval(&attr.expr, &BTreeMap::new())?;
            vars.insert(name, v);
        }
    }
    if let Some(text) = variables.filter(|t| !t.trim().is_empty()) {
        let vbody = hcl::parse(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        for attr in vbody.attributes() {
            let v = eval(&attr.expr, &BTreeMap::new())?;
            vars.insert(attr.key.to_string(), v);
        }
    }
    let mut jobs = body.blocks().filter(|b| b.identifier.as_str() == "job");
    let job = jobs.next().ok_or_else(|| spec_err("no job block found"))?;
    if jobs.next().is_some() {
        return Err(spec_err("only one job block is allowed"));
    }
    let cx = Cx { vars };
    cx.job(job)
}

fn label(block: &Block, i: usize) -> Option<String> {
    block.labels.get(i).map(|l| l.as_str().to_string())
}

struct Cx {
    vars: BTreeMap<String, Value>,
}

/// Reads the attributes of a body into a map, evaluated.
fn attrs(body: &Body, vars: &BTreeMap<String, Value>) -> Result<Map<String, Value>, ParseError> {
    let mut out = Map::new();
    for a in body.attributes() {
        out.insert(a.key.to_string(), eval(&a.expr, vars)?);
    }
    Ok(out)
}

fn duration_ns(v: &Value, field: &str) -> Result<Value, ParseError> {
    match v {
        Value::String(s) => parse_go_duration(s)
            .map(|d| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
            .ok_or_else(|| spec_err(format!("{field}: invalid duration {s:?}"))),
        Value::Number(_) => Ok(v.clone()),
        _ => Err(spec_err(format!("{field}: expected a duration string"))),
    }
}

fn string_map(v: &Value, field: &str) -> Result<Value, ParseError> {
    let obj = v
        .as_object()
        .ok_or_else(|| spec_err(format!("{field}: expected a map")))?;
    let mut out = Map::new();
    for (k, v) in obj {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(spec_err(format!("{field}.{k}: expected a string"))),
        };
        out.insert(k.clone(), Value::String(s));
    }
    Ok(Value::Object(out))
}

/// A `meta {}` / `env {}` block or a `meta = {}` attribute.
fn map_field(
    body: &Body,
    name: &str,
    vars: &BTreeMap<String, Value>,
) -> Result<Option<Value>, ParseError> {
    let mut merged = Map::new();
    let mut seen = false;
    if let Some(a) = body.attributes().find(|a| a.key.as_str() == name) {
        seen = true;
        if let Value::Object(m) = string_map(&eval(&a.expr, vars)?, name)? {
            merged.extend(m);
        }
    }
    for b in body.blocks().filter(|b| b.identifier.as_str() == name) {
        seen = true;
        if let Value::Object(m) = string_map(&Value::Object(attrs(&b.body, vars)?), name)? {
            merged.extend(m);
        }
    }
    Ok(seen.then_some(Value::Object(merged)))
}

/// Refuses the blocks of `body` this reader does not model: dropping them
/// would run a job without settings its author wrote (a `template`, a
/// `constraint`, ...).
fn known_blocks(body: &Body, known: &[&str], at: &str) -> Result<(), ParseError> {
    let unknown: Vec<&str> = body
        .blocks()
        .map(|b| b.identifier.as_str())
        .filter(|id| !known.contains(id))
        .collect();
    match unknown.as_slice() {
        [] => Ok(()),
        list => Err(spec_err(format!(
            "{at}: unsupported block type{} {}: switchyard's job reader does not model {}",
            if list.len() == 1 { "" } else { "s" },
            list.iter()
                .map(|b| format!("{b:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            if list.len() == 1 { "it" } else { "them" }
        ))),
    }
}

/// Copies known attributes with their JSON names; durations converted.
fn map_attrs(
    src: &Map<String, Value>,
    out: &mut Map<String, Value>,
    plain: &[(&str, &str)],
    durations: &[(&str, &str)],
) -> Result<(), ParseError> {
    for (h, j) in plain {
        if let Some(v) = src.get(*h) {
            out.insert((*j).to_string(), v.clone());
        }
    }
    for (h, j) in durations {
        if let Some(v) = src.get(*h) {
            out.insert((*j).to_string(), duration_ns(v, h)?);
        }
    }
    Ok(())
}

impl Cx {
    fn job(&self, block: &Block) -> Result<Value, ParseError> {
        let id = label(block, 0).ok_or_else(|| spec_err("job block needs a name"))?;
        known_blocks(
            &block.body,
            &["meta", "update", "reschedule", "group"],
            &format!("job {id:?}"),
        )?;
        let a = attrs(&block.body, &self.vars)?;
        let mut job = Map::new();
        job.insert("ID".into(), json!(id));
        job.insert("Name".into(), json!(id));
        map_attrs(
            &a,
            &mut job,
            &[
                ("type", "Type"),
                ("datacenters", "Datacenters"),
                ("region", "Region"),
                ("namespace", "Namespace"),
                ("priority", "Priority"),
                ("all_at_once", "AllAtOnce"),
                ("node_pool", "NodePool"),
                ("name", "Name"),
            ],
            &[],
        )?;
        if let Some(m) = map_field(&block.body, "meta", &self.vars)? {
            job.insert("Meta".into(), m);
        }
        if let Some(u) = block
            .body
            .blocks()
            .find(|b| b.identifier.as_str() == "update")
        {
            job.insert("Update".into(), self.update(u)?);
        }
        if let Some(r) = block
            .body
            .blocks()
            .find(|b| b.identifier.as_str() == "reschedule")
        {
            job.insert("Reschedule".into(), self.reschedule(r)?);
        }
        let mut groups = Vec::new();
        for g in block
            .body
            .blocks()
            .filter(|b| b.identifier.as_str() == "group")
        {
            groups.push(self.group(g)?);
        }
        job.insert("TaskGroups".into(), Value::Array(groups));
        Ok(Value::Object(job))
    }

    fn update(&self, block: &Block) -> Result<Value, ParseError> {
        let a = attrs(&block.body, &self.vars)?;
        let mut u = Map::new();
        map_attrs(
            &a,
            &mut u,
            &[
                ("max_parallel", "MaxParallel"),
                ("health_check", "HealthCheck"),
                ("auto_revert", "AutoRevert"),
                ("auto_promote", "AutoPromote"),
                ("canary", "Canary"),
            ],
            &[
                ("min_healthy_time", "MinHealthyTime"),
                ("healthy_deadline", "HealthyDeadline"),
                ("progress_deadline", "ProgressDeadline"),
                ("stagger", "Stagger"),
            ],
        )?;
        Ok(Value::Object(u))
    }

    fn group(&self, block: &Block) -> Result<Value, ParseError> {
        let name = label(block, 0).ok_or_else(|| spec_err("group block needs a name"))?;
        known_blocks(
            &block.body,
            &[
                "meta",
                "network",
                "service",
                "task",
                "update",
                "restart",
                "reschedule",
                "ephemeral_disk",
            ],
            &format!("group {name:?}"),
        )?;
        let a = attrs(&block.body, &self.vars)?;
        let mut g = Map::new();
        g.insert("Name".into(), json!(name));
        map_attrs(
            &a,
            &mut g,
            &[("count", "Count")],
            &[("shutdown_delay", "ShutdownDelay")],
        )?;
        if let Some(m) = map_field(&block.body, "meta", &self.vars)? {
            g.insert("Meta".into(), m);
        }
        let mut networks = Vec::new();
        let mut services = Vec::new();
        let mut tasks = Vec::new();
        for b in block.body.blocks() {
            match b.identifier.as_str() {
                "network" => networks.push(self.network(b)?),
                "service" => services.push(self.service(b)?),
                "task" => tasks.push(self.task(b)?),
                "update" => {
                    g.insert("Update".into(), self.update(b)?);
                }
                "restart" => {
                    g.insert("RestartPolicy".into(), self.restart(b)?);
                }
                "reschedule" => {
                    g.insert("ReschedulePolicy".into(), self.reschedule(b)?);
                }
                "ephemeral_disk" => {
                    let a = attrs(&b.body, &self.vars)?;
                    let mut d = Map::new();
                    map_attrs(
                        &a,
                        &mut d,
                        &[
                            ("size", "SizeMB"),
                            ("sticky", "Sticky"),
                            ("migrate", "Migrate"),
                        ],
                        &[],
                    )?;
                    g.insert("EphemeralDisk".into(), Value::Object(d));
                }
                _ => {}
            }
        }
        if !networks.is_empty() {
            g.insert("Networks".into(), Value::Array(networks));
        }
        if !services.is_empty() {
            g.insert("Services".into(), Value::Array(services));
        }
        g.insert("Tasks".into(), Value::Array(tasks));
        Ok(Value::Object(g))
    }

    fn restart(&self, block: &Block) -> Result<Value, ParseError> {
        let a = attrs(&block.body, &self.vars)?;
        let mut r = Map::new();
        map_attrs(
            &a,
            &mut r,
            &[("attempts", "Attempts"), ("mode", "Mode")],
            &[("interval", "Interval"), ("delay", "Delay")],
        )?;
        Ok(Value::Object(r))
    }

    /// A `reschedule` block (job or group), as Nomad's `ReschedulePolicy`.
    fn reschedule(&self, block: &Block) -> Result<Value, ParseError> {
        let a = attrs(&block.body, &self.vars)?;
        let mut r = Map::new();
        map_attrs(
            &a,
            &mut r,
            &[
                ("attempts", "Attempts"),
                ("delay_function", "DelayFunction"),
                ("unlimited", "Unlimited"),
            ],
            &[
                ("interval", "Interval"),
                ("delay", "Delay"),
                ("max_delay", "MaxDelay"),
            ],
        )?;
        Ok(Value::Object(r))
    }

    fn network(&self, block: &Block) -> Result<Value, ParseError> {
        let a = attrs(&block.body, &self.vars)?;
        let mut n = Map::new();
        map_attrs(&a, &mut n, &[("mode", "Mode"), ("mbits", "MBits")], &[])?;
        let mut dynamic = Vec::new();
        let mut reserved = Vec::new();
        for p in block
            .body
            .blocks()
            .filter(|b| b.identifier.as_str() == "port")
        {
            let label = label(p, 0).ok_or_else(|| spec_err("port block needs a label"))?;
            let pa = attrs(&p.body, &self.vars)?;
            let mut port = Map::new();
            port.insert("Label".into(), json!(label));
            map_attrs(
                &pa,
                &mut port,
                &[("to", "To"), ("host_network", "HostNetwork")],
                &[],
            )?;
            match pa.get("static") {
                Some(v) => {
                    port.insert("Value".into(), v.clone());
                    reserved.push(Value::Object(port));
                }
                None => dynamic.push(Value::Object(port)),
            }
        }
        if !dynamic.is_empty() {
            n.insert("DynamicPorts".into(), Value::Array(dynamic));
        }
        if !reserved.is_empty() {
            n.insert("ReservedPorts".into(), Value::Array(reserved));
        }
        Ok(Value::Object(n))
    }

    fn service(&self, block: &Block) -> Result<Value, ParseError> {
        known_blocks(&block.body, &["meta", "canary_meta", "check"], "service")?;
        let a = attrs(&block.body, &self.vars)?;
        let mut s = Map::new();
        map_attrs(
            &a,
            &mut s,
            &[
                ("name", "Name"),
                ("port", "PortLabel"),
                ("tags", "Tags"),
                ("canary_tags", "CanaryTags"),
                ("address_mode", "AddressMode"),
                ("address", "Address"),
                ("provider", "Provider"),
                ("task", "TaskName"),
                ("on_update", "OnUpdate"),
                ("enable_tag_override", "EnableTagOverride"),
            ],
            &[],
        )?;
        if let Some(Value::Number(n)) = s.get("PortLabel") {
            let n = n.to_string();
            s.insert("PortLabel".into(), json!(n));
        }
        if let Some(m) = map_field(&block.body, "meta", &self.vars)? {
            s.insert("Meta".into(), m);
        }
        if let Some(m) = map_field(&block.body, "canary_meta", &self.vars)? {
            s.insert("CanaryMeta".into(), m);
        }
        let mut checks = Vec::new();
        for c in block
            .body
            .blocks()
            .filter(|b| b.identifier.as_str() == "check")
        {
            let ca = attrs(&c.body, &self.vars)?;
            let mut check = Map::new();
            map_attrs(
                &ca,
                &mut check,
                &[
                    ("name", "Name"),
                    ("type", "Type"),
                    ("path", "Path"),
                    ("protocol", "Protocol"),
                    ("method", "Method"),
                    ("port", "PortLabel"),
                    ("initial_status", "InitialStatus"),
                    ("address_mode", "AddressMode"),
                    ("tls_skip_verify", "TLSSkipVerify"),
                    ("on_update", "OnUpdate"),
                    ("command", "Command"),
                    ("args", "Args"),
                    ("task", "TaskName"),
                ],
                &[("interval", "Interval"), ("timeout", "Timeout")],
            )?;
            if let Some(h) = ca.get("header") {
                check.insert("Header".into(), h.clone());
            }
            checks.push(Value::Object(check));
        }
        if !checks.is_empty() {
            s.insert("Checks".into(), Value::Array(checks));
        }
        Ok(Value::Object(s))
    }

    fn task(&self, block: &Block) -> Result<Value, ParseError> {
        let name = label(block, 0).ok_or_else(|| spec_err("task block needs a name"))?;
        known_blocks(
            &block.body,
            &["config", "resources", "service", "restart", "meta", "env"],
            &format!("task {name:?}"),
        )?;
        let a = attrs(&block.body, &self.vars)?;
        let mut t = Map::new();
        t.insert("Name".into(), json!(name));
        map_attrs(
            &a,
            &mut t,
            &[
                ("driver", "Driver"),
                ("user", "User"),
                ("leader", "Leader"),
                ("kill_signal", "KillSignal"),
            ],
            &[
                ("kill_timeout", "KillTimeout"),
                ("shutdown_delay", "ShutdownDelay"),
            ],
        )?;
        if let Some(m) = map_field(&block.body, "meta", &self.vars)? {
            t.insert("Meta".into(), m);
        }
        if let Some(m) = map_field(&block.body, "env", &self.vars)? {
            t.insert("Env".into(), m);
        }
        let mut services = Vec::new();
        for b in block.body.blocks() {
            match b.identifier.as_str() {
                "config" => {
                    t.insert("Config".into(), self.free_form(&b.body)?);
                }
                "resources" => {
                    let ra = attrs(&b.body, &self.vars)?;
                    let mut r = Map::new();
                    map_attrs(
                        &ra,
                        &mut r,
                        &[
                            ("cpu", "CPU"),
                            ("cores", "Cores"),
                            ("memory", "MemoryMB"),
                            ("memory_max", "MemoryMaxMB"),
                        ],
                        &[],
                    )?;
                    t.insert("Resources".into(), Value::Object(r));
                }
                "service" => services.push(self.service(b)?),
                "restart" => {
                    t.insert("RestartPolicy".into(), self.restart(b)?);
                }
                _ => {}
            }
        }
        if !services.is_empty() {
            t.insert("Services".into(), Value::Array(services));
        }
        Ok(Value::Object(t))
    }

    /// Driver `config` bodies are free-form: attributes map to keys, nested
    /// blocks to arrays of objects (as Nomad decodes e.g. docker `port_map`).
    fn free_form(&self, body: &Body) -> Result<Value, ParseError> {
        let mut out = attrs(body, &self.vars)?;
        for b in body.blocks() {
            let v = self.free_form(&b.body)?;
            match out
                .entry(b.identifier.to_string())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(v),
                other => *other = Value::Array(vec![v]),
            }
        }
        Ok(Value::Object(out))
    }
}

/// Evaluates the subset of HCL expressions a job file uses: literals,
/// collections, quoted templates (kept verbatim apart from `var.` references)
/// and `var.<name>` traversals.
fn eval(e: &Expression, vars: &BTreeMap<String, Value>) -> Result<Value, ParseError> {
    Ok(match e {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(*b),
        Expression::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().unwrap_or(0.0))
            }
        }
        Expression::String(s) => Value::String(s.clone()),
        Expression::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| eval(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Expression::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                let key = match k {
                    ObjectKey::Identifier(i) => i.to_string(),
                    ObjectKey::Expression(e) => match eval(e, vars)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    _ => return Err(spec_err("unsupported object key")),
                };
                out.insert(key, eval(v, vars)?);
            }
            Value::Object(out)
        }
        Expression::TemplateExpr(t) => {
            let raw = match t.as_ref() {
                TemplateExpr::QuotedString(s) => unescape(s),
                TemplateExpr::Heredoc(h) => h.template.clone(),
            };
            Value::String(substitute_vars(&raw, vars)?)
        }
        Expression::Traversal(t) => {
            let root = match &t.expr {
                Expression::Variable(v) => v.as_str().to_string(),
                _ => return Err(spec_err("unsupported traversal expression")),
            };
            match (root.as_str(), t.operators.first()) {
                ("var", Some(TraversalOperator::GetAttr(name))) if t.operators.len() == 1 => vars
                    .get(name.as_str())
                    .cloned()
                    .ok_or_else(|| spec_err(format!("Unknown variable: var.{}", name.as_str())))?,
                _ => return Err(spec_err(format!("unsupported reference to {root}"))),
            }
        }
        Expression::Parenthesis(inner) => eval(inner, vars)?,
        Expression::Variable(v) => {
            return Err(spec_err(format!("Unknown variable: {}", v.as_str())));
        }
        _ => return Err(spec_err("unsupported expression in job file")),
    })
}

/// Resolves the escape sequences of a quoted HCL string (the parser keeps
/// template strings raw). `$${` and `%%{` are the literal escapes.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Replaces `${var.name}` with the variable's value; every other `${…}` is a
/// runtime interpolation and is kept as written.
fn substitute_vars(s: &str, vars: &BTreeMap<String, Value>) -> Result<String, ParseError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        // `$${` is an escaped literal `${`.
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[pos..]);
            return Ok(out);
        };
        let inner = after[..end].trim();
        if let Some(name) = inner.strip_prefix("var.") {
            let v = vars
                .get(name)
                .ok_or_else(|| spec_err(format!("Unknown variable: var.{name}")))?;
            match v {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        } else {
            out.push_str("${");
            out.push_str(&after[..end]);
            out.push('}');
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a Go duration (`1s`, `1m30s`, `250ms`, `1.5h`); `None` if invalid.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_services_and_durations() {
        let src = r#"
variable "image" { default = "img:1" }
job "demo" {
  datacenters = ["dc1"]
  meta { team = "x" }
  group "web" {
    count = 2
    meta { version = "v1" }
    network {
      port "http" {}
    }
    shutdown_delay = "1s"
    service {
      name = "web"
      port = "http"
      tags = ["a", "version=${NOMAD_META_version}"]
      check {
        type = "http"
        path = "/health"
        interval = "1s"
        timeout = "500ms"
      }
    }
    update {
      max_parallel     = 2
      min_healthy_time = "1m30s"
    }
    task "t" {
      driver = "raw_exec"
      config {
        command = "x"
        image = "${var.image}"
        args = ["--port", "${NOMAD_PORT_http}"]
      }
      kill_timeout = "5s"
    }
  }
}
"#;
        let job = parse_job(src, Some("image = \"img:2\"")).unwrap();
        assert_eq!(job["ID"], "demo");
        assert_eq!(job["Meta"]["team"], "x");
        let g = &job["TaskGroups"][0];
        assert_eq!(g["Count"], 2);
        assert_eq!(g["ShutdownDelay"], 1_000_000_000u64);
        assert_eq!(g["Networks"][0]["DynamicPorts"][0]["Label"], "http");
        assert_eq!(g["Services"][0]["Tags"][1], "version=${NOMAD_META_version}");
        assert_eq!(g["Services"][0]["Checks"][0]["Timeout"], 500_000_000u64);
        assert_eq!(g["Update"]["MinHealthyTime"], 90_000_000_000u64);
        let t = &g["Tasks"][0];
        assert_eq!(t["Config"]["image"], "img:2");
        assert_eq!(t["Config"]["args"][1], "${NOMAD_PORT_http}");
        assert_eq!(t["KillTimeout"], 5_000_000_000u64);
    }

    #[test]
    fn parses_reschedule_blocks_of_job_and_group() {
        let src = r#"
job "demo" {
  reschedule {
    delay          = "10s"
    delay_function = "constant"
  }
  group "web" {
    reschedule {
      attempts  = 3
      interval  = "1h"
      max_delay = "2m"
      unlimited = false
    }
    task "t" {
      driver = "raw_exec"
      config { command = "x" }
    }
  }
}
"#;
        let job = parse_job(src, None).unwrap();
        assert_eq!(job["Reschedule"]["Delay"], 10_000_000_000u64);
        assert_eq!(job["Reschedule"]["DelayFunction"], "constant");
        let r = &job["TaskGroups"][0]["ReschedulePolicy"];
        assert_eq!(r["Attempts"], 3);
        assert_eq!(r["Interval"], 3_600_000_000_000u64);
        assert_eq!(r["MaxDelay"], 120_000_000_000u64);
        assert_eq!(r["Unlimited"], false);
    }

    #[test]
    fn refuses_blocks_it_does_not_model() {
        let src = r#"
job "demo" {
  group "web" {
    task "t" {
      driver = "raw_exec"
      config { command = "x" }
      template {
        data        = "x"
        destination = "local/x"
      }
    }
  }
}
"#;
        let err = parse_job(src, None).unwrap_err().to_string();
        assert!(
            err.contains("task \"t\"") && err.contains("\"template\""),
            "{err}"
        );
        let src = r#"
job "demo" {
  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }
  group "web" {
    task "t" {
      driver = "raw_exec"
    }
  }
}
"#;
        let err = parse_job(src, None).unwrap_err().to_string();
        assert!(
            err.contains("job \"demo\"") && err.contains("\"constraint\""),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            parse_job("job {", None),
            Err(ParseError::Syntax(_))
        ));
        assert!(parse_job("group \"x\" {}", None).is_err());
        let bad_duration = "job \"a\" {\n  group \"g\" {\n    shutdown_delay = \"soon\"\n  }\n}";
        assert!(matches!(
            parse_job(bad_duration, None),
            Err(ParseError::Spec(_))
        ));
        assert!(parse_job("job \"a\" { region = var.nope }", None).is_err());
    }
}
