//! `PersistentCache`: the async, cloneable handle to one cache directory, backed by a sandboxed guest.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout;
use crate::options::CacheOptions;
use crate::runtime::Guest;
use crate::worker::GuestSupervisor;

/// How long `open` waits for a cache of the same directory that is being shut down in this
/// process to finish before going ahead (the file lock then decides).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The smallest store a plugin gets: 64 KiB (with less of the plugin budget left, it does not run).
pub const MIN_PLUGIN_STORE: u64 = 64 << 10;

/// Keys fetched from the guest per call by [`PersistentCache::keys`].
const KEYS_PAGE: u32 = 1000;

/// A snapshot of a cache's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Live entries (expired entries not yet swept may be included).
    pub entries: u64,
    /// Bytes the cache occupies on disk.
    pub volume: u64,
    /// The cache directory (canonical path).
    pub directory: PathBuf,
    /// The size limit in bytes.
    pub size_limit: u64,
    /// `get` calls that found a value since the cache was opened in this process.
    pub hits: u64,
    /// `get` calls that found nothing (missing or expired) since the cache was opened in this process.
    pub misses: u64,
    /// Entries removed because their TTL had passed (found by a read, by [`expire`], or swept
    /// to make room) since the cache was opened in this process.
    ///
    /// [`expire`]: PersistentCache::expire
    pub expired: u64,
    /// Live entries removed by LRU eviction to stay under the size limit since the cache was
    /// opened in this process.
    pub evicted: u64,
    /// Bytes the stores of the plugins run on this cache (`<dir>/plugins/*`) occupy on disk,
    /// all together; not part of `volume`.
    pub plugin_volume: u64,
    /// The most bytes those plugin stores may hold together
    /// ([`CacheOptions::plugin_budget`]).
    pub plugin_budget: u64,
}

/// A persistent, size-limited LRU cache with per-entry TTLs, stored in one directory.
///
/// The storage engine runs as a WebAssembly component that can only touch the cache directory.
/// Handles are cheap to clone and may be shared across threads and tasks; every handle to the
/// same directory in a process shares one engine instance. A directory can be open in only one
/// process at a time (an advisory lock on `<dir>/.lock` enforces this).
///
/// Values are encoded with serde as CBOR ([`set`](Self::set), [`get`](Self::get)) or stored as
/// raw bytes ([`set_raw`](Self::set_raw), [`get_raw`](Self::get_raw)).
#[derive(Clone)]
pub struct PersistentCache {
    pub(crate) inner: Arc<Inner>,
}

/// The state shared by every handle to one directory.
pub(crate) struct Inner {
    /// Distinguishes this instance's registry entry from a later one for the same directory.
    id: u64,
    directory: PathBuf,
    options: CacheOptions,
    /// The thread running this cache's guest; `None` once closed.
    guest: Mutex<GuestSupervisor>,
    /// Holds the exclusive lock on `<dir>/.lock` until shutdown.
    lock_file: Mutex<Option<File>>,
    /// Computations in progress for `get_or_set_with`, by key (see `single_flight`).
    pub(crate) flights: crate::single_flight::Flights,
}

/// The caches open in this process, by canonical directory.
static OPEN_CACHES: LazyLock<Mutex<HashMap<PathBuf, RegistryEntry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

static NEXT_INNER_ID: AtomicU64 = AtomicU64::new(0);

struct RegistryEntry {
    id: u64,
    inner: Weak<Inner>,
}

fn open_caches() -> MutexGuard<'static, HashMap<PathBuf, RegistryEntry>> {
    OPEN_CACHES.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PersistentCache {
    /// Opens (creating if needed) the cache in `options.directory` and recovers its contents.
    ///
    /// If this process already has the directory open, returns another handle to that cache and
    /// ignores `options` (the first opener's options stay in force).
    ///
    /// # Errors
    /// - [`Error::Directory`]: the directory or its lock file cannot be created or opened.
    /// - [`Error::Locked`]: another process has the directory open.
    /// - [`Error::Corrupt`] / [`Error::IncompatibleFormat`] / [`Error::Io`]: the engine cannot
    ///   recover the directory's contents.
    /// - [`Error::Wasm`]: the guest component failed to compile, instantiate or run.
    pub async fn open(options: CacheOptions) -> Result<PersistentCache> {
        // Opening blocks: it may compile the component (first open in the process), waits
        // for the guest to recover the directory, and may wait for a closing handle.
        blocking(move || Self::open_blocking(options)).await
    }

    fn open_blocking(options: CacheOptions) -> Result<PersistentCache> {
        let directory = layout::create_cache_directory(&options.directory, options.modes())?;
        let wait_started = Instant::now();
        loop {
            let mut registry = open_caches();
            if let Some(entry) = registry.get(&directory) {
                if let Some(inner) = entry.inner.upgrade() {
                    return Ok(PersistentCache { inner });
                }
                // The last handle is being dropped on another thread; its shutdown removes the
                // entry once the files are closed and unlocked.
                if wait_started.elapsed() < SHUTDOWN_WAIT {
                    drop(registry);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                registry.remove(&directory);
            }
            let inner = Arc::new(Inner::start(directory.clone(), options)?);
            registry.insert(
                directory,
                RegistryEntry {
                    id: inner.id,
                    inner: Arc::downgrade(&inner),
                },
            );
            return Ok(PersistentCache { inner });
        }
    }

    /// Stores `value` (CBOR-encoded) under `key`, expiring after the configured default TTL
    /// (never, if none is configured). Replaces any previous value.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] (empty or over 4096 bytes), [`Error::ValueTooLarge`] (the entry
    /// exceeds the size limit), [`Error::Serialize`], [`Error::Io`], [`Error::Closed`],
    /// [`Error::Wasm`].
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = encode(value)?;
        let ttl_ms = self.inner.options.default_ttl.map(ttl_millis);
        self.inner.call(|guest| guest.set(key, &bytes, ttl_ms))
    }

    /// Stores `value` (CBOR-encoded) under `key`, expiring `ttl` from now. Replaces any
    /// previous value. TTLs are rounded up to whole milliseconds; a zero TTL stores an entry
    /// that is already expired.
    ///
    /// # Errors
    /// Same as [`set`](Self::set).
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<()> {
        let bytes = encode(value)?;
        self.inner
            .call(|guest| guest.set(key, &bytes, Some(ttl_millis(ttl))))
    }

    /// The value under `key`, decoded from CBOR; `Ok(None)` on a miss or an expired entry.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the stored bytes are not a `T`, [`Error::InvalidKey`],
    /// [`Error::Io`], [`Error::Corrupt`] (the record fails its checksum), [`Error::Closed`],
    /// [`Error::Wasm`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_raw(key).await? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores raw `value` bytes under `key`, expiring after `ttl` if given; `None` means the
    /// entry never expires (the default TTL is not applied). Replaces any previous value.
    ///
    /// # Errors
    /// Same as [`set`](Self::set), without [`Error::Serialize`].
    pub async fn set_raw(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner
            .call(|guest| guest.set(key, value, ttl.map(ttl_millis)))
    }

    /// The raw bytes under `key`; `Ok(None)` on a miss or an expired entry.
    ///
    /// # Errors
    /// Same as [`get`](Self::get), without [`Error::Deserialize`].
    pub async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.call(|guest| guest.get(key))
    }

    /// Removes `key`; `Ok(true)` if a live entry was removed, `Ok(false)` on a miss or an
    /// expired entry.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Io`], [`Error::Closed`], [`Error::Wasm`].
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.call(|guest| guest.delete(key))
    }

    /// Whether `key` holds a live (present, unexpired) entry. Answered from the engine's
    /// in-memory index: reads no file, is not counted as a hit or a miss, and does not make the
    /// entry more recently used.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Closed`], [`Error::Wasm`].
    pub async fn contains(&self, key: &str) -> Result<bool> {
        self.inner.call(|guest| guest.contains(key))
    }

    /// Stores `value` (CBOR-encoded) under `key` only if the key holds no live entry, in one
    /// atomic step; `Ok(true)` if it was stored, `Ok(false)` if the key was present (the old
    /// value stays and keeps its recency). `ttl: None` applies the default TTL, as [`set`](Self::set).
    ///
    /// Edge cases: an expired entry counts as absent. An invalid key or a value too large for
    /// the size limit is an error even when the key is present.
    ///
    /// # Errors
    /// Same as [`set`](Self::set).
    pub async fn add<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let bytes = encode(value)?;
        let ttl_ms = ttl.or(self.inner.options.default_ttl).map(ttl_millis);
        self.inner.call(|guest| guest.add(key, &bytes, ttl_ms))
    }

    /// Marks `key` as the most recently used and gives it a new TTL from now (`None`: it never
    /// expires), without rewriting its value; `Ok(false)` on a miss or an expired entry.
    ///
    /// Edge cases: a zero TTL expires the entry at once; the new expiry survives restarts and
    /// crashes (a small touch record is appended to the log).
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Io`], [`Error::Closed`], [`Error::Wasm`].
    pub async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.inner
            .call(|guest| guest.touch(key, ttl.map(ttl_millis)))
    }

    /// Removes `key` and returns its value decoded from CBOR, in one atomic step; `Ok(None)`
    /// on a miss or an expired entry. Does not count as a hit or a miss.
    ///
    /// Edge cases: if the stored bytes are not a `T`, the entry is still removed and
    /// [`Error::Deserialize`] is returned (use [`pop_raw`](Self::pop_raw) to get the bytes).
    ///
    /// # Errors
    /// [`Error::Deserialize`], [`Error::InvalidKey`], [`Error::Io`], [`Error::Closed`],
    /// [`Error::Wasm`].
    pub async fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.pop_raw(key).await? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Removes `key` and returns its raw bytes, in one atomic step; `Ok(None)` on a miss or an
    /// expired entry.
    ///
    /// # Errors
    /// Same as [`pop`](Self::pop), without [`Error::Deserialize`].
    pub async fn pop_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.call(|guest| guest.pop(key))
    }

    /// Adds `delta` to the integer counter under `key` and returns the new value, atomically
    /// and durably (as durable as [`set`](Self::set)). A key with no live entry starts from
    /// `default` and gets the default TTL; an existing counter keeps its expiry.
    ///
    /// Counters are stored as CBOR integers, so `get::<i64>` reads them and `set(key, &5_i64)`
    /// starts one.
    ///
    /// # Errors
    /// [`Error::NotACounter`] if the value under `key` is not an integer,
    /// [`Error::CounterOverflow`] if the result leaves the `i64` range (nothing changes in
    /// either case), [`Error::InvalidKey`], [`Error::Io`], [`Error::Closed`], [`Error::Wasm`].
    pub async fn incr(&self, key: &str, delta: i64, default: i64) -> Result<i64> {
        let ttl_ms = self.inner.options.default_ttl.map(ttl_millis);
        self.inner
            .call(|guest| guest.incr(key, delta, default, ttl_ms))
    }

    /// Like [`incr`](Self::incr), but a counter this call creates expires `ttl` from now: a
    /// fixed-window rate limit is `incr_with_ttl("rate:ip:1.2.3.4", 1, 0, 60s)`. An existing
    /// counter keeps its expiry (the window does not slide).
    ///
    /// Edge cases: a zero TTL creates a counter that is already expired, so the next call
    /// starts from `default` again; an expired counter counts as absent.
    ///
    /// # Errors
    /// Same as [`incr`](Self::incr).
    pub async fn incr_with_ttl(
        &self,
        key: &str,
        delta: i64,
        default: i64,
        ttl: Duration,
    ) -> Result<i64> {
        let ttl_ms = Some(ttl_millis(ttl));
        self.inner
            .call(|guest| guest.incr(key, delta, default, ttl_ms))
    }

    /// Removes every key that starts with `prefix` and returns how many live entries that was.
    ///
    /// Edge cases: `""` removes everything, like [`clear`](Self::clear); no match returns 0.
    /// One small record is written whatever the count, so this is cheap even for millions of
    /// keys, and the removal survives crashes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] (a prefix over 4096 bytes), [`Error::Io`], [`Error::Closed`],
    /// [`Error::Wasm`].
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.call(|guest| guest.delete_prefix(prefix))
    }

    /// Removes every expired entry now and returns how many there were. Expired entries are
    /// never returned anyway and are swept before any live entry is evicted; this frees their
    /// index memory at a time of your choosing.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Wasm`].
    pub async fn expire(&self) -> Result<u64> {
        self.inner.call(|guest| guest.expire())
    }

    /// Removes every entry (the directory itself stays), and every entry of the stores of the
    /// plugins run on this cache (`<dir>/plugins/*`).
    ///
    /// Edge cases: the application's entries are cleared first; a plugin store that cannot be
    /// cleared (another process has it open) is skipped with a warning, the others are still
    /// cleared, and the first such error is returned.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Locked`] (a plugin store open in another process),
    /// [`Error::Closed`], [`Error::Wasm`].
    pub async fn clear(&self) -> Result<()> {
        self.inner.call(|guest| guest.clear())?;
        let directory = self.inner.directory.clone();
        let stores = blocking(move || layout::plugin_stores(&directory).map_err(io_error)).await?;
        let mut first_error = None;
        for (name, _) in stores {
            // Another handle if the plugin runs now, else a short-lived open of its store (its
            // size limit then does not matter: the store is emptied and closed at once).
            let options = self.plugin_store_options(&name, MIN_PLUGIN_STORE);
            let cleared = match PersistentCache::open(options).await {
                Ok(store) => {
                    // A plugin store's own entries (plugins do not run plugins).
                    let cleared = store.inner.call(|guest| guest.clear());
                    cleared.and(store.close().await)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = cleared {
                tracing::warn!(plugin = %name, error = %err, "cannot clear a plugin's store");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes the directories of plugin `name`'s store (real ones: a symlink planted under
    /// `plugins/` is refused, never followed) and returns the size limit the store gets:
    /// `wanted`, or less if that is all the plugin budget leaves after the other plugins'
    /// stores (their size limit while open in this process, else the bytes they hold on disk).
    ///
    /// Edge cases: a symlink or file in the way → [`Error::Directory`]; less than
    /// [`MIN_PLUGIN_STORE`] left → [`PluginFailure::Budget`] naming what holds the budget; an
    /// unreadable `plugins/` → [`Error::Io`].
    ///
    /// [`PluginFailure::Budget`]: crate::PluginFailure::Budget
    pub(crate) async fn prepare_plugin_store(&self, name: &str, wanted: u64) -> Result<u64> {
        let directory = self.inner.directory.clone();
        let mode = self.inner.options.modes().directory;
        let others = {
            let name = name.to_owned();
            blocking(move || {
                let plugins = crate::plugin::PLUGINS_DIRECTORY;
                let parent = layout::real_subdirectory(&directory, plugins, mode)?;
                layout::real_subdirectory(&parent, &name, mode)?;
                let stores = layout::plugin_stores(&directory).map_err(io_error)?;
                Ok(stores
                    .into_iter()
                    .filter(|(other, _)| *other != name)
                    .map(|(_, path)| {
                        let open = std::fs::canonicalize(&path)
                            .ok()
                            .and_then(|canonical| open_size_limit(&canonical));
                        open.unwrap_or_else(|| layout::engine_bytes(&path))
                    })
                    .fold(0u64, u64::saturating_add))
            })
            .await?
        };
        let budget = self.inner.options.plugin_budget;
        let left = budget.saturating_sub(others);
        if left < MIN_PLUGIN_STORE {
            return Err(Error::Plugin {
                plugin: name.to_owned(),
                failure: crate::PluginFailure::Budget(format!(
                    "the other plugins' stores hold {others} of the {budget}-byte plugin budget \
                     (clear the cache or raise CacheOptions::plugin_budget)"
                )),
            });
        }
        Ok(wanted.min(left))
    }

    /// The options of the store of the plugin `name` run on this cache: its directory under
    /// `plugins/`, this cache's clock, component, code cache and modes, and `size_limit`
    /// (which only applies if this opens the store first).
    pub(crate) fn plugin_store_options(&self, name: &str, size_limit: u64) -> CacheOptions {
        let parent = self.options();
        let directory = self
            .directory()
            .join(crate::plugin::PLUGINS_DIRECTORY)
            .join(name);
        let mut options = CacheOptions::new(directory)
            .size_limit(size_limit.max(1))
            .clock(parent.clock.clone())
            .component(parent.component.clone())
            .code_cache(parent.code_cache.clone())
            .group_access(parent.group_access)
            .plugin_budget(0);
        options.time_limit = parent.time_limit;
        options
    }

    /// Every live key that starts with `prefix` (`""` for all), in byte order.
    ///
    /// Fetched from the engine a page at a time, so the guest never builds one huge list;
    /// expired entries are skipped. Keys set while the listing runs may or may not appear.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Wasm`].
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let page = self
                .keys_page(prefix, keys.last().map(String::as_str), KEYS_PAGE)
                .await?;
            let done = page.len() < KEYS_PAGE as usize;
            keys.extend(page);
            if done {
                return Ok(keys);
            }
        }
    }

    /// One page of [`keys`](Self::keys): up to `limit` keys starting with `prefix`, in byte
    /// order, all greater than `after`. Pass the last key of a page to get the next; an empty
    /// page means the end.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Wasm`].
    pub async fn keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.inner.call(|guest| guest.keys(prefix, after, limit))
    }

    /// The cache's counters. Hit and miss counts start at zero each time the directory is
    /// opened (they are shared by all handles in this process).
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Wasm`].
    pub async fn stats(&self) -> Result<Stats> {
        let counters = self.inner.call(|guest| guest.stats())?;
        let directory = self.inner.directory.clone();
        let plugin_volume = if directory.join(crate::plugin::PLUGINS_DIRECTORY).exists() {
            blocking(move || {
                let stores = layout::plugin_stores(&directory).map_err(io_error)?;
                Ok(stores
                    .iter()
                    .map(|(_, path)| layout::engine_bytes(path))
                    .sum())
            })
            .await?
        } else {
            0
        };
        Ok(Stats {
            entries: counters.entries,
            volume: counters.volume,
            directory: self.inner.directory.clone(),
            size_limit: counters.size_limit,
            hits: counters.hits,
            misses: counters.misses,
            expired: counters.expired,
            evicted: counters.evicted,
            plugin_volume,
            plugin_budget: self.inner.options.plugin_budget,
        })
    }

    /// Closes this handle. If it is the last handle to the directory in this process, the
    /// engine flushes and writes its index now, the directory lock is released, and any error
    /// from that is returned; otherwise the cache stays open for the other handles.
    ///
    /// Dropping the last handle closes the cache too, but only logs errors. If several
    /// handles close at once, none may be the last here; the final drop closes the cache then.
    ///
    /// # Errors
    /// [`Error::Io`] if the final flush fails, [`Error::Wasm`].
    pub async fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.inner) {
            // Shutting down joins the guest thread after it wrote the index snapshot.
            Ok(inner) => blocking(move || inner.shutdown()).await,
            Err(_still_shared) => Ok(()),
        }
    }

    /// The cache directory (canonical absolute path).
    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    /// The options the cache was opened with (those of the first opener in this process).
    pub fn options(&self) -> &CacheOptions {
        &self.inner.options
    }
}

/// Runs blocking work (files, the engine's recovery, shutdown) off the async runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(Error::Wasm("a blocking task of the cache panicked".into())))
}

/// The size limit of the cache open in this process on the canonical `directory`, if any.
pub(crate) fn open_size_limit(directory: &Path) -> Option<u64> {
    let registry = open_caches();
    let inner = registry.get(directory)?.inner.upgrade();
    // Release the registry before `inner` may drop (the last handle's shutdown takes it).
    drop(registry);
    inner.map(|inner| inner.options.size_limit)
}

fn io_error(err: std::io::Error) -> Error {
    Error::Io(err.to_string())
}

impl fmt::Debug for PersistentCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentCache")
            .field("directory", &self.inner.directory)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Inner {
    /// Locks the directory and starts a guest thread with the cache open.
    fn start(directory: PathBuf, options: CacheOptions) -> Result<Inner> {
        let lock_file = layout::lock(&directory, options.modes())?;
        let data = layout::data_directory(&directory, options.modes())?;
        let guest = GuestSupervisor::start(data, options.clone())?;
        Ok(Inner {
            id: NEXT_INNER_ID.fetch_add(1, Ordering::Relaxed),
            directory,
            options,
            guest: Mutex::new(guest),
            lock_file: Mutex::new(Some(lock_file)),
            flights: crate::single_flight::Flights::default(),
        })
    }

    /// Runs `operation` on the guest thread; [`Error::Closed`] once the cache is closed.
    pub(crate) fn call<T>(&self, operation: impl FnOnce(&mut Guest) -> Result<T>) -> Result<T> {
        // Engine calls take microseconds (a large value or a compaction, milliseconds); they
        // run right here, one at a time.
        self.guest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .call(operation)
    }

    /// Closes the guest, releases the directory lock and unregisters this cache. Idempotent.
    fn shutdown(&self) -> Result<()> {
        let mut registry = open_caches();
        let closed = self
            .guest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .close();
        // Dropping the file releases the advisory lock.
        drop(
            self.lock_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if registry
            .get(&self.directory)
            .is_some_and(|entry| entry.id == self.id)
        {
            registry.remove(&self.directory);
        }
        closed
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(directory = %self.directory.display(), error = %err, "closing the cache failed");
        }
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|err| Error::Serialize(err.to_string()))?;
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|err| Error::Deserialize(err.to_string()))
}

/// A TTL in whole milliseconds, rounded up so a sub-millisecond TTL is not "already expired".
fn ttl_millis(ttl: Duration) -> u64 {
    let rounded_up = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(rounded_up).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Page {
        url: String,
        status: u16,
    }

    #[test]
    fn cbor_round_trip() {
        let page = Page {
            url: "https://example.com".into(),
            status: 200,
        };
        let bytes = encode(&page).expect("encodes");
        assert_eq!(decode::<Page>(&bytes).expect("decodes"), page);
        let text = encode("hello").expect("encodes unsized str");
        assert_eq!(decode::<String>(&text).expect("decodes"), "hello");
    }

    #[test]
    fn decoding_the_wrong_type_is_a_deserialize_error() {
        let bytes = encode(&42_u32).expect("encodes");
        assert!(matches!(decode::<Page>(&bytes), Err(Error::Deserialize(_))));
        assert!(matches!(
            decode::<u32>(&[0xff, 0x00]),
            Err(Error::Deserialize(_))
        ));
    }

    #[test]
    fn ttl_rounds_up_to_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 0);
        assert_eq!(ttl_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }

    #[tokio::test]
    async fn one_directory_shares_one_instance_per_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = PersistentCache::open(CacheOptions::new(dir.path().join("c")))
            .await
            .expect("open");
        let second = PersistentCache::open(CacheOptions::new(dir.path().join("c/../c")))
            .await
            .expect("second open of the same directory");
        assert!(Arc::ptr_eq(&first.inner, &second.inner));
        assert_eq!(first.directory(), second.directory());
        first.set_raw("k", b"v", None).await.expect("set");
        assert_eq!(second.get_raw("k").await.expect("get"), Some(b"v".to_vec()));

        // Closing one of two handles leaves the cache open for the other.
        first.close().await.expect("close shared handle");
        assert!(second.delete("k").await.expect("delete"));
        second.close().await.expect("close last handle");

        // The lock is released and the registry entry gone: a new open starts a new instance.
        let reopened = PersistentCache::open(CacheOptions::new(dir.path().join("c")))
            .await
            .expect("reopen");
        assert_eq!(reopened.get_raw("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_unlocks_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .expect("open");
        cache.set("kept", &7_u8).await.expect("set");
        assert!(matches!(
            layout::lock(dir.path(), crate::layout::Modes::new(false)),
            Err(Error::Locked { .. })
        ));
        drop(cache);
        drop(
            layout::lock(dir.path(), crate::layout::Modes::new(false))
                .expect("lock released on drop"),
        );
        let reopened = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(reopened.get::<u8>("kept").await.expect("get"), Some(7));
    }

    #[tokio::test]
    async fn a_directory_locked_elsewhere_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = layout::lock(dir.path(), crate::layout::Modes::new(false)).expect("lock");
        assert!(matches!(
            PersistentCache::open(CacheOptions::new(dir.path())).await,
            Err(Error::Locked { .. })
        ));
        drop(held);
        assert!(PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .is_ok());
    }
}
