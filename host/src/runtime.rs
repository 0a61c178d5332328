//! The process-wide wasmtime engine and compiled guest component (one per component and code
//! cache), and the host state of each guest's store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::CacheGuestPre;
use crate::clock::Clock;
use crate::compiled::{load_component, read_component, CodeCache, EMBEDDED_COMPONENT};
use crate::error::{Error, Result};
use crate::options::CacheOptions;
use crate::stop::GuestLimiter;

/// The engine and the linked, compiled component, shared by every cache in the process that
/// runs the same component with the same code cache.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) instance_pre: CacheGuestPre<GuestState>,
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
pub(crate) fn runtime(options: &CacheOptions) -> Result<Arc<Runtime>> {
    let key = RuntimeKey {
        component: options.component_path().cloned(),
        code_cache: options.code_cache_ref().cloned(),
    };
    // Held while compiling, so concurrent first opens compile once.
    let mut runtimes = RUNTIMES.lock();
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
        // A profiling aid: `PCACHE_PERFMAP=1` names the component's compiled functions for
        // `perf` (wasmtime writes /tmp/perf-PID.map), so `perf report` shows engine functions.
        if std::env::var_os("PCACHE_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let component = load_component(&engine, bytes, code_cache)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        crate::wasi_fs::shadow_filesystem(&mut linker)?;
        crate::wasi_io::shadow_streams(&mut linker)?;
        crate::value_reader::add_to_linker(&mut linker)?;
        let instance_pre = CacheGuestPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runtime {
            engine,
            instance_pre,
        })
    }
}

/// The host state each guest's `Store` holds: its WASI context, resource table and limits.
pub(crate) struct GuestState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: GuestLimiter,
    /// The mode of the files the guest creates.
    pub(crate) file_mode: u32,
    /// The value `value-reader.stage` read during the running call, for its result.
    pub(crate) staged: Option<Vec<u8>>,
    /// The most bytes `value-reader.stage` reads: the size limit (no value is bigger).
    pub(crate) stage_max: u64,
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
pub(crate) struct WasiWallClock(pub(crate) Arc<dyn Clock>);

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
