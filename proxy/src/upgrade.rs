//! Binary upgrades: the running proxy hands its listening sockets to a new
//! process over a Unix socket, so no connection is refused while one binary
//! replaces the other.
//!
//! The exchange on `upgrade.socket`, one connection per attempt:
//!
//! 1. the new process (`proxy --upgrade`) connects and sends [`HELLO`];
//! 2. the running one answers with one line naming its listeners in order
//!    (`traffic admin`, `traffic tls admin`, …) and, attached to it
//!    (`SCM_RIGHTS`), duplicates of their file descriptors;
//! 3. the new process builds its routing state, takes the sockets into its
//!    own listeners and sends [`CONFIRM`];
//! 4. only then does the running one stop: it fails readiness, stops
//!    accepting and drains (see [`crate::Stop::HandedOver`]).
//!
//! Both processes share the same kernel sockets from step 2 on, so a
//! connection waiting in the accept queue when the old process stops is
//! accepted by the new one. A new process that dies, or sends anything but
//! the confirmation within [`HANDOVER_TIMEOUT`], changes nothing: the
//! running proxy keeps serving and waits for the next attempt.

use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::net::{TcpListener, UnixListener};

use crate::config::Config;
use crate::{Listeners, StartError};

/// What a new process sends first.
pub const HELLO: &[u8] = b"switchyard-upgrade 1\n";
/// What a new process sends once it serves on the sockets it received.
pub const CONFIRM: &[u8] = b"ok\n";
/// How long either side waits for the other at each step.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Listener names, in the order they are sent.
const TRAFFIC: &str = "traffic";
const TLS: &str = "tls";
const ADMIN: &str = "admin";
/// The most descriptors one handover carries (traffic, TLS, admin).
const MAX_FDS: usize = 3;

/// Why an upgrade could not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Nothing answers on the upgrade socket.
    #[error("cannot reach a running proxy on {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The exchange broke off.
    #[error("handover on {path}: {source}")]
    Exchange {
        /// The socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The running proxy answered something else than listeners.
    #[error("the process on {path} {what}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What it did.
        what: String,
    },
    /// Another proxy already serves the upgrade socket.
    #[error(
        "another proxy answers on the upgrade socket {0}; start this one with --upgrade to take its listeners over, or set upgrade.socket"
    )]
    InUse(PathBuf),
    /// The upgrade socket could not be created.
    #[error("cannot listen on the upgrade socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A listener the running proxy did not have could not be bound.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Duplicates of the listening sockets, kept to hand over.
#[derive(Debug)]
pub struct Handover {
    fds: Vec<(&'static str, OwnedFd)>,
}

impl Handover {
    /// Duplicates the descriptors of `listeners` (they stay open as long as
    /// this value lives, so drop it when the proxy stops accepting).
    pub fn of(listeners: &Listeners) -> io::Result<Self> {
        let mut fds = vec![(TRAFFIC, listeners.traffic.as_fd().try_clone_to_owned()?)];
        if let Some(l) = &listeners.tls {
            fds.push((TLS, l.as_fd().try_clone_to_owned()?));
        }
        if let Some(l) = &listeners.admin {
            fds.push((ADMIN, l.as_fd().try_clone_to_owned()?));
        }
        Ok(Self { fds })
    }
}

/// The running proxy's end: the listening Unix socket.
#[derive(Debug)]
pub struct UpgradeSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Set once the listeners were handed over: the path then belongs to
    /// the new process and is left alone.
    handed_over: bool,
}

impl Drop for UpgradeSocket {
    fn drop(&mut self) {
        if !self.handed_over {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl UpgradeSocket {
    /// Creates the socket at `path`, mode `0600`. Unless `replace` (this
    /// process took over from the one that listened there), a path another
    /// proxy answers on is refused; a stale file is removed.
    pub fn bind(path: &Path, replace: bool) -> Result<Self, UpgradeError> {
        if !replace && StdUnixStream::connect(path).is_ok() {
            return Err(UpgradeError::InUse(path.to_owned()));
        }
        let bind_err = |source| UpgradeError::Bind {
            path: path.to_owned(),
            source,
        };
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(bind_err(e)),
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        tracing::info!(socket = %path.display(), "upgrade socket listening");
        Ok(Self {
            listener,
            path: path.to_owned(),
            handed_over: false,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers upgrade requests until one completes: resolves once a new
    /// process holds the listeners and confirmed. A failed attempt is logged
    /// and the next one awaited. Dropping the future drops the duplicates.
    pub async fn handed_over(mut self, handover: Handover) {
        let handover = Arc::new(handover);
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let give = match stream.into_std() {
                Ok(s) => {
                    let handover = Arc::clone(&handover);
                    tokio::task::spawn_blocking(move || give(s, &handover))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade connection unusable");
                    continue;
                }
            };
            match give.await {
                Ok(Ok(())) => {
                    tracing::info!("listeners handed over to the new process");
                    self.handed_over = true;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "upgrade attempt failed; still serving");
                }
                Err(e) => tracing::warn!(error = %e, "upgrade attempt failed; still serving"),
            }
        }
    }
}

fn blocking(s: &StdUnixStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    s.set_write_timeout(Some(HANDOVER_TIMEOUT))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The running proxy's side of one exchange.
fn give(mut s: StdUnixStream, handover: &Handover) -> io::Result<()> {
    blocking(&s)?;
    let mut hello = [0u8; HELLO.len()];
    s.read_exact(&mut hello)?;
    if hello != HELLO {
        return Err(invalid("the peer did not ask for the listeners"));
    }
    let names: Vec<&str> = handover.fds.iter().map(|(n, _)| *n).collect();
    let line = format!("{}\n", names.join(" "));
    let fds: Vec<BorrowedFd<'_>> = handover.fds.iter().map(|(_, f)| f.as_fd()).collect();
    let mut space = [0u8; rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(invalid("too many listeners for one message"));
    }
    let sent = rustix::net::sendmsg(
        &s,
        &[IoSlice::new(line.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != line.len() {
        return Err(invalid("the listener list was cut"));
    }
    let mut confirm = [0u8; CONFIRM.len()];
    s.read_exact(&mut confirm)?;
    if confirm != CONFIRM {
        return Err(invalid("the new process did not confirm"));
    }
    Ok(())
}

/// The new process's side, once it holds the listeners: the old process
/// keeps serving until [`Confirmation::send`].
#[derive(Debug)]
pub struct Confirmation {
    stream: StdUnixStream,
    path: PathBuf,
}

/// Asks the proxy on `config.upgrade.socket` for its listeners. Returns the
/// listeners to serve on (the running proxy's, or bound anew where the
/// configuration names another address) and the confirmation to send once
/// this process is ready.
pub async fn take_over(config: &Config) -> Result<(Listeners, Confirmation), UpgradeError> {
    let path = config.upgrade.socket.clone();
    let asked = path.clone();
    let (stream, mut received) = tokio::task::spawn_blocking(move || receive(&asked))
        .await
        .map_err(|e| UpgradeError::Exchange {
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })??;
    let mut take = |name: &'static str, want: SocketAddr| {
        let fd = received
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| received.swap_remove(i).1);
        adopt(name, want, fd)
    };
    let traffic = take(TRAFFIC, config.listen).await?;
    let tls = match &config.tls {
        Some(t) => Some(take(TLS, t.listen).await?),
        None => None,
    };
    let admin = match config.admin.listen {
        Some(a) => Some(take(ADMIN, a).await?),
        None => None,
    };
    Ok((
        Listeners {
            traffic,
            tls,
            admin,
        },
        Confirmation { stream, path },
    ))
}

/// A received listener when it listens where the configuration says (port
/// `0` accepts any port), else a new one bound there.
async fn adopt(
    name: &'static str,
    want: SocketAddr,
    fd: Option<OwnedFd>,
) -> Result<TcpListener, UpgradeError> {
    if let Some(fd) = fd {
        let std = std::net::TcpListener::from(fd);
        let have = std.local_addr().map_err(StartError::from_io(want))?;
        if have == want || (want.port() == 0 && have.ip() == want.ip()) {
            std.set_nonblocking(true)
                .map_err(StartError::from_io(want))?;
            tracing::info!(listener = name, address = %have, "listener taken over");
            return TcpListener::from_std(std)
                .map_err(StartError::from_io(want))
                .map_err(Into::into);
        }
        tracing::info!(
            listener = name,
            was = %have,
            now = %want,
            "listener address changed: binding anew"
        );
    }
    Ok(crate::bind_listener(want).await?)
}

impl Confirmation {
    /// Tells the old process to stop accepting: call it once this process is
    /// ready to serve on the listeners it took over.
    pub async fn send(self) -> Result<(), UpgradeError> {
        let Confirmation { mut stream, path } = self;
        tokio::task::spawn_blocking(move || stream.write_all(CONFIRM))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| UpgradeError::Exchange { path, source })
    }
}

/// The new process's side of the exchange, up to the listeners.
fn receive(path: &Path) -> Result<(StdUnixStream, Vec<(String, OwnedFd)>), UpgradeError> {
    let mut s = StdUnixStream::connect(path).map_err(|source| UpgradeError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let exchange = |source| UpgradeError::Exchange {
        path: path.to_owned(),
        source,
    };
    let protocol = |what: &str| UpgradeError::Protocol {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    blocking(&s).map_err(exchange)?;
    s.write_all(HELLO).map_err(exchange)?;
    let mut buf = [0u8; 256];
    let mut space = [0u8; rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &s,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| exchange(e.into()))?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Err(protocol("closed the connection without handing over"));
    }
    let line = std::str::from_utf8(&buf[..got.bytes])
        .ok()
        .and_then(|l| l.strip_suffix('\n'))
        .ok_or_else(|| protocol("sent no listener list"))?;
    let names: Vec<String> = line.split(' ').map(str::to_owned).collect();
    if names.len() != fds.len() || names.iter().any(String::is_empty) {
        return Err(protocol(&format!(
            "named listeners {line:?} but sent {} descriptors",
            fds.len()
        )));
    }
    Ok((s, names.into_iter().zip(fds).collect()))
}
