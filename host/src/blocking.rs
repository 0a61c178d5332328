//! `BlockingCache`: the same cache operations as [`PersistentCache`], for plain threads.
//!
//! [`PersistentCache`]: crate::PersistentCache

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::expiry::Expiry;
use crate::ops::{written, Stats};
use crate::options::CacheOptions;
use crate::shared::SharedCache;
use crate::{GetOrSetError, PersistentCache};

/// A blocking handle to a cache, for programs without an async runtime (as moka's
/// `sync::Cache` is to its async one). Every method blocks the calling thread until the engine
/// answers; do not call it on an async runtime's worker threads.
///
/// It shares the engine with every other handle to the same directory in the process, async
/// or blocking: [`PersistentCache::blocking`] and [`BlockingCache::to_async`] convert between
/// them. Each method behaves — edge cases and errors included — as the [`PersistentCache`]
/// method of the same name, whose documentation it links.
///
/// ```
/// # fn main() -> persistent_cache::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use persistent_cache::{BlockingCache, CacheOptions};
/// use std::time::Duration;
///
/// let cache = BlockingCache::open(CacheOptions::new(dir.path()))?;
/// cache.set_with_ttl("greeting", "hello", Duration::from_secs(60))?;
/// let handles: Vec<_> = (0..4)
///     .map(|i| {
///         let cache = cache.clone();
///         std::thread::spawn(move || cache.incr("hits", i, 0))
///     })
///     .collect();
/// for handle in handles {
///     handle.join().unwrap()?;
/// }
/// assert_eq!(cache.get::<i64>("hits")?, Some(6));
/// assert_eq!(cache.get::<String>("greeting")?.as_deref(), Some("hello"));
/// cache.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BlockingCache {
    pub(crate) inner: Arc<SharedCache>,
    /// A two-tier cache ([`CacheOptions::redis`]): every call goes through its async handle.
    pub(crate) two_tier: Option<TwoTier>,
}

/// A two-tier cache's async handle, whose calls a blocking handle drives to completion on the
/// runtime its Redis connections live on (one the tier owns after [`BlockingCache::open`], or
/// the one the cache was opened on).
#[derive(Clone, Debug)]
pub(crate) struct TwoTier {
    cache: PersistentCache,
}

impl TwoTier {
    /// `cache` has a Redis tier.
    pub(crate) fn new(cache: PersistentCache) -> TwoTier {
        TwoTier { cache }
    }

    /// Drives `call` to completion on this thread, with the Redis tier's runtime entered (its
    /// connections' I/O and timers run on that runtime's worker).
    fn run<T>(&self, call: impl Future<Output = T>) -> T {
        let tier = self
            .cache
            .remote
            .as_ref()
            .expect("a two-tier cache has a Redis tier");
        tier.runtime().block_on(call)
    }
}

impl BlockingCache {
    /// See [`PersistentCache::open`].
    ///
    /// Edge cases: with a Redis tier ([`CacheOptions::redis`]) the handle starts a small tokio
    /// runtime of its own (one worker, `pcache-redis`) for the Redis connections and
    /// invalidation listeners, and each call is driven to completion on the calling thread;
    /// the runtime stops when the last handle of this open (blocking or async, from
    /// [`to_async`](Self::to_async)) goes. Calling it from inside an async runtime's worker
    /// thread panics there (use [`PersistentCache`]).
    pub fn open(options: CacheOptions) -> Result<BlockingCache> {
        if options.redis_url_value().is_none() {
            return Ok(BlockingCache {
                inner: SharedCache::open(options)?,
                two_tier: None,
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pcache-redis")
            .enable_all()
            .build()
            .map_err(crate::Error::Io)?;
        let cache = runtime.block_on(PersistentCache::open(options))?;
        cache
            .remote
            .as_ref()
            .expect("a Redis URL opens a two-tier cache")
            .own_runtime(runtime);
        Ok(BlockingCache {
            inner: Arc::clone(&cache.inner),
            two_tier: Some(TwoTier::new(cache)),
        })
    }

    /// See [`PersistentCache::set`].
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.set(key, value));
        }
        self.inner.set_value(key, value, Expiry::Default)
    }

    /// See [`PersistentCache::set_with_ttl`].
    pub fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expiry: impl Into<Expiry>,
    ) -> Result<()> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.set_with_ttl(key, value, expiry));
        }
        self.inner.set_value(key, value, expiry.into())
    }

    /// See [`PersistentCache::get`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.get(key));
        }
        self.inner.get_value(key)
    }

    /// See [`PersistentCache::set_raw`].
    pub fn set_raw(&self, key: &str, value: &[u8], expiry: impl Into<Expiry>) -> Result<()> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.set_raw(key, value, expiry));
        }
        let expiry = expiry.into();
        self.inner.call(written(key, value.len()), |guest| {
            guest.set(key, value, expiry)
        })
    }

    /// See [`PersistentCache::get_raw`].
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.get_raw(key));
        }
        self.inner.call(0, |guest| guest.get(key))
    }

    /// See [`PersistentCache::get_many_raw`].
    pub fn get_many_raw<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.get_many_raw(keys));
        }
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        self.inner.call(0, |guest| guest.get_many(&keys))
    }

    /// See [`PersistentCache::set_many_raw`].
    pub fn set_many_raw<K: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        entries: &[(K, V)],
        expiry: impl Into<Expiry>,
    ) -> Result<()> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.set_many_raw(entries, expiry));
        }
        let expiry = expiry.into();
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_vec()))
            .collect();
        let written_total = entries.iter().map(|(k, v)| written(k, v.len())).sum();
        self.inner
            .call(written_total, |guest| guest.set_many(&entries, expiry))
    }

    /// See [`PersistentCache::delete`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.delete(key));
        }
        self.inner.call(written(key, 0), |guest| guest.delete(key))
    }

    /// See [`PersistentCache::contains`].
    pub fn contains(&self, key: &str) -> Result<bool> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.contains(key));
        }
        self.inner.call(0, |guest| guest.contains(key))
    }

    /// See [`PersistentCache::add`].
    pub fn add<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expiry: impl Into<Expiry>,
    ) -> Result<bool> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.add(key, value, expiry));
        }
        self.inner.add_value(key, value, expiry.into())
    }

    /// See [`PersistentCache::touch`].
    pub fn touch(&self, key: &str, expiry: impl Into<Expiry>) -> Result<bool> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.touch(key, expiry));
        }
        let expiry = expiry.into();
        self.inner
            .call(written(key, 0), |guest| guest.touch(key, expiry))
    }

    /// See [`PersistentCache::pop`].
    pub fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.pop(key));
        }
        self.inner.pop_value(key)
    }

    /// See [`PersistentCache::pop_raw`].
    pub fn pop_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.pop_raw(key));
        }
        self.inner.call(written(key, 0), |guest| guest.pop(key))
    }

    /// See [`PersistentCache::incr`].
    pub fn incr(&self, key: &str, delta: i64, default: i64) -> Result<i64> {
        self.incr_with_ttl(key, delta, default, Expiry::Default)
    }

    /// See [`PersistentCache::incr_with_ttl`].
    pub fn incr_with_ttl(
        &self,
        key: &str,
        delta: i64,
        default: i64,
        expiry: impl Into<Expiry>,
    ) -> Result<i64> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.incr_with_ttl(key, delta, default, expiry));
        }
        let expiry = expiry.into();
        self.inner.call(written(key, 9), |guest| {
            guest.incr(key, delta, default, expiry)
        })
    }

    /// See [`PersistentCache::delete_prefix`].
    pub fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.delete_prefix(prefix));
        }
        self.inner
            .call(written(prefix, 0), |guest| guest.delete_prefix(prefix))
    }

    /// See [`PersistentCache::expire`].
    pub fn expire(&self) -> Result<u64> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.expire());
        }
        self.inner.call(0, |guest| guest.expire())
    }

    /// See [`PersistentCache::clear`].
    pub fn clear(&self) -> Result<()> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.clear());
        }
        self.inner.clear_all()
    }

    /// See [`PersistentCache::keys`].
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.keys(prefix));
        }
        let mut keys = Vec::new();
        while !self.inner.next_keys_page(prefix, &mut keys)? {}
        Ok(keys)
    }

    /// See [`PersistentCache::keys_page`].
    pub fn keys_page(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.keys_page(prefix, after, limit));
        }
        self.inner.call(0, |guest| guest.keys(prefix, after, limit))
    }

    /// See [`PersistentCache::stats`].
    pub fn stats(&self) -> Result<Stats> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.stats());
        }
        self.inner.stats()
    }

    /// See [`PersistentCache::search_expiry`].
    pub fn search_expiry(&self) -> Expiry {
        self.to_async().search_expiry()
    }

    /// See [`PersistentCache::get_or_set_with`]: the same single flight (shared with async
    /// callers of the same directory), with a computation that runs on this thread.
    pub fn get_or_set_with<T, F>(
        &self,
        key: &str,
        expiry: impl Into<Expiry>,
        compute: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        let cache = self.to_async();
        let flight = cache.get_or_set_with(key, expiry, || async { compute() });
        match &self.two_tier {
            Some(t) => t.run(flight),
            // The async version awaits only its flight's channel and the engine calls (which
            // run inline), so a minimal executor drives it on this thread.
            None => pollster::block_on(flight),
        }
    }

    /// See [`PersistentCache::try_get_or_set_with`].
    pub fn try_get_or_set_with<T, E, F>(
        &self,
        key: &str,
        expiry: impl Into<Expiry>,
        compute: F,
    ) -> std::result::Result<T, GetOrSetError<E>>
    where
        T: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> std::result::Result<T, E>,
    {
        let cache = self.to_async();
        let flight = cache.try_get_or_set_with(key, expiry, || async { compute() });
        match &self.two_tier {
            Some(t) => t.run(flight),
            None => pollster::block_on(flight),
        }
    }

    /// See [`PersistentCache::flush`].
    pub fn flush(&self) -> Result<()> {
        if let Some(t) = &self.two_tier {
            return t.run(t.cache.flush());
        }
        self.inner.flush()
    }

    /// See [`PersistentCache::close`].
    pub fn close(self) -> Result<()> {
        let Some(TwoTier { cache }) = self.two_tier else {
            return SharedCache::close(self.inner);
        };
        // Only the last handle closes: this one's engine reference must be gone first.
        drop(self.inner);
        let runtime = cache
            .remote
            .as_ref()
            .expect("a two-tier cache has a Redis tier")
            .runtime()
            .clone();
        // The last handle's close stops a runtime the tier owns, last.
        runtime.block_on(cache.close())
    }

    /// See [`PersistentCache::directory`].
    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    /// An async handle to the same cache (for a two-tier cache, the same Redis tier: its
    /// runtime keeps running as long as this handle lives).
    pub fn to_async(&self) -> PersistentCache {
        match &self.two_tier {
            Some(t) => t.cache.clone(),
            None => PersistentCache {
                inner: Arc::clone(&self.inner),
                remote: None,
            },
        }
    }
}
