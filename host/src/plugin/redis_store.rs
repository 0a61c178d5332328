//! `wasi:keyvalue` buckets served from Redis (`PluginOptions::keyvalue_redis`): the same
//! operations as the plugin's local cache, as Spin's Redis backend does them.
//!
//! Bucket `b` of plugin `p` is the key prefix `pcache:kv:{p/b}:` — one prefix per plugin and
//! bucket, so plugins stay as isolated from each other as on the local cache, and the hash tag
//! `{p/b}` keeps a bucket in one cluster slot (its multi-key scripts and `SCAN` stay on one
//! node). `increment` is `INCRBY` (decimal text, as the local store keeps counters); CAS is a
//! script comparing the value the handle saw; batches are scripts over the bucket's keys
//! (reads) or pipelines (`SET`, `UNLINK`); `list-keys` is `SCAN` with its cursor.
//!
//! Issue 8's rules hold: every call checks the plugin's deadline and waits on Redis at most
//! until it (then the plugin is stopped at its time limit); replies are bounded before they
//! are fetched — the scripts refuse (`TOOBIG`) to return more bytes than the reply may still
//! hold, and the plugin is stopped at its memory limit.

use std::sync::LazyLock;
use std::time::Duration;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Script, Value};

use super::limits::{Reply, RunLimits};
use crate::remote::{crc16, remote_error, Conn};
use crate::stop::HostLimitHit;

/// Keys `SCAN` asks for per `list-keys` page.
const SCAN_COUNT: usize = 1000;

/// What a Redis-backed keyvalue call failed with.
pub(crate) enum RedisFailed {
    /// An error the plugin is given (`store::Error::Other`).
    Store(String),
    /// A reason to stop the plugin (its time or memory limit).
    Stop(wasmtime::Error),
}

impl From<wasmtime::Error> for RedisFailed {
    fn from(err: wasmtime::Error) -> Self {
        RedisFailed::Stop(err)
    }
}

type Outcome<T> = Result<T, RedisFailed>;

/// The Redis connection of one plugin run.
pub(crate) struct RedisBuckets {
    conn: Conn,
    runtime: tokio::runtime::Handle,
    plugin: String,
}

/// `GET` of a value no longer than `ARGV[1]` bytes (else a `TOOBIG` error; nothing is sent).
static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return redis.error_reply('TOOBIG ' .. n) end
return redis.call('GET', KEYS[1])
",
    )
});

/// `MGET` of keys whose values (with their keys) total no more than `ARGV[1]` bytes.
static GET_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local total = 0
for i, key in ipairs(KEYS) do
  total = total + redis.call('STRLEN', key) + tonumber(ARGV[1 + i])
end
if total > tonumber(ARGV[1]) then return redis.error_reply('TOOBIG ' .. total) end
return redis.call('MGET', unpack(KEYS))
",
    )
});

/// Compare-and-swap: sets `ARGV[3]` if the value is still the one the handle saw (`ARGV[1]`
/// `1` and the bytes `ARGV[2]`, or `0`: absent). Replies `{1}`, or `{0}` / `{0, current}`
/// when it changed (current at most `ARGV[4]` bytes, else `TOOBIG`).
static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
local same
if ARGV[1] == '1' then same = (current == ARGV[2]) else same = (current == false) end
if same then
  redis.call('SET', KEYS[1], ARGV[3])
  return {1}
end
if current == false then return {0} end
if #current > tonumber(ARGV[4]) then return redis.error_reply('TOOBIG ' .. #current) end
return {0, current}
",
    )
});

impl RedisBuckets {
    /// The buckets of `plugin` on `conn`; calls block on `runtime` (the plugin runs on a
    /// blocking thread).
    pub(crate) fn new(conn: Conn, runtime: tokio::runtime::Handle, plugin: &str) -> RedisBuckets {
        RedisBuckets {
            conn,
            runtime,
            plugin: plugin.to_owned(),
        }
    }

    /// The hash tag of `bucket` (`"b/"` as the bucket handle has it).
    fn tag(&self, bucket: &str) -> String {
        format!("{}/{}", self.plugin, bucket.trim_end_matches('/'))
    }

    /// The key prefix of `bucket`.
    fn prefix(&self, bucket: &str) -> String {
        format!("pcache:kv:{{{}}}:", self.tag(bucket))
    }

    /// The Redis key of `key` in `bucket`.
    fn key(&self, bucket: &str, key: &str) -> String {
        format!("{}{key}", self.prefix(bucket))
    }

    /// Runs `command` on Redis for the plugin: after checking its deadline, and waiting at
    /// most until it.
    fn run<T>(
        &self,
        limits: &RunLimits,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Outcome<T> {
        limits.check_time()?;
        let wait = limits.remaining().unwrap_or(Duration::from_secs(3600));
        match self
            .runtime
            .block_on(async { tokio::time::timeout(wait, command).await })
        {
            Err(_) => Err(RedisFailed::Stop(wasmtime::Error::new(HostLimitHit::Time))),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let message = err.to_string();
                if message.contains("TOOBIG") {
                    return Err(RedisFailed::Stop(wasmtime::Error::new(HostLimitHit::Memory(
                        format!("a keyvalue reply from Redis past the plugin's memory limit ({message})"),
                    ))));
                }
                Err(RedisFailed::Store(remote_error(err).to_string()))
            }
        }
    }

    pub(crate) fn get(
        &self,
        limits: &RunLimits,
        reply: &mut Reply,
        bucket: &str,
        key: &str,
    ) -> Outcome<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        let mut script = GET.prepare_invoke();
        script.key(self.key(bucket, key)).arg(reply.left());
        let value: Option<Vec<u8>> =
            self.run(limits, async move { script.invoke_async(&mut conn).await })?;
        reply.add(value.as_ref().map_or(0, Vec::len))?;
        Ok(value)
    }

    pub(crate) fn set(
        &self,
        limits: &RunLimits,
        bucket: &str,
        key: &str,
        value: &[u8],
    ) -> Outcome<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(bucket, key)).arg(value);
        self.run(limits, async move { cmd.exec_async(&mut conn).await })
    }

    pub(crate) fn delete(&self, limits: &RunLimits, bucket: &str, key: &str) -> Outcome<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(self.key(bucket, key));
        self.run(limits, async move { cmd.exec_async(&mut conn).await })
    }

    pub(crate) fn exists(&self, limits: &RunLimits, bucket: &str, key: &str) -> Outcome<bool> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.key(bucket, key));
        self.run(limits, async move { cmd.query_async(&mut conn).await })
    }

    /// One `SCAN` step over the bucket: its keys (without the prefix) and the next cursor
    /// (`None` at the end). On a cluster, the node that owns the bucket's slot.
    pub(crate) fn list_keys(
        &self,
        limits: &RunLimits,
        reply: &mut Reply,
        bucket: &str,
        cursor: Option<String>,
    ) -> Outcome<(Vec<String>, Option<String>)> {
        let cursor: u64 = match cursor.as_deref().map(str::parse) {
            None => 0,
            Some(Ok(cursor)) => cursor,
            Some(Err(_)) => return Err(RedisFailed::Store("not a cursor of this store".into())),
        };
        let prefix = self.prefix(bucket);
        let mut pattern = String::new();
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let mut conn = self.conn.clone();
        let slot = crc16(self.tag(bucket).as_bytes()) % 16384;
        let value: Value = self.run(limits, async move {
            match &mut conn {
                Conn::Cluster(cluster) => {
                    let route = Route::new(slot, SlotAddr::Master);
                    cluster
                        .route_command(
                            cmd,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                        )
                        .await
                }
                other => cmd.query_async(other).await,
            }
        })?;
        let (next, found): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(value).map_err(|err| RedisFailed::Store(err.to_string()))?;
        let mut keys = Vec::with_capacity(found.len());
        for key in found {
            let Some(key) = key
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| std::str::from_utf8(rest).ok())
            else {
                continue;
            };
            reply.add(std::mem::size_of::<String>() + key.len())?;
            keys.push(key.to_owned());
        }
        // SCAN's order is the server's hash order: each page is sorted (a small bucket comes in
        // one page, in byte order as on the local store); pages come in cursor order.
        keys.sort_unstable();
        keys.dedup();
        Ok((keys, (next != 0).then(|| next.to_string())))
    }

    pub(crate) fn increment(
        &self,
        limits: &RunLimits,
        bucket: &str,
        key: &str,
        delta: i64,
    ) -> Outcome<i64> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(self.key(bucket, key)).arg(delta);
        self.run(limits, async move { cmd.query_async(&mut conn).await })
    }

    /// Sets `value` if `key` still holds `seen`; `Ok(None)` when it did, `Ok(Some(current))`
    /// when it changed.
    pub(crate) fn swap(
        &self,
        limits: &RunLimits,
        reply: &mut Reply,
        bucket: &str,
        key: &str,
        seen: Option<&[u8]>,
        value: &[u8],
    ) -> Outcome<Option<Option<Vec<u8>>>> {
        let mut conn = self.conn.clone();
        let mut script = CAS.prepare_invoke();
        script
            .key(self.key(bucket, key))
            .arg(if seen.is_some() { "1" } else { "0" })
            .arg(seen.unwrap_or_default())
            .arg(value)
            .arg(reply.left());
        let outcome: Vec<Value> =
            self.run(limits, async move { script.invoke_async(&mut conn).await })?;
        let swapped = matches!(outcome.first(), Some(Value::Int(1)));
        if swapped {
            return Ok(None);
        }
        let current = match outcome.get(1) {
            Some(value) => Some(
                redis::from_redis_value::<Vec<u8>>(value.clone())
                    .map_err(|err| RedisFailed::Store(err.to_string()))?,
            ),
            None => None,
        };
        reply.add(current.as_ref().map_or(0, Vec::len))?;
        Ok(Some(current))
    }

    pub(crate) fn get_many(
        &self,
        limits: &RunLimits,
        reply: &mut Reply,
        bucket: &str,
        keys: &[String],
    ) -> Outcome<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            limits.check_time()?;
            return Ok(Vec::new());
        }
        let mut invocation = GET_MANY.prepare_invoke();
        for key in keys {
            invocation.key(self.key(bucket, key));
        }
        invocation.arg(reply.left());
        for key in keys {
            invocation.arg(super::limits::REPLY_ENTRY_BYTES + key.len());
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<Vec<u8>>> =
            self.run(
                limits,
                async move { invocation.invoke_async(&mut conn).await },
            )?;
        for (key, value) in keys.iter().zip(&values) {
            let bytes = value.as_ref().map_or(0, |v| key.len() + v.len());
            reply.add(super::limits::REPLY_ENTRY_BYTES + bytes)?;
        }
        Ok(values)
    }

    pub(crate) fn set_many(
        &self,
        limits: &RunLimits,
        bucket: &str,
        entries: &[(String, Vec<u8>)],
    ) -> Outcome<()> {
        if entries.is_empty() {
            limits.check_time()?;
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET").arg(self.key(bucket, key)).arg(value);
        }
        let mut conn = self.conn.clone();
        self.run(limits, async move { pipe.exec_async(&mut conn).await })
    }

    pub(crate) fn delete_many(
        &self,
        limits: &RunLimits,
        bucket: &str,
        keys: &[String],
    ) -> Outcome<()> {
        if keys.is_empty() {
            limits.check_time()?;
            return Ok(());
        }
        let mut cmd = redis::cmd("UNLINK");
        for key in keys {
            cmd.arg(self.key(bucket, key));
        }
        let mut conn = self.conn.clone();
        self.run(limits, async move { cmd.exec_async(&mut conn).await })
    }
}
