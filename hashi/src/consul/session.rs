//! Sessions and KV locks: `PUT /v1/session/{create,renew,destroy}` and the `acquire` /
//! `release` forms of `PUT /v1/kv/:key`, as Consul's Go client (`api/session.go`,
//! `api/kv.go`) sends them.

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::ConsulClient;
use crate::Error;
use crate::transport::{Body, Path, Query, REQUEST_TIMEOUT};

/// What a session does to the keys it holds when it is invalidated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBehavior {
    /// The lock is released; the key and its value stay.
    #[default]
    Release,
    /// The key is deleted.
    Delete,
}

/// The body of `PUT /v1/session/create`. Fields left `None` take the agent's defaults (the
/// agent's node, its `serfHealth` check, a 15 s lock delay, no TTL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionRequest {
    /// A human-readable name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// A Go duration such as `15s`; the session is invalidated unless renewed within it
    /// (Consul allows between 10 s and 24 h by default).
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// A Go duration: how long a key released by invalidation refuses new `acquire`s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_delay: Option<String>,
    /// What happens to held keys on invalidation.
    pub behavior: SessionBehavior,
}

/// A session as `GET /v1/session/info/:id` or `PUT /v1/session/renew/:id` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SessionEntry {
    /// The session ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name.
    pub name: String,
    /// The node it belongs to.
    pub node: String,
    /// `release` or `delete`.
    pub behavior: String,
    /// The TTL as created.
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// Raft index of its creation.
    pub create_index: u64,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

impl ConsulClient {
    /// `PUT /v1/session/create`: a new session's ID.
    pub async fn session_create(&self, req: &SessionRequest) -> Result<String, Error> {
        let path = Path::new("/v1/session/create");
        let body = Body::json("session", req)?;
        let created: Created = self
            .write(Method::PUT, &path, &Query::default(), Some(body))
            .await?
            .json()?;
        Ok(created.id)
    }

    /// `PUT /v1/session/renew/:id`: restarts the session's TTL. `None` when the session no
    /// longer exists (Consul answers 404: it expired or was destroyed, and its locks are gone).
    pub async fn session_renew(&self, id: &str) -> Result<Option<SessionEntry>, Error> {
        let path = Path::new("/v1/session/renew").segment(id)?;
        let reply = self
            .transport
            .send(Method::PUT, &path, &Query::default(), None, REQUEST_TIMEOUT)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let entries: Vec<SessionEntry> = reply.success()?.json()?;
        Ok(entries.into_iter().next())
    }

    /// `PUT /v1/session/destroy/:id`: invalidates the session, applying its behavior to the
    /// keys it holds. An unknown ID is a no-op.
    pub async fn session_destroy(&self, id: &str) -> Result<(), Error> {
        let path = Path::new("/v1/session/destroy").segment(id)?;
        self.write(Method::PUT, &path, &Query::default(), None)
            .await
            .map(drop)
    }

    /// `PUT /v1/kv/:key?acquire=<session>` with `value` as the new value: `true` when the
    /// session now holds the lock (or already held it), `false` when another session holds it
    /// or the key is still in its lock delay.
    pub async fn kv_acquire(&self, key: &str, value: &[u8], session: &str) -> Result<bool, Error> {
        self.kv_lock_op(key, value, "acquire", session).await
    }

    /// `PUT /v1/kv/:key?release=<session>` with `value` as the new value: `false` when the
    /// session did not hold the lock.
    pub async fn kv_release(&self, key: &str, value: &[u8], session: &str) -> Result<bool, Error> {
        self.kv_lock_op(key, value, "release", session).await
    }

    async fn kv_lock_op(
        &self,
        key: &str,
        value: &[u8],
        op: &'static str,
        session: &str,
    ) -> Result<bool, Error> {
        let path = Path::new("/v1/kv").key(key)?;
        let mut query = Query::default();
        query.pair(op, session);
        self.write(Method::PUT, &path, &query, Some(Body::raw(value)))
            .await?
            .json()
    }
}
