//! PersistentCache: a persistent, size-limited LRU cache with per-entry TTLs, whose storage
//! engine runs as a sandboxed WebAssembly component (see `guest/`) that can only touch the
//! cache directory.
//!
//! ```no_run
//! # async fn demo() -> persistent_cache::Result<()> {
//! use persistent_cache::{CacheOptions, PersistentCache};
//! use std::time::Duration;
//!
//! let cache = PersistentCache::open(CacheOptions::new("tmp/cache")).await?;
//! cache.set_with_ttl("greeting", "hello", Duration::from_secs(60)).await?;
//! let greeting: Option<String> = cache.get("greeting").await?;
//! assert_eq!(greeting.as_deref(), Some("hello"));
//! cache.close().await?;
//! # Ok(())
//! # }
//! ```

mod bindings;
mod blocking;
mod cache;
mod codec;
mod compiled;
mod epoch;
mod error;
mod expiry;
mod instance;
mod layout;
mod ops;
mod options;
mod plugin;
mod runtime;
mod shared;
mod single_flight;
mod stop;
mod wasi_fs;
mod worker;

pub use blocking::BlockingCache;
pub use cache::PersistentCache;
pub use compiled::{CodeCache, MAX_COMPONENT_BYTES};
pub use error::{Error, PluginFailure, Result};
pub use expiry::Expiry;
pub use layout::{DATA_DIRECTORY, LOCK_FILE_NAME};
pub use ops::Stats;
pub use options::{
    env_lookup, parse_size, CacheOptions, Clock, ManualClock, SystemClock, DEFAULT_DIRECTORY,
    DEFAULT_PLUGIN_BUDGET, DEFAULT_SIZE_LIMIT, ENV_CONTENT_TTL, ENV_DIRECTORY, ENV_SEARCH_TTL,
    ENV_SIZE_LIMIT,
};
pub use plugin::{Plugin, PluginExit, PluginOptions, MIN_PLUGIN_STORE, PLUGINS_DIRECTORY};
pub use single_flight::GetOrSetError;

/// What the workspace's own tests need from the build; not a stable API.
#[doc(hidden)]
pub mod test_support {
    /// The guest component this crate embeds (the same bytes it runs).
    pub fn guest_component() -> &'static [u8] {
        crate::compiled::EMBEDDED_COMPONENT
    }
    /// The example plugin (`examples/wordfreq`), built for wasm32-wasip2 by the build script.
    pub const WORDFREQ_PLUGIN: &str = env!("PCACHE_WORDFREQ_PLUGIN_WASM");
    /// The test probe plugin (`tests/probe-plugin`), built by the build script.
    pub const PROBE_PLUGIN: &str = env!("PCACHE_PROBE_PLUGIN_WASM");
    /// A test build of the guest component (its `fault-injection` feature), built by the build
    /// script next to the released one; open a cache on it with
    /// `CacheOptions::component(Some(FAULT_INJECTION_COMPONENT.into()))`.
    ///
    /// In it, `set` of a key starting with `"\0pcache-fault:"` runs a fault command instead of
    /// storing (`trap`, `trap-after-set:KEY`, `spin`, `grow-memory`, `open-outside` with the
    /// path as the value; anything else is `InvalidKey`); every other key behaves as in the
    /// released component, which has no such hook.
    pub const FAULT_INJECTION_COMPONENT: &str = env!("PCACHE_FAULT_INJECTION_GUEST_WASM");
}

/// Every Rust example in the README runs as a doctest.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// And every one in `docs/usage.md` (the plugin guide's run from the `tests` crate).
#[doc = include_str!("../../docs/usage.md")]
#[cfg(doctest)]
pub struct UsageDoctests;
