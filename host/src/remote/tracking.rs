//! The invalidation listener: one RESP3 connection per Redis server with `CLIENT TRACKING ON
//! BCAST PREFIX NS:v:`, applying invalidations to the local tier, revalidating it after every
//! (re)connection, and confirming heartbeats for [`Coherence`].

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::coherence::Coherence;
use super::conn::{Conn, CONNECT_TIMEOUT};
use super::keys::Namespace;
use crate::cache::PersistentCache;

/// The client name of invalidation connections (`CLIENT LIST` shows it).
pub(crate) const CLIENT_NAME: &str = "pcache-invalidation";

/// Local keys compared with Redis per step of a revalidation.
const REVALIDATE_PAGE: u32 = 256;

/// What one listener needs.
pub(crate) struct Listener {
    /// Its index in [`Coherence`]'s confirmations.
    pub(crate) index: usize,
    /// The server it tracks.
    pub(crate) client: redis::Client,
    /// The command connection (revalidation reads through it: on a cluster, keys live on
    /// other servers than this one).
    pub(crate) conn: Conn,
    pub(crate) names: Namespace,
    pub(crate) coherence: Arc<Coherence>,
    /// A local-only handle to the local tier.
    pub(crate) local: PersistentCache,
}

impl Listener {
    /// Runs until the task is aborted: a session per connection, reconnecting after a short
    /// back-off whenever one ends.
    pub(crate) async fn run(self) {
        const FIRST_BACKOFF: Duration = Duration::from_millis(20);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut tracked = false;
            let ended = self.session(&mut tracked).await;
            if tracked {
                // It was connected: a new loss starts from the shortest wait again.
                backoff = FIRST_BACKOFF;
            }
            match ended {
                Ok(()) => {}
                Err(why) => {
                    tracing::warn!(
                        server = self.index,
                        "Redis invalidation connection lost: {why}; local copies are served \
                         for at most {:?} after the last heartbeat, and revalidated on reconnect",
                        self.coherence.max_staleness()
                    );
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// One connection's life: track, revalidate the local tier, then apply invalidations and
    /// confirm heartbeats until something fails.
    /// Sets `tracked` once the connection tracks the namespace.
    async fn session(&self, tracked: &mut bool) -> Result<(), String> {
        let (sender, mut pushes) = unbounded_channel();
        let heartbeat = self.coherence.max_staleness() / 4;
        let config = AsyncConnectionConfig::new()
            .set_push_sender(sender)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(heartbeat.max(Duration::from_millis(50))));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| format!("connect: {err}"))?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .exec_async(&mut conn)
            .await
            .map_err(|err| format!("CLIENT SETNAME: {err}"))?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(self.names.value_prefix())
            .exec_async(&mut conn)
            .await
            .map_err(|err| format!("CLIENT TRACKING: {err}"))?;
        *tracked = true;
        // Writes made while no connection tracked them never reach us: compare every local copy
        // with Redis. Invalidations that arrive meanwhile are applied between pages.
        self.revalidate(&mut pushes).await?;
        self.heartbeat(&mut conn, &mut pushes).await?;
        let mut ticks = tokio::time::interval(heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    Some(push) => self.apply(push).await?,
                    None => return Err("the connection closed".to_owned()),
                },
                _ = ticks.tick() => self.heartbeat(&mut conn, &mut pushes).await?,
            }
        }
    }

    /// Sends a PING, applies every invalidation that arrived before its answer, and confirms.
    async fn heartbeat(
        &self,
        conn: &mut MultiplexedConnection,
        pushes: &mut UnboundedReceiver<PushInfo>,
    ) -> Result<(), String> {
        let sent = self.coherence.now();
        redis::cmd("PING")
            .exec_async(conn)
            .await
            .map_err(|err| format!("heartbeat: {err}"))?;
        self.drain(pushes).await?;
        self.coherence.confirm(self.index, sent);
        Ok(())
    }

    /// Applies every invalidation already received.
    async fn drain(&self, pushes: &mut UnboundedReceiver<PushInfo>) -> Result<(), String> {
        while let Ok(push) = pushes.try_recv() {
            self.apply(push).await?;
        }
        Ok(())
    }

    /// Applies one push: an invalidation drops the named keys' local copies (all of them for
    /// a flush); a disconnection ends the session.
    async fn apply(&self, push: PushInfo) -> Result<(), String> {
        match push.kind {
            PushKind::Invalidate => {}
            PushKind::Disconnection => return Err("disconnected".to_owned()),
            _ => return Ok(()),
        }
        match push.data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    let Value::BulkString(bytes) = key else {
                        continue;
                    };
                    // A key this cache could not hold (another writer's, under the namespace)
                    // has no local copy: skipped, not an error that would reset the session.
                    let Some(key) = self.names.key_of(bytes) else {
                        continue;
                    };
                    if super::Tier::check_key(key).is_err() {
                        continue;
                    }
                    self.coherence
                        .invalidate(key, self.local.local_delete(key))
                        .await
                        .map_err(|err| format!("dropping the local copy of {key:?}: {err}"))?;
                }
            }
            // A flush (FLUSHALL, FLUSHDB): every key may have changed.
            _ => {
                self.coherence
                    .invalidate_all(self.local.local_delete_prefix(""))
                    .await
                    .map_err(|err| format!("dropping every local copy: {err}"))?;
            }
        }
        Ok(())
    }

    /// Drops every local copy whose value is not what Redis holds (missing there included).
    async fn revalidate(&self, pushes: &mut UnboundedReceiver<PushInfo>) -> Result<(), String> {
        let failed =
            |what: &str, err: &dyn std::fmt::Display| format!("revalidating, {what}: {err}");
        let mut after: Option<String> = None;
        let mut dropped = 0u64;
        loop {
            let page = self
                .local
                .local_keys_page("", after.as_deref(), REVALIDATE_PAGE)
                .await
                .map_err(|err| failed("listing local keys", &err))?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let local = self
                .local
                .local_get_many(page.clone())
                .await
                .map_err(|err| failed("reading local copies", &err))?;
            let commands = page
                .iter()
                .map(|key| {
                    let name = self.names.value(key);
                    let mut get = redis::cmd("GET");
                    get.arg(&name);
                    (name, get)
                })
                .collect();
            let remote: Vec<Option<Vec<u8>>> = super::conn::per_key(&self.conn, commands)
                .await
                .map_err(|err| failed("reading Redis", &err))?
                .into_iter()
                .map(|value| redis::from_redis_value(value).unwrap_or(None))
                .collect();
            for ((key, local), remote) in page.iter().zip(local).zip(remote) {
                if local.is_some() && local != remote {
                    self.coherence
                        .invalidate(key, self.local.local_delete(key))
                        .await
                        .map_err(|err| failed("dropping a local copy", &err))?;
                    dropped += 1;
                }
            }
            self.drain(pushes).await?;
            after = Some(last);
        }
        if dropped > 0 {
            tracing::info!(
                server = self.index,
                dropped,
                "revalidated the local tier against Redis"
            );
        }
        Ok(())
    }
}
