//! The process-wide wasmtime engine and compiled guest component, and `Guest`: one running guest instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config, Engine, OptLevel, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::{FsPerms, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{
    CacheExports, CacheGuest, CacheGuestPre, GuestCounters, GuestError, GuestOpenOptions,
};
use crate::compiled::{load_component, read_component, CodeCache, EMBEDDED_COMPONENT};
use crate::error::{Error, Result};
use crate::options::{CacheOptions, Clock};

/// Where the cache directory appears inside the guest.
pub(crate) const GUEST_DIRECTORY: &str = "/cache";

/// The engine and the linked, compiled component, shared by every cache in the process that
/// runs the same component with the same code cache.
struct Runtime {
    engine: Engine,
    instance_pre: CacheGuestPre<GuestState>,
}

/// Which component a runtime runs and where its native code is cached.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RuntimeKey {
    /// `None`: the embedded guest.
    component: Option<PathBuf>,
    code_cache: Option<CodeCache>,
}

/// Runtimes compiled so far in this process.
static RUNTIMES: LazyLock<Mutex<HashMap<RuntimeKey, Arc<Runtime>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The runtime for `options`' component, compiled (or loaded from the code cache) on first use.
fn runtime(options: &CacheOptions) -> Result<Arc<Runtime>> {
    let key = RuntimeKey {
        component: options.component.clone(),
        code_cache: options.code_cache.clone(),
    };
    // Held while compiling, so concurrent first opens compile once.
    let mut runtimes = RUNTIMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = runtimes.get(&key) {
        return Ok(Arc::clone(runtime));
    }
    let runtime = Arc::new(Runtime::compile(&key)?);
    runtimes.insert(key, Arc::clone(&runtime));
    Ok(runtime)
}

impl Runtime {
    fn compile(key: &RuntimeKey) -> Result<Runtime> {
        let from_file;
        let bytes = match &key.component {
            None => EMBEDDED_COMPONENT,
            Some(path) => {
                from_file = read_component(path).map_err(|err| {
                    Error::Wasm(format!(
                        "cannot read the guest component {}: {err}",
                        path.display()
                    ))
                })?;
                &from_file[..]
            }
        };
        Self::link(bytes, key.code_cache.as_ref())
            .map_err(|err| Error::Wasm(format!("cannot load the guest component: {err:#}")))
    }

    fn link(bytes: &[u8], code_cache: Option<&CodeCache>) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config
            .concurrency_support(false)
            .cranelift_opt_level(OptLevel::Speed)
            // Every call runs under a deadline counted in epoch ticks (`CacheOptions::time_limit`).
            .epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let component = load_component(&engine, bytes, code_cache)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        crate::wasi_fs::shadow_filesystem(&mut linker)?;
        let instance_pre = CacheGuestPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runtime {
            engine,
            instance_pre,
        })
    }
}

use crate::epoch::{Ticking, EPOCH_TICK};

/// Epoch ticks that cover `limit`, rounded up, plus one for the tick already under way.
pub(crate) fn deadline_ticks(limit: Duration) -> u64 {
    if limit.is_zero() {
        return 0;
    }
    let ticks = limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Sets `store`'s deadline to `ticks` from now and hands it back, for the call about to start.
fn arm(store: &mut Store<GuestState>, ticks: u64) -> &mut Store<GuestState> {
    store.set_epoch_deadline(ticks);
    store
}

/// Raised (as a trap) when the guest asks for more linear memory than its limit.
#[derive(Debug)]
struct MemoryLimitHit {
    desired: usize,
    limit: u64,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest asked for {} bytes of memory; its limit is {} bytes",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitHit {}

/// The guest's memory and table limits: wasmtime's [`StoreLimits`], except that a growth past
/// the memory limit traps with [`MemoryLimitHit`] (so the caller gets `Error::MemoryLimit`)
/// instead of failing the allocation, which the guest would turn into an opaque abort.
pub(crate) struct GuestLimiter {
    limits: StoreLimits,
    memory_limit: u64,
}

impl GuestLimiter {
    pub(crate) fn new(memory_limit: u64) -> Self {
        let bytes = usize::try_from(memory_limit).unwrap_or(usize::MAX);
        GuestLimiter {
            limits: StoreLimitsBuilder::new().memory_size(bytes).build(),
            memory_limit,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if u64::try_from(desired).map_or(true, |d| d > self.memory_limit) {
            return Err(wasmtime::Error::new(MemoryLimitHit {
                desired,
                limit: self.memory_limit,
            }));
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The host state each guest's `Store` holds: its WASI context, resource table and limits.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    /// The mode of the files the guest creates.
    file_mode: u32,
}

impl GuestState {
    /// The mode of the files the guest creates (`0600`, or `0660` with group access).
    pub(crate) fn file_mode(&self) -> u32 {
        self.file_mode
    }
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

/// One instance of the guest component, with its own store, seeing one directory as `/cache`.
pub(crate) struct Guest {
    store: Store<GuestState>,
    /// Keeps the epoch advancing while this guest exists (its calls' deadlines).
    _ticking: Ticking,
    bindings: CacheGuest,
    trapped: bool,
    /// Each call's deadline, in epoch ticks from its start.
    deadline: u64,
    time_limit: Duration,
    memory_limit: u64,
}

impl Guest {
    /// Instantiates a guest that sees `directory` (read-write) as `/cache` and reads time from `clock`.
    ///
    /// The guest gets no environment, arguments, stdio or network.
    pub(crate) fn instantiate(directory: &Path, options: &CacheOptions) -> Result<Guest> {
        let runtime = runtime(options)?;
        let clock = Arc::clone(&options.clock);
        let mut wasi = WasiCtxBuilder::new();
        // Must precede `preopened_dir`, which captures the setting.
        wasi.allow_blocking_current_thread(true)
            .wall_clock(WasiWallClock(clock));
        wasi.preopened_dir(directory, GUEST_DIRECTORY, FsPerms::ReadWrite)
            .map_err(|err| Error::Directory {
                path: directory.to_path_buf(),
                source: std::io::Error::other(format!("{err:#}")),
            })?;
        let memory_limit = options.effective_memory_limit();
        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(memory_limit),
            file_mode: options.modes().file,
        };
        let ticking = Ticking::start(&runtime.engine);
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| &mut state.limiter);
        let deadline = deadline_ticks(options.time_limit);
        let instantiated = runtime.instance_pre.instantiate(arm(&mut store, deadline));
        let bindings =
            instantiated.map_err(|err| limit_error(&err, options.time_limit, memory_limit))?;
        Ok(Guest {
            _ticking: ticking,
            store,
            bindings,
            trapped: false,
            deadline,
            time_limit: options.time_limit,
            memory_limit,
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
        let outcome =
            exports(&self.bindings).call_open(arm(&mut self.store, self.deadline), &options);
        self.finish(outcome)
    }

    /// The value under `key`; `None` on a miss or an expired entry.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let outcome = exports(&self.bindings).call_get(arm(&mut self.store, self.deadline), key);
        self.finish(outcome)
    }

    /// Stores `value` under `key`, expiring after `ttl_ms` milliseconds if given.
    pub(crate) fn set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<()> {
        let outcome = exports(&self.bindings).call_set(
            arm(&mut self.store, self.deadline),
            key,
            value,
            ttl_ms,
        );
        self.finish(outcome)
    }

    /// Removes `key`; true if a live entry was removed.
    pub(crate) fn delete(&mut self, key: &str) -> Result<bool> {
        let outcome = exports(&self.bindings).call_delete(arm(&mut self.store, self.deadline), key);
        self.finish(outcome)
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) -> Result<()> {
        let outcome = exports(&self.bindings).call_clear(arm(&mut self.store, self.deadline));
        self.finish(outcome)
    }

    /// Up to `limit` live keys starting with `prefix`, in byte order, after `after`.
    pub(crate) fn keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let outcome = exports(&self.bindings).call_keys(
            arm(&mut self.store, self.deadline),
            prefix,
            after,
            limit,
        );
        self.finish(outcome)
    }

    /// Whether `key` holds a live entry (from the index; no file read).
    pub(crate) fn contains(&mut self, key: &str) -> Result<bool> {
        let outcome =
            exports(&self.bindings).call_contains(arm(&mut self.store, self.deadline), key);
        self.finish(outcome)
    }

    /// Stores `value` under `key` only if it holds no live entry; true if stored.
    pub(crate) fn add(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<bool> {
        let store = arm(&mut self.store, self.deadline);
        let outcome = exports(&self.bindings).call_add(store, key, value, ttl_ms);
        self.finish(outcome)
    }

    /// Refreshes `key`'s recency and sets (or, with `None`, clears) its TTL; false on a miss.
    pub(crate) fn touch(&mut self, key: &str, ttl_ms: Option<u64>) -> Result<bool> {
        let store = arm(&mut self.store, self.deadline);
        let outcome = exports(&self.bindings).call_touch(store, key, ttl_ms);
        self.finish(outcome)
    }

    /// Removes `key` and returns its value; `None` on a miss or an expired entry.
    pub(crate) fn pop(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let outcome = exports(&self.bindings).call_pop(arm(&mut self.store, self.deadline), key);
        self.finish(outcome)
    }

    /// Adds `delta` to the counter under `key` (starting from `default`); the new value.
    pub(crate) fn incr(
        &mut self,
        key: &str,
        delta: i64,
        default: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64> {
        let store = arm(&mut self.store, self.deadline);
        let outcome = exports(&self.bindings).call_incr(store, key, delta, default, ttl_ms);
        self.finish(outcome)
    }

    /// Removes every key starting with `prefix`; the number of live entries removed.
    pub(crate) fn delete_prefix(&mut self, prefix: &str) -> Result<u64> {
        let store = arm(&mut self.store, self.deadline);
        let outcome = exports(&self.bindings).call_delete_prefix(store, prefix);
        self.finish(outcome)
    }

    /// Removes every expired entry now; how many there were.
    pub(crate) fn expire(&mut self) -> Result<u64> {
        let outcome = exports(&self.bindings).call_expire(arm(&mut self.store, self.deadline));
        self.finish(outcome)
    }

    /// The guest's counters.
    pub(crate) fn stats(&mut self) -> Result<GuestCounters> {
        let outcome = exports(&self.bindings).call_stats(arm(&mut self.store, self.deadline));
        self.finish(outcome)
    }

    /// Flushes and closes the cache files; the instance is unusable afterwards.
    pub(crate) fn close(&mut self) -> Result<()> {
        let outcome = exports(&self.bindings).call_close(arm(&mut self.store, self.deadline));
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
                Err(limit_error(&trap, self.time_limit, self.memory_limit))
            }
        }
    }
}

/// The error for a failed guest call: `TimeLimit` for an epoch interruption, `MemoryLimit` for
/// a memory growth past the limit, `Wasm` for any other trap or runtime failure.
fn limit_error(err: &wasmtime::Error, time_limit: Duration, memory_limit: u64) -> Error {
    match Stop::of(err) {
        Stop::TimeLimit => Error::TimeLimit { limit: time_limit },
        Stop::MemoryLimit => Error::MemoryLimit {
            limit: memory_limit,
        },
        Stop::Other => Error::wasm(err),
    }
}

/// Why a store's call was abandoned: its epoch deadline, its memory limit, or anything else.
pub(crate) enum Stop {
    TimeLimit,
    MemoryLimit,
    Other,
}

/// Raised (as a trap) by host code serving a store that finds the store past one of its
/// limits: its deadline passed during a host call, or a host call would make the host hold
/// more memory than the store may cause (the message says what).
#[derive(Debug)]
pub(crate) enum HostLimitHit {
    Time,
    Memory(String),
}

impl std::fmt::Display for HostLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostLimitHit::Time => f.write_str("the time limit passed during a host call"),
            HostLimitHit::Memory(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for HostLimitHit {}

impl Stop {
    /// Classifies a failed call (of the cache guest or of a plugin).
    pub(crate) fn of(err: &wasmtime::Error) -> Stop {
        let host = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<HostLimitHit>());
        if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
            || matches!(host, Some(HostLimitHit::Time))
        {
            Stop::TimeLimit
        } else if err.chain().any(|cause| cause.is::<MemoryLimitHit>())
            || matches!(host, Some(HostLimitHit::Memory(_)))
        {
            Stop::MemoryLimit
        } else {
            Stop::Other
        }
    }
}

fn exports(bindings: &CacheGuest) -> &CacheExports {
    bindings.pcache_cache_cache()
}
