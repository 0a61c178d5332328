//! Cache configuration: the `CacheOptions` builder, environment loading, and the clocks TTLs are measured with.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::compiled::CodeCache;
use crate::error::{Error, Result};

/// Directory used when none is configured.
pub const DEFAULT_DIRECTORY: &str = "tmp/cache";
/// Size limit used when none is configured: 500 MiB.
pub const DEFAULT_SIZE_LIMIT: u64 = 524_288_000;

/// Bytes all plugin stores of a cache directory may hold together, unless configured: 64 MiB.
pub const DEFAULT_PLUGIN_BUDGET: u64 = 64 << 20;

/// Time limit of one engine call when none is configured: 10 seconds.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);
/// The smallest memory limit the default rule gives: 256 MiB.
pub const MIN_DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
/// The most memory a `wasm32` guest can address: 4 GiB. Larger limits are capped to it.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

/// Environment variable naming the cache directory.
pub const ENV_DIRECTORY: &str = "CACHE_DIRECTORY";
/// Environment variable holding the size limit in bytes.
pub const ENV_SIZE_LIMIT: &str = "CACHE_SIZE_LIMIT";
/// Environment variable holding the default entry TTL in seconds (0 = entries never expire).
pub const ENV_CONTENT_TTL: &str = "CACHE_CONTENT_TTL";
/// Environment variable holding the search-result TTL in seconds (0 = none).
pub const ENV_SEARCH_TTL: &str = "CACHE_SEARCH_TTL";

/// A source of wall-clock time; entry expiry is measured against it.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for testing expiry.
///
/// Clones share the same time: keep one clone and hand another (or an `Arc` of it) to
/// [`CacheOptions::clock`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock that starts at the current system time.
    pub fn starting_now() -> Self {
        ManualClock::new(SystemTime::now())
    }

    /// Moves the clock forward by `by` (saturating at the largest representable time).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `time` (which may be earlier than the current reading).
    pub fn set(&self, time: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = time;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::starting_now()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How to open a [`PersistentCache`](crate::PersistentCache).
///
/// Build with [`CacheOptions::new`] or [`CacheOptions::default`] and the chained setters, or load
/// from the environment with [`CacheOptions::from_env`].
#[derive(Clone)]
pub struct CacheOptions {
    /// Directory holding the cache files; created (with parents) on open.
    pub directory: PathBuf,
    /// Maximum bytes the cache may occupy on disk; least recently used entries are evicted beyond it.
    pub size_limit: u64,
    /// TTL applied by [`PersistentCache::set`](crate::PersistentCache::set); `None` = never expire.
    pub default_ttl: Option<Duration>,
    /// TTL callers should use for search results; carried for them, not applied by the cache itself.
    pub search_ttl: Option<Duration>,
    /// When true, every write is flushed to stable storage (durable against power loss, slower).
    pub sync: bool,
    /// The clock expiry is measured against.
    pub clock: Arc<dyn Clock>,
    /// Most bytes of linear memory the sandboxed engine may use; `None` derives the limit from
    /// the size limit (see [`CacheOptions::effective_memory_limit`]).
    pub memory_limit: Option<u64>,
    /// Longest one engine call (including `open`'s recovery) may run, in wall-clock time,
    /// before it is interrupted.
    pub time_limit: Duration,
    /// A guest component file to run instead of the embedded one (it must export the same
    /// `pcache:cache` interface).
    pub component: Option<PathBuf>,
    /// Where the component's compiled native code is kept between processes (outside the
    /// cache directory), so start-up skips compilation; `None` = compile every time.
    pub code_cache: Option<CodeCache>,
    /// When true, what the cache creates is shared with the directory's group (directories
    /// `0770`, files `0660`); by default it is private to the user (`0700`, `0600`).
    pub group_access: bool,
    /// Bytes the stores of every plugin run on this cache may hold together (on top of
    /// `size_limit`); see [`CacheOptions::plugin_budget`].
    pub plugin_budget: u64,
}

impl Default for CacheOptions {
    /// Directory `tmp/cache`, 500 MiB limit, no TTLs, no sync, the system clock.
    fn default() -> Self {
        CacheOptions {
            directory: PathBuf::from(DEFAULT_DIRECTORY),
            size_limit: DEFAULT_SIZE_LIMIT,
            default_ttl: None,
            search_ttl: None,
            sync: false,
            clock: Arc::new(SystemClock),
            memory_limit: None,
            time_limit: DEFAULT_TIME_LIMIT,
            component: None,
            code_cache: None,
            group_access: false,
            plugin_budget: DEFAULT_PLUGIN_BUDGET,
        }
    }
}

impl fmt::Debug for CacheOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheOptions")
            .field("directory", &self.directory)
            .field("size_limit", &self.size_limit)
            .field("default_ttl", &self.default_ttl)
            .field("search_ttl", &self.search_ttl)
            .field("sync", &self.sync)
            .field("memory_limit", &self.memory_limit)
            .field("time_limit", &self.time_limit)
            .finish_non_exhaustive()
    }
}

impl CacheOptions {
    /// Runs the guest component in `path` instead of the embedded one.
    pub fn component(mut self, path: Option<PathBuf>) -> Self {
        self.component = path;
        self
    }

    /// Keeps the component's compiled native code in `cache` between processes (see
    /// [`CodeCache`] for what makes a code cache usable; an unusable one is skipped with a
    /// warning and the component is compiled).
    pub fn code_cache(mut self, cache: Option<CodeCache>) -> Self {
        self.code_cache = cache;
        self
    }

    /// Shares what the cache creates with the directory's group: directories `0770` and files
    /// `0660` instead of `0700` and `0600` (cache entries are often secrets, so private is the
    /// default). Set the directory's group (and its setgid bit, so new files inherit it)
    /// yourself. An existing directory keeps its own mode; only what is created changes.
    pub fn group_access(mut self, shared: bool) -> Self {
        self.group_access = shared;
        self
    }

    /// Sets the bytes that the stores of all plugins run on this cache (`<dir>/plugins/*`) may
    /// hold together; 64 MiB by default. It is on top of the size limit: the directory holds
    /// at most `size_limit + plugin_budget` bytes of cache data.
    ///
    /// A plugin's store gets the smaller of its
    /// [`PluginOptions::store_size_limit`](crate::PluginOptions::store_size_limit) and what the
    /// other plugins' stores leave of the budget (their size limit while open in this process,
    /// else what they hold on disk). With less than 64 KiB left, `run_plugin` fails with
    /// [`PluginFailure::Budget`](crate::PluginFailure::Budget); `clear` empties the plugin
    /// stores too. `stats` reports `plugin_volume` against it.
    pub fn plugin_budget(mut self, bytes: u64) -> Self {
        self.plugin_budget = bytes;
        self
    }

    /// The permission bits for what the cache creates.
    pub(crate) fn modes(&self) -> crate::layout::Modes {
        crate::layout::Modes::new(self.group_access)
    }

    /// The defaults, with the cache in `directory`.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        CacheOptions {
            directory: directory.into(),
            ..CacheOptions::default()
        }
    }

    /// Sets the cache directory.
    pub fn directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.directory = directory.into();
        self
    }

    /// Sets the size limit in bytes.
    pub fn size_limit(mut self, bytes: u64) -> Self {
        self.size_limit = bytes;
        self
    }

    /// Sets the TTL used by `set`; `None` means entries never expire.
    pub fn default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Sets the TTL carried for search results.
    pub fn search_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.search_ttl = ttl;
        self
    }

    /// Sets whether every write is synced to disk.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Sets the clock expiry is measured against (e.g. a [`ManualClock`] in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Limits the sandboxed engine's linear memory to `bytes` (capped at 4 GiB, all a `wasm32`
    /// guest can address).
    ///
    /// A call that needs more fails with [`Error::MemoryLimit`] and the engine is restarted
    /// from the directory. A value needs about three times its size at peak (the copy passed
    /// in, its record, compaction), and the index about 100 bytes plus the key per entry. A
    /// limit below the engine's initial memory (about 2 MiB) makes `open` fail the same way.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Limits how long one engine call may run (wall clock, checked by epoch interruption
    /// every 10 ms) before it fails with [`Error::TimeLimit`] and the engine is restarted.
    ///
    /// `open`'s recovery counts too, so raise it for very large caches on slow disks. A zero
    /// limit interrupts every call, `open` included.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The memory limit in force: the one set with [`memory_limit`](Self::memory_limit), or by
    /// default three times the size limit plus 256 MiB, at most 4 GiB.
    ///
    /// Edge cases: an explicit limit above 4 GiB reads as 4 GiB; an explicit limit below
    /// 256 MiB is kept as given.
    pub fn effective_memory_limit(&self) -> u64 {
        match self.memory_limit {
            Some(bytes) => bytes.min(MAX_MEMORY_LIMIT),
            None => self
                .size_limit
                .saturating_mul(3)
                .saturating_add(MIN_DEFAULT_MEMORY_LIMIT)
                .min(MAX_MEMORY_LIMIT),
        }
    }

    /// Reads the environment, and `.env` in the working directory (if present) for variables
    /// the environment does not set.
    ///
    /// Variables: `CACHE_DIRECTORY`, `CACHE_SIZE_LIMIT` (bytes), `CACHE_CONTENT_TTL` and
    /// `CACHE_SEARCH_TTL` (seconds, 0 = none). Real environment variables win over `.env`.
    /// Unset or empty variables keep their defaults.
    ///
    /// `.env` is only read: the process environment is never changed (setting variables in a
    /// multi-threaded program is undefined behaviour on glibc), and nothing else in `.env` has
    /// any effect — in particular it cannot move the code cache (`XDG_CACHE_HOME`) or any
    /// other setting read from the real environment.
    ///
    /// # Errors
    /// [`Error::Config`] if `.env` exists but cannot be read or parsed, or if a variable's
    /// value is malformed (the error names the variable and the value).
    pub fn from_env() -> Result<CacheOptions> {
        let dotenv = read_dotenv(Path::new(".env"))?;
        CacheOptions::from_vars(|name| {
            std::env::var_os(name)
                .map(|value| value.to_string_lossy().into_owned())
                .or_else(|| dotenv.get(name).cloned())
        })
    }

    /// Builds options from the variables `lookup` returns, starting from the defaults.
    ///
    /// Same variables and rules as [`CacheOptions::from_env`], without touching the process
    /// environment or `.env`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when a number does not parse or the
    /// size limit is zero.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<CacheOptions> {
        let read = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let mut options = CacheOptions::default();
        if let Some(directory) = read(ENV_DIRECTORY) {
            options.directory = PathBuf::from(directory);
        }
        if let Some(value) = read(ENV_SIZE_LIMIT) {
            let limit = parse_u64(ENV_SIZE_LIMIT, &value, "a size in bytes")?;
            if limit == 0 {
                return Err(Error::Config {
                    variable: ENV_SIZE_LIMIT.to_owned(),
                    message: "the size limit must be greater than 0 bytes, got \"0\"".to_owned(),
                });
            }
            options.size_limit = limit;
        }
        if let Some(value) = read(ENV_CONTENT_TTL) {
            options.default_ttl = parse_ttl_seconds(ENV_CONTENT_TTL, &value)?;
        }
        if let Some(value) = read(ENV_SEARCH_TTL) {
            options.search_ttl = parse_ttl_seconds(ENV_SEARCH_TTL, &value)?;
        }
        Ok(options)
    }
}

/// The variables in the dotenv file at `path` (empty if there is none), without applying them.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>> {
    let config_error = |err: dotenvy::Error| Error::Config {
        variable: ".env".to_owned(),
        message: format!("cannot load .env: {err}"),
    };
    let entries = match dotenvy::from_path_iter(path) {
        Ok(entries) => entries,
        Err(err) if err.not_found() => return Ok(HashMap::new()),
        Err(err) => return Err(config_error(err)),
    };
    entries.map(|entry| entry.map_err(config_error)).collect()
}

fn parse_u64(variable: &str, value: &str, expected: &str) -> Result<u64> {
    value.parse::<u64>().map_err(|err| Error::Config {
        variable: variable.to_owned(),
        message: format!("expected {expected} (a non-negative integer), got {value:?}: {err}"),
    })
}

fn parse_ttl_seconds(variable: &str, value: &str) -> Result<Option<Duration>> {
    let seconds = parse_u64(variable, value, "a number of seconds")?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_from(pairs: &[(&str, &str)]) -> Result<CacheOptions> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CacheOptions::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_variables_gives_defaults() {
        let options = options_from(&[]).expect("defaults parse");
        assert_eq!(options.directory, PathBuf::from("tmp/cache"));
        assert_eq!(options.size_limit, 524_288_000);
        assert_eq!(options.default_ttl, None);
        assert_eq!(options.search_ttl, None);
        assert!(!options.sync);
        assert_eq!(options.time_limit, DEFAULT_TIME_LIMIT);
    }

    #[test]
    fn memory_limit_defaults_follow_the_size_limit_within_bounds() {
        let mib = 1 << 20;
        // Default size limit (500 MiB): 3 × 500 MiB + 256 MiB.
        assert_eq!(CacheOptions::default().effective_memory_limit(), 1756 * mib);
        // Small caches get the 256 MiB floor; huge ones the 4 GiB wasm32 ceiling.
        let small = CacheOptions::default().size_limit(1);
        assert_eq!(small.effective_memory_limit(), 256 * mib + 3);
        let huge = CacheOptions::default().size_limit(u64::MAX);
        assert_eq!(huge.effective_memory_limit(), MAX_MEMORY_LIMIT);
        // Explicit limits are kept, only capped at 4 GiB.
        assert_eq!(
            small.clone().memory_limit(8 * mib).effective_memory_limit(),
            8 * mib
        );
        assert_eq!(
            small.memory_limit(u64::MAX).effective_memory_limit(),
            MAX_MEMORY_LIMIT
        );
    }

    #[test]
    fn all_variables_are_read() {
        let options = options_from(&[
            ("CACHE_DIRECTORY", "/var/cache/app"),
            ("CACHE_SIZE_LIMIT", "1048576"),
            ("CACHE_CONTENT_TTL", "3600"),
            ("CACHE_SEARCH_TTL", " 60 "),
        ])
        .expect("valid variables parse");
        assert_eq!(options.directory, PathBuf::from("/var/cache/app"));
        assert_eq!(options.size_limit, 1_048_576);
        assert_eq!(options.default_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(options.search_ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn zero_ttl_means_none_and_empty_means_unset() {
        let options = options_from(&[
            ("CACHE_CONTENT_TTL", "0"),
            ("CACHE_SEARCH_TTL", "0"),
            ("CACHE_DIRECTORY", ""),
            ("CACHE_SIZE_LIMIT", "  "),
        ])
        .expect("zero TTLs parse");
        assert_eq!(options.default_ttl, None);
        assert_eq!(options.search_ttl, None);
        assert_eq!(options.directory, PathBuf::from(DEFAULT_DIRECTORY));
        assert_eq!(options.size_limit, DEFAULT_SIZE_LIMIT);
    }

    #[test]
    fn malformed_values_name_variable_and_value() {
        for (variable, value) in [
            ("CACHE_SIZE_LIMIT", "500MB"),
            ("CACHE_SIZE_LIMIT", "-1"),
            ("CACHE_SIZE_LIMIT", "0"),
            ("CACHE_CONTENT_TTL", "1.5"),
            ("CACHE_SEARCH_TTL", "soon"),
        ] {
            match options_from(&[(variable, value)]) {
                Err(Error::Config {
                    variable: named,
                    message,
                }) => {
                    assert_eq!(named, variable);
                    assert!(
                        message.contains(value),
                        "{message:?} should quote {value:?}"
                    );
                }
                other => panic!("{variable}={value} gave {other:?}"),
            }
        }
    }

    #[test]
    fn builder_sets_every_field() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let options = CacheOptions::new("/data")
            .size_limit(10)
            .default_ttl(Some(Duration::from_secs(5)))
            .search_ttl(Some(Duration::from_secs(7)))
            .sync(true)
            .clock(clock.clone());
        assert_eq!(options.directory, PathBuf::from("/data"));
        assert_eq!(options.size_limit, 10);
        assert_eq!(options.default_ttl, Some(Duration::from_secs(5)));
        assert_eq!(options.search_ttl, Some(Duration::from_secs(7)));
        assert!(options.sync);
        clock.advance(Duration::from_secs(9));
        assert_eq!(
            options.clock.now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(9)
        );
    }

    #[test]
    fn dotenv_is_read_without_touching_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "CACHE_SIZE_LIMIT=4096\nXDG_CACHE_HOME=./evil\nPCACHE_TEST_DOTENV_ONLY=1\n",
        )
        .unwrap();
        let vars = read_dotenv(&path).unwrap();
        assert_eq!(
            vars.get("CACHE_SIZE_LIMIT").map(String::as_str),
            Some("4096")
        );
        assert_eq!(std::env::var_os("PCACHE_TEST_DOTENV_ONLY"), None);
        assert!(read_dotenv(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(&path, "NOT A LINE\n").unwrap();
        assert!(matches!(read_dotenv(&path), Err(Error::Config { .. })));
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let shared = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            shared.now(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1500)
        );
        shared.set(SystemTime::UNIX_EPOCH);
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
    }
}
