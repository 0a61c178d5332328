//! `PersistentCache`: the async, cloneable handle to one cache directory, backed by a sandboxed guest.
//!
//! # Where each kind of work runs
//!
//! Every handle to a directory shares one guest (`shared::SharedCache`), behind an async
//! mutex: calls run one at a time, and a task waiting for its turn awaits — it never blocks a
//! runtime thread. Each async call spends one unit of the task's cooperative budget (tokio's
//! `consume_budget`), so a task looping over calls that all finish at once still lets other
//! tasks run.
//!
//! | work | where it runs |
//! |---|---|
//! | light calls (`get`, `set` of values up to 60 KiB, `add`, `touch`, `pop`, `incr`, `delete`, `contains`) | inline on the caller's runtime thread, with the engine in non-blocking mode: a few microseconds |
//! | a light call the engine refuses as slow (a record over 64 KiB to read from disk, a write that would pass the size limit and must evict and compact first) | run again on a blocking thread (`spawn_blocking`), holding the guest |
//! | slow by nature: writes with `sync(true)` (an fsync each), values over 60 KiB, `flush`, `delete_prefix`, `expire`, `keys`, `stats` (lists the plugin stores), `clear`, `open` (recovery), `close`, restarting a guest after a trap | a blocking thread |
//! | compaction ahead of the limit (256 KiB read per step) and periodic checkpoints (an index snapshot about every 8 MiB written) | the cache's maintenance thread (`pcache-maintain`), one bounded step at a time, releasing the guest between steps; a step never syncs: the syncs a segment deletion or a checkpoint needs run on that thread between steps, without the guest |
//! | dropping the last handle on a runtime thread (its final flush) | a thread of its own (`pcache-close`); `close().await` is the way to wait for it |
//!
//! What stays on the caller's thread: CBOR encoding and decoding of typed values, and one copy
//! of a `set_raw` value (the blocking thread needs it owned; a memcpy, proportional to its size).
//!
//! The blocking handle ([`BlockingCache`](crate::BlockingCache)) runs every call on its
//! caller's thread. Issue 12's cross-process lock is to be taken where the guest is: inside a
//! call, on whichever thread that call runs, so the same rules hold for waiting on it.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode, encode};
use crate::error::Result;
use crate::expiry::Expiry;
use crate::ops::{written, Stats, KEYS_PAGE};
use crate::options::CacheOptions;
use crate::remote::Tier;
use crate::shared::{off_runtime, SharedCache, Weight};

/// The most operations of a batch (`get_many`, `set_many`) tried inline on the async runtime's
/// thread. Each may be a positioned read or write of up to the engine's non-blocking limit (a
/// few microseconds each), so a bigger batch could hold the thread for more than tens of
/// microseconds: it runs on a blocking thread.
const BATCH_INLINE_MAX: usize = 8;

/// A persistent, size-limited LRU cache with per-entry TTLs, stored in one directory.
///
/// The storage engine runs as a WebAssembly component that can only touch the cache directory.
/// Handles are cheap to clone and may be shared across threads and tasks; every handle to the
/// same directory in a process — this async one and [`BlockingCache`](crate::BlockingCache) —
/// shares one engine instance. A directory can be open in only one process at a time (an
/// advisory lock on `<dir>/.lock` enforces this).
///
/// Values are encoded with serde as CBOR ([`set`](Self::set), [`get`](Self::get)) or stored as
/// raw bytes ([`set_raw`](Self::set_raw), [`get_raw`](Self::get_raw)). Every operation that
/// takes a TTL takes an [`Expiry`] (or a `Duration`): the cache's default, never, or after a
/// duration — the same rule everywhere.
#[derive(Clone, Debug)]
pub struct PersistentCache {
    pub(crate) inner: Arc<SharedCache>,
    /// The shared Redis tier, for a two-tier cache ([`CacheOptions::redis`]).
    pub(crate) remote: Option<Arc<Tier>>,
}

impl PersistentCache {
    /// Opens (creating if needed) the cache in `options`' directory and recovers its contents.
    ///
    /// If this process already has the directory open, returns another handle to that cache:
    /// the first opener's options stay in force, and a warning names each option `options`
    /// set to something different.
    ///
    /// # Errors
    /// - [`Error::Directory`]: the directory or its lock file cannot be created or opened.
    /// - [`Error::Locked`]: another process has the directory open.
    /// - [`Error::Corrupt`] / [`Error::IncompatibleFormat`] / [`Error::Io`]: the engine cannot
    ///   recover the directory's contents.
    /// - [`Error::Wasm`]: the guest component failed to compile, instantiate or run.
    ///
    /// [`Error::Directory`]: crate::Error::Directory
    /// [`Error::Locked`]: crate::Error::Locked
    /// [`Error::Corrupt`]: crate::Error::Corrupt
    /// [`Error::IncompatibleFormat`]: crate::Error::IncompatibleFormat
    /// [`Error::Io`]: crate::Error::Io
    /// [`Error::Wasm`]: crate::Error::Wasm
    pub async fn open(options: CacheOptions) -> Result<PersistentCache> {
        // Opening blocks: it may compile the component (first open in the process), waits
        // for the guest to recover the directory, and may wait for a closing handle.
        let redis = options.redis_url_value().is_some().then(|| options.clone());
        let inner = off_runtime(move || SharedCache::open(options)).await?;
        let local = PersistentCache {
            inner,
            remote: None,
        };
        let Some(options) = redis else {
            return Ok(local);
        };
        let tier = Tier::connect(&options, local.clone()).await?;
        Ok(PersistentCache {
            remote: Some(Arc::new(tier)),
            ..local
        })
    }

    /// Stores `value` (CBOR-encoded) under `key`, expiring after the default TTL
    /// ([`Expiry::Default`]). Replaces any previous value.
    ///
    /// # Errors
    /// `InvalidKey` (empty or over 4096 bytes), `ValueTooLarge` (the entry exceeds the size
    /// limit), `Serialize`, `Io`, `ReadOnly`, `Closed`, `Wasm`.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.set_bytes(key, encode(value)?, Expiry::Default).await
    }

    /// Stores `value` (CBOR-encoded) under `key`, expiring as `expiry` says: a `Duration`
    /// from now (rounded up to whole milliseconds), [`Expiry::Never`] or [`Expiry::Default`].
    ///
    /// # Errors
    /// Those of [`set`](Self::set), and `InvalidTtl` for a zero duration.
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expiry: impl Into<Expiry>,
    ) -> Result<()> {
        self.set_bytes(key, encode(value)?, expiry.into()).await
    }

    /// The value under `key`, decoded from CBOR; `Ok(None)` on a miss or an expired entry.
    ///
    /// # Errors
    /// `Deserialize` if the stored bytes are not a `T`, `InvalidKey`, `Io`, `Corrupt` (the
    /// record fails its checksum), `Closed`, `Wasm`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_raw(key)
            .await?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Stores raw `value` bytes under `key`, expiring as `expiry` says. Replaces any previous
    /// value.
    ///
    /// # Errors
    /// Those of [`set_with_ttl`](Self::set_with_ttl), without `Serialize`.
    pub async fn set_raw(&self, key: &str, value: &[u8], expiry: impl Into<Expiry>) -> Result<()> {
        self.set_bytes(key, value.to_vec(), expiry.into()).await
    }

    /// `set_raw` with bytes it owns (the call may move to a blocking thread, so it needs them):
    /// a typed `set` hands over its encoding instead of having it copied again.
    async fn set_bytes(&self, key: &str, value: Vec<u8>, expiry: Expiry) -> Result<()> {
        match &self.remote {
            Some(tier) => tier.set(key, &value, expiry).await,
            None => self.local_set_bytes(key, value, expiry).await,
        }
    }

    /// The local tier's `set_raw`.
    pub(crate) async fn local_set_bytes(
        &self,
        key: &str,
        value: Vec<u8>,
        expiry: Expiry,
    ) -> Result<()> {
        let weight = Weight::of_write(&self.inner.options, value.len());
        let key = key.to_owned();
        self.inner
            .run(weight, written(&key, value.len()), move |guest| {
                guest.set(&key, &value, expiry)
            })
            .await
    }

    /// The raw bytes under `key`; `Ok(None)` on a miss or an expired entry.
    ///
    /// # Errors
    /// Those of [`get`](Self::get), without `Deserialize`.
    pub async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match &self.remote {
            Some(tier) => tier.get(key).await,
            None => self.local_get_raw(key).await,
        }
    }

    /// The local tier's `get_raw` (the whole operation for a local-only cache).
    pub(crate) async fn local_get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.inner
            .run(Weight::Light, 0, move |guest| guest.get(&key))
            .await
    }

    /// The raw bytes under each of `keys`, in order (`None` for a miss or an expired entry):
    /// many `get_raw`s in one call into the engine, so small reads cross the sandbox once.
    ///
    /// # Errors
    /// Those of [`get_raw`](Self::get_raw); an invalid key fails the whole call and nothing
    /// is read.
    pub async fn get_many_raw<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        match &self.remote {
            Some(tier) => tier.get_many(&keys).await,
            None => self.local_get_many(keys).await,
        }
    }

    /// The local tier's `get_many_raw`.
    pub(crate) async fn local_get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>> {
        let weight = if keys.len() > BATCH_INLINE_MAX {
            Weight::Heavy
        } else {
            Weight::Light
        };
        self.inner
            .run(weight, 0, move |guest| guest.get_many(&keys))
            .await
    }

    /// The values under each of `keys`, decoded from CBOR, in order (`None` for a miss or an
    /// expired entry): [`get_many_raw`](Self::get_many_raw), typed.
    ///
    /// # Errors
    /// Those of [`get`](Self::get); a value that is not a `T` fails the whole call.
    pub async fn get_many<T: DeserializeOwned, K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>> {
        self.get_many_raw(keys)
            .await?
            .into_iter()
            .map(|found| found.map(|bytes| decode(&bytes)).transpose())
            .collect()
    }

    /// Stores every `(key, value)` raw, in order, all expiring as `expiry` says: many
    /// `set_raw`s in one call into the engine.
    ///
    /// # Errors
    /// Those of [`set_raw`](Self::set_raw). An invalid key or a too large value fails the
    /// whole call before anything is written; a failed write (`Io`) stops there, with the
    /// entries before it stored.
    pub async fn set_many_raw<K: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        entries: &[(K, V)],
        expiry: impl Into<Expiry>,
    ) -> Result<()> {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_vec()))
            .collect();
        self.set_many_owned(entries, expiry.into()).await
    }

    /// Stores every `(key, value)` encoded as CBOR, in order, all expiring as `expiry` says
    /// ([`set_many_raw`](Self::set_many_raw), typed).
    ///
    /// # Errors
    /// Those of [`set_many_raw`](Self::set_many_raw), and `Serialize` (before anything is
    /// written).
    pub async fn set_many<T: Serialize, K: AsRef<str>>(
        &self,
        entries: &[(K, T)],
        expiry: impl Into<Expiry>,
    ) -> Result<()> {
        let entries = entries
            .iter()
            .map(|(k, v)| Ok((k.as_ref().to_owned(), encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.set_many_owned(entries, expiry.into()).await
    }

    /// `set_many_raw` with entries it owns (the call may move to a blocking thread).
    async fn set_many_owned(&self, entries: Vec<(String, Vec<u8>)>, expiry: Expiry) -> Result<()> {
        if let Some(tier) = &self.remote {
            return tier.set_many(&entries, expiry).await;
        }
        let bytes: usize = entries.iter().map(|(_, v)| v.len()).sum();
        let written_total = entries.iter().map(|(k, v)| written(k, v.len())).sum();
        let weight = match Weight::of_write(&self.inner.options, bytes) {
            Weight::Light if entries.len() <= BATCH_INLINE_MAX => Weight::Light,
            _ => Weight::Heavy,
        };
        self.inner
            .run(weight, written_total, move |guest| {
                guest.set_many(&entries, expiry)
            })
            .await
    }

    /// Removes `key`; `Ok(true)` if a live entry was removed, `Ok(false)` on a miss or an
    /// expired entry.
    ///
    /// # Errors
    /// `InvalidKey`, `Io`, `ReadOnly`, `Closed`, `Wasm`.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        match &self.remote {
            Some(tier) => tier.delete(key).await,
            None => self.local_delete(key).await,
        }
    }

    /// The local tier's `delete` (the whole operation for a local-only cache).
    pub(crate) async fn local_delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        let weight = Weight::of_write(&self.inner.options, 0);
        self.inner
            .run(weight, written(&key, 0), move |guest| guest.delete(&key))
            .await
    }

    /// Whether `key` holds a live (present, unexpired) entry. Answered from the engine's
    /// in-memory index: reads no file, is not counted as a hit or a miss, and does not make the
    /// entry more recently used.
    ///
    /// # Errors
    /// `InvalidKey`, `Closed`, `Wasm`.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        match &self.remote {
            Some(tier) => tier.contains(key).await,
            None => self.local_contains(key).await,
        }
    }

    /// The local tier's `contains` (the whole operation for a local-only cache).
    pub(crate) async fn local_contains(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.inner
            .run(Weight::Light, 0, move |guest| guest.contains(&key))
            .await
    }

    /// Stores `value` (CBOR-encoded) under `key` only if the key holds no live entry, in one
    /// atomic step; `Ok(true)` if it was stored, `Ok(false)` if the key was present (the old
    /// value stays and keeps its recency). The new entry expires as `expiry` says.
    ///
    /// Edge cases: an expired entry counts as absent. An invalid key, a zero TTL or a value too
    /// large for the size limit is an error even when the key is present.
    ///
    /// # Errors
    /// Those of [`set_with_ttl`](Self::set_with_ttl).
    pub async fn add<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expiry: impl Into<Expiry>,
    ) -> Result<bool> {
        self.add_bytes(key, encode(value)?, expiry.into()).await
    }

    /// Stores raw `value` bytes under `key` only if the key holds no live entry, in one atomic
    /// step: [`add`](Self::add) for bytes you encoded yourself (as [`set_raw`](Self::set_raw)
    /// is to [`set_with_ttl`](Self::set_with_ttl)); `Ok(true)` if it was stored, `Ok(false)` if
    /// the key was present (the old value stays).
    ///
    /// Edge cases: those of [`add`](Self::add): an expired entry counts as absent; an invalid
    /// key, a zero TTL or a value too large for the size limit is an error even when the key
    /// is present.
    ///
    /// # Errors
    /// Those of [`set_raw`](Self::set_raw).
    pub async fn add_raw(
        &self,
        key: &str,
        value: &[u8],
        expiry: impl Into<Expiry>,
    ) -> Result<bool> {
        self.add_bytes(key, value.to_vec(), expiry.into()).await
    }

    /// `add_raw` with bytes it owns (the call may move to a blocking thread).
    async fn add_bytes(&self, key: &str, bytes: Vec<u8>, expiry: Expiry) -> Result<bool> {
        if let Some(tier) = &self.remote {
            return tier.add(key, &bytes, expiry).await;
        }
        let weight = Weight::of_write(&self.inner.options, bytes.len());
        let key = key.to_owned();
        self.inner
            .run(weight, written(&key, bytes.len()), move |guest| {
                guest.add(&key, &bytes, expiry)
            })
            .await
    }

    /// Marks `key` as the most recently used and gives it a new expiry from now, without
    /// rewriting its value; `Ok(false)` on a miss or an expired entry.
    ///
    /// Edge cases: the new expiry survives restarts and crashes (a small touch record is
    /// appended to the log); a zero TTL is `InvalidTtl` (delete the key instead).
    ///
    /// # Errors
    /// `InvalidKey`, `InvalidTtl`, `Io`, `ReadOnly`, `Closed`, `Wasm`.
    pub async fn touch(&self, key: &str, expiry: impl Into<Expiry>) -> Result<bool> {
        let expiry = expiry.into();
        if let Some(tier) = &self.remote {
            return tier.touch(key, expiry).await;
        }
        let key = key.to_owned();
        let weight = Weight::of_write(&self.inner.options, 0);
        self.inner
            .run(weight, written(&key, 0), move |guest| {
                guest.touch(&key, expiry)
            })
            .await
    }

    /// Removes `key` and returns its value decoded from CBOR, in one atomic step; `Ok(None)`
    /// on a miss or an expired entry. Does not count as a hit or a miss.
    ///
    /// Edge cases: if the stored bytes are not a `T`, the entry is still removed and
    /// `Deserialize` is returned (use [`pop_raw`](Self::pop_raw) to get the bytes).
    ///
    /// # Errors
    /// `Deserialize`, `InvalidKey`, `Io`, `ReadOnly`, `Closed`, `Wasm`.
    pub async fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.pop_raw(key)
            .await?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Removes `key` and returns its raw bytes, in one atomic step; `Ok(None)` on a miss or an
    /// expired entry.
    ///
    /// # Errors
    /// Those of [`pop`](Self::pop), without `Deserialize`.
    pub async fn pop_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(tier) = &self.remote {
            return tier.pop(key).await;
        }
        let key = key.to_owned();
        let weight = Weight::of_write(&self.inner.options, 0);
        self.inner
            .run(weight, written(&key, 0), move |guest| guest.pop(&key))
            .await
    }

    /// Adds `delta` to the integer counter under `key` and returns the new value, atomically
    /// and durably (as durable as [`set`](Self::set)). A key with no live entry starts from
    /// `default` and gets the default TTL; an existing counter keeps its expiry.
    ///
    /// Counters are stored as CBOR integers, so `get::<i64>` reads them and `set(key, &5_i64)`
    /// starts one.
    ///
    /// # Errors
    /// `NotACounter` if the value under `key` is not an integer, `CounterOverflow` if the
    /// result leaves the `i64` range (nothing changes in either case), `InvalidKey`, `Io`,
    /// `ReadOnly`, `Closed`, `Wasm`.
    pub async fn incr(&self, key: &str, delta: i64, default: i64) -> Result<i64> {
        self.incr_with_ttl(key, delta, default, Expiry::Default)
            .await
    }

    /// Like [`incr`](Self::incr), but a counter this call creates expires as `expiry` says: a
    /// fixed-window rate limit is `incr_with_ttl("rate:ip:1.2.3.4", 1, 0, 60s)`. An existing
    /// counter keeps its expiry (the window does not slide).
    ///
    /// Edge cases: an expired counter counts as absent; a zero TTL is `InvalidTtl`.
    ///
    /// # Errors
    /// Those of [`incr`](Self::incr), and `InvalidTtl`.
    pub async fn incr_with_ttl(
        &self,
        key: &str,
        delta: i64,
        default: i64,
        expiry: impl Into<Expiry>,
    ) -> Result<i64> {
        let expiry = expiry.into();
        if let Some(tier) = &self.remote {
            return tier.incr(key, delta, default, expiry).await;
        }
        let key = key.to_owned();
        let weight = Weight::of_write(&self.inner.options, 9);
        self.inner
            .run(weight, written(&key, 9), move |guest| {
                guest.incr(&key, delta, default, expiry)
            })
            .await
    }

    /// Removes every key that starts with `prefix` and returns how many live entries that was.
    ///
    /// Edge cases: `""` removes everything, like [`clear`](Self::clear); no match returns 0.
    /// One small record is written whatever the count, so this is cheap even for millions of
    /// keys, and the removal survives crashes.
    ///
    /// # Errors
    /// `InvalidKey` (a prefix over 4096 bytes), `Io`, `ReadOnly`, `Closed`, `Wasm`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        match &self.remote {
            Some(tier) => tier.delete_prefix(prefix).await,
            None => self.local_delete_prefix(prefix).await,
        }
    }

    /// The local tier's `delete_prefix` (the whole operation for a local-only cache).
    pub(crate) async fn local_delete_prefix(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.inner
            .run(Weight::Heavy, written(&prefix, 0), move |guest| {
                guest.delete_prefix(&prefix)
            })
            .await
    }

    /// Removes every expired entry now and returns how many there were. Expired entries are
    /// never returned anyway and are swept before any live entry is evicted; this frees their
    /// index memory at a time of your choosing.
    ///
    /// # Errors
    /// `ReadOnly` (when there is something to remove), `Closed`, `Wasm`.
    pub async fn expire(&self) -> Result<u64> {
        self.inner
            .run(Weight::Heavy, 0, |guest| guest.expire())
            .await
    }

    /// Removes every entry (the directory itself stays), and every entry of the stores of the
    /// plugins run on this cache (`<dir>/plugins/*`).
    ///
    /// Edge cases: the application's entries are cleared first; a plugin store that cannot be
    /// cleared (another process has it open) is skipped with a warning, the others are still
    /// cleared, and the first such error is returned.
    ///
    /// # Errors
    /// `Io`, `Locked` (a plugin store open in another process), `ReadOnly`, `Closed`, `Wasm`.
    pub async fn clear(&self) -> Result<()> {
        match &self.remote {
            Some(tier) => tier.clear().await,
            None => self.local_clear().await,
        }
    }

    /// The local tier's `clear` (the whole operation for a local-only cache).
    pub(crate) async fn local_clear(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        off_runtime(move || inner.clear_all()).await
    }

    /// Every live key that starts with `prefix` (`""` for all), in byte order.
    ///
    /// Fetched from the engine a page at a time, so the guest never builds one huge list;
    /// expired entries are skipped. Keys set while the listing runs may or may not appear.
    ///
    /// # Errors
    /// `Closed`, `Wasm`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        if let Some(tier) = &self.remote {
            return tier.keys(prefix).await;
        }
        let mut keys: Vec<String> = Vec::new();
        loop {
            // Each page is a call of its own (on a blocking thread: the first scans the index),
            // so other tasks' calls run between pages.
            let after = keys.last().cloned();
            let page = self.keys_page(prefix, after.as_deref(), KEYS_PAGE).await?;
            let done = page.len() < KEYS_PAGE as usize;
            keys.extend(page);
            if done {
                return Ok(keys);
            }
            // The page's blocking task may have finished before this task first polled it (on
            // a loaded machine the woken blocking thread often preempts this one), in which
            // case nothing else ran meanwhile: give the other tasks their turn explicitly.
            tokio::task::yield_now().await;
        }
    }

    /// One page of [`keys`](Self::keys): up to `limit` keys starting with `prefix`, in byte
    /// order, all greater than `after`. Pass the last key of a page to get the next; an empty
    /// page means the end.
    ///
    /// # Errors
    /// `Closed`, `Wasm`.
    pub async fn keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        match &self.remote {
            Some(tier) => tier.keys_page(prefix, after, limit).await,
            None => self.local_keys_page(prefix, after, limit).await,
        }
    }

    /// The local tier's `keys_page`.
    pub(crate) async fn local_keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        self.inner
            .run(Weight::Heavy, 0, move |guest| {
                guest.keys(&prefix, after.as_deref(), limit)
            })
            .await
    }

    /// The cache's counters. Hit and miss counts start at zero each time the directory is
    /// opened (they are shared by all handles in this process).
    ///
    /// # Errors
    /// `Io` (the plugin stores cannot be listed), `Closed`, `Wasm`.
    pub async fn stats(&self) -> Result<Stats> {
        let inner = Arc::clone(&self.inner);
        off_runtime(move || inner.stats()).await
    }

    /// The expiry for cached search results: `CACHE_SEARCH_TTL` /
    /// [`CacheOptions::search_ttl`] if set, else [`Expiry::Default`]. The cache applies it to
    /// nothing by itself; pass it where you cache searches:
    /// `cache.set_with_ttl(&key, &hits, cache.search_expiry())`.
    pub fn search_expiry(&self) -> Expiry {
        self.inner
            .options
            .search_ttl_value()
            .map_or(Expiry::Default, Expiry::After)
    }

    /// Makes every write so far durable — synced to stable storage, so that not even a power
    /// cut loses it — and writes the index snapshot, so that the next open replays little of
    /// the log. Without it, writes reach stable storage at the cache's own checkpoints (about
    /// every 8 MiB written), at compaction, and at close; with
    /// [`CacheOptions::sync`](crate::CacheOptions::sync), every write is synced anyway.
    ///
    /// Edge cases: nothing written since the last flush makes it cheap (nothing to sync, no
    /// snapshot to write); a snapshot that does not fit the size limit or cannot be written
    /// is skipped (the next open replays more), and the flush still succeeds. Read-only: does
    /// nothing. Runs on a blocking thread.
    ///
    /// # Errors
    /// `Io` (a sync failed: what was written may not be durable), `Closed`, `Wasm`.
    pub async fn flush(&self) -> Result<()> {
        self.inner
            .run(Weight::Heavy, crate::shared::WRITES, |guest| guest.flush())
            .await
    }

    /// Closes this handle. If it is the last handle to the directory in this process, the
    /// engine flushes and writes its index now, the directory lock is released, and any error
    /// from that is returned; otherwise the cache stays open for the other handles.
    ///
    /// Dropping the last handle closes the cache too, but only logs errors. If several
    /// handles close at once, none may be the last here; the final drop closes the cache then.
    ///
    /// # Errors
    /// `Io` if the final flush fails, `Wasm`.
    pub async fn close(self) -> Result<()> {
        let last_tier = self.remote.and_then(Arc::into_inner);
        if let Some(tier) = &last_tier {
            // The last handle of this open stops the invalidation listeners, which hold
            // handles to the local tier.
            tier.shutdown().await;
        }
        let closed = off_runtime(move || SharedCache::close(self.inner)).await;
        // Last: a runtime the tier owns (`BlockingCache::open`) stops with it.
        drop(last_tier);
        closed
    }

    /// The state of the shared Redis tier of a two-tier cache ([`CacheOptions::redis`]):
    /// whether local copies are served now, the age of the last heartbeat, invalidations
    /// applied. `None` for a local-only cache.
    pub fn remote_status(&self) -> Option<crate::RemoteStatus> {
        self.remote.as_ref().map(|tier| tier.status())
    }

    /// The size limit in force, in bytes (the first opener's, in this process).
    pub fn size_limit(&self) -> u64 {
        self.inner.options.size_limit_value()
    }

    /// The cache directory (canonical absolute path).
    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    /// A blocking handle to the same cache (same engine, same options), for code without an
    /// async runtime.
    ///
    /// Edge cases: a two-tier cache's blocking handle goes through the Redis tier as this
    /// handle does, each call driven on the runtime this cache was opened on (from a plain or
    /// `spawn_blocking` thread; on that runtime's worker threads it panics, as any
    /// `Handle::block_on` there does): use it only while that runtime runs.
    pub fn blocking(&self) -> crate::BlockingCache {
        crate::BlockingCache {
            inner: Arc::clone(&self.inner),
            two_tier: self
                .remote
                .as_ref()
                .map(|_| crate::blocking::TwoTier::new(self.clone())),
        }
    }
}
