//! The one error type of both clients.

/// Why a Consul or Nomad call failed.
///
/// `Display` is complete on its own, cause included (`error sending request for url (..): client
/// error (Connect): tcp connect error: Connection refused`), so logging `%err` is enough.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request did not complete: connect failure, timeout, connection reset, I/O error while
    /// reading the body. Retrying later may help. `Display` prints reqwest's whole cause chain;
    /// the reqwest error is kept in the variant, not also returned by `source()`, so chain
    /// printers do not repeat it.
    #[error("{}", Chain(.0))]
    Transport(reqwest::Error),

    /// The server answered with a non-success status. `body` is the server's (text/plain) error
    /// message, trimmed and truncated.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },

    /// The server answered 403: the token (or its absence) does not allow this call.
    /// `Display` is one line naming the API, the request and the missing permission when the
    /// server named it (Consul does: `key:write on "switchyard/routes/web"`; Nomad does not).
    #[error("{0}")]
    PermissionDenied(Box<Denied>),

    /// The client could not be set up: unreadable token file, CA, certificate or key.
    #[error("{0}")]
    Config(String),

    /// The response body was not the JSON this crate expected.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// Which request or document, e.g. `response to GET /v1/health/service/web`.
        what: String,
        source: serde_json::Error,
    },

    /// A response header that must be a decimal integer (`X-Consul-Index`, `X-Nomad-Index`,
    /// `X-*-LastContact`) was present but unreadable.
    #[error("invalid {name} header: {value:?}")]
    InvalidHeader { name: &'static str, value: String },

    /// The configured agent address is not a usable `http(s)://host:port` or `unix://path`.
    #[error("invalid address: {0}")]
    InvalidAddress(String),

    /// A Nomad check-and-set write lost: `EnforceIndex` (`Enforcing job modify index ...`) or
    /// `EnforcePriorVersion` (`Current job has version X; enforcing version V`). The string is
    /// the server's message. Re-read the job and decide again.
    #[error("check-and-set conflict: {0}")]
    CasConflict(String),

    /// The caller passed something this crate cannot send or apply: a path segment of `.` or
    /// `..`, a token that is not a valid header value, a job without an ID, a task group or
    /// service that the job does not have, a check status with no TTL endpoint.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// What a 403 said: see [`Error::PermissionDenied`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Denied {
    /// `Consul` or `Nomad`.
    pub api: &'static str,
    /// `METHOD /path`.
    pub request: String,
    /// The permission the server said is missing, with its object.
    pub permission: Option<String>,
    /// The server's message, on one line.
    pub message: String,
    /// When no token was sent: the variable that sets one.
    pub token_env: Option<&'static str>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            api,
            request,
            permission,
            message,
            token_env,
        } = self;
        // An unknown token (Consul `ACL not found`, Nomad `ACL token not found`) is not a
        // missing permission: say so.
        if matches!(message.as_str(), "ACL not found" | "ACL token not found") {
            write!(
                f,
                "{api} refused {request} (403 {message}): {api} does not know the token"
            )?;
        } else {
            write!(f, "{api} refused {request} (403 Permission denied): ")?;
            match permission {
                Some(p) => write!(f, "the token lacks permission {p}")?,
                None => write!(
                    f,
                    "{message:?}: the token lacks a permission this call needs"
                )?,
            }
        }
        if let Some(var) = token_env {
            write!(f, "; no token was sent (set {var})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Denied {}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Transport(e)
    }
}

/// An error followed by its sources, `: `-separated. reqwest's own message names only the URL;
/// the reason (refused, reset, timed out) is further down the chain.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl Error {
    /// Whether the request failed in transit (connect, timeout, I/O), as opposed to an answer
    /// from the server.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport(_))
    }

    /// Whether the request timed out on the client side.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Transport(e) if e.is_timeout())
    }

    /// The HTTP status of a non-success answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::PermissionDenied(_) => Some(403),
            _ => None,
        }
    }

    /// Whether a check-and-set write lost against a concurrent change.
    pub fn is_cas_conflict(&self) -> bool {
        matches!(self, Error::CasConflict(_))
    }
}
