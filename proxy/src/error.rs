//! Data-plane errors and the one place that turns them into HTTP responses.
//!
//! Every failure on the request path becomes a [`ProxyError`]; nothing else in
//! the crate writes a synthetic status code. [`ProxyError::status`] is the
//! whole mapping: 4xx for what the client got wrong, 502 when the upstream
//! failed, 503 when there is no instance to ask, 504 when it was too slow.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// A failure on the request path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No route matched the request's host and path.
    #[error("no route for host {host:?} and path {path:?}")]
    NoRoute {
        /// Host as received (without port).
        host: String,
        /// Path as received.
        path: String,
    },
    /// The request is malformed in a way hyper did not already reject.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A request feature the proxy cannot forward faithfully.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// A method this reverse proxy does not forward (CONNECT).
    #[error("method {0} is not supported by a reverse proxy")]
    MethodNotAllowed(http::Method),
    /// The selected pool has no instance that may take requests.
    #[error("no {pool} instance available for service {service}")]
    NoInstance {
        /// Service name.
        service: String,
        /// `active` or `standby`.
        pool: &'static str,
    },
    /// Connecting to an upstream instance failed on every try.
    #[error("upstream {addr} refused or failed the connection: {reason}")]
    Connect {
        /// Last instance tried.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The upstream did not answer with a response head in time.
    #[error("upstream {addr} sent no response within {timeout_ms} ms")]
    ResponseTimeout {
        /// Instance.
        addr: SocketAddr,
        /// The configured timeout.
        timeout_ms: u128,
    },
    /// The upstream stopped reading the request body for longer than the
    /// send idle timeout.
    #[error("upstream {addr} read none of the request body for {timeout_ms} ms")]
    SendTimeout {
        /// Instance.
        addr: SocketAddr,
        /// The configured timeout.
        timeout_ms: u128,
    },
    /// The client paused its request body for longer than the read idle
    /// timeout.
    #[error("the client sent none of its request body for {timeout_ms} ms")]
    ClientBodyTimeout {
        /// The configured timeout.
        timeout_ms: u128,
    },
    /// Connecting took longer than the connect timeout on every try.
    #[error("connecting to upstream {addr} timed out")]
    ConnectTimeout {
        /// Last instance tried.
        addr: SocketAddr,
    },
    /// The upstream closed or broke the connection, or sent an invalid response.
    #[error("upstream {addr} failed: {reason}")]
    Upstream {
        /// Instance.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The proxy is shutting down and takes no new requests.
    #[error("proxy is shutting down")]
    ShuttingDown,
}

impl ProxyError {
    /// The status code for this error: the whole mapping lives here.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoInstance { .. } | ProxyError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::SendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The plain-text response for this error. The body says what failed in
    /// one line, without internal addresses (those go to the log).
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let status = self.status();
        let text = match self {
            ProxyError::NoRoute { host, path } => {
                format!("404 no route: nothing matches host {host:?} and path {path:?}\n")
            }
            ProxyError::BadRequest(why) => format!("400 bad request: {why}\n"),
            ProxyError::NotImplemented(what) => format!("501 not implemented: {what}\n"),
            ProxyError::MethodNotAllowed(m) => {
                format!("405 method not allowed: {m} is not forwarded by this reverse proxy\n")
            }
            ProxyError::NoInstance { service, pool } => {
                format!("503 no {pool} instance of {service} is available\n")
            }
            ProxyError::Connect { .. } => "502 bad gateway: could not connect to upstream\n".into(),
            ProxyError::Upstream { .. } => {
                "502 bad gateway: upstream closed or broke the connection\n".into()
            }
            ProxyError::ResponseTimeout { .. } => {
                "504 gateway timeout: upstream did not answer in time\n".into()
            }
            ProxyError::ConnectTimeout { .. } => {
                "504 gateway timeout: connecting to upstream timed out\n".into()
            }
            ProxyError::SendTimeout { .. } => {
                "504 gateway timeout: upstream stopped reading the request body\n".into()
            }
            ProxyError::ClientBodyTimeout { .. } => {
                "408 request timeout: the request body paused too long\n".into()
            }
            ProxyError::ShuttingDown => "503 proxy is shutting down\n".into(),
        };
        let mut resp = Response::new(B::from(Bytes::from(text)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, ProxyError::MethodNotAllowed(_)) {
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let a: SocketAddr = ([127, 0, 0, 1], 1).into();
        let cases = [
            (
                ProxyError::NoRoute {
                    host: "h".into(),
                    path: "/".into(),
                },
                404,
            ),
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::NotImplemented("x"), 501),
            (ProxyError::MethodNotAllowed(http::Method::CONNECT), 405),
            (
                ProxyError::NoInstance {
                    service: "s".into(),
                    pool: "active",
                },
                503,
            ),
            (
                ProxyError::Connect {
                    addr: a,
                    reason: "refused".into(),
                },
                502,
            ),
            (
                ProxyError::Upstream {
                    addr: a,
                    reason: "reset".into(),
                },
                502,
            ),
            (
                ProxyError::ResponseTimeout {
                    addr: a,
                    timeout_ms: 5,
                },
                504,
            ),
            (ProxyError::ConnectTimeout { addr: a }, 504),
            (
                ProxyError::SendTimeout {
                    addr: a,
                    timeout_ms: 5,
                },
                504,
            ),
            (ProxyError::ClientBodyTimeout { timeout_ms: 5 }, 408),
        ];
        for (e, code) in cases {
            let r: Response<Bytes> = e.to_response();
            assert_eq!(r.status().as_u16(), code, "{e}");
            assert!(r.body().starts_with(code.to_string().as_bytes()));
        }
    }
}
