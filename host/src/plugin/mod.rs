//! Plugins: `wasi:cli` command components whose `wasi:keyvalue` imports a cache of their own serves.
//!
//! A plugin runs in its own wasmtime store with no filesystem, no network, no environment
//! beyond what [`PluginOptions`] grants, a memory limit and a time limit, which also bound what
//! it makes the host do for it (see `limits`). Its buckets live in a
//! separate cache directory, `<cache>/plugins/<name>/`, served by the same sandboxed cache
//! guest as the application's cache, so it can never reach another plugin's keys or the
//! application's.

mod keyvalue;
mod limits;
mod redis_store;
mod store;

pub use store::MIN_PLUGIN_STORE;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::cache::PersistentCache;
use crate::compiled::{load_component, read_component, CodeCache};
use crate::epoch::Ticking;
use crate::error::{Error, PluginFailure, Result};
use crate::stop::{deadline_ticks, GuestLimiter, Stop};
use limits::{RunLimits, MAX_RESOURCES};

/// The host side of the plugin world (`wit/plugin.wit`): `wasi:keyvalue` store, atomics, batch.
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "wit",
        imports: { default: trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::keyvalue::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::keyvalue::CasHandle,
        },
    });
}

/// The subdirectory of a cache directory that holds one cache directory per plugin.
pub const PLUGINS_DIRECTORY: &str = "plugins";

/// Most bytes of stdout (and of stderr) kept from a plugin whose output is captured.
const CAPTURE_LIMIT: usize = 16 << 20;

/// A compiled plugin component, checked to be a `wasi:cli` command that imports nothing but
/// WASI and `wasi:keyvalue`. Cheap to clone; run it with [`PersistentCache::run_plugin`].
#[derive(Clone)]
pub struct Plugin {
    name: String,
    pre: CommandPre<PluginState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).finish()
    }
}

/// How a plugin runs: its arguments, what it is granted, and its limits.
#[derive(Clone, Debug)]
pub struct PluginOptions {
    args: Vec<String>,
    env: Vec<(String, String)>,
    read_only_dirs: Vec<(PathBuf, String)>,
    stdin: Vec<u8>,
    inherit_stdio: bool,
    memory_limit: u64,
    time_limit: Duration,
    store_size_limit: u64,
    keyvalue_redis: Option<String>,
}

impl Default for PluginOptions {
    fn default() -> Self {
        PluginOptions {
            args: Vec::new(),
            env: Vec::new(),
            read_only_dirs: Vec::new(),
            stdin: Vec::new(),
            inherit_stdio: false,
            memory_limit: 256 << 20,
            time_limit: Duration::from_secs(60),
            store_size_limit: 64 << 20,
            keyvalue_redis: None,
        }
    }
}

impl PluginOptions {
    /// No arguments, no environment, empty stdin, output captured, 256 MiB of memory, 60 s,
    /// and a 64 MiB size limit for the plugin's cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The arguments after the program name (the plugin sees its own name as `argv[0]`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Grants one environment variable; the plugin sees no others.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Grants read-only access to the host directory `host` (and everything below it), which
    /// the plugin sees as `guest` (e.g. `/data`); it sees no other files. Writes, renames and
    /// deletes in it are refused.
    pub fn read_only_dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.read_only_dirs.push((host.into(), guest.into()));
        self
    }

    /// The bytes the plugin reads from stdin (ignored with [`inherit_stdio`](Self::inherit_stdio)).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Connects the plugin to this process's stdin, stdout and stderr instead of capturing its
    /// output into [`PluginExit`] (what `pcache plugin run` does).
    pub fn inherit_stdio(mut self, inherit: bool) -> Self {
        self.inherit_stdio = inherit;
        self
    }

    /// Most bytes of linear memory the plugin may use; past it the plugin is stopped.
    ///
    /// The same limit bounds what the plugin makes the host hold for it: the bytes one
    /// keyvalue call returns, the bytes its CAS handles keep, the bytes one call passes in, and
    /// its cache engine's memory (when this run opens that cache). More than
    /// 4096 live resources (buckets, CAS handles, streams) also stop it at this limit.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// How long the plugin may run (wall-clock time while it executes, checked every 10 ms
    /// in its code and at every step of host calls such as batch loops); past it the plugin
    /// is stopped.
    ///
    /// Edge cases: one call of the plugin's cache engine may run up to this limit again
    /// before it is stopped (the engine's own time limit, set from this one when this run
    /// opens the cache), and so may opening the cache; a zero limit stops the plugin at once.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The size limit of the plugin's own cache (used when the cache is first opened in this
    /// process).
    pub fn store_size_limit(mut self, bytes: u64) -> Self {
        self.store_size_limit = bytes;
        self
    }

    /// Serves the plugin's `wasi:keyvalue` buckets from Redis at `url` (`redis://host:port`,
    /// `redis+unix:///path`, or a cluster's seed nodes separated by commas) instead of its
    /// cache under `plugins/`: bucket `b` is the key prefix `pcache:kv:{PLUGIN/b}:`, so every
    /// host running the same plugin against the same Redis shares its buckets, and other
    /// plugins stay apart. The same plugin binary runs unchanged on either backend.
    ///
    /// Edge cases: no local store is opened (the plugin budget and
    /// [`store_size_limit`](Self::store_size_limit) do not apply: Redis's own `maxmemory`
    /// does); every call waits on Redis at most until the plugin's deadline, and replies are
    /// bounded by its memory limit before they are fetched; Redis unreachable is an error the
    /// plugin gets from the call (`store::error::other`), and an unreachable server at start
    /// fails the run with [`Error::Remote`](crate::Error::Remote).
    pub fn keyvalue_redis(mut self, url: impl Into<String>) -> Self {
        self.keyvalue_redis = Some(url.into());
        self
    }
}

/// How a plugin run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginExit {
    /// The exit code: 0 for success, 1 for failure (WASI 0.2 commands carry no other codes).
    pub code: i32,
    /// What the plugin wrote to stdout (empty when stdio is inherited).
    pub stdout: Vec<u8>,
    /// What the plugin wrote to stderr (empty when stdio is inherited).
    pub stderr: Vec<u8>,
}

impl PluginExit {
    /// True when the plugin exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl Plugin {
    /// Compiles the plugin component at `path` (named after the file, e.g. `wordfreq` for
    /// `wordfreq.wasm`), caching its native code in `code_cache` when given.
    ///
    /// # Errors
    /// [`Error::Plugin`] with [`PluginFailure::Load`]: an unreadable file, a file that is not a
    /// component, a component that is not a `wasi:cli` command or imports anything but WASI
    /// and `wasi:keyvalue@0.2.0-draft2`, or a name that is not 1–64 of `A-Z a-z 0-9 _ . -`.
    pub async fn load(path: impl AsRef<Path>, code_cache: Option<CodeCache>) -> Result<Plugin> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::load_as(name, path, code_cache).await
    }

    /// Like [`load`](Self::load), under the name `name` instead of the file's.
    ///
    /// # Errors
    /// As for [`load`](Self::load); a file larger than [`MAX_COMPONENT_BYTES`] (or endless,
    /// like `/dev/zero`) is refused after reading at most one byte past the cap.
    ///
    /// [`MAX_COMPONENT_BYTES`]: crate::MAX_COMPONENT_BYTES
    pub async fn load_as(
        name: impl Into<String>,
        path: impl AsRef<Path>,
        code_cache: Option<CodeCache>,
    ) -> Result<Plugin> {
        let name = name.into();
        let path = path.as_ref().to_path_buf();
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_component(&path)).await
        };
        let bytes = read
            .unwrap_or_else(|_| Err(std::io::Error::other("reading the plugin panicked")))
            .map_err(|err| Error::Plugin {
                plugin: name.clone(),
                failure: PluginFailure::Load(format!("cannot read {}: {err}", path.display())),
            })?;
        Self::from_bytes(name, bytes, code_cache).await
    }

    /// Compiles a plugin component from its bytes, under `name`.
    ///
    /// # Errors
    /// As for [`load`](Self::load).
    pub async fn from_bytes(
        name: impl Into<String>,
        bytes: Vec<u8>,
        code_cache: Option<CodeCache>,
    ) -> Result<Plugin> {
        let name = name.into();
        let load_error = |message: String| Error::Plugin {
            plugin: name.clone(),
            failure: PluginFailure::Load(message),
        };
        if !keyvalue::is_valid_name(&name) {
            return Err(load_error(format!(
                "{name:?} is not a plugin name: use 1 to 64 of A-Z a-z 0-9 _ . - (not . or ..)"
            )));
        }
        let compiled = tokio::task::spawn_blocking(move || {
            let runtime = plugin_runtime()?;
            let component = load_component(&runtime.engine, &bytes, code_cache.as_ref())
                .map_err(|err| format!("not a loadable component: {err:#}"))?;
            let pre = runtime
                .linker
                .instantiate_pre(&component)
                .map_err(|err| format!("{err:#}"))?;
            CommandPre::new(pre).map_err(|err| format!("not a wasi:cli command: {err:#}"))
        })
        .await
        .unwrap_or_else(|_| Err("compiling the plugin panicked".to_owned()));
        let pre = compiled.map_err(load_error)?;
        Ok(Plugin { name, pre })
    }

    /// The plugin's name: its namespace, and `argv[0]`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PersistentCache {
    /// Runs `plugin` to completion with its `wasi:keyvalue` buckets in a cache of its own:
    /// `<this cache's directory>/plugins/<plugin name>/`, opened with this cache's clock and
    /// component and `options`' size, memory and time limits. Bucket `b`'s key `k` is the key
    /// `b/k` there.
    ///
    /// Edge cases: a plugin that exits with an error code is `Ok` with that code; one that
    /// traps, runs past its time limit or asks for memory past its limit — itself, or through
    /// the host (a `get-many` reply, CAS handles, its cache engine; see
    /// [`PluginOptions::memory_limit`]) — is stopped and reported as [`Error::Plugin`]: its
    /// writes so far stay, and this cache and the plugin's cache keep working. If another run
    /// of the same plugin has its cache open, that run's engine limits stay in force. Bucket names other than 1–64 of `A-Z a-z 0-9 _ . -` (`""` means
    /// `default`) are refused with `access-denied`.
    ///
    /// # Errors
    /// [`Error::Plugin`], and the errors of [`PersistentCache::open`] for the plugin's cache
    /// (for example [`Error::Locked`] if another process runs the same plugin on it) — except
    /// that opening it past the plugin's time or memory limit is [`Error::Plugin`] too.
    pub async fn run_plugin(&self, plugin: &Plugin, options: PluginOptions) -> Result<PluginExit> {
        if let Some(url) = &options.keyvalue_redis {
            let conn = crate::remote::Target::parse(url)?.connect().await?;
            let backend = Backend::Redis(redis_store::RedisBuckets::new(
                conn,
                tokio::runtime::Handle::current(),
                &plugin.name,
            ));
            let plugin = plugin.clone();
            let ran = tokio::task::spawn_blocking(move || run(&plugin, backend, &options)).await;
            return ran.unwrap_or_else(|_| {
                Err(Error::Wasm("a blocking task of the plugin panicked".into()))
            });
        }
        let size_limit = self
            .prepare_plugin_store(&plugin.name, options.store_size_limit)
            .await?;
        // The plugin's cache engine runs with the plugin's limits: its work counts against them.
        let store_options = self
            .inner
            .plugin_store_options(&plugin.name, size_limit)
            .memory_limit(options.memory_limit)
            .time_limit(options.time_limit);
        let store = PersistentCache::open(store_options)
            .await
            .map_err(|err| stopped_opening(err, plugin, &options))?;
        let plugin = plugin.clone();
        // The plugin's WASI calls block (stdio through tokio's `block_on`): not on a runtime thread.
        let backend = Backend::Local(store);
        let ran = tokio::task::spawn_blocking(move || run(&plugin, backend, &options)).await;
        ran.unwrap_or_else(|_| Err(Error::Wasm("a blocking task of the plugin panicked".into())))
    }
}

/// The store data of a running plugin.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    /// The deadline and memory the host enforces in its calls for the plugin.
    limits: RunLimits,
    /// What serves its buckets.
    backend: Backend,
}

/// What serves a plugin's buckets.
pub(crate) enum Backend {
    /// The plugin's own cache under `plugins/`.
    Local(PersistentCache),
    /// Redis ([`PluginOptions::keyvalue_redis`]).
    Redis(redis_store::RedisBuckets),
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The engine plugins run on and the linker with everything they may import.
struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
}

/// The process-wide plugin runtime, made on first use.
fn plugin_runtime() -> std::result::Result<&'static PluginRuntime, String> {
    static RUNTIME: OnceLock<std::result::Result<PluginRuntime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let mut config = Config::new();
            config
                .concurrency_support(false)
                .cranelift_opt_level(OptLevel::Speed)
                .epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|err| format!("{err:#}"))?;
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|err| format!("{err:#}"))?;
            bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
                .map_err(|err| format!("{err:#}"))?;
            Ok(PluginRuntime { engine, linker })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Instantiates `plugin` in a fresh store and runs its `wasi:cli/run`, on this thread.
fn run(plugin: &Plugin, backend: Backend, options: &PluginOptions) -> Result<PluginExit> {
    let mut argv = vec![plugin.name.clone()];
    argv.extend(options.args.iter().cloned());
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&argv)
        .envs(&options.env)
        // The defaults, stated: no sockets, no name lookups; and no directory unless granted.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (host, guest) in &options.read_only_dirs {
        wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
            .map_err(|err| Error::Directory {
                path: host.clone(),
                source: std::io::Error::other(format!("{err:#}")),
            })?;
    }
    let captured = if options.inherit_stdio {
        wasi.inherit_stdin().inherit_stdout().inherit_stderr();
        None
    } else {
        let (stdout, stderr) = (
            MemoryOutputPipe::new(CAPTURE_LIMIT),
            MemoryOutputPipe::new(CAPTURE_LIMIT),
        );
        wasi.stdin(MemoryInputPipe::new(options.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        Some((stdout, stderr))
    };
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let state = PluginState {
        wasi: wasi.build(),
        table,
        limiter: GuestLimiter::new(options.memory_limit),
        limits: RunLimits::starting_now(options.time_limit, options.memory_limit),
        backend,
    };
    // Deadlines pass only while the epoch advances.
    let _ticking = Ticking::start(plugin.pre.engine());
    let mut wasm_store = Store::new(plugin.pre.engine(), state);
    wasm_store.limiter(|state| &mut state.limiter);
    wasm_store.set_epoch_deadline(deadline_ticks(options.time_limit));
    // What one call may copy from the plugin into the host (more only by passing the same
    // bytes several times: list elements may overlap).
    wasm_store.set_hostcall_fuel(usize::try_from(options.memory_limit).unwrap_or(usize::MAX));
    let outcome = plugin
        .pre
        .instantiate(&mut wasm_store)
        .and_then(|command| command.wasi_cli_run().call_run(&mut wasm_store));
    let code = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => {
                return Err(Error::Plugin {
                    plugin: plugin.name.clone(),
                    failure: failure(&err, options),
                })
            }
        },
    };
    let (stdout, stderr) = captured.map_or_else(Default::default, |(out, err)| {
        (out.contents().to_vec(), err.contents().to_vec())
    });
    Ok(PluginExit {
        code,
        stdout,
        stderr,
    })
}

/// An error opening the plugin's cache: its engine's time or memory limit (the plugin's) is
/// the plugin's failure; anything else is the cache's error.
fn stopped_opening(err: Error, plugin: &Plugin, options: &PluginOptions) -> Error {
    let failure = match err {
        Error::TimeLimit { .. } => PluginFailure::TimeLimit(options.time_limit),
        Error::MemoryLimit { .. } => PluginFailure::MemoryLimit(options.memory_limit),
        other => return other,
    };
    Error::Plugin {
        plugin: plugin.name.clone(),
        failure,
    }
}

/// What stopped a plugin: its time limit, its memory limit (in its code, in a host call, or
/// wasmtime's own caps on what it makes the host hold), or a trap.
fn failure(err: &wasmtime::Error, options: &PluginOptions) -> PluginFailure {
    match Stop::of(err) {
        Stop::TimeLimit => PluginFailure::TimeLimit(options.time_limit),
        Stop::MemoryLimit => PluginFailure::MemoryLimit(options.memory_limit),
        Stop::Other if limits::refused_by_wasmtime(err) => {
            PluginFailure::MemoryLimit(options.memory_limit)
        }
        Stop::Other => {
            // The root cause (e.g. "wasm trap: wasm `unreachable` instruction executed"); the
            // wasm backtrace goes to the log.
            tracing::debug!(error = %format!("{err:#}"), "plugin trapped");
            PluginFailure::Trap(err.root_cause().to_string())
        }
    }
}
