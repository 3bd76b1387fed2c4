//! HTTP plumbing shared by the Consul and Nomad clients: URL building with strict percent-encoding,
//! per-request timeouts, status handling and `X-*-Index` parsing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::tls::TlsConfig;
use crate::{Error, QueryMeta, QueryOptions, duration_millis};

/// Timeout for requests that do not block.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What both servers use when a blocking read sends no `wait`.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Added to `wait + wait/16` for a blocking read's timeout: network and queueing time.
const BLOCKING_SLACK: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Error bodies are kept up to this many bytes.
const MAX_ERROR_BODY: usize = 1024;

/// The header names of one product.
#[derive(Debug)]
pub(crate) struct Flavor {
    pub(crate) product: &'static str,
    token: &'static str,
    /// The variable an operator sets to send a token.
    token_env: &'static str,
    index: &'static str,
    known_leader: &'static str,
    last_contact: &'static str,
}

pub(crate) const CONSUL: Flavor = Flavor {
    product: "Consul",
    token: "X-Consul-Token",
    token_env: "CONSUL_HTTP_TOKEN",
    index: "X-Consul-Index",
    known_leader: "X-Consul-KnownLeader",
    last_contact: "X-Consul-LastContact",
};

pub(crate) const NOMAD: Flavor = Flavor {
    product: "Nomad",
    token: "X-Nomad-Token",
    token_env: "NOMAD_TOKEN",
    index: "X-Nomad-Index",
    known_leader: "X-Nomad-KnownLeader",
    last_contact: "X-Nomad-LastContact",
};

/// The timeout for a read with these options: 10 s, or for a blocking read
/// `wait + wait/16 + 5 s` (the servers add up to `wait/16` of jitter).
pub(crate) fn read_timeout(opts: &QueryOptions) -> Duration {
    if opts.index == 0 {
        return REQUEST_TIMEOUT;
    }
    let wait = match opts.wait {
        Some(w) if !w.is_zero() => w,
        _ => DEFAULT_WAIT,
    };
    wait + wait / 16 + BLOCKING_SLACK
}

/// One client's connection to one agent.
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    base: String,
    token: Option<HeaderValue>,
    /// Parameters sent on every request (`dc`, `region`, `namespace`).
    common: Vec<(&'static str, String)>,
    flavor: &'static Flavor,
}

impl Transport {
    pub(crate) fn new(
        flavor: &'static Flavor,
        address: &str,
        token: Option<&str>,
        tls: &TlsConfig,
        common: Vec<(&'static str, String)>,
    ) -> Result<Self, Error> {
        let (base, socket) = parse_address(address)?;
        let token = match token.filter(|t| !t.is_empty()) {
            Some(t) => {
                let mut value = HeaderValue::from_str(t).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "the {} token contains characters not allowed in a header",
                        flavor.product
                    ))
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let builder = if base.starts_with("https://") {
            reqwest::Client::builder().tls_backend_preconfigured(tls.client_config(flavor.product)?)
        } else {
            crate::tls::http_client_builder()
        };
        let mut builder = builder
            .user_agent(concat!("switchyard-hashi/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(socket) = socket {
            builder = builder.unix_socket(socket);
        }
        let http = builder.build()?;
        Ok(Transport {
            http,
            base,
            token,
            common,
            flavor,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and reads the whole answer. Any status comes back as a [`Reply`]; only a
    /// failure to get an answer is an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &Path,
        query: &Query,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let mut url = String::with_capacity(self.base.len() + path.0.len() + 64);
        url.push_str(&self.base);
        url.push_str(&path.0);
        query.write(&self.common, &mut url);

        let mut request = self.http.request(method.clone(), &url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.header(self.flavor.token, token.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, body.content_type)
                .body(body.bytes);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        tracing::trace!(
            product = self.flavor.product,
            %method,
            path = %path.0,
            status = status.as_u16(),
            "api call"
        );
        Ok(Reply {
            status,
            headers,
            body,
            request: format!("{method} {}", path.0),
            token_sent: self.token.is_some(),
            flavor: self.flavor,
        })
    }
}

/// The base URL of an agent address, and the Unix socket to connect to, if any.
///
/// `unix:///path/to.sock` is a socket (requests then go to `http://localhost` over it);
/// everything else goes through [`normalize_address`].
fn parse_address(address: &str) -> Result<(String, Option<PathBuf>), Error> {
    let address = address.trim();
    if let Some(path) = address.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(Error::InvalidAddress(format!(
                "{address:?}: expected unix:///path/to/socket"
            )));
        }
        return Ok(("http://localhost".to_owned(), Some(PathBuf::from(path))));
    }
    Ok((normalize_address(address)?, None))
}

/// `host:port`, `http://host:port` or `https://host:port` as `scheme://host:port` (no trailing
/// slash); without a scheme, `http`.
fn normalize_address(address: &str) -> Result<String, Error> {
    let address = address.trim();
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| Error::InvalidAddress(format!("{address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidAddress(format!(
            "{address:?}: expected http://, https:// or unix://"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidAddress(format!("{address:?}: no host")));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(Error::InvalidAddress(format!(
            "{address:?}: expected scheme://host:port with nothing after the port"
        )));
    }
    Ok(url.origin().ascii_serialization())
}

/// The permission a Consul 403 names: `Permission denied: token with AccessorID '…' lacks
/// permission 'key:write' on "web"` gives `key:write on "web"`. Nomad's bare `Permission
/// denied` names none.
fn missing_permission(body: &str) -> Option<String> {
    let (_, rest) = body.split_once("lacks permission '")?;
    let (permission, rest) = rest.split_once('\'')?;
    let on = rest.trim_start().strip_prefix("on ").map(str::trim);
    Some(match on {
        Some(object) if !object.is_empty() => {
            let object = object.lines().next().unwrap_or(object);
            // The object is quoted; Consul may append a sentence after it (the anonymous token's
            // "The anonymous token is used implicitly ...").
            let object = match object.strip_prefix('"').and_then(|rest| rest.find('"')) {
                Some(end) => object.get(..end + 2).unwrap_or(object),
                None => object,
            };
            format!("{permission} on {object}")
        }
        _ => permission.to_owned(),
    })
}

/// An encoded request path, built from fixed parts and percent-encoded segments.
#[derive(Debug)]
pub(crate) struct Path(String);

impl Path {
    /// A fixed, already-valid path such as `/v1/catalog/services`.
    pub(crate) fn new(fixed: &'static str) -> Self {
        Path(fixed.to_owned())
    }

    /// Appends `/` and one percent-encoded segment (a `/` inside it is encoded too).
    pub(crate) fn segment(mut self, segment: &str) -> Result<Self, Error> {
        check_segment(segment, segment)?;
        self.0.push('/');
        encode_into(&mut self.0, segment);
        Ok(self)
    }

    /// Appends `/` and a KV key or prefix whose `/`s stay path separators. A leading `/` is
    /// dropped, as the Go client does (`/web/a` and `web/a` are the same key).
    pub(crate) fn key(mut self, key: &str) -> Result<Self, Error> {
        let key = key.strip_prefix('/').unwrap_or(key);
        self.0.push('/');
        for (i, part) in key.split('/').enumerate() {
            check_segment(part, key)?;
            if i > 0 {
                self.0.push('/');
            }
            encode_into(&mut self.0, part);
        }
        Ok(self)
    }
}

/// `.` and `..` would be resolved away by URL normalisation, silently naming something else.
fn check_segment(segment: &str, whole: &str) -> Result<(), Error> {
    if segment == "." || segment == ".." {
        return Err(Error::InvalidArgument(format!(
            "{whole:?}: a path segment of \".\" or \"..\" cannot be sent"
        )));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Query parameters in the order they were added. A parameter without a value is sent bare
/// (`?stale`).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(&'static str, Option<String>)>);

impl Query {
    /// The parameters of a read: `index` and `wait` when blocking, `stale` when asked for.
    pub(crate) fn read(opts: &QueryOptions) -> Self {
        let mut q = Query::default();
        if opts.index > 0 {
            q.pair("index", opts.index.to_string());
            if let Some(wait) = opts.wait.filter(|w| !w.is_zero()) {
                q.pair("wait", format!("{}ms", duration_millis(wait)));
            }
        }
        if opts.stale {
            q.flag("stale");
        }
        q
    }

    pub(crate) fn pair(&mut self, key: &'static str, value: impl Into<String>) -> &mut Self {
        self.0.push((key, Some(value.into())));
        self
    }

    pub(crate) fn flag(&mut self, key: &'static str) -> &mut Self {
        self.0.push((key, None));
        self
    }

    fn write(&self, common: &[(&'static str, String)], out: &mut String) {
        let own = self.0.iter().map(|(k, v)| (*k, v.as_deref()));
        let common = common.iter().map(|(k, v)| (*k, Some(v.as_str())));
        for (i, (key, value)) in own.chain(common).enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            encode_into(out, key);
            if let Some(value) = value {
                out.push('=');
                encode_into(out, value);
            }
        }
    }
}

/// A request body with its content type.
#[derive(Debug)]
pub(crate) struct Body {
    bytes: Vec<u8>,
    content_type: &'static str,
}

impl Body {
    pub(crate) fn json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Decode {
            what: format!("{what} request body (encoding)"),
            source,
        })?;
        Ok(Body {
            bytes,
            content_type: "application/json",
        })
    }

    pub(crate) fn raw(bytes: &[u8]) -> Self {
        Body {
            bytes: bytes.to_vec(),
            content_type: "application/octet-stream",
        }
    }
}

/// A complete answer of any status.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// `METHOD /path`, for errors.
    request: String,
    token_sent: bool,
    flavor: &'static Flavor,
}

impl Reply {
    /// Passes a 2xx answer through and turns any other into [`Error::Status`].
    pub(crate) fn success(self) -> Result<Self, Error> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.into_status_error())
        }
    }

    /// The error for a non-success answer: [`Error::PermissionDenied`] for a 403, else
    /// [`Error::Status`].
    pub(crate) fn into_status_error(self) -> Error {
        let body = self.error_text();
        if self.status == StatusCode::FORBIDDEN {
            return Error::PermissionDenied(Box::new(crate::error::Denied {
                api: self.flavor.product,
                request: self.request,
                permission: missing_permission(&body),
                message: body.split_whitespace().collect::<Vec<_>>().join(" "),
                token_env: (!self.token_sent).then_some(self.flavor.token_env),
            }));
        }
        Error::Status {
            status: self.status.as_u16(),
            body,
        }
    }

    /// The body as text, trimmed and cut to [`MAX_ERROR_BODY`] bytes.
    pub(crate) fn error_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.len() <= MAX_ERROR_BODY {
            return text.to_owned();
        }
        let mut end = MAX_ERROR_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }

    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            what: format!("response to {}", self.request),
            source,
        })
    }

    /// Reads the index, known-leader and last-contact headers (see the crate docs for the rules).
    pub(crate) fn meta(&self) -> Result<QueryMeta, Error> {
        let known_leader = self
            .headers
            .get(self.flavor.known_leader)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(QueryMeta {
            index: self.header_u64(self.flavor.index)?.unwrap_or(0),
            known_leader,
            last_contact: Duration::from_millis(
                self.header_u64(self.flavor.last_contact)?.unwrap_or(0),
            ),
        })
    }

    /// The index header alone, when present and readable.
    pub(crate) fn index(&self) -> Result<Option<u64>, Error> {
        self.header_u64(self.flavor.index)
    }

    fn header_u64(&self, name: &'static str) -> Result<Option<u64>, Error> {
        let Some(value) = self.headers.get(name) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Error::InvalidHeader {
                name,
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        let ok = |a: &str| normalize_address(a).unwrap();
        assert_eq!(ok("127.0.0.1:8500"), "http://127.0.0.1:8500");
        assert_eq!(ok("http://127.0.0.1:8500"), "http://127.0.0.1:8500");
        assert_eq!(
            ok("http://consul.service:8500/"),
            "http://consul.service:8500"
        );
        assert_eq!(ok(" localhost:4646 "), "http://localhost:4646");
        assert_eq!(ok("[::1]:8500"), "http://[::1]:8500");
        assert_eq!(ok("http://example.com"), "http://example.com");
        assert_eq!(ok("https://127.0.0.1:8501/"), "https://127.0.0.1:8501");
        assert_eq!(
            parse_address("unix:///var/run/consul.sock").unwrap(),
            (
                "http://localhost".to_owned(),
                Some(PathBuf::from("/var/run/consul.sock"))
            )
        );
        assert!(parse_address("unix://").is_err());
        assert_eq!(
            parse_address("consul:8500").unwrap(),
            ("http://consul:8500".to_owned(), None)
        );
        for bad in [
            "ftp://127.0.0.1:8501",
            "unix:///var/run/consul.sock",
            "http://host:8500/prefix",
            "http://user:pw@host:8500",
            "http://:8500",
            "host:notaport",
            "",
        ] {
            assert!(
                matches!(normalize_address(bad), Err(Error::InvalidAddress(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn the_missing_permission_is_read_from_consul_denials() {
        assert_eq!(
            missing_permission(
                "Permission denied: token with AccessorID 'a1b2' lacks permission 'key:write' on \"switchyard/routes/web\""
            )
            .as_deref(),
            Some("key:write on \"switchyard/routes/web\"")
        );
        // Consul before 1.16.
        assert_eq!(
            missing_permission(
                "Permission denied: accessor 'x' lacks permission 'service:read' on web"
            )
            .as_deref(),
            Some("service:read on web")
        );
        // The anonymous token's denial goes on after the object.
        assert_eq!(
            missing_permission(
                "Permission denied: anonymous token lacks permission 'key:read' on \"a/b\". The anonymous token is used implicitly when a request does not specify a token."
            )
            .as_deref(),
            Some("key:read on \"a/b\"")
        );
        assert_eq!(missing_permission("Permission denied"), None);
        assert_eq!(missing_permission("rpc error: Permission denied"), None);
    }

    #[test]
    fn segments_and_keys_are_encoded() {
        let p = Path::new("/v1/health/service")
            .segment("web api/x?")
            .unwrap();
        assert_eq!(p.0, "/v1/health/service/web%20api%2Fx%3F");
        let p = Path::new("/v1/kv").key("/app/blue green/cfg%").unwrap();
        assert_eq!(p.0, "/v1/kv/app/blue%20green/cfg%25");
        let p = Path::new("/v1/kv").key("web/subdir/").unwrap();
        assert_eq!(p.0, "/v1/kv/web/subdir/");
        let p = Path::new("/v1/kv").key("").unwrap();
        assert_eq!(p.0, "/v1/kv/");
        let p = Path::new("/v1/agent/check/pass")
            .segment("_nomad-check-ab:c")
            .unwrap();
        assert_eq!(p.0, "/v1/agent/check/pass/_nomad-check-ab%3Ac");
        assert!(Path::new("/v1/kv").key("a/../b").is_err());
        assert!(Path::new("/v1/job").segment("..").is_err());
        assert!(Path::new("/v1/kv").key("a/.x/b").is_ok());
    }

    #[test]
    fn read_query_and_timeouts() {
        let mut out = String::new();
        Query::read(&QueryOptions::default()).write(&[], &mut out);
        assert_eq!(out, "");

        let opts = QueryOptions {
            index: 42,
            wait: Some(Duration::from_secs(300)),
            stale: true,
        };
        let mut out = String::new();
        let mut q = Query::read(&opts);
        q.pair("filter", "Service.Meta.v == \"2\"");
        q.write(&[("dc", "dc 2".to_owned())], &mut out);
        assert_eq!(
            out,
            "?index=42&wait=300000ms&stale&filter=Service.Meta.v%20%3D%3D%20%222%22&dc=dc%202"
        );

        // No wait without an index; no zero wait.
        let mut out = String::new();
        Query::read(&QueryOptions {
            index: 0,
            wait: Some(Duration::from_secs(1)),
            stale: false,
        })
        .write(&[], &mut out);
        assert_eq!(out, "");
        let mut out = String::new();
        Query::read(&QueryOptions {
            index: 3,
            wait: Some(Duration::ZERO),
            stale: false,
        })
        .write(&[], &mut out);
        assert_eq!(out, "?index=3");

        assert_eq!(read_timeout(&QueryOptions::default()), REQUEST_TIMEOUT);
        assert_eq!(
            read_timeout(&opts),
            Duration::from_secs(300) + Duration::from_millis(18_750) + BLOCKING_SLACK
        );
        // Blocking without a wait: the servers' 5 minute default.
        assert_eq!(
            read_timeout(&QueryOptions {
                index: 1,
                ..Default::default()
            }),
            read_timeout(&opts)
        );
    }
}
