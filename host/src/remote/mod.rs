//! The shared Redis tier behind the local cache (`CacheOptions::redis`): the two-tier
//! operations.
//!
//! Redis holds the truth; the local tier holds copies (the same bytes, with the remaining
//! TTL), served only while [`Coherence`] says they are fresh. Writes go to Redis first, then
//! refresh or drop the local copy; `add`, `incr`, `pop` and `touch` are decided in Redis.

mod coherence;
mod conn;
mod keys;
mod lock;
mod scripts;
mod tracking;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::task::JoinHandle;

use crate::cache::PersistentCache;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::options::CacheOptions;

use coherence::Coherence;
use conn::per_key;
use conn::remote;
pub(crate) use conn::{crc16, redacted_url, remote as remote_error, Conn, Target};
use keys::Namespace;
pub(crate) use lock::{Lead, LockGuard};

/// A reply of an unexpected shape.
fn parse(err: impl std::fmt::Display) -> Error {
    Error::Remote(format!("unexpected reply: {err}"))
}

/// Keys `SCAN` asks for per step, and keys per `UNLINK`.
const SCAN_COUNT: usize = 1000;

/// The longest key, as the engine has it.
const MAX_KEY_LEN: usize = 4096;

/// The state of a two-tier cache's Redis tier ([`PersistentCache::remote_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStatus {
    /// Whether local copies are served now: every invalidation connection answered a
    /// heartbeat within `max_staleness`.
    pub local_served: bool,
    /// How long ago the oldest invalidation connection's last answered heartbeat was sent;
    /// `None` before the first (or while revalidating after the first connection).
    pub heartbeat_age: Option<Duration>,
    /// Invalidations applied to the local tier since the cache was opened (a key dropped
    /// because another node, or this one, changed it in Redis; a flush counts once).
    pub invalidations: u64,
}

/// The Redis tier of one open two-tier cache.
pub(crate) struct Tier {
    conn: Conn,
    names: Namespace,
    coherence: Arc<Coherence>,
    /// A local-only handle to the local tier.
    local: PersistentCache,
    default_ttl: Option<Duration>,
    size_limit: u64,
    listeners: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// The server, or the cluster's masters.
    servers: Vec<redis::Client>,
    url: String,
    /// The runtime the connections and listeners live on (where a blocking handle runs its
    /// calls: `BlockingCache`).
    runtime: tokio::runtime::Handle,
    /// That runtime, when the tier owns it (`BlockingCache::open` made it): it lives as long as
    /// any handle to this open, async ones from `to_async` included, and stops with the tier.
    owned_runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("url", &redacted_url(&self.url))
            .field("namespace", &self.names)
            .finish_non_exhaustive()
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        for listener in self.listeners.get_mut().iter() {
            listener.abort();
        }
        if let Some(runtime) = self.owned_runtime.take() {
            // Without waiting: the last handle may go on any thread, an async one's included,
            // where dropping a runtime (which waits for its threads) would panic.
            runtime.shutdown_background();
        }
    }
}

/// The masters of the cluster a command connection reaches (`CLUSTER NODES`), as clients for
/// their invalidation connections.
async fn cluster_masters(
    conn: &mut Conn,
    seed: &redis::ConnectionInfo,
) -> Result<Vec<redis::Client>> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(conn)
        .await
        .map_err(remote)?;
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        let host_port = address.split('@').next().unwrap_or_default();
        let Some((host, port)) = host_port.rsplit_once(':') else {
            continue;
        };
        let port: u16 = port
            .parse()
            .map_err(|_| Error::Remote(format!("CLUSTER NODES: bad address {address}")))?;
        let info = seed
            .clone()
            .set_addr(redis::ConnectionAddr::Tcp(host.to_owned(), port));
        masters.push(redis::Client::open(info).map_err(remote)?);
    }
    if masters.is_empty() {
        return Err(Error::Remote("CLUSTER NODES lists no master".to_owned()));
    }
    Ok(masters)
}

impl Tier {
    /// The runtime this tier's connections live on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Hands the tier the runtime it was connected on, to keep running as long as the tier
    /// lives (see `owned_runtime`). Edge case: a second call drops its runtime.
    pub(crate) fn own_runtime(&self, runtime: tokio::runtime::Runtime) {
        if let Err(runtime) = self.owned_runtime.set(runtime) {
            runtime.shutdown_background();
        }
    }

    /// Connects to the Redis tier `options` name and starts its invalidation listeners.
    /// `local` is a local-only handle to the already open local tier.
    ///
    /// # Errors
    /// `Config` (a malformed URL or an empty namespace), `Remote` (no server answered).
    pub(crate) async fn connect(options: &CacheOptions, local: PersistentCache) -> Result<Tier> {
        let url = options.redis_url_value().unwrap_or_default().to_owned();
        let namespace = options.redis_namespace_value();
        if namespace.is_empty() {
            return Err(Error::Config {
                variable: "redis_namespace".to_owned(),
                message: "the Redis namespace must not be empty".to_owned(),
            });
        }
        if options.read_only_value() {
            return Err(Error::Config {
                variable: crate::env::ENV_REDIS_URL.to_owned(),
                message: "a two-tier cache copies what it reads into its local tier, which \
                          must be writable (not read_only)"
                    .to_owned(),
            });
        }
        let target = Target::parse(&url)?;
        let mut conn = target.connect().await?;
        let servers = match &target {
            Target::Single(client) => vec![client.clone()],
            Target::Cluster(seeds) => cluster_masters(&mut conn, &seeds[0]).await?,
        };
        let names = Namespace::new(namespace);
        let coherence = Arc::new(Coherence::new(servers.len(), options.max_staleness_value()));
        let listeners = servers
            .iter()
            .cloned()
            .enumerate()
            .map(|(index, client)| {
                tokio::spawn(
                    tracking::Listener {
                        index,
                        client,
                        conn: conn.clone(),
                        names: names.clone(),
                        coherence: Arc::clone(&coherence),
                        local: local.clone(),
                    }
                    .run(),
                )
            })
            .collect::<Vec<_>>();
        Ok(Tier {
            conn,
            names,
            coherence,
            local,
            default_ttl: options.default_ttl_value(),
            size_limit: options.size_limit_value(),
            listeners: parking_lot::Mutex::new(listeners),
            servers,
            url,
            runtime: tokio::runtime::Handle::current(),
            owned_runtime: std::sync::OnceLock::new(),
        })
    }

    /// Stops the invalidation listeners and waits until they are gone (they hold handles to
    /// the local tier, which must be the last ones for `close` to close it).
    pub(crate) async fn shutdown(&self) {
        let listeners = std::mem::take(&mut *self.listeners.lock());
        for listener in listeners {
            listener.abort();
            let _ = listener.await;
        }
    }

    /// Whether local copies are fresh enough to serve now.
    pub(crate) fn local_usable(&self) -> bool {
        self.coherence.local_usable()
    }

    /// The tier's state.
    pub(crate) fn status(&self) -> RemoteStatus {
        RemoteStatus {
            local_served: self.coherence.local_usable(),
            heartbeat_age: self.coherence.confirmed_age(),
            invalidations: self
                .coherence
                .applied
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// `InvalidKey` for what the engine would refuse, before anything reaches Redis.
    pub(crate) fn check_key(key: &str) -> Result<()> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "keys are 1 to {MAX_KEY_LEN} bytes of UTF-8, got {} bytes",
                key.len()
            )));
        }
        Ok(())
    }

    /// `ValueTooLarge` for an entry the local tier could never hold (so Redis does not get it
    /// either).
    fn check_size(&self, key: &str, value_len: usize) -> Result<()> {
        let size = crate::ops::written(key, value_len);
        if size > self.size_limit {
            return Err(Error::ValueTooLarge {
                size,
                limit: self.size_limit,
            });
        }
        Ok(())
    }

    /// The TTL in milliseconds `expiry` stands for (`None`: never expires).
    fn ttl_ms(&self, expiry: Expiry) -> Result<Option<u64>> {
        match expiry {
            Expiry::Default => Ok(self.default_ttl.map(Expiry::millis)),
            Expiry::Never => Ok(None),
            Expiry::After(ttl) if ttl.is_zero() => Err(Error::InvalidTtl(
                "a TTL must be longer than zero (use Expiry::Never for no expiry)".to_owned(),
            )),
            Expiry::After(ttl) => Ok(Some(Expiry::millis(ttl))),
        }
    }

    /// The local expiry for a Redis `PTTL` answer (`-1`: none).
    fn expiry_of_pttl(pttl: i64) -> Expiry {
        match u64::try_from(pttl) {
            Ok(0) => Expiry::After(Duration::from_millis(1)),
            Ok(ms) => Expiry::After(Duration::from_millis(ms)),
            Err(_) => Expiry::Never,
        }
    }

    /// Copies `value` into the local tier if no invalidation of `key` came in since `ticket`;
    /// otherwise (or if the copy fails) drops the local copy. A local failure is returned
    /// only when the stale copy could not be dropped either.
    async fn fill(
        &self,
        ticket: coherence::Ticket,
        key: &str,
        value: &[u8],
        expiry: Expiry,
    ) -> Result<()> {
        let filled = self
            .coherence
            .fill_if_current(
                ticket,
                self.local.local_set_bytes(key, value.to_vec(), expiry),
            )
            .await;
        match filled {
            Some(Ok(())) => Ok(()),
            Some(Err(err)) => {
                tracing::debug!("not copied into the local tier: {key:?}: {err}");
                self.drop_local(key).await
            }
            None => self.drop_local(key).await,
        }
    }

    /// Drops `key`'s local copy (under its stripe, as an invalidation).
    async fn drop_local(&self, key: &str) -> Result<()> {
        self.coherence
            .invalidate(key, self.local.local_delete(key))
            .await
            .map(drop)
    }

    /// After a failed write: its outcome in Redis is unknown, so the local copy goes.
    async fn failed_write<T>(&self, key: &str, err: redis::RedisError) -> Result<T> {
        if let Err(local) = self.drop_local(key).await {
            tracing::warn!("after a failed Redis write, dropping {key:?} locally failed: {local}");
        }
        Err(remote(err))
    }

    /// Two-tier `get_raw`: the local copy while it is fresh, else Redis (copying the value
    /// into the local tier with its remaining TTL).
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Self::check_key(key)?;
        if self.local_usable() {
            if let Some(bytes) = self.local.local_get_raw(key).await? {
                return Ok(Some(bytes));
            }
        }
        let ticket = self.coherence.ticket(key).await;
        let (value, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .atomic()
            .get(self.names.value(key))
            .pttl(self.names.value(key))
            .query_async(&mut self.conn())
            .await
            .map_err(remote)?;
        if let Some(bytes) = &value {
            self.fill(ticket, key, bytes, Self::expiry_of_pttl(pttl))
                .await?;
        }
        Ok(value)
    }

    /// Two-tier `get_many_raw`: [`get`](Self::get) for each key, the Redis reads in one
    /// pipeline.
    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            Self::check_key(key)?;
        }
        let mut found = if self.local_usable() {
            self.local.local_get_many(keys.to_vec()).await?
        } else {
            vec![None; keys.len()]
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let mut tickets = Vec::with_capacity(missing.len());
        let mut commands = Vec::with_capacity(missing.len() * 2);
        for &i in &missing {
            tickets.push(self.coherence.ticket(&keys[i]).await);
            let name = self.names.value(&keys[i]);
            let mut get = redis::cmd("GET");
            get.arg(&name);
            let mut pttl = redis::cmd("PTTL");
            pttl.arg(&name);
            commands.push((name.clone(), get));
            commands.push((name, pttl));
        }
        let replies: Vec<(Option<Vec<u8>>, i64)> = {
            let flat = per_key(&self.conn, commands).await.map_err(remote)?;
            flat.chunks(2)
                .map(|pair| {
                    let value: Option<Vec<u8>> =
                        redis::from_redis_value(pair[0].clone()).map_err(parse)?;
                    let pttl: i64 = redis::from_redis_value(pair[1].clone()).map_err(parse)?;
                    Ok((value, pttl))
                })
                .collect::<Result<_>>()?
        };
        for ((&i, ticket), (value, pttl)) in missing.iter().zip(tickets).zip(replies) {
            if let Some(bytes) = &value {
                self.fill(ticket, &keys[i], bytes, Self::expiry_of_pttl(pttl))
                    .await?;
            }
            found[i] = value;
        }
        Ok(found)
    }

    /// Two-tier `set`: Redis `SET … PX`, then the local copy.
    pub(crate) async fn set(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<()> {
        Self::check_key(key)?;
        self.check_size(key, value.len())?;
        let ttl = self.ttl_ms(expiry)?;
        let ticket = self.coherence.ticket(key).await;
        let mut set = redis::cmd("SET");
        set.arg(self.names.value(key)).arg(value);
        if let Some(ms) = ttl {
            set.arg("PX").arg(ms);
        }
        if let Err(err) = set.exec_async(&mut self.conn()).await {
            return self.failed_write(key, err).await;
        }
        self.fill(ticket, key, value, Self::local_expiry(ttl)).await
    }

    fn local_expiry(ttl: Option<u64>) -> Expiry {
        ttl.map_or(Expiry::Never, |ms| Expiry::After(Duration::from_millis(ms)))
    }

    /// Two-tier `set_many_raw`: the `SET`s in one pipeline, then the local copies.
    pub(crate) async fn set_many(
        &self,
        entries: &[(String, Vec<u8>)],
        expiry: Expiry,
    ) -> Result<()> {
        for (key, value) in entries {
            Self::check_key(key)?;
            self.check_size(key, value.len())?;
        }
        let ttl = self.ttl_ms(expiry)?;
        let mut tickets = Vec::with_capacity(entries.len());
        let mut commands = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            tickets.push(self.coherence.ticket(key).await);
            let name = self.names.value(key);
            let mut set = redis::cmd("SET");
            set.arg(&name).arg(value);
            if let Some(ms) = ttl {
                set.arg("PX").arg(ms);
            }
            commands.push((name, set));
        }
        if let Err(err) = per_key(&self.conn, commands).await {
            for (key, _) in entries {
                let _ = self.drop_local(key).await;
            }
            return Err(remote(err));
        }
        for ((key, value), ticket) in entries.iter().zip(tickets) {
            self.fill(ticket, key, value, Self::local_expiry(ttl))
                .await?;
        }
        Ok(())
    }

    /// Two-tier `delete`: Redis decides whether a live entry was removed.
    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        Self::check_key(key)?;
        let removed: std::result::Result<u64, _> = self.conn().unlink(self.names.value(key)).await;
        match removed {
            Ok(removed) => {
                self.drop_local(key).await?;
                Ok(removed > 0)
            }
            Err(err) => self.failed_write(key, err).await,
        }
    }

    /// Two-tier `contains`: a fresh local copy, else Redis `EXISTS`.
    pub(crate) async fn contains(&self, key: &str) -> Result<bool> {
        Self::check_key(key)?;
        if self.local_usable() && self.local.local_contains(key).await? {
            return Ok(true);
        }
        self.conn()
            .exists(self.names.value(key))
            .await
            .map_err(remote)
    }

    /// Two-tier `add`: `SET NX PX` decides; the winner's value is copied locally.
    pub(crate) async fn add(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        Self::check_key(key)?;
        self.check_size(key, value.len())?;
        let ttl = self.ttl_ms(expiry)?;
        let ticket = self.coherence.ticket(key).await;
        let mut set = redis::cmd("SET");
        set.arg(self.names.value(key)).arg(value).arg("NX");
        if let Some(ms) = ttl {
            set.arg("PX").arg(ms);
        }
        let stored: Option<String> = match set.query_async(&mut self.conn()).await {
            Ok(stored) => stored,
            Err(err) => return self.failed_write(key, err).await,
        };
        if stored.is_none() {
            return Ok(false);
        }
        self.fill(ticket, key, value, Self::local_expiry(ttl))
            .await?;
        Ok(true)
    }

    /// Two-tier `pop`: `GETDEL` decides.
    pub(crate) async fn pop(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Self::check_key(key)?;
        let popped: std::result::Result<Option<Vec<u8>>, _> =
            self.conn().get_del(self.names.value(key)).await;
        match popped {
            Ok(value) => {
                self.drop_local(key).await?;
                Ok(value)
            }
            Err(err) => self.failed_write(key, err).await,
        }
    }

    /// Two-tier `touch`: `PEXPIRE` (or `PERSIST`) of a present key, in one script.
    pub(crate) async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        Self::check_key(key)?;
        let ttl = self.ttl_ms(expiry)?;
        let touched: std::result::Result<i64, _> = scripts::TOUCH
            .key(self.names.value(key))
            .arg(ttl.unwrap_or(0))
            .invoke_async(&mut self.conn())
            .await;
        match touched {
            Ok(touched) => {
                // The local copy's expiry is now wrong: drop it (the next read copies it anew).
                self.drop_local(key).await?;
                Ok(touched == 1)
            }
            Err(err) => self.failed_write(key, err).await,
        }
    }

    /// Two-tier `incr`: a script adds to the CBOR counter in Redis; the result is copied
    /// locally.
    pub(crate) async fn incr(
        &self,
        key: &str,
        delta: i64,
        default: i64,
        expiry: Expiry,
    ) -> Result<i64> {
        Self::check_key(key)?;
        let ttl = self.ttl_ms(expiry)?;
        let limit = scripts::EXACT_COUNTER_LIMIT;
        if delta.unsigned_abs() >= limit as u64 || default.unsigned_abs() >= limit as u64 {
            return Err(Error::CounterOverflow(format!(
                "the Redis tier computes counters exactly within ±2^53; got delta {delta}, default {default}"
            )));
        }
        let ticket = self.coherence.ticket(key).await;
        let result: std::result::Result<(Vec<u8>, i64), redis::RedisError> = scripts::INCR
            .key(self.names.value(key))
            .arg(delta)
            .arg(default)
            .arg(ttl.unwrap_or(0))
            .invoke_async(&mut self.conn())
            .await;
        let (bytes, pttl) = match result {
            Ok(reply) => reply,
            Err(err) => {
                let message = err.to_string();
                if message.contains("NOTACOUNTER") {
                    return Err(Error::NotACounter(format!(
                        "{key:?} holds no integer counter"
                    )));
                }
                if message.contains("OVERFLOW") {
                    return Err(Error::CounterOverflow(format!(
                        "{key:?}: the result would leave ±2^53, the range the Redis tier computes exactly"
                    )));
                }
                return self.failed_write(key, err).await;
            }
        };
        let value: i64 = crate::codec::decode(&bytes)?;
        self.fill(ticket, key, &bytes, Self::expiry_of_pttl(pttl))
            .await?;
        Ok(value)
    }

    /// Every Redis value key of the namespace whose cache key starts with `prefix`, by `SCAN`
    /// (on every master of a cluster): never `KEYS`, so the server is never blocked long.
    async fn scan(&self, prefix: &str) -> Result<Vec<String>> {
        let pattern = self.names.pattern(prefix);
        let mut found = Vec::new();
        let mut connections = Vec::new();
        match &self.conn {
            Conn::Single(_) | Conn::Node(_) => connections.push(self.conn()),
            // A cluster: every master's own keyspace (a SCAN through the cluster connection
            // would reach one node only).
            Conn::Cluster(_) => {
                for server in &self.servers {
                    let conn = server
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(remote)?;
                    connections.push(Conn::Node(conn));
                }
            }
        }
        for mut conn in connections {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await
                    .map_err(remote)?;
                found.extend(
                    batch
                        .iter()
                        .filter_map(|key| self.names.key_of(key))
                        .map(str::to_owned),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Two-tier `keys`: the namespace's keys in Redis starting with `prefix`, in byte order.
    pub(crate) async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.scan(prefix).await
    }

    /// Two-tier `keys_page`: up to `limit` keys after `after`.
    pub(crate) async fn keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let keys = self.scan(prefix).await?;
        Ok(keys
            .into_iter()
            .filter(|key| after.is_none_or(|after| key.as_str() > after))
            .take(limit as usize)
            .collect())
    }

    /// Two-tier `delete_prefix`: `SCAN` + `UNLINK` in Redis (not atomic: a key set meanwhile
    /// may survive), then the local tier's.
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        if prefix.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "a prefix is at most {MAX_KEY_LEN} bytes, got {}",
                prefix.len()
            )));
        }
        let keys = self.scan(prefix).await?;
        let mut removed = 0u64;
        for chunk in keys.chunks(SCAN_COUNT) {
            let commands = chunk
                .iter()
                .map(|key| {
                    let name = self.names.value(key);
                    let mut unlink = redis::cmd("UNLINK");
                    unlink.arg(&name);
                    (name, unlink)
                })
                .collect();
            let counts: Vec<u64> = match per_key(&self.conn, commands).await {
                Ok(counts) => counts
                    .into_iter()
                    .map(|count| redis::from_redis_value(count).unwrap_or(0))
                    .collect(),
                Err(err) => {
                    let _ = self
                        .coherence
                        .invalidate_all(self.local.local_delete_prefix(prefix))
                        .await;
                    return Err(remote(err));
                }
            };
            removed += counts.iter().sum::<u64>();
        }
        self.coherence
            .invalidate_all(self.local.local_delete_prefix(prefix))
            .await?;
        Ok(removed)
    }

    /// Two-tier `clear`: every key of the namespace in Redis, then the local tier (with its
    /// plugin stores).
    pub(crate) async fn clear(&self) -> Result<()> {
        self.delete_prefix("").await?;
        self.coherence
            .invalidate_all(self.local.local_clear())
            .await
    }

    /// Single-flight across machines: see [`lock`].
    pub(crate) async fn lead(&self, key: &str) -> Result<Lead> {
        lock::lead(self, key).await
    }
}
