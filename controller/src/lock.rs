//! One mutating command per service at a time: a Consul session lock on
//! `switchyard/locks/<service>` ([`lock_key`]), taken by `deploy`, `switch` and `rollback`
//! before they observe anything and released when they end.
//!
//! The model is Consul's own lock recipe: a session with a TTL (renewed at half the TTL while
//! the command runs, so the lock of a crashed or killed holder expires), `Behavior = release`
//! and a lock delay (a lock freed by invalidation cannot be taken again at once, so a holder
//! that only lost contact briefly has time to notice); then `PUT /v1/kv/<key>?acquire=<session>`
//! with the holder's description ([`Holder`]: host, pid, command, since) as the value. A second
//! command reads that value and fails at once with [`ControllerError::Locked`] (exit status
//! 3), or, given `--lock-wait`, waits for the key to change with blocking reads and tries again
//! until the wait runs out. Release is `?release=` then destroying the session, on success,
//! on error and on interrupt alike.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard_hashi::QueryOptions;
use switchyard_hashi::consul::{ConsulClient, KvPair, SessionBehavior, SessionRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Controller, ControllerError};

/// Prefix of the lock keys.
pub const LOCK_PREFIX: &str = "switchyard/locks/";

/// The lock key of a service.
pub fn lock_key(service: &str) -> String {
    format!("{LOCK_PREFIX}{service}")
}

/// Who holds a lock: the value written with `?acquire=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's host name.
    pub host: String,
    /// Its process ID.
    pub pid: u32,
    /// The command it runs, e.g. `deploy v3`.
    pub command: String,
    /// When it took the lock, RFC 3339.
    pub since: String,
}

impl Holder {
    /// This process running `command`, from now.
    pub fn this_process(command: &str) -> Self {
        Holder {
            host: host_name(),
            pid: std::process::id(),
            command: command.to_owned(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, since {})",
            self.command, self.pid, self.host, self.since
        )
    }
}

/// The kernel's host name, else `$HOSTNAME`, else `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a failed `acquire` found in the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contender {
    /// Another session holds the lock; its value describes the holder when it is readable.
    Held(Result<Holder, String>),
    /// Nobody holds it, but it was refused: the key is in its lock delay after its holder's
    /// session was invalidated (or the holder released it a moment ago).
    Free,
}

/// Decides what a refused `acquire` means from the key as read afterwards.
pub fn contender(pair: Option<&KvPair>) -> Contender {
    match pair {
        Some(p) if p.session.as_deref().is_some_and(|s| !s.is_empty()) => Contender::Held(
            serde_json::from_slice::<Holder>(p.value.as_deref().unwrap_or_default())
                .map_err(|_| "a holder that did not describe itself".to_owned()),
        ),
        _ => Contender::Free,
    }
}

/// The one-line refusal naming the holder.
pub fn locked_message(
    service: &str,
    key: &str,
    contender: &Contender,
    waited: Option<Duration>,
) -> String {
    let who = match contender {
        Contender::Held(Ok(h)) => format!("is locked by {h}"),
        Contender::Held(Err(e)) => format!("is locked by {e}"),
        Contender::Free => {
            "is locked: its previous holder's lock is still in its lock delay".to_owned()
        }
    };
    let after = match waited {
        Some(w) => format!(
            " after waiting {}",
            humantime::format_duration(round_secs(w))
        ),
        None => String::new(),
    };
    format!("service {service} {who} ({key}){after}; wait for it with --lock-wait <duration>")
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// A held lock. Renewed in the background until [`ServiceLock::release`]; dropping it without
/// releasing leaves the lock to expire with its session.
#[derive(Debug)]
pub struct ServiceLock {
    consul: ConsulClient,
    key: String,
    session: String,
    holder: Holder,
    renewer: JoinHandle<()>,
    lost: watch::Receiver<Option<String>>,
}

impl ServiceLock {
    /// Why the lock was lost while held (its session expired or was destroyed), if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// A receiver that changes when the lock is lost.
    pub fn lost_watch(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }

    /// Releases the lock and destroys the session. Failures are returned as a sentence (the
    /// lock then expires with the session's TTL).
    pub async fn release(self) -> Result<(), String> {
        self.renewer.abort();
        let value = serde_json::to_vec(&self.holder).unwrap_or_default();
        let released = self
            .consul
            .kv_release(&self.key, &value, &self.session)
            .await
            .map_err(|e| format!("releasing {}: {e}", self.key));
        let destroyed = self
            .consul
            .session_destroy(&self.session)
            .await
            .map_err(|e| format!("destroying session {}: {e}", self.session));
        released.and(destroyed)
    }
}

impl Drop for ServiceLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Controller {
    /// Takes the service's lock for `command`: at once, or waiting up to `wait`. Fails with
    /// [`ControllerError::Locked`] (exit status 3) naming the holder.
    pub async fn lock(
        &self,
        command: &str,
        wait: Option<Duration>,
    ) -> Result<ServiceLock, ControllerError> {
        let s = &self.settings;
        let key = lock_key(&s.service);
        let holder = Holder::this_process(command);
        let value = serde_json::to_vec(&holder).unwrap_or_default();
        let session = self
            .consul
            .session_create(&SessionRequest {
                name: format!("switchyard {command} ({})", s.service),
                ttl: Some(go_duration(s.lock_ttl)),
                lock_delay: Some(go_duration(s.lock_delay)),
                behavior: SessionBehavior::Release,
            })
            .await
            .map_err(|e| ControllerError::hashi("creating a Consul session for the lock", e))?;
        // Renewed from the start: a `--lock-wait` may outlast the TTL.
        let (tx, lost) = watch::channel(None);
        let renewer = tokio::spawn(renew(
            self.consul.clone(),
            session.clone(),
            s.lock_ttl / 2,
            tx,
        ));
        match self.acquire(&key, &value, &session, wait).await {
            Ok(()) => Ok(ServiceLock {
                consul: self.consul.clone(),
                key,
                session,
                holder,
                renewer,
                lost,
            }),
            Err(e) => {
                renewer.abort();
                if let Err(d) = self.consul.session_destroy(&session).await {
                    tracing::warn!(%session, error = %d, "could not destroy the lock session");
                }
                Err(e)
            }
        }
    }

    /// The acquire loop: try, read who holds the key, give up or wait for it to change.
    async fn acquire(
        &self,
        key: &str,
        value: &[u8],
        session: &str,
        wait: Option<Duration>,
    ) -> Result<(), ControllerError> {
        let started = Instant::now();
        let deadline = wait.map(|w| started + w);
        let mut said = None;
        loop {
            if self
                .consul
                .kv_acquire(key, value, session)
                .await
                .map_err(|e| ControllerError::hashi(format!("acquiring {key}"), e))?
            {
                if said.is_some() {
                    self.say(&format!(
                        "took the lock {key} after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                }
                return Ok(());
            }
            let (pair, meta) = self
                .consul
                .kv_get(key, &QueryOptions::default())
                .await
                .map_err(|e| ControllerError::hashi(format!("reading {key}"), e))?;
            let contender = contender(pair.as_ref());
            let now = Instant::now();
            let Some(deadline) = deadline.filter(|d| *d > now) else {
                return Err(ControllerError::Locked(locked_message(
                    &self.settings.service,
                    key,
                    &contender,
                    wait.map(|_| started.elapsed()),
                )));
            };
            if said.as_ref() != Some(&contender) {
                self.say(&format!(
                    "waiting up to {} for the lock: {}",
                    humantime::format_duration(round_secs(deadline - now)),
                    locked_message(&self.settings.service, key, &contender, None)
                        .split("; ")
                        .next()
                        .unwrap_or_default()
                ));
                said = Some(contender.clone());
            }
            let remaining = deadline - now;
            match contender {
                // Wait for the holder to let go: a blocking read returns when the key changes.
                Contender::Held(_) => {
                    let opts = QueryOptions::blocking(
                        meta.index.max(1),
                        remaining.min(Duration::from_secs(60)),
                    );
                    // A failed blocking read is retried by the loop's next acquire.
                    if self.consul.kv_get(key, &opts).await.is_err() {
                        tokio::time::sleep(self.settings.poll_interval.min(remaining)).await;
                    }
                }
                // The lock delay only ends with time.
                Contender::Free => {
                    tokio::time::sleep(self.settings.poll_interval.min(remaining)).await;
                }
            }
        }
    }
}

/// Renews the session every `period` until aborted; reports on `lost` when Consul says the
/// session is gone (then the lock is gone too).
async fn renew(
    consul: ConsulClient,
    session: String,
    period: Duration,
    lost: watch::Sender<Option<String>>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        match consul.session_renew(&session).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = lost.send(Some(format!(
                    "the lock's Consul session {session} expired or was destroyed"
                )));
                return;
            }
            // Transient: the session lives for its TTL (Consul allows twice that); the next
            // tick tries again.
            Err(e) => tracing::warn!(%session, error = %e, "renewing the lock session failed"),
        }
    }
}

/// A duration as Go writes it for Consul (`15s`, `1500ms`).
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair(session: Option<&str>, value: &[u8]) -> KvPair {
        KvPair {
            key: lock_key("web"),
            value: Some(value.to_vec()),
            session: session.map(str::to_owned),
            ..KvPair::default()
        }
    }

    fn holder() -> Holder {
        Holder {
            host: "ops1".into(),
            pid: 4242,
            command: "deploy v3".into(),
            since: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_held_key_names_its_holder() {
        let value = serde_json::to_vec(&holder()).unwrap();
        let c = contender(Some(&pair(Some("s1"), &value)));
        assert_eq!(c, Contender::Held(Ok(holder())));
        let line = locked_message("web", &lock_key("web"), &c, None);
        assert_eq!(
            line,
            "service web is locked by `deploy v3` (pid 4242 on ops1, since 2026-01-01T00:00:00Z) (switchyard/locks/web); wait for it with --lock-wait <duration>"
        );
        assert!(!line.contains('\n'));
        let waited = locked_message("web", "k", &c, Some(Duration::from_millis(2400)));
        assert!(waited.contains("after waiting 2s"), "{waited}");
    }

    #[test]
    fn a_held_key_with_a_foreign_value_is_still_held() {
        let c = contender(Some(&pair(Some("s1"), b"not json")));
        assert!(matches!(c, Contender::Held(Err(_))));
        assert!(locked_message("web", "k", &c, None).contains("is locked by"));
    }

    #[test]
    fn a_released_or_missing_key_is_free_and_refused_only_by_the_lock_delay() {
        let value = serde_json::to_vec(&holder()).unwrap();
        assert_eq!(contender(Some(&pair(None, &value))), Contender::Free);
        assert_eq!(contender(Some(&pair(Some(""), &value))), Contender::Free);
        assert_eq!(contender(None), Contender::Free);
        assert!(locked_message("web", "k", &Contender::Free, None).contains("lock delay"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}
