//! Servers on `127.0.0.1:0` running as background tasks.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Resolves when the [`Served`] that handed it out is stopped or dropped.
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A server task that takes a listener and a [`Shutdown`] signal (the dev Consul, the dev
/// Nomad, ...). Dropping it signals shutdown and leaves the server to finish in the
/// background, unless [`Served::abort_on_drop`] asked for the task to be cut off too.
pub struct Served<T: Send + 'static = ()> {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<T>>,
    abort_on_drop: bool,
}

impl<T: Send + 'static> Served<T> {
    /// Binds `127.0.0.1:0` and spawns `serve(listener, shutdown)`.
    pub async fn start<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, serve)
    }

    /// Spawns `serve` on an already bound listener (to restart on the same port).
    pub fn on<F, Fut>(listener: TcpListener, serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Shutdown(rx)));
        Self {
            addr,
            stop: Some(tx),
            task: Some(task),
            abort_on_drop: false,
        }
    }

    /// Dropping aborts the task right after signalling shutdown.
    pub fn abort_on_drop(mut self) -> Self {
        self.abort_on_drop = true;
        self
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits (at most `within`, else panics) for the server task's
    /// result; `None` when it was already collected.
    pub async fn stop(&mut self, within: Duration) -> Option<T> {
        self.signal_stop();
        let task = self.task.take()?;
        let out = tokio::time::timeout(within, task)
            .await
            .unwrap_or_else(|_| panic!("server on {} did not stop within {within:?}", self.addr))
            .expect("server task panicked");
        Some(out)
    }

    /// Signals shutdown and hands over the server task, for callers that want to watch it end.
    pub fn begin_stop(&mut self) -> Option<JoinHandle<T>> {
        self.signal_stop();
        self.task.take()
    }
}

impl<T: Send + 'static> Drop for Served<T> {
    fn drop(&mut self) {
        self.signal_stop();
        if self.abort_on_drop
            && let Some(t) = self.task.take()
        {
            t.abort();
        }
    }
}

/// A task aborted when this is dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts connections on `listener` and runs `on_conn` for each, until the returned task is
/// aborted: connections die with it (aborting drops the set that holds them). Accept errors
/// are skipped.
pub fn accept_loop<F, Fut>(listener: TcpListener, mut on_conn: F) -> JoinHandle<()>
where
    F: FnMut(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            while conns.try_join_next().is_some() {}
            conns.spawn(on_conn(stream));
        }
    })
}
