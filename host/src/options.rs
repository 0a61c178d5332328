//! Cache configuration: the `CacheOptions` builder and the defaults it starts from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::compiled::CodeCache;

/// Directory used when none is configured.
pub const DEFAULT_DIRECTORY: &str = "tmp/cache";
/// Size limit used when none is configured: 500 MiB.
pub const DEFAULT_SIZE_LIMIT: u64 = 524_288_000;

/// Bytes all plugin stores of a cache directory may hold together, unless configured: 64 MiB.
pub const DEFAULT_PLUGIN_BUDGET: u64 = 64 << 20;

/// How stale a local copy of a two-tier cache may be when served, unless configured: 1 s.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(1);

/// Time limit of one engine call when none is configured: 10 seconds.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);
/// The smallest memory limit the default rule gives: 256 MiB.
pub const MIN_DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
/// The most memory a `wasm32` guest can address: 4 GiB. Larger limits are capped to it.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

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
    exclusive: Option<bool>,
    clock: Option<Arc<dyn Clock>>,
    memory_limit: Option<u64>,
    time_limit: Option<Duration>,
    component: Option<PathBuf>,
    code_cache: Option<CodeCache>,
    group_access: Option<bool>,
    plugin_budget: Option<u64>,
    memory_budget: Option<u64>,
    redis_url: Option<String>,
    redis_namespace: Option<String>,
    max_staleness: Option<Duration>,
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
            .field("exclusive", &self.exclusive_value())
            .field("memory_limit", &self.effective_memory_limit())
            .field("time_limit", &self.time_limit_value())
            .field("component", &self.component)
            .field("group_access", &self.group_access_value())
            .field("plugin_budget", &self.plugin_budget_value())
            .field("memory_budget", &self.memory_budget)
            .field(
                "redis",
                &self.redis_url.as_deref().map(crate::remote::redacted_url),
            )
            .field("redis_namespace", &self.redis_namespace_value())
            .field("max_staleness", &self.max_staleness_value())
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
            exclusive: None,
            clock: None,
            memory_limit: None,
            time_limit: None,
            component: None,
            code_cache: None,
            group_access: None,
            plugin_budget: None,
            memory_budget: None,
            redis_url: None,
            redis_namespace: None,
            max_staleness: None,
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
    /// [`Error::Directory`]; another process holding the cache open with
    /// [`exclusive`](Self::exclusive) → [`Error::Locked`]. Other processes may write
    /// meanwhile: each call sees what they wrote.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = Some(read_only);
        self
    }

    /// Keeps the directory to this process alone (off by default): another process opening
    /// it gets [`Error::Locked`], and calls skip the cross-process protocol (the write lock
    /// around each write, the look at what others wrote before each call), for its last bit
    /// of speed. By default any number of processes may open one directory and read and
    /// write it concurrently (see the README's "Several processes").
    ///
    /// Edge cases: another process has the directory open at all → [`Error::Locked`]; a
    /// later shared opener gets `Locked` while this one has it open.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = Some(exclusive);
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

    /// Sets the bytes of values kept in memory so that reads skip the disk (the hot value
    /// cache); by default a quarter of the size limit, at most 32 MiB. Values bigger than a
    /// 32nd of it are never kept (they are read from disk each time). 0 keeps no values in
    /// memory. The default [memory limit](Self::effective_memory_limit) grows by it.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Puts a shared Redis (or Valkey) tier behind the local cache: `url` is
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS is not built in: refused at
    /// open), or `redis+unix:///path/to/socket`. Reads answer from the local tier while its copy
    /// is known to be fresh, else from Redis; writes reach both; `add`, `incr`, `pop` and `touch`
    /// are decided in Redis. See [`PersistentCache`](crate::PersistentCache)'s "Two tiers".
    ///
    /// Edge cases: a malformed URL or an unreachable server fails `open` with
    /// [`Error::Remote`](crate::Error::Remote) (a server that goes away later does not: the
    /// cache reconnects by itself). One local directory should serve one namespace: a second
    /// namespace on the same directory would see the other's local copies.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Sets the Redis key prefix of this cache's entries (default `pcache`): keys are stored as
    /// `NAMESPACE:v:KEY`, and single-flight locks as `NAMESPACE:l:KEY`. Caches that should
    /// share entries use the same namespace; others stay apart on one server.
    ///
    /// Edge cases: an empty namespace is refused at open ([`Error::Config`](crate::Error::Config));
    /// a namespace holding `{…}` (a Redis Cluster hash tag) puts every key in one slot.
    pub fn redis_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.redis_namespace = Some(namespace.into());
        self
    }

    /// Sets how stale a local copy may be when served (default 1 s): a local copy is served only
    /// while the invalidation connection answered a heartbeat sent less than this long ago, so a
    /// read never returns a value that another node's acknowledged write replaced more than this
    /// long before. Heartbeats go every quarter of it.
    ///
    /// Edge cases: below 20 ms it is raised to 20 ms; with Redis unreachable, local copies are
    /// served for at most this long after the last heartbeat, then reads fail with
    /// [`Error::Remote`](crate::Error::Remote).
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = Some(bound);
        self
    }

    /// The memory limit in force: the one set with [`memory_limit`](Self::memory_limit), or by
    /// default three times the size limit plus 256 MiB plus the
    /// [memory budget](Self::memory_budget) when one is set, at most 4 GiB.
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
                .saturating_add(self.memory_budget.unwrap_or(0))
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

    /// The caller set the default TTL (to a TTL or to none).
    pub(crate) fn default_ttl_is_set(&self) -> bool {
        self.default_ttl.is_some()
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

    pub(crate) fn exclusive_value(&self) -> bool {
        self.exclusive.unwrap_or(false)
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

    /// The memory budget set, if any (`None`: the engine's default).
    pub(crate) fn memory_budget_setting(&self) -> Option<u64> {
        self.memory_budget
    }

    /// The Redis tier's URL, if one is set ([`redis`](Self::redis)).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    pub(crate) fn redis_url_value(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    pub(crate) fn redis_namespace_value(&self) -> &str {
        self.redis_namespace.as_deref().unwrap_or("pcache")
    }

    pub(crate) fn max_staleness_value(&self) -> Duration {
        self.max_staleness
            .unwrap_or(DEFAULT_MAX_STALENESS)
            .max(Duration::from_millis(20))
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
            "exclusive",
            self.exclusive.is_some(),
            self.exclusive_value() == in_force.exclusive_value(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::SystemTime;

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
}
