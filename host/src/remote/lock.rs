//! Single-flight across machines for `get_or_set_with`: a short Redis lock (`SET NX PX` with a
//! random token) decides which node computes; the others poll for its value.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::conn::{remote, Conn};
use super::scripts;
use super::Tier;
use crate::error::Result;

/// How long a lock lives unless released: a computing node that dies holds the others up at
/// most this long. A computation that runs longer lets another node compute too.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(10);

/// How long a waiter waits for another node's value before computing it itself.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// What the lock decided for this node.
pub(crate) enum Lead {
    /// This node holds the lock: compute, store, then release it.
    Compute(LockGuard),
    /// Another node computed it meanwhile: its value (already copied locally).
    Value(Vec<u8>),
}

/// A held lock; released by [`release`](LockGuard::release), or when dropped (cancelled or
/// panicking computation), by a task spawned for it; else it expires after [`LOCK_TTL`].
pub(crate) struct LockGuard {
    conn: Option<Conn>,
    key: String,
    token: String,
}

impl LockGuard {
    /// Releases the lock if it is still ours (a failure only logs: the lock expires anyway).
    pub(crate) async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            unlock(&mut conn, &self.key, &self.token).await;
        }
    }
}

async fn unlock(conn: &mut Conn, key: &str, token: &str) {
    let released: std::result::Result<i64, _> =
        scripts::UNLOCK.key(key).arg(token).invoke_async(conn).await;
    if let Err(err) = released {
        tracing::debug!("releasing the single-flight lock {key:?}: {err}");
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let (Some(mut conn), Ok(runtime)) =
            (self.conn.take(), tokio::runtime::Handle::try_current())
        {
            let (key, token) = (
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
            runtime.spawn(async move { unlock(&mut conn, &key, &token).await });
        }
    }
}

/// A random lock token (128 bits, hex).
fn token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: the time and the pid make a token unique enough for a lock that
        // only has to tell its holders apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes `key`'s lock, or waits for the node that holds it to store the value.
///
/// Edge cases: the value appears in Redis between our miss and our lock: returned, and the
/// lock released; the holder dies: its lock expires after [`LOCK_TTL`] and a waiter takes it;
/// the holder takes longer than [`WAIT_LIMIT`]: this node computes without the lock.
///
/// # Errors
/// `Remote` when Redis cannot be reached.
pub(crate) async fn lead(tier: &Tier, key: &str) -> Result<Lead> {
    let lock_key = tier.names.lock(key);
    let token = token();
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut conn = tier.conn();
    loop {
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(remote)?;
        if acquired.is_some() {
            let guard = LockGuard {
                conn: Some(conn.clone()),
                key: lock_key.clone(),
                token: token.clone(),
            };
            // The value may have been stored between our miss and the lock.
            if let Some(bytes) = tier.get(key).await? {
                guard.release().await;
                return Ok(Lead::Value(bytes));
            }
            return Ok(Lead::Compute(guard));
        }
        let mut pause = Duration::from_millis(2);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            if let Some(bytes) = tier.get(key).await? {
                return Ok(Lead::Value(bytes));
            }
            let held: bool = conn.exists(&lock_key).await.map_err(remote)?;
            if !held {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "{key:?}: another node has held its single-flight lock for {WAIT_LIMIT:?}; \
                     computing here too"
                );
                return Ok(Lead::Compute(LockGuard {
                    conn: None,
                    key: String::new(),
                    token: String::new(),
                }));
            }
        }
    }
}
