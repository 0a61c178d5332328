//! `GuestInstance`: one running instance of the guest component, and `GuestCache`: the typed
//! calls of one `cache` resource it holds open.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::bindings::{
    CacheExports, CacheGuest, GuestCounters, GuestError, GuestMaintenance, GuestOpenOptions,
    GuestValueSource,
};
use crate::epoch::Ticking;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::options::CacheOptions;
use crate::runtime::{runtime, GuestState, WasiWallClock};
use crate::stop::{deadline_ticks, limit_error, GuestLimiter};

/// Where the cache directory appears inside the guest.
pub(crate) const GUEST_DIRECTORY: &str = "/cache";

/// Sets `store`'s deadline to `ticks` from now and hands it back, for the call about to start.
fn arm(store: &mut Store<GuestState>, ticks: u64) -> &mut Store<GuestState> {
    store.set_epoch_deadline(ticks);
    store
}
/// One instance of the guest component, with its own store, seeing each of its preopened
/// directories under its guest path. It holds as many open caches as it was given directories.
pub(crate) struct GuestInstance {
    store: Store<GuestState>,
    /// Keeps the epoch advancing while this guest exists (its calls' deadlines).
    _ticking: Ticking,
    bindings: CacheGuest,
    trapped: bool,
    /// The last call failed with `would-block` (non-blocking mode): it changed nothing.
    would_block: bool,
    /// The last call failed with `stale`: the guest must be reopened (see `take_stale`).
    stale: bool,
    /// `get` calls of this instance that found a value / nothing.
    hits: u64,
    misses: u64,
    /// Hits and misses of earlier instances on the same cache (trapped and restarted).
    carried: (u64, u64),
    /// Each call's deadline, in epoch ticks from its start.
    deadline: u64,
    time_limit: Duration,
    memory_limit: u64,
}

/// How the guest opens one cache (the WIT `open-options` without the directory).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenSettings {
    pub(crate) size_limit: u64,
    pub(crate) sync_writes: bool,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) read_only: bool,
    /// Other processes may have the directory open (the host mediates with `WriteLock`).
    pub(crate) shared: bool,
    /// Bytes of the hot value cache (`None`: the engine's default).
    pub(crate) memory_budget: Option<u64>,
}

impl GuestInstance {
    /// Instantiates a guest that sees each `(host directory, guest path)` of `preopens`
    /// read-write (or read-only with `read_only`) and reads time from `options`' clock.
    ///
    /// The guest gets no environment, arguments, stdio or network. Edge cases: a directory
    /// that cannot be opened → `Error::Directory`; a component that does not instantiate, or
    /// runs past its limits while starting → `Error::Wasm` / `TimeLimit` / `MemoryLimit`.
    pub(crate) fn instantiate(
        preopens: &[(&Path, &str)],
        read_only: bool,
        options: &CacheOptions,
    ) -> Result<GuestInstance> {
        let runtime = runtime(options)?;
        let clock = Arc::clone(options.clock_ref());
        let mut wasi = WasiCtxBuilder::new();
        // Must precede `preopened_dir`, which captures the setting.
        wasi.allow_blocking_current_thread(true)
            .wall_clock(WasiWallClock(clock));
        let perms = if read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        for (directory, guest_path) in preopens {
            wasi.preopened_dir(directory, guest_path, perms)
                .map_err(|err| Error::Directory {
                    path: directory.to_path_buf(),
                    source: std::io::Error::other(format!("{err:#}")),
                })?;
        }
        let memory_limit = options.effective_memory_limit();
        let time_limit = options.time_limit_value();
        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(memory_limit),
            file_mode: options.modes().file,
            staged: None,
            stage_max: options.size_limit_value(),
        };
        let ticking = Ticking::start(&runtime.engine);
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| &mut state.limiter);
        let deadline = deadline_ticks(time_limit);
        let instantiated = runtime.instance_pre.instantiate(arm(&mut store, deadline));
        let bindings = instantiated.map_err(|err| limit_error(&err, time_limit, memory_limit))?;
        Ok(GuestInstance {
            _ticking: ticking,
            store,
            bindings,
            trapped: false,
            would_block: false,
            stale: false,
            hits: 0,
            misses: 0,
            carried: (0, 0),
            deadline,
            time_limit,
            memory_limit,
        })
    }

    /// True (once) if the last call was refused in non-blocking mode: it changed nothing.
    pub(crate) fn take_would_block(&mut self) -> bool {
        std::mem::take(&mut self.would_block)
    }

    /// True (once) if the last call found the guest's view of a shared directory stale:
    /// other processes rewrote the whole log since it last looked, and it must be reopened.
    pub(crate) fn take_stale(&mut self) -> bool {
        std::mem::take(&mut self.stale)
    }

    /// The hits and misses of `get` calls this instance answered, earlier instances' included.
    pub(crate) fn hits_and_misses(&self) -> (u64, u64) {
        (self.carried.0 + self.hits, self.carried.1 + self.misses)
    }

    /// Makes this instance's counters continue from `carried` hits and misses.
    pub(crate) fn carry(&mut self, carried: (u64, u64)) {
        self.carried = carried;
    }

    /// True once a call has trapped; the instance must then be discarded.
    pub(crate) fn trapped(&self) -> bool {
        self.trapped
    }

    /// Opens (or creates) and recovers the cache in the preopened `guest_path`; its handle.
    ///
    /// Edge cases: the engine's recovery errors (`Corrupt`, `IncompatibleFormat`, `Io`); a
    /// `guest_path` that is not preopened → `Io` (not found).
    pub(crate) fn open(
        &mut self,
        guest_path: &str,
        settings: OpenSettings,
    ) -> Result<GuestCache<'_>> {
        let options = GuestOpenOptions {
            directory: guest_path.to_owned(),
            size_limit: settings.size_limit,
            sync_writes: settings.sync_writes,
            default_ttl_ms: settings.default_ttl.map(Expiry::millis),
            read_only: settings.read_only,
            shared: settings.shared,
            memory_budget: settings.memory_budget,
        };
        let outcome = exports(&self.bindings)
            .cache()
            .call_open(arm(&mut self.store, self.deadline), &options);
        let handle = self.finish(outcome)?;
        Ok(GuestCache {
            instance: self,
            handle,
        })
    }

    /// The cache `handle` (from [`open`](Self::open)) of this instance, to call.
    pub(crate) fn cache(&mut self, handle: ResourceAny) -> GuestCache<'_> {
        GuestCache {
            instance: self,
            handle,
        }
    }

    /// Converts a call's outcome, remembering traps.
    fn finish<T>(
        &mut self,
        outcome: wasmtime::Result<std::result::Result<T, GuestError>>,
    ) -> Result<T> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(GuestError::WouldBlock)) => {
                self.would_block = true;
                Err(Error::Wasm(
                    "the engine refused slow work in non-blocking mode".into(),
                ))
            }
            Ok(Err(GuestError::Stale)) => {
                self.stale = true;
                Err(Error::Wasm(
                    "other processes rewrote the whole log since this cache last looked".into(),
                ))
            }
            Ok(Err(guest_error)) => Err(guest_error.into()),
            Err(trap) => {
                self.trapped = true;
                Err(limit_error(&trap, self.time_limit, self.memory_limit))
            }
        }
    }
}

/// One open cache of a [`GuestInstance`]: the typed calls of the WIT `cache` resource.
pub(crate) struct GuestCache<'a> {
    instance: &'a mut GuestInstance,
    handle: ResourceAny,
}

/// Calls method `$method` of the `cache` resource with `$args`, under the call deadline.
macro_rules! call {
    ($self:ident, $method:ident $(, $arg:expr)*) => {{
        let instance = &mut *$self.instance;
        let store = arm(&mut instance.store, instance.deadline);
        let outcome = exports(&instance.bindings).cache().$method(store, $self.handle $(, $arg)*);
        instance.finish(outcome)
    }};
}

impl GuestCache<'_> {
    /// The resource handle, to find this cache again with [`GuestInstance::cache`].
    pub(crate) fn handle(&self) -> ResourceAny {
        self.handle
    }

    /// The value under `key`; `None` on a miss or an expired entry. A big value is read by
    /// the host (`value-reader`), not copied out of the guest.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.instance.store.data_mut().staged = None;
        let found = match call!(self, call_read_value, key) {
            Ok(Some(GuestValueSource::Inline(bytes))) => Ok(Some(bytes)),
            Ok(Some(GuestValueSource::Staged(len))) => {
                match self.instance.store.data_mut().staged.take() {
                    Some(bytes) if bytes.len() == len as usize => Ok(Some(bytes)),
                    _ => Err(Error::Wasm(
                        "the engine answered with a value the host did not read".into(),
                    )),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match &found {
            Ok(Some(_)) => self.instance.hits += 1,
            Ok(None) => self.instance.misses += 1,
            Err(_) => {}
        }
        found
    }

    /// The values under `keys`, in order (`None`: a miss or an expired entry).
    pub(crate) fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let found = call!(self, call_get_many, keys);
        if let Ok(values) = &found {
            let hits = values.iter().filter(|v| v.is_some()).count() as u64;
            self.instance.hits += hits;
            self.instance.misses += values.len() as u64 - hits;
        }
        found
    }

    /// Stores every `(key, value)` in order, all expiring as `expiry` says.
    pub(crate) fn set_many(&mut self, entries: &[(String, Vec<u8>)], expiry: Expiry) -> Result<()> {
        call!(self, call_set_many, entries, expiry.to_wit())
    }

    /// Stores `value` under `key`, expiring as `expiry` says.
    pub(crate) fn set(&mut self, key: &str, value: &[u8], expiry: Expiry) -> Result<()> {
        call!(self, call_set, key, value, expiry.to_wit())
    }

    /// Removes `key`; true if a live entry was removed.
    pub(crate) fn delete(&mut self, key: &str) -> Result<bool> {
        call!(self, call_delete, key)
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) -> Result<()> {
        call!(self, call_clear)
    }

    /// Up to `limit` live keys starting with `prefix`, in byte order, after `after`.
    pub(crate) fn keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        call!(self, call_keys, prefix, after, limit)
    }

    /// Whether `key` holds a live entry (from the index; no file read).
    pub(crate) fn contains(&mut self, key: &str) -> Result<bool> {
        call!(self, call_contains, key)
    }

    /// Stores `value` under `key` only if it holds no live entry; true if stored.
    pub(crate) fn add(&mut self, key: &str, value: &[u8], expiry: Expiry) -> Result<bool> {
        call!(self, call_add, key, value, expiry.to_wit())
    }

    /// Refreshes `key`'s recency and gives it `expiry` from now; false on a miss.
    pub(crate) fn touch(&mut self, key: &str, expiry: Expiry) -> Result<bool> {
        call!(self, call_touch, key, expiry.to_wit())
    }

    /// Removes `key` and returns its value; `None` on a miss or an expired entry.
    pub(crate) fn pop(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        call!(self, call_pop, key)
    }

    /// Adds `delta` to the counter under `key` (starting from `default`, with `expiry`).
    pub(crate) fn incr(
        &mut self,
        key: &str,
        delta: i64,
        default: i64,
        expiry: Expiry,
    ) -> Result<i64> {
        call!(self, call_incr, key, delta, default, expiry.to_wit())
    }

    /// Removes every key starting with `prefix`; the number of live entries removed.
    pub(crate) fn delete_prefix(&mut self, prefix: &str) -> Result<u64> {
        call!(self, call_delete_prefix, prefix)
    }

    /// Removes every expired entry now; how many there were.
    pub(crate) fn expire(&mut self) -> Result<u64> {
        call!(self, call_expire)
    }

    /// The engine's counters.
    pub(crate) fn stats(&mut self) -> Result<GuestCounters> {
        let mut counters = call!(self, call_stats)?;
        // Counted since the cache was opened, across restarts after traps.
        counters.hits += self.instance.carried.0;
        counters.misses += self.instance.carried.1;
        Ok(counters)
    }

    /// Makes every write so far durable and writes the index snapshot.
    pub(crate) fn flush(&mut self) -> Result<()> {
        call!(self, call_flush)
    }

    /// Turns the guest's non-blocking mode on or off: when on, a call that would do slow work
    /// fails with `Error::WouldBlock` having changed nothing.
    pub(crate) fn set_nonblocking(&mut self, on: bool) -> Result<()> {
        let instance = &mut *self.instance;
        let store = arm(&mut instance.store, instance.deadline);
        let outcome =
            exports(&instance.bindings)
                .cache()
                .call_set_nonblocking(store, self.handle, on);
        instance.finish(outcome.map(Ok::<(), GuestError>))
    }

    /// One bounded step of background work (compaction ahead of the limit, half of a
    /// checkpoint), after noting that the log is durable through `durable_through` (a
    /// `sync_through` the caller synced; 0 for none); returns what is left.
    pub(crate) fn maintain(&mut self, durable_through: u64) -> Result<GuestMaintenance> {
        call!(self, call_maintain, durable_through)
    }

    /// Shared directory: replays what other processes appended since the last look.
    pub(crate) fn catch_up(&mut self) -> Result<()> {
        call!(self, call_catch_up)
    }

    /// Shared directory: tells the guest whether this process holds the write lock now
    /// (taking it catches up first).
    pub(crate) fn set_write_locked(&mut self, locked: bool, others_wrote: bool) -> Result<()> {
        call!(self, call_set_write_locked, locked, others_wrote)
    }

    /// What `maintain` has to do now.
    pub(crate) fn maintenance_pending(&mut self) -> Result<GuestMaintenance> {
        let instance = &mut *self.instance;
        let store = arm(&mut instance.store, instance.deadline);
        let outcome = exports(&instance.bindings)
            .cache()
            .call_maintenance_pending(store, self.handle);
        instance.finish(outcome.map(Ok::<GuestMaintenance, GuestError>))
    }

    /// Flushes and closes the cache files, consuming the handle.
    pub(crate) fn close(self) -> Result<()> {
        let instance = self.instance;
        let store = arm(&mut instance.store, instance.deadline);
        let outcome = exports(&instance.bindings)
            .cache()
            .call_close(store, self.handle);
        instance.finish(outcome)
    }
}

fn exports(bindings: &CacheGuest) -> &CacheExports {
    bindings.pcache_cache_cache()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OpenSettings {
        OpenSettings {
            size_limit: 1 << 20,
            sync_writes: false,
            default_ttl: None,
            read_only: false,
            shared: false,
            memory_budget: None,
        }
    }

    /// The `cache` resource lets one component instance hold several caches, each on its own
    /// preopened directory, with nothing shared between them.
    #[test]
    fn one_instance_holds_two_caches_on_two_directories() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let options = CacheOptions::new(dirs[0].path());
        let preopens = [(dirs[0].path(), "/a"), (dirs[1].path(), "/b")];
        let mut instance = GuestInstance::instantiate(&preopens, false, &options).unwrap();
        let a = instance.open("/a", settings()).unwrap().handle();
        let b = instance.open("/b", settings()).unwrap().handle();

        instance.cache(a).set("k", b"in a", Expiry::Never).unwrap();
        instance.cache(b).set("k", b"in b", Expiry::Never).unwrap();
        instance
            .cache(b)
            .set("only-b", b"1", Expiry::Never)
            .unwrap();
        assert_eq!(
            instance.cache(a).get("k").unwrap().as_deref(),
            Some(&b"in a"[..])
        );
        assert_eq!(
            instance.cache(b).get("k").unwrap().as_deref(),
            Some(&b"in b"[..])
        );
        assert_eq!(instance.cache(a).get("only-b").unwrap(), None);
        assert_eq!(instance.cache(a).keys("", None, 10).unwrap(), ["k"]);
        assert_eq!(
            instance.cache(b).keys("", None, 10).unwrap(),
            ["k", "only-b"]
        );
        // Each cache has its own counters and files.
        assert_eq!(instance.cache(a).stats().unwrap().entries, 1);
        assert_eq!(instance.cache(b).stats().unwrap().entries, 2);
        instance.cache(a).close().unwrap();
        // Closing one leaves the other working.
        assert_eq!(
            instance.cache(b).get("only-b").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        instance.cache(b).close().unwrap();
        for dir in &dirs {
            assert!(
                std::fs::read_dir(dir.path()).unwrap().count() > 0,
                "files written"
            );
        }

        // Reopened in a new instance, each directory kept its own entries.
        let mut again = GuestInstance::instantiate(&preopens, false, &options).unwrap();
        let b = again.open("/b", settings()).unwrap().handle();
        assert_eq!(
            again.cache(b).get("k").unwrap().as_deref(),
            Some(&b"in b"[..])
        );
        let a = again.open("/a", settings()).unwrap().handle();
        assert_eq!(again.cache(a).get("only-b").unwrap(), None);
    }

    /// One TTL rule: `after-ms(0)` is refused for every operation that takes an expiry, and
    /// `default` stands for the default TTL given at open.
    #[test]
    fn a_zero_ttl_is_refused_everywhere_and_default_means_the_open_default() {
        let dir = tempfile::tempdir().unwrap();
        let options = CacheOptions::new(dir.path());
        let mut instance =
            GuestInstance::instantiate(&[(dir.path(), "/c")], false, &options).unwrap();
        let with_default = OpenSettings {
            default_ttl: Some(Duration::from_secs(3600)),
            ..settings()
        };
        let c = instance.open("/c", with_default).unwrap().handle();
        let zero = Expiry::After(Duration::ZERO);
        let mut cache = instance.cache(c);
        assert!(matches!(
            cache.set("k", b"v", zero),
            Err(Error::InvalidTtl(_))
        ));
        assert!(matches!(
            cache.add("k", b"v", zero),
            Err(Error::InvalidTtl(_))
        ));
        assert!(matches!(
            cache.incr("n", 1, 0, zero),
            Err(Error::InvalidTtl(_))
        ));
        cache.set("k", b"v", Expiry::Never).unwrap();
        assert!(matches!(cache.touch("k", zero), Err(Error::InvalidTtl(_))));
        assert_eq!(
            cache.get("k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "nothing changed"
        );
        assert_eq!(
            cache.incr("n", 1, 0, Expiry::Default).unwrap(),
            1,
            "no counter was made"
        );
        assert!(cache.add("fresh", b"v", Expiry::Default).unwrap());
    }
}
