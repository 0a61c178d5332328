//! The process-wide wasmtime engine and compiled guest component, and `Guest`: one running guest instance.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel, Store};
use wasmtime_wasi::{FsPerms, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{CacheExports, CacheGuest, CacheGuestPre, GuestError, GuestOpenOptions};
use crate::error::{Error, Result};
use crate::options::Clock;

/// The guest component, built from `guest/` by `build.rs`.
static GUEST_COMPONENT: &[u8] = include_bytes!(env!("PCACHE_GUEST_WASM"));

/// Where the cache directory appears inside the guest.
pub(crate) const GUEST_DIRECTORY: &str = "/cache";

/// The engine and the linked, compiled component, shared by every cache in the process.
struct Runtime {
    engine: Engine,
    instance_pre: CacheGuestPre<GuestState>,
}

/// Compiled on first use; a failure is kept (as its message) and reported to every caller.
static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| Runtime::compile().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|message| Error::Wasm(format!("cannot load the guest component: {message}")))
}

impl Runtime {
    fn compile() -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config
            .concurrency_support(false)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, GUEST_COMPONENT)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let instance_pre = CacheGuestPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runtime {
            engine,
            instance_pre,
        })
    }
}

/// The host state each guest's `Store` holds: its WASI context and resource table.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Presents a [`Clock`] to the guest as WASI's `wall-clock`.
struct WasiWallClock(Arc<dyn Clock>);

impl HostWallClock for WasiWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        // WASI wall-clock time is Unix time; times before the epoch read as the epoch.
        self.0
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// The counters the guest's `stats` reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestCounters {
    pub(crate) entries: u64,
    pub(crate) volume: u64,
    pub(crate) size_limit: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

/// One instance of the guest component, with its own store, seeing one directory as `/cache`.
pub(crate) struct Guest {
    store: Store<GuestState>,
    bindings: CacheGuest,
    trapped: bool,
}

impl Guest {
    /// Instantiates a guest that sees `directory` (read-write) as `/cache` and reads time from `clock`.
    ///
    /// The guest gets no environment, arguments, stdio or network.
    pub(crate) fn instantiate(directory: &Path, clock: Arc<dyn Clock>) -> Result<Guest> {
        let runtime = runtime()?;
        let mut wasi = WasiCtxBuilder::new();
        // Must precede `preopened_dir`, which captures the setting.
        wasi.allow_blocking_current_thread(true)
            .wall_clock(WasiWallClock(clock));
        wasi.preopened_dir(directory, GUEST_DIRECTORY, FsPerms::ReadWrite)
            .map_err(|err| Error::Directory {
                path: directory.to_path_buf(),
                source: std::io::Error::other(format!("{err:#}")),
            })?;
        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&runtime.engine, state);
        let bindings = runtime
            .instance_pre
            .instantiate(&mut store)
            .map_err(|err| Error::wasm(&err))?;
        Ok(Guest {
            store,
            bindings,
            trapped: false,
        })
    }

    /// True once a call has trapped; the instance must then be discarded.
    pub(crate) fn trapped(&self) -> bool {
        self.trapped
    }

    /// Opens (or creates) and recovers the cache in `/cache`.
    pub(crate) fn open(&mut self, size_limit: u64, sync_writes: bool) -> Result<()> {
        let options = GuestOpenOptions {
            directory: GUEST_DIRECTORY.to_owned(),
            size_limit,
            sync_writes,
        };
        let outcome = exports(&self.bindings).call_open(&mut self.store, &options);
        self.finish(outcome)
    }

    /// The value under `key`; `None` on a miss or an expired entry.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let outcome = exports(&self.bindings).call_get(&mut self.store, key);
        self.finish(outcome)
    }

    /// Stores `value` under `key`, expiring after `ttl_ms` milliseconds if given.
    pub(crate) fn set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<()> {
        let outcome = exports(&self.bindings).call_set(&mut self.store, key, value, ttl_ms);
        self.finish(outcome)
    }

    /// Removes `key`; true if a live entry was removed.
    pub(crate) fn delete(&mut self, key: &str) -> Result<bool> {
        let outcome = exports(&self.bindings).call_delete(&mut self.store, key);
        self.finish(outcome)
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) -> Result<()> {
        let outcome = exports(&self.bindings).call_clear(&mut self.store);
        self.finish(outcome)
    }

    /// Up to `limit` live keys starting with `prefix`, in byte order, after `after`.
    pub(crate) fn keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let outcome = exports(&self.bindings).call_keys(&mut self.store, prefix, after, limit);
        self.finish(outcome)
    }

    /// The guest's counters.
    pub(crate) fn stats(&mut self) -> Result<GuestCounters> {
        let outcome = exports(&self.bindings).call_stats(&mut self.store);
        let stats = self.finish(outcome)?;
        Ok(GuestCounters {
            entries: stats.entries,
            volume: stats.volume,
            size_limit: stats.size_limit,
            hits: stats.hits,
            misses: stats.misses,
        })
    }

    /// Flushes and closes the cache files; the instance is unusable afterwards.
    pub(crate) fn close(&mut self) -> Result<()> {
        let outcome = exports(&self.bindings).call_close(&mut self.store);
        self.finish(outcome)
    }

    /// Converts a call's outcome, remembering traps.
    fn finish<T>(
        &mut self,
        outcome: wasmtime::Result<std::result::Result<T, GuestError>>,
    ) -> Result<T> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(guest_error)) => Err(guest_error.into()),
            Err(trap) => {
                self.trapped = true;
                Err(Error::wasm(&trap))
            }
        }
    }
}

fn exports(bindings: &CacheGuest) -> &CacheExports {
    bindings.pcache_cache_cache()
}
