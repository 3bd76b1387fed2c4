//! A scripted HTTP server on 127.0.0.1:0: records every request and answers through a handler.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Reads a file under tests/fixtures.
pub(crate) fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// What the client sent.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The raw query string, as sent (still percent-encoded).
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    /// `path?query` exactly as sent.
    pub(crate) fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the server answers.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// 200 with a JSON body.
    pub(crate) fn json(body: impl Into<Vec<u8>>) -> Self {
        Reply::new(200, body).header("Content-Type", "application/json")
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A connection of any kind the server accepts.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) struct MockServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

/// Where a [`MockServer`] listens and how it speaks.
pub(crate) enum Listen {
    /// Plain HTTP on 127.0.0.1:0.
    Tcp,
    /// HTTPS on 127.0.0.1:0 with this server configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP on a Unix socket at this path.
    Unix(std::path::PathBuf),
}

impl MockServer {
    pub(crate) async fn start(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        MockServer::start_on(Listen::Tcp, handler).await
    }

    pub(crate) async fn start_on(
        listen: Listen,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let (tcp, unix, tls) = match listen {
            Listen::Tcp => (
                Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
                None,
                None,
            ),
            Listen::Tls(config) => (
                Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
                None,
                Some(tokio_rustls::TlsAcceptor::from(config)),
            ),
            Listen::Unix(path) => (
                None,
                Some(tokio::net::UnixListener::bind(path).expect("bind unix socket")),
                None,
            ),
        };
        let addr = match &tcp {
            Some(l) => l.local_addr().expect("local addr"),
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let stream: Box<dyn Stream> = match (&tcp, &unix) {
                    (Some(l), _) => match l.accept().await {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => return,
                    },
                    (None, Some(l)) => match l.accept().await {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => return,
                    },
                    (None, None) => return,
                };
                let stream: Box<dyn Stream> = match &tls {
                    // A failed handshake (an untrusting client) drops the connection.
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => Box::new(s),
                        Err(_) => continue,
                    },
                    None => stream,
                };
                let recorded = recorded.clone();
                let handler = handler.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let recorded = recorded.clone();
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes().to_vec();
                        let request = Recorded {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            query: parts.uri.query().map(str::to_owned),
                            headers: parts.headers,
                            body,
                        };
                        let reply = handler(&request);
                        recorded.lock().expect("lock").push(request);
                        let mut response = Response::builder().status(reply.status);
                        for (name, value) in reply.headers {
                            response = response.header(name, value);
                        }
                        Ok::<_, hyper::Error>(
                            response
                                .body(Full::new(Bytes::from(reply.body)))
                                .expect("response"),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockServer {
            addr,
            requests,
            task,
        }
    }

    /// Answers every request with the same reply.
    pub(crate) async fn always(reply: Reply) -> Self {
        MockServer::start(move |_| reply.clone()).await
    }

    /// `http://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:port`.
    pub(crate) fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `127.0.0.1:port`, without a scheme.
    pub(crate) fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// The only request received.
    pub(crate) fn single(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected one request, got {requests:#?}");
        requests.into_iter().next().expect("one request")
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens (bound, then released), as a URL.
pub(crate) async fn closed_port() -> String {
    format!("http://{}", switchyard_testkit::dead_addr().await)
}
