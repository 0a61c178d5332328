//! Cache configuration: the `CacheOptions` builder, environment loading, and the clocks TTLs are measured with.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use crate::compiled::CodeCache;
use crate::error::{Error, Result};
use crate::expiry::parse_duration;

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
/// Environment variable holding the size limit (bytes, or with a unit: `500MB`).
pub const ENV_SIZE_LIMIT: &str = "CACHE_SIZE_LIMIT";
/// Environment variable holding the default entry TTL (seconds or `5m`; 0 = entries never expire).
pub const ENV_CONTENT_TTL: &str = "CACHE_CONTENT_TTL";
/// Environment variable holding the search-result TTL (seconds or `5m`; 0 = none).
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
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `time` (which may be earlier than the current reading).
    pub fn set(&self, time: SystemTime) {
        *self.now.lock() = time;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::starting_now()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}

/// How to open a [`PersistentCache`](crate::PersistentCache): a builder.
///
/// Start from [`CacheOptions::new`] (a directory, every other option at its default) or
/// [`CacheOptions::from_env`], and chain the setters. The options remember which ones were
/// set: when a process opens a directory it already has open, the first opener's options stay
/// in force, and a warning names each option the later opener set to something else.
#[derive(Clone)]
#[non_exhaustive]
pub struct CacheOptions {
    directory: PathBuf,
    size_limit: Option<u64>,
    /// `Some(None)`: set to "no default TTL".
    default_ttl: Option<Option<Duration>>,
    search_ttl: Option<Duration>,
    sync: Option<bool>,
    read_only: Option<bool>,
    clock: Option<Arc<dyn Clock>>,
    memory_limit: Option<u64>,
    time_limit: Option<Duration>,
    component: Option<PathBuf>,
    code_cache: Option<CodeCache>,
    group_access: Option<bool>,
    plugin_budget: Option<u64>,
}

impl Default for CacheOptions {
    /// Directory `tmp/cache`; every other option at its default.
    fn default() -> Self {
        CacheOptions::new(DEFAULT_DIRECTORY)
    }
}

impl fmt::Debug for CacheOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheOptions")
            .field("directory", &self.directory)
            .field("size_limit", &self.size_limit_value())
            .field("default_ttl", &self.default_ttl_value())
            .field("search_ttl", &self.search_ttl)
            .field("sync", &self.sync_value())
            .field("read_only", &self.read_only_value())
            .field("memory_limit", &self.effective_memory_limit())
            .field("time_limit", &self.time_limit_value())
            .field("component", &self.component)
            .field("group_access", &self.group_access_value())
            .field("plugin_budget", &self.plugin_budget_value())
            .finish_non_exhaustive()
    }
}

impl CacheOptions {
    /// Every option at its default, with the cache in `directory` (created on open).
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        CacheOptions {
            directory: directory.into(),
            size_limit: None,
            default_ttl: None,
            search_ttl: None,
            sync: None,
            read_only: None,
            clock: None,
            memory_limit: None,
            time_limit: None,
            component: None,
            code_cache: None,
            group_access: None,
            plugin_budget: None,
        }
    }

    /// Sets the cache directory (created, with its parents, on open).
    pub fn directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.directory = directory.into();
        self
    }

    /// Sets the most bytes the cache may occupy on disk (default 500 MiB); least recently
    /// used entries are evicted beyond it.
    ///
    /// Edge cases: an entry bigger than the limit is refused with
    /// [`Error::ValueTooLarge`]; 0 makes every `set` fail that way.
    pub fn size_limit(mut self, bytes: u64) -> Self {
        self.size_limit = Some(bytes);
        self
    }

    /// Sets the TTL that [`Expiry::Default`](crate::Expiry::Default) stands for — what `set`,
    /// `add`, `incr` and `get_or_set_with` use unless told otherwise. `None` (the default):
    /// such entries never expire.
    ///
    /// Edge cases: a zero TTL means "no default TTL", as `CACHE_CONTENT_TTL=0` does.
    pub fn default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.default_ttl = Some(ttl.filter(|ttl| !ttl.is_zero()));
        self
    }

    /// Sets the TTL for search results (`CACHE_SEARCH_TTL`): the cache does not apply it by
    /// itself; [`PersistentCache::search_expiry`](crate::PersistentCache::search_expiry) hands
    /// it to the callers that cache searches. Zero or `None`: the default TTL.
    pub fn search_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.search_ttl = ttl.filter(|ttl| !ttl.is_zero());
        self
    }

    /// Sets whether every write is flushed to stable storage (durable against power loss,
    /// slower); off by default.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = Some(sync);
        self
    }

    /// Opens the cache read-only: nothing in the directory is created or written (a directory
    /// you may only read can be opened this way), reads work, and every write fails with
    /// [`Error::ReadOnly`]. Recency changes are kept in memory only.
    ///
    /// Edge cases: the directory must already hold a cache (its `.lock` and `data/`), else
    /// [`Error::Directory`]; another process holding the cache open for writing →
    /// [`Error::Locked`] (read-only openers share the lock with each other).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = Some(read_only);
        self
    }

    /// Sets the clock expiry is measured against (e.g. a [`ManualClock`] in tests); the
    /// system clock by default.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Limits the sandboxed engine's linear memory to `bytes` (capped at 4 GiB, all a `wasm32`
    /// guest can address).
    ///
    /// A call that needs more fails with [`Error::MemoryLimit`] and the engine is restarted
    /// from the directory. A value needs about three times its size at peak (the copy passed
    /// in, its record, compaction), and the index about 100 bytes plus the key per entry. A
    /// limit below the engine's initial memory (about 2 MiB) makes `open` fail the same way.
    /// Default: see [`effective_memory_limit`](Self::effective_memory_limit).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Limits how long one engine call may run (wall clock, checked by epoch interruption
    /// every 10 ms) before it fails with [`Error::TimeLimit`] and the engine is restarted;
    /// 10 seconds by default.
    ///
    /// `open`'s recovery counts too, so raise it for very large caches on slow disks. A zero
    /// limit interrupts every call, `open` included.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Runs the guest component in `path` instead of the embedded one (it must export the
    /// same `pcache:cache` interface).
    pub fn component(mut self, path: Option<PathBuf>) -> Self {
        self.component = path;
        self
    }

    /// Keeps the component's compiled native code in `cache` between processes (see
    /// [`CodeCache`] for what makes a code cache usable; an unusable one is skipped with a
    /// warning and the component is compiled). `None` (the default): compile every time.
    pub fn code_cache(mut self, cache: Option<CodeCache>) -> Self {
        self.code_cache = cache;
        self
    }

    /// Shares what the cache creates with the directory's group: directories `0770` and files
    /// `0660` instead of `0700` and `0600` (cache entries are often secrets, so private is the
    /// default). Set the directory's group (and its setgid bit, so new files inherit it)
    /// yourself. An existing directory keeps its own mode; only what is created changes.
    pub fn group_access(mut self, shared: bool) -> Self {
        self.group_access = Some(shared);
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
        self.plugin_budget = Some(bytes);
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
                .size_limit_value()
                .saturating_mul(3)
                .saturating_add(MIN_DEFAULT_MEMORY_LIMIT)
                .min(MAX_MEMORY_LIMIT),
        }
    }

    pub(crate) fn directory_path(&self) -> &Path {
        &self.directory
    }

    /// The size limit in force; [`size_limit_setting`](Self::size_limit_setting) tells whether
    /// it was set.
    pub(crate) fn size_limit_value(&self) -> u64 {
        self.size_limit.unwrap_or(DEFAULT_SIZE_LIMIT)
    }

    /// The size limit the caller set, or `None` if it was left at its default.
    pub(crate) fn size_limit_setting(&self) -> Option<u64> {
        self.size_limit
    }

    pub(crate) fn default_ttl_value(&self) -> Option<Duration> {
        self.default_ttl.flatten()
    }

    pub(crate) fn search_ttl_value(&self) -> Option<Duration> {
        self.search_ttl
    }

    pub(crate) fn sync_value(&self) -> bool {
        self.sync.unwrap_or(false)
    }

    pub(crate) fn read_only_value(&self) -> bool {
        self.read_only.unwrap_or(false)
    }

    pub(crate) fn clock_ref(&self) -> &Arc<dyn Clock> {
        static SYSTEM: LazyLock<Arc<dyn Clock>> = LazyLock::new(|| Arc::new(SystemClock));
        self.clock.as_ref().unwrap_or(&SYSTEM)
    }

    pub(crate) fn time_limit_value(&self) -> Duration {
        self.time_limit.unwrap_or(DEFAULT_TIME_LIMIT)
    }

    pub(crate) fn component_path(&self) -> Option<&PathBuf> {
        self.component.as_ref()
    }

    pub(crate) fn code_cache_ref(&self) -> Option<&CodeCache> {
        self.code_cache.as_ref()
    }

    pub(crate) fn group_access_value(&self) -> bool {
        self.group_access.unwrap_or(false)
    }

    pub(crate) fn plugin_budget_value(&self) -> u64 {
        self.plugin_budget.unwrap_or(DEFAULT_PLUGIN_BUDGET)
    }

    /// The permission bits for what the cache creates.
    pub(crate) fn modes(&self) -> crate::layout::Modes {
        crate::layout::Modes::new(self.group_access_value())
    }

    /// The options `self` sets explicitly to something other than what `in_force` (the
    /// options a cache is already open with) has, by name: what a later opener of an open
    /// directory asked for and does not get. Options left at their default never differ.
    pub(crate) fn differences_from(&self, in_force: &CacheOptions) -> Vec<&'static str> {
        let mut differ = Vec::new();
        let mut check = |name, set: bool, same: bool| {
            if set && !same {
                differ.push(name);
            }
        };
        check(
            "size_limit",
            self.size_limit_setting().is_some(),
            self.size_limit_value() == in_force.size_limit_value(),
        );
        check(
            "default_ttl",
            self.default_ttl.is_some(),
            self.default_ttl_value() == in_force.default_ttl_value(),
        );
        check(
            "search_ttl",
            self.search_ttl.is_some(),
            self.search_ttl == in_force.search_ttl,
        );
        check(
            "sync",
            self.sync.is_some(),
            self.sync_value() == in_force.sync_value(),
        );
        check(
            "read_only",
            self.read_only.is_some(),
            self.read_only_value() == in_force.read_only_value(),
        );
        check(
            "clock",
            self.clock.is_some(),
            self.clock
                .as_ref()
                .zip(in_force.clock.as_ref())
                .is_some_and(|(a, b)| Arc::ptr_eq(a, b)),
        );
        check(
            "memory_limit",
            self.memory_limit.is_some(),
            self.effective_memory_limit() == in_force.effective_memory_limit(),
        );
        check(
            "time_limit",
            self.time_limit.is_some(),
            self.time_limit_value() == in_force.time_limit_value(),
        );
        check(
            "component",
            self.component.is_some(),
            self.component == in_force.component,
        );
        check(
            "code_cache",
            self.code_cache.is_some(),
            self.code_cache == in_force.code_cache,
        );
        check(
            "group_access",
            self.group_access.is_some(),
            self.group_access_value() == in_force.group_access_value(),
        );
        check(
            "plugin_budget",
            self.plugin_budget.is_some(),
            self.plugin_budget_value() == in_force.plugin_budget_value(),
        );
        differ
    }

    /// Reads the environment, and `.env` in the working directory (if present) for variables
    /// the environment does not set.
    ///
    /// Variables: `CACHE_DIRECTORY`, `CACHE_SIZE_LIMIT` (bytes, or with a unit: `500MB`,
    /// `1GiB`), `CACHE_CONTENT_TTL` and `CACHE_SEARCH_TTL` (seconds, or a duration: `300s`,
    /// `5m`, `1h 30m`; 0 = none). Real environment variables win over `.env`. Unset or empty
    /// variables keep their defaults; an option set from a variable counts as set.
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
        CacheOptions::from_vars(env_lookup()?)
    }

    /// Builds options from the variables `lookup` returns, starting from the defaults.
    ///
    /// Same variables and rules as [`CacheOptions::from_env`], without touching the process
    /// environment or `.env`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when a value does not parse or the
    /// size limit is zero.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<CacheOptions> {
        let mut options = CacheOptions::default();
        for variable in [
            ENV_DIRECTORY,
            ENV_SIZE_LIMIT,
            ENV_CONTENT_TTL,
            ENV_SEARCH_TTL,
        ] {
            if let Some(value) = lookup(variable) {
                options = options.with_var(variable, &value)?;
            }
        }
        Ok(options)
    }

    /// Applies one configuration variable's `value` (trimmed; empty leaves the option alone).
    ///
    /// This is how `pcache` lets a flag win over a malformed variable: it applies only the
    /// variables whose flag was not given.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when the value does not parse, the
    /// size limit is zero, or `variable` is not one of the `CACHE_*` variables.
    pub fn with_var(self, variable: &str, value: &str) -> Result<CacheOptions> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(self);
        }
        let config_error = |message: String| Error::Config {
            variable: variable.to_owned(),
            message,
        };
        Ok(match variable {
            ENV_DIRECTORY => self.directory(value),
            ENV_SIZE_LIMIT => self.size_limit(parse_size(value).map_err(config_error)?),
            ENV_CONTENT_TTL => self.default_ttl(Some(parse_duration(value).map_err(config_error)?)),
            ENV_SEARCH_TTL => self.search_ttl(Some(parse_duration(value).map_err(config_error)?)),
            _ => {
                return Err(config_error(format!(
                    "not a configuration variable (value {value:?})"
                )))
            }
        })
    }
}

/// The `CACHE_*` variables as [`CacheOptions::from_env`] reads them: the environment first,
/// then `.env` in the working directory.
///
/// # Errors
/// [`Error::Config`] if `.env` exists but cannot be read or parsed.
pub fn env_lookup() -> Result<impl Fn(&str) -> Option<String>> {
    let dotenv = read_dotenv(Path::new(".env"))?;
    Ok(move |name: &str| {
        std::env::var_os(name)
            .map(|value| value.to_string_lossy().into_owned())
            .or_else(|| dotenv.get(name).cloned())
    })
}

/// Parses a size as `--size-limit` and `CACHE_SIZE_LIMIT` take it: bytes (`1048576`) or with a
/// unit (`500MB`, `1GiB`, `64 KiB`; units are binary: `500MB` is 500 MiB).
///
/// Edge cases: zero is refused (a cache that can hold nothing); a malformed size is refused,
/// quoting it.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let size = parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|err| {
            format!("expected bytes or a size like 500MB or 1GiB, got {text:?}: {err}")
        })?;
    if size == 0 {
        return Err(format!(
            "the size limit must be more than 0 bytes, got {text:?}"
        ));
    }
    Ok(size)
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
        assert_eq!(options.directory_path(), Path::new("tmp/cache"));
        assert_eq!(options.size_limit_value(), 524_288_000);
        assert_eq!(options.size_limit_setting(), None, "left at its default");
        assert_eq!(options.default_ttl_value(), None);
        assert_eq!(options.search_ttl_value(), None);
        assert!(!options.sync_value());
        assert!(!options.read_only_value());
        assert_eq!(options.time_limit_value(), DEFAULT_TIME_LIMIT);
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
        assert_eq!(
            CacheOptions::default()
                .default_ttl(Some(Duration::ZERO))
                .default_ttl_value(),
            None,
            "a zero default TTL is no default TTL, as CACHE_CONTENT_TTL=0"
        );
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
        assert_eq!(options.directory_path(), Path::new("/var/cache/app"));
        assert_eq!(options.size_limit_setting(), Some(1_048_576));
        assert_eq!(options.default_ttl_value(), Some(Duration::from_secs(3600)));
        assert_eq!(options.search_ttl_value(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn variables_parse_like_the_flags() {
        let options = options_from(&[
            ("CACHE_SIZE_LIMIT", "500MB"),
            ("CACHE_CONTENT_TTL", "5m"),
            ("CACHE_SEARCH_TTL", "300s"),
        ])
        .expect("units parse");
        // Units are binary, as for --size-limit: 500MB is 500 MiB.
        assert_eq!(options.size_limit_value(), 500 << 20);
        assert_eq!(options.default_ttl_value(), Some(Duration::from_secs(300)));
        assert_eq!(options.search_ttl_value(), Some(Duration::from_secs(300)));
        let binary = options_from(&[
            ("CACHE_SIZE_LIMIT", "1GiB"),
            ("CACHE_CONTENT_TTL", "1h 30m"),
        ])
        .expect("binary units and compound durations parse");
        assert_eq!(binary.size_limit_value(), 1 << 30);
        assert_eq!(binary.default_ttl_value(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_size("500MB"), crate::options::parse_size(" 500 MB "));
    }

    #[test]
    fn a_later_opener_is_told_only_about_options_it_set_differently() {
        let first = CacheOptions::new("/c").size_limit(1000).sync(true);
        // Left at defaults: nothing was asked for, so nothing is ignored.
        assert!(CacheOptions::new("/c").differences_from(&first).is_empty());
        // The same values, set explicitly: nothing differs.
        assert!(CacheOptions::new("/c")
            .size_limit(1000)
            .sync(true)
            .differences_from(&first)
            .is_empty());
        let later = CacheOptions::new("/c")
            .size_limit(2000)
            .default_ttl(Some(Duration::from_secs(5)))
            .sync(true);
        assert_eq!(
            later.differences_from(&first),
            ["size_limit", "default_ttl"]
        );
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
        assert_eq!(options.default_ttl_value(), None);
        assert_eq!(options.search_ttl_value(), None);
        assert_eq!(options.directory_path(), Path::new(DEFAULT_DIRECTORY));
        assert_eq!(options.size_limit_value(), DEFAULT_SIZE_LIMIT);
    }

    #[test]
    fn malformed_values_name_variable_and_value() {
        for (variable, value) in [
            ("CACHE_SIZE_LIMIT", "500 bananas"),
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
            .read_only(true)
            .clock(clock.clone());
        assert_eq!(options.directory_path(), Path::new("/data"));
        assert_eq!(options.size_limit_value(), 10);
        assert_eq!(options.default_ttl_value(), Some(Duration::from_secs(5)));
        assert_eq!(options.search_ttl_value(), Some(Duration::from_secs(7)));
        assert!(options.sync_value());
        assert!(options.read_only_value());
        clock.advance(Duration::from_secs(9));
        assert_eq!(
            options.clock_ref().now(),
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
